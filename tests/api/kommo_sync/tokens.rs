use super::*;

#[tokio::test]
async fn stale_access_token_is_refreshed_once_and_the_call_retried() {
    let c = Connected::start().await;
    let before = c.connection().await;
    let (stale_access, _) = c.fake.current_tokens(DOMAIN);
    assert!(c.fake.refresh_attempts().is_empty());
    let seen_before = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines").len();
    c.fake.expire_access_token(DOMAIN);

    let done = c.sync_ok("pipelines").await;
    assert_eq!(done[0]["result"]["count"], 2);

    let attempts = c.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].accepted && !attempts[0].stale, "{attempts:?}");
    // The refused call, then the same call with the new token.
    let (current_access, _) = c.fake.current_tokens(DOMAIN);
    let calls: Vec<Option<String>> = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines")
        [seen_before..]
        .iter()
        .map(|r| r.authorization.clone())
        .collect();
    assert_eq!(
        calls,
        [
            Some(format!("Bearer {stale_access}")),
            Some(format!("Bearer {current_access}"))
        ]
    );

    let after = c.connection().await;
    assert_eq!(after["status"], "connected", "{after}");
    assert!(after["last_error"].is_null(), "{after}");
    assert!(
        time(&after["token_expires_at"]) > time(&before["token_expires_at"]),
        "{before} → {after}"
    );
    let pipelines = c.app.get(&c.path("/pipelines"), c.users.member).await;
    assert_eq!(
        pipelines.expect(200).body["data"].as_array().unwrap().len(),
        2
    );
}

/// One `POST …/token/refresh` through `client` (of any replica).
async fn refresh_request(client: reqwest::Client, url: String, token: String) -> Response {
    let sent = client.post(url).bearer_auth(token).send().await;
    into_response(sent.expect("refresh request")).await
}

#[tokio::test]
async fn concurrent_refreshes_never_send_a_stale_refresh_token() {
    let c = Connected::start().await;
    let b = c.app.replica(false).await;
    let path = c.path("/token/refresh");
    let token = c.app.token(c.users.admin);

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..18 {
        let app = if i < 12 { &c.app } else { &b };
        requests.spawn(refresh_request(
            app.client.clone(),
            app.url(&path),
            token.clone(),
        ));
    }
    let answers = requests.join_all().await;
    assert_eq!(answers.len(), 18);
    for r in &answers {
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        time(&r.body["token_expires_at"]);
    }

    let attempts = c.fake.refresh_attempts();
    eprintln!(
        "18 refresh requests → {} refreshes at Kommo",
        attempts.len()
    );
    assert_eq!(c.fake.stale_refresh_tokens_seen(), 0, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.accepted), "{attempts:?}");
    assert!(!attempts.is_empty());
    assert!(
        attempts.len() < answers.len(),
        "concurrent refreshes were not coalesced: {} refreshes for {} requests",
        attempts.len(),
        answers.len()
    );
    // Everyone saw the expiry of a refresh that happened; the last one is stored.
    let connection = c.connection().await;
    assert_eq!(connection["status"], "connected", "{connection}");
    let latest = answers
        .iter()
        .map(|r| time(&r.body["token_expires_at"]))
        .max()
        .unwrap();
    assert_close(time(&connection["token_expires_at"]), latest);

    // The stored tokens are Kommo's current ones: a sync needs no refresh, and one more
    // refresh is accepted.
    c.sync_ok("pipelines").await;
    let (access, _) = c.fake.current_tokens(DOMAIN);
    let last_call = c.fake.requests_to(DOMAIN, "/api/v4/leads/pipelines");
    assert_eq!(
        last_call.last().unwrap().authorization,
        Some(format!("Bearer {access}"))
    );
    assert_eq!(c.fake.refresh_attempts().len(), attempts.len());
    b.post(&path, c.users.owner, json!({})).await.expect(200);
    let attempts = c.fake.refresh_attempts();
    assert!(attempts.last().unwrap().accepted, "{attempts:?}");
    assert_eq!(c.fake.stale_refresh_tokens_seen(), 0);
}

