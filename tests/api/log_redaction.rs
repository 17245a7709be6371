//! After a full flow through a real `serve` process with debug logging, no secret appears
//! in what it printed: bearer tokens, the client secret, Kommo tokens, the OAuth code and
//! state, webhook path tokens.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{JWT_SECRET, claims_for, fresh_database, runtime_url_for, sign_hs256};
use crate::support::fake_kommo::FakeKommo;
use crate::support::kommo::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TEST_KEY};
use crate::support::process::{Process, free_port, serve_env};

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let fake = FakeKommo::start().await;
    fake.register_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    fake.add_account("acme.kommo.com", 31_000_001);
    fake.add_account("beta.kommo.com", 31_000_002);

    let db = fresh_database().await;
    let port = free_port();
    let mut env = serve_env(&db, runtime_url_for(&db), port);
    env.insert("LOG_FORMAT".into(), "json".into());
    env.insert("RUST_LOG".into(), "debug".into());
    env.insert("KOMMO_BASE_URL".into(), fake.base_url_template.clone());
    env.insert("ENCRYPTION_KEYS".into(), format!("test:{TEST_KEY}"));
    env.insert("OAUTH_REDIRECT_URL".into(), REDIRECT_URI.into());
    env.insert("PUBLIC_BASE_URL".into(), format!("http://127.0.0.1:{port}"));
    let mut server = Process::spawn(&env, &["serve"]);
    let base = format!("http://127.0.0.1:{port}");
    server.wait_for_200(&format!("{base}/health/ready")).await;

    let client = reqwest::Client::new();
    let user = Uuid::now_v7();
    let token = sign_hs256(&claims_for(user), JWT_SECRET);
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, org) = call(
        reqwest::Method::POST,
        "/v1/orgs".into(),
        Some(json!({"name": "Logs"})),
    )
    .await;
    assert_eq!(status, 201);
    let org = org["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        reqwest::Method::PUT,
        format!("/v1/orgs/{org}/crm/credentials/kommo"),
        Some(json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI})),
    )
    .await;
    assert_eq!(status, 200);
    let (access, refresh) = fake.issue_tokens("beta.kommo.com");
    let (status, created) = call(
        reqwest::Method::POST,
        format!("/v1/orgs/{org}/crm/connections"),
        Some(json!({"base_domain": "beta.kommo.com", "access_token": access, "refresh_token": refresh, "expires_in": 86400})),
    )
    .await;
    assert_eq!(status, 201);
    let webhook_url = created["webhook_url"].as_str().unwrap().to_string();
    let webhook_token = webhook_url.rsplit('/').next().unwrap().to_string();

    let (status, started) = call(
        reqwest::Method::POST,
        format!("/v1/orgs/{org}/kommo/oauth/start"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let state = started["state"].as_str().unwrap().to_string();
    let code = fake.issue_code("acme.kommo.com");
    let (status, connected) = call(
        reqwest::Method::POST,
        "/v1/kommo/oauth/callback".into(),
        Some(json!({"code": code, "state": state, "referer": "acme.kommo.com"})),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    let (oauth_access, oauth_refresh) = fake.current_tokens("acme.kommo.com");

    let body = "leads[add][0][id]=1&account[id]=31000002";
    let webhook = client
        .post(&webhook_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 200);
    let wrong = client
        .post(webhook_url.replace(&webhook_token, "not-the-token-at-all"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 404);
    // A refresh goes through Kommo's token endpoint with the secrets.
    let connection = connected["connection"]["id"].as_str().unwrap();
    let (status, _) = call(
        reqwest::Method::POST,
        format!("/v1/orgs/{org}/crm/connections/{connection}/token/refresh"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Let the queued jobs (syncs, webhook) run and log.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    server.terminate();
    server.wait_exit().await;

    let printed = server.output();
    assert!(
        printed.contains("\"route\":\"/v1/kommo/webhooks/{connection_id}/{token}\""),
        "{printed}"
    );
    let (new_access, new_refresh) = fake.current_tokens("acme.kommo.com");
    for (name, secret) in [
        ("bearer token", token.as_str()),
        ("client secret", CLIENT_SECRET),
        ("pasted access token", access.as_str()),
        ("pasted refresh token", refresh.as_str()),
        ("OAuth access token", oauth_access.as_str()),
        ("OAuth refresh token", oauth_refresh.as_str()),
        ("refreshed access token", new_access.as_str()),
        ("refreshed refresh token", new_refresh.as_str()),
        ("OAuth code", code.as_str()),
        ("OAuth state", state.as_str()),
        ("webhook token", webhook_token.as_str()),
        ("wrong webhook token", "not-the-token-at-all"),
        ("JWT secret", JWT_SECRET),
        ("encryption key", TEST_KEY),
    ] {
        assert!(!printed.contains(secret), "the {name} appears in the logs");
    }
    assert!(
        !printed.contains("fk_at_") && !printed.contains("fk_rt_") && !printed.contains("fk_code_")
    );
}
