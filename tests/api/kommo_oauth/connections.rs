use super::*;

#[tokio::test]
async fn pasted_token_connection_is_checked_stored_encrypted_and_queues_a_sync() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let before = Utc::now();
    let r = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh,
               "expires_in": 86400}),
    )
    .await
    .expect(201);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(r.body["org_id"], users.org.to_string());
    assert_eq!(r.body["provider"], "kommo");
    assert_eq!(r.body["base_domain"], DOMAIN);
    assert_eq!(r.body["account_id"], ACCOUNT_ID);
    assert_eq!(r.body["status"], "connected");
    assert_eq!(r.body["last_error"], Value::Null);
    assert_time_near(
        &r.body["token_expires_at"],
        before + chrono::Duration::seconds(86400),
        Duration::from_secs(30),
    );
    assert_eq!(r.body["sync"]["pipelines"]["status"], "queued");
    for field in ["access_token", "refresh_token", "client_secret"] {
        assert!(r.body.get(field).is_none(), "{}", r.text);
    }
    let hook = webhook_token(&r.body["webhook_url"], &id);
    let jobs = r.body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{}", r.text);
    assert_eq!(jobs[0]["type"], "crm:sync-pipelines");
    assert_eq!(jobs[0]["status"], "queued");
    assert_eq!(jobs[0]["payload"]["connection_id"], id.as_str());
    assert_eq!(
        jobs_of(&app, users.org).await,
        vec![(
            "crm:sync-pipelines".to_owned(),
            "queued".to_owned(),
            Some(id.clone())
        )]
    );

    // Kommo checked the token (and only that happened).
    let calls = fake.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].base_domain, DOMAIN);
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("GET", "/api/v4/account")
    );
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {access}").as_str())
    );

    // Reads never show the webhook URL or a token.
    let shown = get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    assert_eq!(shown.body["id"], id.as_str());
    assert_eq!(shown.body["status"], "connected");
    assert_eq!(shown.body["account_id"], ACCOUNT_ID);
    assert!(shown.body.get("webhook_url").is_none(), "{}", shown.text);
    assert!(shown.body.get("jobs").is_none(), "{}", shown.text);
    assert_hides(&shown, &[&hook, &access, &refresh]);
    let list = get(&app, &connections_path(users.org), users.member)
        .await
        .expect(200);
    let data = list.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{}", list.text);
    assert_eq!(data[0]["id"], id.as_str());
    assert!(data[0].get("webhook_url").is_none(), "{}", list.text);
    assert_eq!(list.body["next_cursor"], Value::Null);
    assert_hides(&list, &[&hook, &access, &refresh]);
    let list = get(
        &app,
        &format!("{}?provider=kommo", connections_path(users.org)),
        users.member,
    )
    .await
    .expect(200);
    assert_eq!(list.body["data"][0]["id"], id.as_str());

    // At rest: ciphertexts for this row, the webhook token only as its SHA-256.
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
    for secret in [&access, &refresh, &hook] {
        assert!(!contains_bytes(&access_enc, secret.as_bytes()));
        assert!(!contains_bytes(&refresh_enc, secret.as_bytes()));
        assert!(!row_text.contains(secret.as_str()), "{row_text}");
        assert!(!row_text.contains(&hex::encode(secret)), "{row_text}");
    }
    assert_eq!(hook_hash, sha256(&hook));
    let row_id: Uuid = id.parse().expect("uuid");
    let keys = ring();
    let opened = keys
        .decrypt(&access_enc, row_id, crypto::ACCESS_TOKEN)
        .expect("access token decrypts");
    assert_eq!(opened.expose_secret(), access);
    let opened = keys
        .decrypt(&refresh_enc, row_id, crypto::REFRESH_TOKEN)
        .expect("refresh token decrypts");
    assert_eq!(opened.expose_secret(), refresh);
    assert!(
        keys.decrypt(&access_enc, row_id, crypto::REFRESH_TOKEN)
            .is_err()
    );

    // Deleted: gone.
    let r = delete(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect(204);
    assert_eq!(r.text, "");
    get(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect_problem(404, "not_found");
    delete(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect_problem(404, "not_found");
    let list = get(&app, &connections_path(users.org), users.admin)
        .await
        .expect(200);
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn long_lived_token_connection_has_no_refresh_token_or_expiry() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, _) = fake.issue_tokens(DOMAIN);
    let r = post(
        &app,
        &connections_path(users.org),
        users.owner,
        json!({"provider": "kommo", "base_domain": DOMAIN, "access_token": access}),
    )
    .await
    .expect(201);
    assert_eq!(r.body["status"], "connected");
    assert_eq!(r.body["account_id"], ACCOUNT_ID);
    assert_eq!(r.body["token_expires_at"], Value::Null);
    assert_eq!(r.body["has_refresh_token"], false);
    let id = r.body["id"].as_str().expect("id");
    webhook_token(&r.body["webhook_url"], id);
}

#[tokio::test]
async fn a_token_kommo_refuses_is_422_and_nothing_is_stored() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    fake.issue_tokens(DOMAIN);
    let refused = "fk_at_this-token-was-never-issued";
    let r = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": refused}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["access_token"], "{}", r.text);
    // Kommo was asked (and said 401).
    assert_eq!(fake.requests_to(DOMAIN, "/api/v4/account").len(), 1);
    assert_eq!(connection_count(&app, users.org).await, 0);
    assert_eq!(jobs_of(&app, users.org).await, vec![]);
    let list = get(&app, &connections_path(users.org), users.admin)
        .await
        .expect(200);
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn foreign_base_domains_are_refused_without_calling_anyone() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    for domain in [
        "evil.com",
        "acme.kommo.com.evil.com",
        "127.0.0.1:9999",
        "a.b.kommo.com",
        "kommo.com",
        "localhost",
        "ACME.kommo.com",
        "acme.kommo.com:443",
        "acme.kommo.com/api",
        "http://acme.kommo.com",
        "acme.kommo.com@evil.com",
        "-acme.kommo.com",
        "",
    ] {
        let r = post(
            &app,
            &connections_path(users.org),
            users.admin,
            json!({"base_domain": domain, "access_token": access, "refresh_token": refresh}),
        )
        .await
        .expect_problem(422, "validation_failed");
        assert_eq!(
            r.error_fields(),
            vec!["base_domain"],
            "{domain}: {}",
            r.text
        );
        assert_hides(&r, &[&access, &refresh]);
    }
    // ~9.2e15 seconds overflowed the expiry time: a panic, answered 500.
    for expires_in in [json!(9_300_000_000_000_000i64), json!(i64::MAX), json!(0)] {
        let r = post(
            &app,
            &connections_path(users.org),
            users.admin,
            json!({"base_domain": DOMAIN, "access_token": access, "expires_in": expires_in}),
        )
        .await
        .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["expires_in"], "{}", r.text);
    }
    assert!(
        fake.requests().is_empty(),
        "the service called out: {:?}",
        fake.requests()
    );
    assert_eq!(connection_count(&app, users.org).await, 0);
}