/// Sets the connection's access token to expire in an hour (due for the scheduler).
async fn expire_within_the_hour(app: &TestApp, connection: Uuid) {
    let mut db = app.admin_db().await;
    sqlx::query(
        "UPDATE crm_connections SET token_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(connection)
    .execute(&mut db)
    .await
    .expect("update token_expires_at");
}

async fn token_refresh_jobs(app: &TestApp, org: Uuid, user: Uuid) -> Vec<Value> {
    let listed = app
        .get(
            &format!("/v1/orgs/{org}/jobs?type=kommo:token-refresh"),
            user,
        )
        .await
        .expect(200)
        .body;
    listed["data"].as_array().expect("data").clone()
}

/// A readable reason: Kommo refused the grant, and the account must be reconnected.
fn says_reconnect(text: &str) -> bool {
    let text = text.to_lowercase();
    (text.contains("invalid_grant") || text.contains("refused the refresh token"))
        && text.contains("reconnect")
}

#[tokio::test]
async fn invalid_grant_marks_the_connection_error() {
    let c = Connected::start().await;
    // Kommo issued a new pair (the integration was re-installed): the stored refresh token
    // is rotated away.
    let (_, stored_refresh) = c.fake.current_tokens(DOMAIN);
    c.fake.issue_tokens(DOMAIN);

    let r = c
        .app
        .post(&c.path("/token/refresh"), c.users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("reconnect"),
        "{}",
        r.text
    );
    assert!(!r.text.contains(&stored_refresh), "{}", r.text);
    let attempts = c.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(!attempts[0].accepted, "{attempts:?}");

    let connection = c.connection().await;
    assert_eq!(connection["status"], "error", "{connection}");
    let last_error = connection["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("invalid_grant"), "{connection}");
    assert!(says_reconnect(last_error), "{connection}");
    let status = c
        .app
        .get(
            &format!("/v1/orgs/{}/crm/status", c.users.org),
            c.users.member,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(status["connection_configured"], false, "{status}");

    // The same through a token-refresh job, queued by the scheduler for a token about to
    // expire: it fails at once and the connection is in error.
    let (users, beta) = connect(&c.app, &c.fake, "beta.kommo.com").await;
    c.fake.issue_tokens("beta.kommo.com");
    expire_within_the_hour(&c.app, beta).await;
    let job = eventually("a token-refresh job for beta", PATIENCE, || async {
        token_refresh_jobs(&c.app, users.org, users.member)
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(job["payload"]["connection_id"], json!(beta));
    let job = wait_job(&c.app, users.org, users.member, &job).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "failed at once: {job}");
    assert!(
        says_reconnect(job["error"].as_str().unwrap_or_default()),
        "{job}"
    );
    let beta_connection = c
        .app
        .get(&connection_path(users.org, beta, ""), users.member)
        .await
        .expect(200)
        .body;
    assert_eq!(beta_connection["status"], "error", "{beta_connection}");
    assert!(
        says_reconnect(beta_connection["last_error"].as_str().unwrap_or_default()),
        "{beta_connection}"
    );

    // A connection in error is left alone by the scheduler (several ticks later there is
    // still that one job), and so is the first one, whose token is far from expiry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        token_refresh_jobs(&c.app, users.org, users.member)
            .await
            .len(),
        1
    );
    assert!(
        token_refresh_jobs(&c.app, c.users.org, c.users.member)
            .await
            .is_empty()
    );
    let beta_refreshes = c
        .fake
        .refresh_attempts()
        .iter()
        .filter(|a| a.base_domain == "beta.kommo.com")
        .count();
    assert_eq!(beta_refreshes, 1);
}

#[tokio::test]
async fn scheduler_refreshes_expiring_tokens() {
    let c = Connected::start().await;
    assert!(
        token_refresh_jobs(&c.app, c.users.org, c.users.member)
            .await
            .is_empty(),
        "a fresh 24 h token is not refreshed"
    );
    expire_within_the_hour(&c.app, c.connection).await;

    let job = eventually(
        "the scheduler to queue a token refresh",
        PATIENCE,
        || async {
            token_refresh_jobs(&c.app, c.users.org, c.users.member)
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(job["payload"]["connection_id"], json!(c.connection));
    let done = c.finished(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");

    let attempts = c.fake.refresh_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].accepted, "{attempts:?}");
    let connection = c.connection().await;
    assert_eq!(connection["status"], "connected", "{connection}");
    let expires = time(&connection["token_expires_at"]);
    let ahead = expires - Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::hours(24),
        "token_expires_at {expires} is {ahead} ahead"
    );
    assert_close(time(&done["result"]["token_expires_at"]), expires);

    // Refreshed, it is not due any more: later ticks queue nothing, and the new tokens work.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        token_refresh_jobs(&c.app, c.users.org, c.users.member)
            .await
            .len(),
        1
    );
    c.sync_ok("pipelines").await;
    assert_eq!(c.fake.refresh_attempts().len(), 1);
}
