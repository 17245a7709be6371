//! Set-up shared by the Kommo tests: an app pointed at a fake Kommo, an org with
//! credentials, and a connected account.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, TestApp};
use crate::support::fake_kommo::FakeKommo;

pub const CLIENT_ID: &str = "integration-client-id";
pub const CLIENT_SECRET: &str = "integration-client-secret-value";
pub const REDIRECT_URI: &str = "https://app.example.com/kommo/callback";
pub const FRONTEND_URL: &str = "https://app.example.com/settings/crm";
pub const PUBLIC_BASE_URL: &str = "https://api.example.com";
/// base64 of 32 bytes 0x07: the test encryption key.
pub const TEST_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Stores the integration's client credentials for `org`.
pub async fn put_credentials(app: &TestApp, org: Uuid, admin: Uuid) -> Value {
    app.put(
        &format!("/v1/orgs/{org}/crm/credentials/kommo"),
        admin,
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI}),
    )
    .await
    .expect(200)
    .body
}

/// An org with credentials and a connection to `domain` made from pasted OAuth tokens
/// (access + refresh, 24 h). Returns the users, the connection (201 body).
pub async fn connected_org(app: &TestApp, fake: &FakeKommo, domain: &str) -> (OrgUsers, Value) {
    fake.add_account(domain, 31_000_001);
    let users = app.org_with_roles().await;
    put_credentials(app, users.org, users.admin).await;
    let (access, refresh) = fake.issue_tokens(domain);
    let created = app
        .post(
            &format!("/v1/orgs/{}/crm/connections", users.org),
            users.admin,
            json!({"base_domain": domain, "access_token": access, "refresh_token": refresh, "expires_in": 86400}),
        )
        .await
        .expect(201)
        .body;
    (users, created)
}
