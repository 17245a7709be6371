use super::*;

const HOST: &str = "acme.kommo.com";
const CLIENT_ID: &str = "client-1";
const SECRET: &str = "secret-1";
const REDIRECT: &str = "https://app.example.com/kommo/callback";

async fn fake() -> FakeKommo {
    let fake = FakeKommo::start().await;
    fake.register_client(CLIENT_ID, SECRET, REDIRECT);
    fake.add_account(HOST, 31_000_001);
    fake
}

async fn token_call(fake: &FakeKommo, host: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/oauth2/access_token", fake.base_url(host)))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn refresh(fake: &FakeKommo, refresh_token: &str) -> (u16, Value) {
    token_call(
        fake,
        HOST,
        json!({"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "refresh_token",
               "refresh_token": refresh_token, "redirect_uri": REDIRECT}),
    )
    .await
}

async fn get(fake: &FakeKommo, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", fake.base_url(HOST)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn code_exchange_is_one_time_and_checks_the_client() {
    let fake = fake().await;
    let code = fake.issue_code(HOST);
    let body = json!({"client_id": CLIENT_ID, "client_secret": SECRET,
                      "grant_type": "authorization_code", "code": code,
                      "redirect_uri": REDIRECT});
    let mut bad = body.clone();
    bad["client_secret"] = json!("wrong");
    let (status, problem) = token_call(&fake, HOST, bad).await;
    assert_eq!(status, 401);
    assert_eq!(problem["error"], "invalid_client");

    fake.add_account("other.kommo.com", 2);
    let (status, problem) = token_call(&fake, "other.kommo.com", body.clone()).await;
    assert_eq!(
        (status, problem["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (status, tokens) = token_call(&fake, HOST, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 86400);
    let current = fake.current_tokens(HOST);
    assert_eq!(tokens["access_token"], current.0);
    assert_eq!(tokens["refresh_token"], current.1);

    let (status, problem) = token_call(&fake, HOST, body).await;
    assert_eq!(
        (status, problem["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (status, _) = token_call(&fake, "nowhere.kommo.com", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refresh_rotates_and_rejects_stale_tokens() {
    let fake = fake().await;
    let (access0, refresh0) = fake.issue_tokens(HOST);
    assert_eq!(get(&fake, "/api/v4/account", &access0).await.status(), 200);

    let (status, tokens) = refresh(&fake, &refresh0).await;
    assert_eq!(status, 200);
    let access1 = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(access1, access0);
    assert_ne!(refresh1, refresh0);
    assert_eq!(
        fake.current_tokens(HOST),
        (access1.clone(), refresh1.clone())
    );

    // The old access token is dead, the new one works.
    assert_eq!(get(&fake, "/api/v4/account", &access0).await.status(), 401);
    let account: Value = get(&fake, "/api/v4/account", &access1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(account["id"], 31_000_001);
    assert_eq!(account["subdomain"], "acme");
    assert_eq!(account["name"], "Acme");

    // The rotated refresh token is refused with Kommo's problem and counted as stale.
    let (status, problem) = refresh(&fake, &refresh0).await;
    assert_eq!(status, 400);
    assert_eq!(
        problem,
        json!({"hint":"Token has been revoked","title":"Invalid grant",
               "type":"https://developers.kommo.com/v3/errors/OAuthProblemJson",
               "status":400,"detail":"The refresh token is invalid.",
               "error":"invalid_grant"})
    );
    assert_eq!(fake.stale_refresh_tokens_seen(), 1);
    // An unknown token is refused too but is not "stale".
    assert_eq!(refresh(&fake, "never-issued").await.0, 400);
    assert_eq!(fake.stale_refresh_tokens_seen(), 1);
    let attempts = fake.refresh_attempts();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.accepted, a.stale))
            .collect::<Vec<_>>(),
        vec![(true, false), (false, true), (false, false)]
    );

    // Two overlapping refreshes with the same token: one wins, one is stale.
    let (a, b) = tokio::join!(refresh(&fake, &refresh1), refresh(&fake, &refresh1));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    assert_eq!(fake.stale_refresh_tokens_seen(), 2);
}

#[tokio::test]
async fn expired_access_token_answers_401_until_refreshed() {
    let fake = fake().await;
    let (access, refresh_token) = fake.issue_tokens(HOST);
    fake.expire_access_token(HOST);
    let res = get(&fake, "/api/v4/account", &access).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 401);
    assert_eq!(get(&fake, "/api/v4/account", "nope").await.status(), 401);
    let (status, tokens) = refresh(&fake, &refresh_token).await;
    assert_eq!(status, 200);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(get(&fake, "/api/v4/account", access).await.status(), 200);
}

#[tokio::test]
async fn answers_429_with_retry_after() {
    let fake = fake().await;
    let (access, _) = fake.issue_tokens(HOST);
    fake.fail_next_with_429(HOST, 2, 3);
    for _ in 0..2 {
        let res = get(&fake, "/api/v4/leads/pipelines", &access).await;
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "3");
    }
    let res = get(&fake, "/api/v4/leads/pipelines", &access).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["_total_items"], 2);
    let pipelines = body["_embedded"]["pipelines"].as_array().unwrap();
    assert_eq!(pipelines[0]["id"], 1001);
    assert_eq!(
        pipelines[0]["_embedded"]["statuses"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        pipelines[1]["_embedded"]["statuses"][0]["pipeline_id"],
        1002
    );
}

#[tokio::test]
async fn contacts_come_in_pages_of_250_then_204() {
    let fake = fake().await;
    let (access, _) = fake.issue_tokens(HOST);
    fake.set_contact_count(HOST, 510);
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    for page in 1..=3 {
        let res = get(
            &fake,
            &format!("/api/v4/contacts?limit=250&page={page}"),
            &access,
        )
        .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["_page"], page);
        assert_eq!(body["_links"]["next"].is_object(), page < 3, "page {page}");
        let contacts = body["_embedded"]["contacts"].as_array().unwrap();
        sizes.push(contacts.len());
        ids.extend(contacts.iter().map(|c| c["id"].as_i64().unwrap()));
    }
    assert_eq!(sizes, [250, 250, 10]);
    assert_eq!(ids.first(), Some(&5_000_001));
    assert_eq!(ids.last(), Some(&5_000_510));
    let res = get(&fake, "/api/v4/contacts?limit=250&page=4", &access).await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());

    // The next link points back at the fake and can be followed as is.
    let body: Value = get(&fake, "/api/v4/contacts?limit=250&page=1", &access)
        .await
        .json()
        .await
        .unwrap();
    let next = body["_links"]["next"]["href"].as_str().unwrap();
    let res = reqwest::Client::new()
        .get(next)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["_page"], 2);
    assert_eq!(
        get(&fake, "/api/v4/contacts?limit=251", &access)
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn notes_are_recorded() {
    let fake = fake().await;
    let (access, _) = fake.issue_tokens(HOST);
    let res = reqwest::Client::new()
        .post(format!("{}/api/v4/leads/4242/notes", fake.base_url(HOST)))
        .bearer_auth(&access)
        .json(&json!([{"note_type": "common", "params": {"text": "hello"}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let answered = &body["_embedded"]["notes"][0];
    assert_eq!(answered["entity_id"], 4242);
    assert_eq!(answered["request_id"], "0");
    let notes = fake.notes(HOST);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["note_type"], "common");
    assert_eq!(notes[0]["params"]["text"], "hello");
    assert_eq!(notes[0]["entity_id"], 4242);
    assert_eq!(notes[0]["id"], answered["id"]);

    let recorded = fake.requests_to(HOST, "/api/v4/leads/4242/notes");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].authorization, Some(format!("Bearer {access}")));
    assert!(recorded[0].body.contains("hello"));
}

#[tokio::test]
async fn measures_the_peak_rate() {
    let fake = fake().await;
    fake.add_account("slow.kommo.com", 2);
    let (access, _) = fake.issue_tokens(HOST);
    let url = format!("{}/api/v4/account", fake.base_url(HOST));
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let (url, access) = (url.clone(), access.clone());
            tokio::spawn(async move {
                let res = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(access)
                    .send()
                    .await;
                res.unwrap().status()
            })
        })
        .collect();
    for handle in burst {
        assert_eq!(handle.await.unwrap(), 200);
    }
    assert_eq!(fake.max_requests_in_any_second(HOST), 10);

    let (slow, _) = fake.issue_tokens("slow.kommo.com");
    let client = reqwest::Client::new();
    let url = format!("{}/api/v4/account", fake.base_url("slow.kommo.com"));
    for i in 0..6 {
        if i == 3 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        client.get(&url).bearer_auth(&slow).send().await.unwrap();
    }
    assert_eq!(fake.max_requests_in_any_second("slow.kommo.com"), 3);
    assert_eq!(fake.max_requests_in_any_second(HOST), 10);
}
