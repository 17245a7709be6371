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

#[tokio::test]
async fn leads_are_answered_whole_or_with_204() {
    let fake = fake().await;
    let (access, _) = fake.issue_tokens(HOST);
    fake.set_lead(
        HOST,
        json!({"id": 4242, "name": "Deal", "price": 1500, "pipeline_id": 1002,
               "status_id": 2, "responsible_user_id": 6_000_002,
               "custom_fields_values": null}),
    );
    let res = get(&fake, "/api/v4/leads/4242", &access).await;
    assert_eq!(res.status(), 200);
    let lead: Value = res.json().await.unwrap();
    assert_eq!(
        (
            &lead["id"],
            &lead["name"],
            &lead["pipeline_id"],
            &lead["status_id"]
        ),
        (&json!(4242), &json!("Deal"), &json!(1002), &json!(2))
    );
    assert_eq!(lead["responsible_user_id"], 6_000_002);
    assert_eq!(lead["account_id"], 31_000_001);
    assert!(lead["custom_fields_values"].is_null());
    assert!(
        lead["_links"]["self"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/api/v4/leads/4242")
    );

    let res = get(&fake, "/api/v4/leads/4243", &access).await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());
    assert_eq!(get(&fake, "/api/v4/leads/4242", "nope").await.status(), 401);
    fake.fail_next_with_429(HOST, 1, 1);
    assert_eq!(
        get(&fake, "/api/v4/leads/4242", &access).await.status(),
        429
    );
    assert_eq!(
        get(&fake, "/api/v4/leads/4242", &access).await.status(),
        200
    );
}

#[tokio::test]
async fn tasks_are_stored_and_listed_by_lead() {
    let fake = fake().await;
    let (access, _) = fake.issue_tokens(HOST);
    let post = |body: Value| {
        reqwest::Client::new()
            .post(format!("{}/api/v4/tasks", fake.base_url(HOST)))
            .bearer_auth(&access)
            .json(&body)
            .send()
    };
    let mut ids = Vec::new();
    for (lead, text) in [(4242, "call back"), (4242, "send offer"), (77, "other")] {
        let res = post(json!([{"text": text, "complete_till": 1_800_000_000,
                                "entity_id": lead, "entity_type": "leads",
                                "task_type_id": 1}]))
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["_embedded"]["tasks"][0]["request_id"], "0");
        ids.push(body["_embedded"]["tasks"][0]["id"].as_i64().unwrap());
    }
    assert_eq!(ids, [8_000_001, 8_000_002, 8_000_003]);
    let missing_text = post(json!([{"complete_till": 1_800_000_000}]))
        .await
        .unwrap();
    assert_eq!(missing_text.status(), 400);

    let res = get(
        &fake,
        "/api/v4/tasks?filter[entity_type]=leads&filter[entity_id][]=4242&limit=250&order[id]=desc",
        &access,
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let listed: Vec<(i64, &str)> = body["_embedded"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [(8_000_002, "send offer"), (8_000_001, "call back")]
    );
    assert_eq!(body["_embedded"]["tasks"][0]["is_completed"], false);

    let none = get(&fake, "/api/v4/tasks?filter[entity_id][]=5", &access).await;
    assert_eq!(none.status(), 204);
    let tasks = fake.tasks(HOST);
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[2]["entity_id"], 77);
    assert_eq!(tasks[2]["id"], 8_000_003);
}

const SCOPE: &str = "f90ba33d-c9d9-44da_b3f6";
const CHAT_SECRET: &str = "chan-secret-0123";

/// A Chats API request signed as its documentation says, independently of the client.
async fn chat_post(fake: &FakeKommo, scope: &str, secret: &str, body: &Value) -> reqwest::Response {
    use hmac::{KeyInit, Mac};
    let body = body.to_string();
    let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes()));
    let date = "Thu, 01 Jan 2026 12:00:00 +0000";
    let path = format!("/v2/origin/custom/{scope}");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("POST\n{md5}\napplication/json\n{date}\n{path}").as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    reqwest::Client::new()
        .post(format!("{}{path}", fake.chats_base_url()))
        .header("Date", date)
        .header("Content-Type", "application/json")
        .header("Content-MD5", md5)
        .header("X-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn chat_event(msgid: &str, text: &str) -> Value {
    json!({"event_type": "new_message", "payload": {
        "timestamp": 1_767_268_800, "msec_timestamp": 1_767_268_800_000_i64,
        "msgid": msgid, "conversation_id": "chat-1",
        "sender": {"id": "bot-1", "name": "Ana"},
        "message": {"type": "text", "text": text}, "silent": false}})
}

