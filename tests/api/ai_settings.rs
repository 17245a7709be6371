//! An org's own model provider: `GET/PUT/DELETE /v1/orgs/{org_id}/ai-settings`. Owners
//! and admins only; the key is sealed by the key ring, write-only, never logged; the
//! org's provider is the one its jobs call; the SSRF rule in production.

use serde_json::json;
use uuid::Uuid;

use crate::knowledge::{upload_and_wait, wait_settled};
use crate::support::app::{OrgUsers, TestApp};
use crate::support::fake_ai::FakeAi;
use crate::support::kommo::TEST_KEY;
use crate::support::logs::Captured;

const ORG_KEY: &str = "sk-org-VERY-SECRET-0123456789";

fn path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/ai-settings")
}

fn with_keys(
    builder: crate::support::app::TestAppBuilder<'_>,
) -> crate::support::app::TestAppBuilder<'_> {
    builder.env("ENCRYPTION_KEYS", &format!("test:{TEST_KEY}"))
}

#[tokio::test]
async fn admins_set_read_and_remove_the_settings_and_the_key_never_comes_back() {
    let app = with_keys(TestApp::builder()).spawn().await;
    let OrgUsers {
        org,
        owner,
        admin,
        member,
    } = app.org_with_roles().await;

    let empty = app.get(&path(org), admin).await.expect(200).body;
    assert_eq!(empty["provider"], "none", "{empty}");
    assert_eq!(empty["api_key_configured"], false);
    assert!(empty["base_url"].is_null());

    let body = json!({
        "base_url": "https://llm.example.com/v1/",
        "api_key": ORG_KEY,
        "chat_model": "llama-3.1-70b",
        "embedding_model": "nomic-embed-text",
    });
    let saved = app.put(&path(org), owner, body).await.expect(200);
    assert!(!saved.text.contains(ORG_KEY), "{}", saved.text);
    assert_eq!(saved.body["api_key_configured"], true);
    assert_eq!(saved.body["provider"], "org");
    assert_eq!(saved.body["base_url"], "https://llm.example.com/v1");
    assert_eq!(saved.body["chat_model"], "llama-3.1-70b");
    let shown = app.get(&path(org), admin).await.expect(200);
    assert!(!shown.text.contains(ORG_KEY), "{}", shown.text);
    assert_eq!(shown.body["api_key_configured"], true);

    // Stored sealed: the column holds no trace of the key.
    let mut db = app.admin_db().await;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT api_key_enc FROM ai_settings WHERE org_id = $1")
            .bind(org)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("VERY-SECRET"));
    // The audit log says the key changed, not what it is.
    let audit = app
        .get(&format!("/v1/orgs/{org}/audit-logs"), admin)
        .await
        .expect(200);
    assert!(!audit.text.contains(ORG_KEY), "{}", audit.text);
    assert!(audit.text.contains("ai.settings.update"), "{}", audit.text);

    // Models only, same URL: the key stays.
    let kept = app
        .put(
            &path(org),
            admin,
            json!({"base_url": "https://llm.example.com/v1", "chat_model": "llama-3.1-8b"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(kept["api_key_configured"], true, "{kept}");
    assert!(kept["embedding_model"].is_null(), "PUT replaces: {kept}");
    // Another URL without a key: the old key is not sent to a new host.
    let moved = app
        .put(
            &path(org),
            admin,
            json!({"base_url": "https://other.example.com/v1"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(moved["api_key_configured"], false, "{moved}");
    // An explicit null removes a key.
    app.put(
        &path(org),
        admin,
        json!({"base_url": "https://other.example.com/v1", "api_key": "sk-2"}),
    )
    .await
    .expect(200);
    let cleared = app
        .put(
            &path(org),
            admin,
            json!({"base_url": "https://other.example.com/v1", "api_key": null}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(cleared["api_key_configured"], false, "{cleared}");

    // Members may not read them, strangers do not see the org.
    app.get(&path(org), member)
        .await
        .expect_problem(403, "forbidden");
    app.put(&path(org), member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    app.delete(&path(org), member)
        .await
        .expect_problem(403, "forbidden");
    let stranger = Uuid::now_v7();
    app.get(&path(org), stranger)
        .await
        .expect_problem(404, "not_found");
    let anonymous = app.send(reqwest::Method::GET, &path(org), None, None).await;
    assert_eq!(anonymous.status, 401);

    app.delete(&path(org), admin).await.expect(204);
    app.delete(&path(org), admin)
        .await
        .expect_problem(404, "not_found");
    let gone = app.get(&path(org), admin).await.expect(200).body;
    assert_eq!(gone["provider"], "none", "{gone}");
}

#[tokio::test]
async fn bad_settings_are_refused_field_by_field() {
    let app = with_keys(TestApp::builder()).spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    for (body, field) in [
        (json!({"base_url": "ftp://llm.example.com"}), "base_url"),
        (json!({"base_url": "not a url"}), "base_url"),
        (
            json!({"base_url": format!("https://{}.com", "a".repeat(2100))}),
            "base_url",
        ),
        (json!({"chat_model": "bad model name"}), "chat_model"),
        (json!({"embedding_model": ""}), "embedding_model"),
        (json!({"api_key": ""}), "api_key"),
        (json!({"api_key": "line\nbreak"}), "api_key"),
        (json!({"org_id": org}), "org_id"),
    ] {
        let r = app
            .put(&path(org), admin, body.clone())
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), [field], "{body}");
    }
    // Nothing was stored by any of them.
    let shown = app.get(&path(org), admin).await.expect(200).body;
    assert!(shown["updated_at"].is_null(), "{shown}");
}

#[tokio::test]
async fn a_key_cannot_be_stored_without_encryption_keys() {
    let app = TestApp::builder()
        .configure(|env| {
            env.remove("ENCRYPTION_KEYS");
        })
        .spawn()
        .await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let r = app
        .put(
            &path(org),
            admin,
            json!({"base_url": "https://llm.example.com/v1", "api_key": ORG_KEY}),
        )
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.text);
    assert!(!r.text.contains(ORG_KEY));
    let shown = app.get(&path(org), admin).await.expect(200).body;
    assert!(shown["updated_at"].is_null(), "nothing stored: {shown}");
}

/// The org's own provider is the one its jobs call, with its key; the deployment's
/// provider and key are not used for it. The key never reaches the logs.
#[tokio::test]
async fn the_orgs_own_provider_and_key_are_used_and_never_logged() {
    let (logs, _guard) = Captured::start();
    let deployment = FakeAi::start().await;
    let own = FakeAi::start().await;
    own.require_api_key(Some(ORG_KEY));
    let app = with_keys(TestApp::builder())
        .with_jobs()
        .with_pgvector()
        .env("AI_BASE_URL", &deployment.base_url())
        .env("AI_API_KEY", "sk-deployment-key")
        .adjust_state(crate::knowledge::vectors::fast_ai_retries)
        .spawn()
        .await;
    tracing::callsite::rebuild_interest_cache();
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    app.put(
        &path(org),
        admin,
        json!({"base_url": own.base_url(), "api_key": ORG_KEY, "embedding_model": "own-embed"}),
    )
    .await
    .expect(200);

    let asset = upload_and_wait(
        &app,
        org,
        admin,
        "own.txt",
        b"Our own provider embeds this.",
    )
    .await;
    assert_eq!(asset["status"], "indexed", "{asset}");
    assert_eq!(asset["embedded"], true, "{asset}");
    let calls = own.embedding_calls();
    assert!(!calls.is_empty());
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(&*format!("Bearer {ORG_KEY}"))
    );
    assert_eq!(calls[0].body["model"], "own-embed");
    assert!(
        deployment.embedding_calls().is_empty(),
        "the deployment's provider was called for an org with its own"
    );

    // A wrong key: the provider refuses, the asset fails and says so, without the key.
    app.put(
        &path(org),
        admin,
        json!({"base_url": own.base_url(), "api_key": "sk-wrong-key"}),
    )
    .await
    .expect(200);
    let uploaded = crate::knowledge::upload(&app, org, admin, "wrong.txt", b"This will not embed.")
        .await
        .expect(202)
        .body;
    let failed = wait_settled(&app, org, admin, uploaded["asset"]["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("401"),
        "{failed}"
    );

    let text = logs.text();
    assert!(!text.is_empty(), "the subscriber saw the app");
    for secret in [ORG_KEY, "sk-wrong-key", "sk-deployment-key"] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(lines.is_empty(), "{secret} is in the logs: {lines:#?}");
    }
}

#[tokio::test]
async fn in_production_an_orgs_provider_must_be_public_https() {
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let app = TestApp::builder()
        .configure(|env| {
            for (k, v) in [
                ("APP_ENV", "production"),
                ("ENCRYPTION_KEYS", &*format!("k1:{key}")),
                ("PUBLIC_BASE_URL", "https://api.example.com"),
                ("FRONTEND_URL", "https://app.example.com"),
                (
                    "OAUTH_REDIRECT_URL",
                    "https://api.example.com/v1/kommo/oauth/callback",
                ),
            ] {
                env.insert(k.into(), v.into());
            }
        })
        .spawn()
        .await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    for url in [
        "http://llm.example.com/v1",
        "https://127.0.0.1:8080/v1",
        "https://localhost/v1",
        "https://10.0.0.5/v1",
        "https://169.254.169.254/latest",
        "https://[::1]/v1",
        "https://[fd00::1]/v1",
    ] {
        let r = app
            .put(&path(org), admin, json!({"base_url": url}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), ["base_url"], "{url}: {}", r.text);
    }
    let shown = app.get(&path(org), admin).await.expect(200).body;
    assert!(shown["updated_at"].is_null(), "nothing stored: {shown}");
    // A public address passes (an IP literal, so no DNS is needed here).
    app.put(&path(org), admin, json!({"base_url": "https://8.8.8.8/v1"}))
        .await
        .expect(200);
}
