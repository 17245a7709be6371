use super::*;

#[tokio::test]
async fn credentials_are_unconfigured_until_put() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    let r = get(&app, &creds_path(users.org, "kommo"), users.member)
        .await
        .expect(200);
    assert_eq!(
        r.body,
        json!({"provider": "kommo", "client_id": null, "redirect_uri": null,
               "configured": false, "updated_at": null})
    );
}

#[tokio::test]
async fn put_credentials_answers_without_the_secret_and_upserts() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    let path = creds_path(users.org, "kommo");
    let before = Utc::now();
    let r = put(
        &app,
        &path,
        users.admin,
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI}),
    )
    .await
    .expect(200);
    assert_eq!(
        keys_of(&r.body),
        [
            "client_id",
            "configured",
            "provider",
            "redirect_uri",
            "updated_at"
        ]
    );
    assert_eq!(r.body["provider"], "kommo");
    assert_eq!(r.body["client_id"], CLIENT_ID);
    assert_eq!(r.body["redirect_uri"], REDIRECT_URI);
    assert_eq!(r.body["configured"], true);
    assert_time_near(&r.body["updated_at"], before, Duration::from_secs(30));

    // Any member reads them, still without the secret.
    let shown = get(&app, &path, users.member).await.expect(200);
    assert_eq!(shown.body, r.body);

    // A second PUT replaces them (one row); redirect_uri is optional.
    let r = put(
        &app,
        &path,
        users.owner,
        json!({"client_id": "second-client", "client_secret": format!("{CLIENT_SECRET}-2")}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["client_id"], "second-client");
    assert_eq!(r.body["redirect_uri"], Value::Null);
    assert_eq!(r.body["configured"], true);
    let mut db = app.admin_db().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM crm_credentials WHERE org_id = $1")
        .bind(users.org)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn credentials_refuse_members_outsiders_and_other_providers() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    put_credentials(&app, users.org, users.admin).await;
    let path = creds_path(users.org, "kommo");
    let body = json!({"client_id": "hijack", "client_secret": "hijack-secret"});

    // A member reads but does not write.
    put(&app, &path, users.member, body.clone())
        .await
        .expect_problem(403, "forbidden");
    delete(&app, &path, users.member)
        .await
        .expect_problem(403, "forbidden");

    // Another org's user sees nothing at all.
    let (stranger, _) = outsider(&app).await;
    get(&app, &path, stranger)
        .await
        .expect_problem(404, "not_found");
    put(&app, &path, stranger, body.clone())
        .await
        .expect_problem(404, "not_found");
    delete(&app, &path, stranger)
        .await
        .expect_problem(404, "not_found");

    // Only kommo exists.
    let other = creds_path(users.org, "salesforce");
    get(&app, &other, users.admin)
        .await
        .expect_problem(404, "not_found");
    put(&app, &other, users.admin, body.clone())
        .await
        .expect_problem(404, "not_found");
    delete(&app, &other, users.admin)
        .await
        .expect_problem(404, "not_found");

    // Nothing changed.
    let r = get(&app, &path, users.member).await.expect(200);
    assert_eq!(r.body["client_id"], CLIENT_ID);
    assert_eq!(r.body["configured"], true);
}

#[tokio::test]
async fn invalid_credentials_are_422_and_not_stored() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    let path = creds_path(users.org, "kommo");
    let valid = json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI});
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for bad_uri in [
        json!("not a url"),
        json!("ftp://app.example.com/cb"),
        json!("javascript:alert(1)"),
        json!(""),
        json!(42),
        // 4 MB was accepted, then echoed by the status endpoint and copied into audit rows.
        json!(format!("https://app.example.com/{}", "a".repeat(2_100))),
    ] {
        let mut body = valid.clone();
        body["redirect_uri"] = bad_uri;
        cases.push((body, "redirect_uri"));
    }
    let mut body = valid.clone();
    body["client_secret"] = json!("");
    cases.push((body, "client_secret"));
    let mut body = valid.clone();
    body.as_object_mut()
        .expect("object")
        .remove("client_secret");
    cases.push((body, "client_secret"));
    let mut body = valid.clone();
    body["client_id"] = json!("");
    cases.push((body, "client_id"));
    for unknown in ["org_id", "id", "client_secret_enc", "provider"] {
        let mut body = valid.clone();
        body[unknown] = json!("x");
        cases.push((body, unknown));
    }
    for (body, field) in cases {
        let r = put(&app, &path, users.admin, body.clone())
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec![field], "{body}: {}", r.text);
    }
    let r = get(&app, &path, users.admin).await.expect(200);
    assert_eq!(r.body["configured"], false);
}

