use super::*;

#[tokio::test]
async fn oauth_callback_connects_the_account_and_queues_both_syncs() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let before = Utc::now();
    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
    assert_eq!(keys_of(&r.body), ["connection", "webhook_url"]);
    let connection = &r.body["connection"];
    let id = connection["id"].as_str().expect("id").to_owned();
    assert_eq!(connection["org_id"], users.org.to_string());
    assert_eq!(connection["provider"], "kommo");
    assert_eq!(connection["base_domain"], DOMAIN);
    assert_eq!(connection["account_id"], ACCOUNT_ID);
    assert_eq!(connection["status"], "connected");
    assert_eq!(connection["has_refresh_token"], true);
    assert_eq!(connection["last_error"], Value::Null);
    assert_time_near(
        &connection["token_expires_at"],
        before + chrono::Duration::seconds(86400),
        Duration::from_secs(30),
    );
    assert_eq!(connection["sync"]["pipelines"]["status"], "queued");
    assert_eq!(connection["sync"]["contacts"]["status"], "queued");
    for field in ["access_token", "refresh_token"] {
        assert!(connection.get(field).is_none(), "{}", r.text);
    }
    let hook = webhook_token(&r.body["webhook_url"], &id);

    // The code was exchanged as Kommo expects, then the account was read with the token.
    let exchanges = token_requests(&fake, DOMAIN);
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(
        exchanges[0],
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI})
    );
    let (access, refresh) = fake.current_tokens(DOMAIN);
    let account = fake.requests_to(DOMAIN, "/api/v4/account");
    assert_eq!(account.len(), 1);
    assert_eq!(
        account[0].authorization.as_deref(),
        Some(format!("Bearer {access}").as_str())
    );
    assert_hides(&r, &[&access, &refresh]);

    // Both syncs queued for the new connection.
    let mut jobs = jobs_of(&app, users.org).await;
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            (
                "crm:sync-contacts".to_owned(),
                "queued".to_owned(),
                Some(id.clone())
            ),
            (
                "crm:sync-pipelines".to_owned(),
                "queued".to_owned(),
                Some(id.clone())
            ),
        ]
    );

    // The tokens are stored encrypted for the row; the state is gone.
    let mut db = app.admin_db().await;
    let (access_enc, refresh_enc, hook_hash, row_text): (Vec<u8>, Vec<u8>, Vec<u8>, String) =
        sqlx::query_as(
            "SELECT access_token_enc, refresh_token_enc, webhook_token_hash, row_to_json(c)::text
             FROM crm_connections c WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .expect("the connection row");
    for secret in [&access, &refresh, &hook, &code] {
        assert!(!contains_bytes(&access_enc, secret.as_bytes()));
        assert!(!contains_bytes(&refresh_enc, secret.as_bytes()));
        assert!(!row_text.contains(secret.as_str()), "{row_text}");
    }
    assert_eq!(hook_hash, sha256(&hook));
    let row_id: Uuid = id.parse().expect("uuid");
    let keys = ring();
    assert_eq!(
        keys.decrypt(&access_enc, row_id, crypto::ACCESS_TOKEN)
            .expect("decrypts")
            .expose_secret(),
        access
    );
    assert_eq!(
        keys.decrypt(&refresh_enc, row_id, crypto::REFRESH_TOKEN)
            .expect("decrypts")
            .expose_secret(),
        refresh
    );
    assert_eq!(oauth_state_count(&app).await, 0);

    // The connection reads like any other, without the webhook URL.
    let shown = get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    assert_eq!(shown.body["status"], "connected");
    assert!(shown.body.get("webhook_url").is_none());
    assert_hides(&shown, &[&hook, &state]);

    // Replaying the state (even with a fresh, valid code) is refused, never a 500.
    let another_code = fake.issue_code(DOMAIN);
    callback(&app, Some(users.admin), &another_code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 1);
}

#[tokio::test]
async fn a_state_is_consumed_once_under_concurrent_callbacks() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let token = app.token(users.admin);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(app.url(CALLBACK))
            .bearer_auth(&token)
            .json(&json!({"code": fake.issue_code(DOMAIN), "state": state, "referer": DOMAIN}));
        tasks.spawn(async move { into_response(request.send().await.expect("request")).await });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = clean(r.expect("task"), "POST /v1/kommo/oauth/callback");
        if r.status.as_u16() != 200 {
            let r = r.expect_problem(400, "bad_request");
            statuses.push(r.status.as_u16());
        } else {
            statuses.push(200);
        }
    }
    statuses.sort();
    assert_eq!(statuses, [200, 400, 400, 400, 400, 400, 400, 400]);
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 1);
}