#[tokio::test]
async fn chat_messages_are_verified_and_stored_once() {
    let fake = fake().await;
    fake.register_chat_channel(SCOPE, CHAT_SECRET);
    let res = chat_post(&fake, SCOPE, CHAT_SECRET, &chat_event("m-1", "Hello")).await;
    assert_eq!(res.status(), 200);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["new_message"]["ref_id"], "m-1");
    assert_eq!(first["new_message"]["conversation_id"], "chat-1");
    let amojo_id = first["new_message"]["msgid"].as_str().unwrap();
    assert_ne!(amojo_id, "m-1");

    // A resend of the same msgid is answered alike and stored once.
    let again: Value = chat_post(&fake, SCOPE, CHAT_SECRET, &chat_event("m-1", "Hello"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, first);
    let messages = fake.chat_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message"]["text"], "Hello");
    assert_eq!(messages[0]["msgid"], "m-1");

    let wrong = chat_post(&fake, SCOPE, "wrong", &chat_event("m-2", "x")).await;
    assert_eq!(wrong.status(), 401);
    let unknown = chat_post(&fake, "other", CHAT_SECRET, &chat_event("m-3", "x")).await;
    assert_eq!(unknown.status(), 404);
    let not_text = chat_post(&fake, SCOPE, CHAT_SECRET, &json!({"event_type": "typing"})).await;
    assert_eq!(not_text.status(), 400);
    let tampered = reqwest::Client::new()
        .post(format!(
            "{}/v2/origin/custom/{SCOPE}",
            fake.chats_base_url()
        ))
        .header("Content-Type", "application/json")
        .header("Content-MD5", "0".repeat(32))
        .body(chat_event("m-4", "x").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 400);
    assert_eq!(fake.chat_messages().len(), 1);
}

/// The service's own client against the fake: what it reads, writes and signs is what
/// the fake (and Kommo) accept.
mod real_client {
    use std::sync::Arc;

    use agents_api::kommo::{ChatChannel, Kommo, KommoError, LeadField, NewTask};
    use secrecy::SecretString;

    use super::*;
    use crate::support::app::{admin_url, base_env_on, config_from};

    fn kommo(fake: &FakeKommo) -> Kommo {
        let mut env = base_env_on(&admin_url(), "unused");
        env.insert("KOMMO_BASE_URL".into(), fake.base_url_template.clone());
        env.insert("KOMMO_CHATS_BASE_URL".into(), fake.chats_base_url());
        env.insert(
            "REDIS_KEY_PREFIX".into(),
            format!("fake-kommo-{}:", uuid::Uuid::new_v4()),
        );
        let config = config_from(&env);
        let redis = agents_api::redis_conn::RedisConn::new(&config).unwrap();
        Kommo::new(Arc::new(config), redis).unwrap()
    }

    fn channel(secret: &str) -> ChatChannel {
        ChatChannel {
            scope_id: SCOPE.into(),
            secret: SecretString::from(secret),
            bot_id: "bot-1".into(),
            bot_name: "Sales bot".into(),
        }
    }

    #[tokio::test]
    async fn reads_a_lead_or_none() {
        let fake = fake().await;
        let (access, _) = fake.issue_tokens(HOST);
        fake.set_lead(
            HOST,
            json!({"id": 4242, "name": "Deal", "price": null, "pipeline_id": 1002,
            "status_id": 2, "responsible_user_id": 6_000_002,
            "custom_fields_values": [
                {"field_id": 1, "field_name": "Budget", "field_type": "numeric",
                 "values": [{"value": 1500}]},
                {"field_id": 2, "field_name": "Channels", "field_type": "multiselect",
                 "values": [{"value": "WhatsApp", "enum_id": 3},
                            {"value": "Email", "enum_id": 4}]},
                {"field_id": 3, "field_name": "Empty", "values": [{"value": ""}]},
            ]}),
        );
        fake.set_lead(
            HOST,
            json!({"id": 4243, "name": "Bare", "price": 10, "pipeline_id": 1001,
                   "status_id": 1, "responsible_user_id": null, "custom_fields_values": null}),
        );
        let client = kommo(&fake).client;

        let lead = client.lead(HOST, &access, 4242).await.unwrap().unwrap();
        assert_eq!(
            (
                lead.id,
                lead.name.as_str(),
                lead.pipeline_id,
                lead.status_id
            ),
            (4242, "Deal", 1002, 2)
        );
        assert_eq!(
            (lead.responsible_user_id, lead.price),
            (Some(6_000_002), None)
        );
        let field = |name: &str, value: &str| LeadField {
            name: name.into(),
            value: value.into(),
        };
        assert_eq!(
            lead.custom_fields,
            [
                field("Budget", "1500"),
                field("Channels", "WhatsApp, Email")
            ]
        );
        // It round-trips as the JSON a conversation stores.
        let stored = serde_json::to_value(&lead).unwrap();
        let back: agents_api::kommo::Lead = serde_json::from_value(stored).unwrap();
        assert_eq!(back.custom_fields, lead.custom_fields);

        let bare = client.lead(HOST, &access, 4243).await.unwrap().unwrap();
        assert_eq!((bare.responsible_user_id, bare.price), (None, Some(10)));
        assert!(bare.custom_fields.is_empty());
        assert!(client.lead(HOST, &access, 1).await.unwrap().is_none());
        assert!(matches!(
            client.lead(HOST, "stale", 4242).await,
            Err(KommoError::Unauthorized)
        ));
    }

