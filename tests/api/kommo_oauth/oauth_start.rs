use super::*;

#[tokio::test]
async fn oauth_start_needs_credentials() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    post(&app, &start_path(users.org), users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    assert_eq!(oauth_state_count(&app).await, 0);
}

#[tokio::test]
async fn oauth_start_returns_kommos_authorize_url_and_stores_only_a_hash() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    let before = Utc::now();
    let r = post(&app, &start_path(users.org), users.admin, json!({}))
        .await
        .expect(200);
    assert_eq!(keys_of(&r.body), ["auth_url", "expires_at", "state"]);
    let state = r.body["state"].as_str().expect("state").to_owned();
    assert_eq!(state.len(), 43, "{state}");
    assert!(is_base64url(&state), "{state}");
    assert_eq!(
        r.body["auth_url"],
        format!(
            "https://www.kommo.com/oauth?client_id={CLIENT_ID}&state={state}&mode=post_message"
        )
    );
    assert_time_near(
        &r.body["expires_at"],
        before + chrono::Duration::minutes(15),
        Duration::from_secs(30),
    );

    // A new state each time.
    let second = start_oauth(&app, users.org, users.owner).await;
    assert_ne!(second, state);

    // Stored: the SHA-256 of the state, bound to user, org and redirect URI; no plaintext.
    let mut db = app.admin_db().await;
    let rows: Vec<(Uuid, Uuid, Vec<u8>, String, String)> = sqlx::query_as(
        "SELECT org_id, user_id, state_hash, redirect_uri, row_to_json(s)::text
         FROM oauth_states s ORDER BY created_at",
    )
    .fetch_all(&mut db)
    .await
    .expect("states");
    assert_eq!(rows.len(), 2);
    let (org_id, user_id, hash, redirect_uri, text) = &rows[0];
    assert_eq!(*org_id, users.org);
    assert_eq!(*user_id, users.admin);
    assert_eq!(*hash, sha256(&state));
    assert_eq!(redirect_uri, REDIRECT_URI);
    for (.., hash, _, text) in &rows {
        for s in [&state, &second] {
            assert!(!text.contains(s.as_str()), "{text}");
            assert!(!contains_bytes(hash, s.as_bytes()));
            assert!(!text.contains(&hex::encode(s)), "{text}");
        }
    }
    assert!(text.contains(&users.org.to_string()), "{text}");
    assert_eq!(rows[1].2, sha256(&second));
    assert_eq!(rows[1].1, users.owner);
}

#[tokio::test]
async fn oauth_start_refuses_members_outsiders_and_bad_redirects() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = org_with_credentials(&app, &fake).await;
    post(&app, &start_path(users.org), users.member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    let (stranger, _) = outsider(&app).await;
    post(&app, &start_path(users.org), stranger, json!({}))
        .await
        .expect_problem(404, "not_found");
    for body in [
        json!({"redirect_uri": "not a url"}),
        json!({"redirect_uri": "ftp://app.example.com/cb"}),
    ] {
        let r = post(&app, &start_path(users.org), users.admin, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["redirect_uri"], "{}", r.text);
    }
    let r = post(
        &app,
        &start_path(users.org),
        users.admin,
        json!({"org_id": users.org}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["org_id"], "{}", r.text);
    send(
        &app,
        Method::POST,
        &start_path(users.org),
        None,
        Some(json!({})),
    )
    .await
    .expect_problem(401, "unauthorized");
    assert_eq!(oauth_state_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------
// POST /v1/kommo/oauth/callback
// ---------------------------------------------------------------------------------------