#[tokio::test]
async fn another_users_callback_is_refused_and_leaves_the_state_usable() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let (stranger, _) = outsider(&app).await;
    // Neither another admin of the same org, nor its owner, nor a stranger.
    for other in [users.owner, users.member, stranger] {
        callback(&app, Some(other), &code, &state, DOMAIN)
            .await
            .expect_problem(400, "bad_request");
    }
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(oauth_state_count(&app).await, 1);
    assert_eq!(connection_count(&app, users.org).await, 0);

    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
    assert_eq!(r.body["connection"]["status"], "connected");
    assert_eq!(r.body["connection"]["account_id"], ACCOUNT_ID);
}

#[tokio::test]
async fn unknown_and_expired_states_are_400() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let code = fake.issue_code(DOMAIN);

    // Unknown: never issued, or its hash presented instead.
    let state = start_oauth(&app, users.org, users.admin).await;
    let unknown = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
    let hashed = hex::encode(sha256(&state));
    for bogus in [unknown.as_str(), hashed.as_str(), "not-a-state"] {
        callback(&app, Some(users.admin), &code, bogus, DOMAIN)
            .await
            .expect_problem(400, "bad_request");
    }
    assert!(token_requests(&fake, DOMAIN).is_empty());

    // Expired.
    expire_states(&app).await;
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);

    // A malformed body is not a state problem: 422 naming the field.
    let r = send(
        &app,
        Method::POST,
        CALLBACK,
        Some(users.admin),
        Some(json!({"code": code, "referer": DOMAIN})),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["state"], "{}", r.text);
}

#[tokio::test]
async fn a_foreign_referer_is_422_and_reaches_no_host() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    for referer in [
        "evil.com",
        "acme.kommo.com.evil.com",
        "127.0.0.1:9999",
        "a.b.kommo.com",
    ] {
        let state = start_oauth(&app, users.org, users.admin).await;
        let code = fake.issue_code(DOMAIN);
        let r = callback(&app, Some(users.admin), &code, &state, referer)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["referer"], "{referer}: {}", r.text);
    }
    assert!(
        fake.requests().is_empty(),
        "the service called out: {:?}",
        fake.requests()
    );
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn a_code_kommo_refuses_is_400() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    callback(
        &app,
        Some(users.admin),
        "fk_code_never-issued",
        &state,
        DOMAIN,
    )
    .await
    .expect_problem(400, "bad_request");
    // Kommo was asked and refused; nothing was stored or queued.
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert!(fake.requests_to(DOMAIN, "/api/").is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);
    assert_eq!(jobs_of(&app, users.org).await, vec![]);

    // A code issued for another account is refused the same way.
    fake.add_account("other.kommo.com", 31_000_888);
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code("other.kommo.com");
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn the_callback_needs_a_token() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let r = callback(&app, None, &code, &state, DOMAIN)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(fake.requests().is_empty());
    // The state was not touched.
    assert_eq!(oauth_state_count(&app).await, 1);
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
}

/// A user who is no longer an admin of the org cannot complete a flow they started
/// while they were: the state is bound to the user *and* the org, and connecting an
/// account is a write.
#[tokio::test]
async fn a_user_removed_from_the_org_cannot_complete_the_flow() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    delete(
        &app,
        &format!("/v1/orgs/{}/members/{}", users.org, users.admin),
        users.owner,
    )
    .await
    .expect(204);
    let code = fake.issue_code(DOMAIN);
    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN).await;
    assert!(
        matches!(r.status.as_u16(), 400 | 403 | 404),
        "a former admin completed OAuth for the org: {} {}",
        r.status,
        r.text
    );
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);
}

/// The same, through the browser callback, for an admin demoted to member: the state
/// must not let them connect an account.
#[tokio::test]
async fn a_user_demoted_to_member_cannot_complete_the_flow_in_the_browser() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    put(
        &app,
        &format!("/v1/orgs/{}/members/{}", users.org, users.admin),
        users.owner,
        json!({"role": "member"}),
    )
    .await
    .expect(200);
    let code = fake.issue_code(DOMAIN);
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_eq!(
        params.get("status").map(String::as_str),
        Some("error"),
        "a demoted admin connected an account: {params:?}"
    );
    assert!(token_requests(&fake, DOMAIN).is_empty());
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn oauth_reconnects_the_same_account_in_place() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let pasted = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh}),
    )
    .await
    .expect(201);
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    let r = callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect(200);
    // Upserted by (provider, base_domain): the same connection, with the new tokens.
    assert_eq!(r.body["connection"]["id"], pasted.body["id"]);
    assert_eq!(r.body["connection"]["status"], "connected");
    assert_eq!(connection_count(&app, users.org).await, 1);
    let (new_access, _) = fake.current_tokens(DOMAIN);
    assert_ne!(new_access, access);
    let mut db = app.admin_db().await;
    let (id, access_enc): (Uuid, Vec<u8>) =
        sqlx::query_as("SELECT id, access_token_enc FROM crm_connections WHERE org_id = $1")
            .bind(users.org)
            .fetch_one(&mut db)
            .await
            .expect("the connection");
    assert_eq!(
        ring()
            .decrypt(&access_enc, id, crypto::ACCESS_TOKEN)
            .expect("decrypts")
            .expose_secret(),
        new_access
    );
}