#[tokio::test]
async fn connections_refuse_members_and_other_orgs() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let body = json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh});

    post(
        &app,
        &connections_path(users.org),
        users.member,
        body.clone(),
    )
    .await
    .expect_problem(403, "forbidden");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    let (stranger, stranger_org) = outsider(&app).await;
    post(&app, &connections_path(users.org), stranger, body.clone())
        .await
        .expect_problem(404, "not_found");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    let r = post(&app, &connections_path(users.org), users.admin, body)
        .await
        .expect(201);
    let id = r.body["id"].as_str().expect("id").to_owned();

    // Another org's user, through this org or through their own.
    for path in [
        connection_path(users.org, &id),
        connection_path(stranger_org, &id),
    ] {
        get(&app, &path, stranger)
            .await
            .expect_problem(404, "not_found");
        delete(&app, &path, stranger)
            .await
            .expect_problem(404, "not_found");
    }
    get(&app, &connections_path(users.org), stranger)
        .await
        .expect_problem(404, "not_found");
    let theirs = get(&app, &connections_path(stranger_org), stranger)
        .await
        .expect(200);
    assert_eq!(theirs.body["data"], json!([]));
    get(
        &app,
        &format!("/v1/orgs/{}/crm/status?provider=kommo", users.org),
        stranger,
    )
    .await
    .expect_problem(404, "not_found");

    // A member reads but cannot delete.
    get(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect(200);
    delete(&app, &connection_path(users.org, &id), users.member)
        .await
        .expect_problem(403, "forbidden");
    let r = get(&app, &connection_path(users.org, &id), users.admin)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "connected");
}