#[tokio::test]
async fn delete_credentials_is_204_then_404() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    put_credentials(&app, users.org, users.admin).await;
    let path = creds_path(users.org, "kommo");
    let r = delete(&app, &path, users.admin).await.expect(204);
    assert_eq!(r.text, "");
    let r = get(&app, &path, users.admin).await.expect(200);
    assert_eq!(r.body["configured"], false);
    assert_eq!(r.body["client_id"], Value::Null);
    delete(&app, &path, users.admin)
        .await
        .expect_problem(404, "not_found");
    // Without credentials, OAuth cannot start.
    post(&app, &start_path(users.org), users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
}

#[tokio::test]
async fn client_secret_is_encrypted_for_its_row() {
    let fake = FakeKommo::start().await;
    let app = TestApp::builder().with_kommo(&fake).spawn().await;
    let users = app.org_with_roles().await;
    put_credentials(&app, users.org, users.admin).await;
    let (stranger, other_org) = outsider(&app).await;
    put(
        &app,
        &creds_path(other_org, "kommo"),
        stranger,
        json!({"client_id": "other-client", "client_secret": "the-other-orgs-secret"}),
    )
    .await
    .expect(200);

    let mut db = app.admin_db().await;
    let (id, blob, row_text): (Uuid, Vec<u8>, String) = sqlx::query_as(
        "SELECT id, client_secret_enc, row_to_json(c)::text FROM crm_credentials c
         WHERE org_id = $1",
    )
    .bind(users.org)
    .fetch_one(&mut db)
    .await
    .expect("the credentials row");
    assert!(!contains_bytes(&blob, CLIENT_SECRET.as_bytes()));
    assert!(!row_text.contains(CLIENT_SECRET), "{row_text}");
    assert!(
        !row_text.contains(&hex::encode(CLIENT_SECRET)),
        "{row_text}"
    );

    let keys = ring();
    let secret = keys
        .decrypt(&blob, id, crypto::CLIENT_SECRET)
        .expect("decrypts for its own row");
    assert_eq!(secret.expose_secret(), CLIENT_SECRET);
    assert!(keys.decrypt(&blob, id, crypto::ACCESS_TOKEN).is_err());

    // Copied into the other org's row, the ciphertext no longer opens.
    let other_id: Uuid = sqlx::query_scalar("SELECT id FROM crm_credentials WHERE org_id = $1")
        .bind(other_org)
        .fetch_one(&mut db)
        .await
        .expect("the other row");
    sqlx::query("UPDATE crm_credentials SET client_secret_enc = $1 WHERE id = $2")
        .bind(&blob)
        .bind(other_id)
        .execute(&mut db)
        .await
        .expect("copy the ciphertext");
    let copied: Vec<u8> =
        sqlx::query_scalar("SELECT client_secret_enc FROM crm_credentials WHERE id = $1")
            .bind(other_id)
            .fetch_one(&mut db)
            .await
            .expect("the copied blob");
    assert_eq!(copied, blob);
    assert!(matches!(
        keys.decrypt(&copied, other_id, crypto::CLIENT_SECRET),
        Err(crypto::CryptoError::Undecryptable(_))
    ));
}

// ---------------------------------------------------------------------------------------
// connections from a pasted token
// ---------------------------------------------------------------------------------------