// ---------------------------------------------------------------------------------------
// GET /v1/kommo/oauth/callback (the browser)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn browser_callback_connects_and_redirects_to_the_frontend() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let code = fake.issue_code(DOMAIN);
    // As Kommo sends it, with its extra parameters.
    let (r, params) = browser_callback(
        &app,
        &[
            ("code", &code),
            ("state", &state),
            ("referer", DOMAIN),
            ("platform", "2"),
            ("client_id", CLIENT_ID),
        ],
    )
    .await;
    assert_hides(&r, &[&state, &code]);
    assert_eq!(params.len(), 2, "{params:?}");
    assert_eq!(params["status"], "connected", "{params:?}");
    let id = params["connection_id"].clone();
    id.parse::<Uuid>().expect("connection_id is a UUID");

    let exchanges = token_requests(&fake, DOMAIN);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0]["grant_type"], "authorization_code");
    assert_eq!(exchanges[0]["redirect_uri"], REDIRECT_URI);
    assert_eq!(exchanges[0]["code"], code.as_str());

    let shown = get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    assert_eq!(shown.body["status"], "connected");
    assert_eq!(shown.body["account_id"], ACCOUNT_ID);
    assert_eq!(shown.body["base_domain"], DOMAIN);
    let mut types: Vec<String> = jobs_of(&app, users.org)
        .await
        .into_iter()
        .map(|(t, s, c)| {
            assert_eq!(s, "queued");
            assert_eq!(c.as_deref(), Some(id.as_str()));
            t
        })
        .collect();
    types.sort();
    assert_eq!(types, ["crm:sync-contacts", "crm:sync-pipelines"]);

    // Replayed: the error redirect.
    let again = fake.issue_code(DOMAIN);
    let (_, params) = browser_callback(
        &app,
        &[("code", &again), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
}

#[tokio::test]
async fn browser_callback_access_denied_consumes_the_state() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let state = start_oauth(&app, users.org, users.admin).await;
    let (_, params) =
        browser_callback(&app, &[("error", "access_denied"), ("state", &state)]).await;
    assert_redirect_error(&params, "access_denied");
    assert_eq!(oauth_state_count(&app).await, 0);

    // The state no longer works, from either callback.
    let code = fake.issue_code(DOMAIN);
    callback(&app, Some(users.admin), &code, &state, DOMAIN)
        .await
        .expect_problem(400, "bad_request");
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn browser_callback_refusals_redirect_with_a_reason() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let code = fake.issue_code(DOMAIN);

    // Unknown or missing state.
    let unknown = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([3u8; 32]);
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &unknown), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    let (_, params) = browser_callback(&app, &[("code", &code), ("referer", DOMAIN)]).await;
    assert_redirect_error(&params, "invalid_state");
    let (_, params) = browser_callback(&app, &[("error", "access_denied")]).await;
    assert_redirect_error(&params, "invalid_state");

    // Expired.
    let state = start_oauth(&app, users.org, users.admin).await;
    expire_states(&app).await;
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", DOMAIN)],
    )
    .await;
    assert_redirect_error(&params, "invalid_state");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A foreign referer reaches no host.
    let state = start_oauth(&app, users.org, users.admin).await;
    let (_, params) = browser_callback(
        &app,
        &[("code", &code), ("state", &state), ("referer", "evil.com")],
    )
    .await;
    assert_redirect_error(&params, "invalid_referer");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A code Kommo refuses.
    let state = start_oauth(&app, users.org, users.admin).await;
    let (_, params) = browser_callback(
        &app,
        &[
            ("code", "fk_code_never-issued"),
            ("state", &state),
            ("referer", DOMAIN),
        ],
    )
    .await;
    assert_redirect_error(&params, "invalid_code");
    assert_eq!(token_requests(&fake, DOMAIN).len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 0);
}