    #[tokio::test]
    async fn creates_a_task_and_finds_it_again() {
        let fake = fake().await;
        let (access, _) = fake.issue_tokens(HOST);
        let client = kommo(&fake).client;
        assert!(
            client
                .lead_tasks(HOST, &access, 4242)
                .await
                .unwrap()
                .is_empty()
        );

        let mut task = NewTask {
            text: "Call the client back\n[agent:task 1]".into(),
            complete_till: 1_800_000_000,
            lead_id: 4242,
            responsible_user_id: None,
        };
        let id = client.add_task(HOST, &access, &task).await.unwrap();
        assert_eq!(id, Some(8_000_001));
        task.responsible_user_id = Some(6_000_002);
        task.text = "Second".into();
        client.add_task(HOST, &access, &task).await.unwrap();

        let tasks = fake.tasks(HOST);
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0]["entity_type"], "leads");
        assert_eq!(tasks[0]["entity_id"], 4242);
        assert_eq!(tasks[0]["task_type_id"], 1);
        assert_eq!(tasks[0]["complete_till"], 1_800_000_000);
        assert!(tasks[0].get("responsible_user_id").is_none());
        assert_eq!(tasks[1]["responsible_user_id"], 6_000_002);

        let listed = client.lead_tasks(HOST, &access, 4242).await.unwrap();
        let texts: Vec<&str> = listed.iter().map(|t| t["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["Second", "Call the client back\n[agent:task 1]"]);
        assert!(
            client
                .lead_tasks(HOST, &access, 77)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn signs_chat_messages_that_the_chats_api_accepts() {
        let fake = fake().await;
        fake.register_chat_channel(SCOPE, CHAT_SECRET);
        let client = kommo(&fake).client;

        let sent = client
            .send_chat_message(&channel(CHAT_SECRET), "chat-1", "m-1", "Ana", "Hello!")
            .await
            .unwrap();
        let messages = fake.chat_messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["msgid"], "m-1");
        assert_eq!(messages[0]["conversation_id"], "chat-1");
        assert_eq!(messages[0]["sender"], json!({"id": "bot-1", "name": "Ana"}));
        assert_eq!(
            messages[0]["message"],
            json!({"type": "text", "text": "Hello!"})
        );
        assert_eq!(messages[0]["silent"], false);
        assert!(sent.as_deref().is_some_and(|id| id != "m-1"), "{sent:?}");

        // A retry with the same msgid gets the same id and posts nothing new; an empty
        // sender name falls back to the bot's.
        let again = client
            .send_chat_message(&channel(CHAT_SECRET), "chat-1", "m-1", "Ana", "Hello!")
            .await
            .unwrap();
        assert_eq!(again, sent);
        client
            .send_chat_message(&channel(CHAT_SECRET), "chat-1", "m-2", " ", "Hi")
            .await
            .unwrap();
        let messages = fake.chat_messages();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["sender"]["name"], "Sales bot");

        let refused = client
            .send_chat_message(&channel("wrong"), "chat-1", "m-3", "Ana", "x")
            .await
            .unwrap_err();
        assert!(
            matches!(refused, KommoError::Status { status: 401, .. }),
            "{refused:?}"
        );
        assert!(refused.is_permanent());

        let requests = fake.requests().len();
        let mut bad = channel(CHAT_SECRET);
        bad.scope_id = "../../api/v4/account".into();
        let err = client
            .send_chat_message(&bad, "chat-1", "m-4", "Ana", "x")
            .await
            .unwrap_err();
        assert!(matches!(err, KommoError::InvalidChannel(_)), "{err:?}");
        assert_eq!(fake.requests().len(), requests, "nothing was sent");
        assert_eq!(fake.chat_messages().len(), 2);
    }
}