#[tokio::test]
async fn crm_status_reflects_credentials_and_connection() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    fake.add_account(DOMAIN, ACCOUNT_ID);
    let users = app.org_with_roles().await;
    let status = format!("/v1/orgs/{}/crm/status?provider=kommo", users.org);

    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(
        r.body,
        json!({
            "provider": "kommo", "credentials_configured": false, "connection_configured": false,
            "connection": null,
            "credentials": {"provider": "kommo", "client_id": null, "redirect_uri": null,
                            "configured": false, "updated_at": null},
            "sync": {},
        })
    );

    put_credentials(&app, users.org, users.admin).await;
    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(r.body["credentials_configured"], true);
    assert_eq!(r.body["connection_configured"], false);
    assert_eq!(r.body["connection"], Value::Null);
    assert_eq!(r.body["credentials"]["client_id"], CLIENT_ID);
    assert_eq!(r.body["credentials"]["redirect_uri"], REDIRECT_URI);
    assert_eq!(r.body["credentials"]["configured"], true);

    let (access, refresh) = fake.issue_tokens(DOMAIN);
    let created = post(
        &app,
        &connections_path(users.org),
        users.admin,
        json!({"base_domain": DOMAIN, "access_token": access, "refresh_token": refresh,
               "expires_in": 86400}),
    )
    .await
    .expect(201);
    let hook = webhook_token(
        &created.body["webhook_url"],
        created.body["id"].as_str().expect("id"),
    );
    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(r.body["provider"], "kommo");
    assert_eq!(r.body["credentials_configured"], true);
    assert_eq!(r.body["connection_configured"], true);
    assert_eq!(r.body["connection"]["id"], created.body["id"]);
    assert_eq!(r.body["connection"]["status"], "connected");
    assert_eq!(r.body["connection"]["account_id"], ACCOUNT_ID);
    assert!(r.body["connection"].get("webhook_url").is_none());
    assert_eq!(r.body["sync"]["pipelines"]["status"], "queued");
    assert_hides(&r, &[&hook, &access, &refresh]);

    // Without `provider` it is kommo; other providers do not exist.
    let r = get(
        &app,
        &format!("/v1/orgs/{}/crm/status", users.org),
        users.member,
    )
    .await
    .expect(200);
    assert_eq!(r.body["connection_configured"], true);
    get(
        &app,
        &format!("/v1/orgs/{}/crm/status?provider=salesforce", users.org),
        users.member,
    )
    .await
    .expect_problem(404, "not_found");

    // Deleted connection and credentials: back to nothing.
    delete(
        &app,
        &connection_path(users.org, created.body["id"].as_str().expect("id")),
        users.admin,
    )
    .await
    .expect(204);
    delete(&app, &creds_path(users.org, "kommo"), users.admin)
        .await
        .expect(204);
    let r = get(&app, &status, users.member).await.expect(200);
    assert_eq!(r.body["credentials_configured"], false);
    assert_eq!(r.body["connection_configured"], false);
    assert_eq!(r.body["connection"], Value::Null);
}

// ---------------------------------------------------------------------------------------
// OAuth start
// ---------------------------------------------------------------------------------------
