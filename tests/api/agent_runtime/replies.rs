//! Answers: a routed lead answered with the org's knowledge, as a note and in the chat;
//! duplicates, unrouted stages and inactive agents; provider outages; the token quota;
//! two replicas.

use serde_json::{Value, json};

use super::*;

fn answered(messages: &[Value]) -> bool {
    outbound(messages)
        .iter()
        .any(|m| m["delivery_status"] == "delivered")
}

#[tokio::test]
async fn a_routed_lead_gets_an_answer_quoting_the_document_as_a_note_on_the_lead() {
    let rt = Runtime::start(Options {
        routed: true,
        handbook: true,
        ..Options::default()
    })
    .await;
    rt.incoming("msg-1", "chat-1", LEAD, "How much is delivery to Berlin?")
        .await
        .expect(200);
    let (detail, messages) = rt
        .messages_when("chat-1", "the lead is answered", answered)
        .await;
    assert_eq!(detail["status"], "active", "{detail}");
    assert_eq!(detail["agent_id"], rt.agent["id"]);
    assert_eq!(detail["lead_id"], LEAD);
    assert_eq!(detail["origin"], "telegram");
    assert_eq!(
        detail["lead"]["status_id"], STAGE,
        "the lead as Kommo showed it"
    );
    assert_eq!(messages.len(), 2, "{messages:?}");
    let (inbound, reply) = (&messages[0], &messages[1]);
    assert_eq!(inbound["direction"], "in");
    assert_eq!(inbound["text"], "How much is delivery to Berlin?");
    assert_eq!(inbound["author"], "Ivan");
    assert_eq!(inbound["delivery_status"], "answered");
    assert_eq!(inbound["answered_by"], reply["id"]);
    assert_eq!(reply["reply_to"], inbound["id"]);
    let text = reply["text"].as_str().unwrap();
    assert!(
        text.contains("Delivery to Berlin costs 5 euros"),
        "quotes the handbook: {text}"
    );
    assert_eq!(reply["kind"], "reply");
    assert_eq!(reply["model"], "gpt-4o-mini");
    assert!(reply["tokens_in"].as_i64().unwrap() > 0, "{reply}");
    assert!(reply["tokens_out"].as_i64().unwrap() > 0, "{reply}");
    assert!(reply["latency_ms"].as_i64().is_some(), "{reply}");
    assert_eq!(reply["sources"][0]["filename"], "handbook.txt", "{reply}");
    assert!(reply["delivery"]["note_id"].as_i64().is_some(), "{reply}");

    // The note on the lead carries the answer.
    let notes = rt.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["entity_id"], LEAD, "{notes:?}");
    assert_eq!(notes[0]["note_type"], "common");
    assert!(
        notes[0]["params"]["text"]
            .as_str()
            .unwrap()
            .contains("Delivery to Berlin costs 5 euros")
    );
    // The model saw the instructions, the lead's facts, the passage and the message.
    let calls: Vec<String> = rt
        .ai
        .chat_calls()
        .iter()
        .map(|c| c.body.to_string())
        .filter(|c| c.contains("handoff_to_human"))
        .collect();
    assert_eq!(calls.len(), 1, "one answer asked of the model");
    let call = &calls[0];
    for expected in [
        "You sell delivery services for Acme.",
        "City: Berlin",
        "Delivery to Berlin costs 5 euros",
        "How much is delivery to Berlin?",
        "handoff_to_human",
        "create_task",
    ] {
        assert!(call.contains(expected), "{expected} in {call}");
    }
    // Usage is recorded as `reply`.
    let usage = rt
        .app
        .get(&format!("/v1/orgs/{}/usage", rt.org()), rt.users.admin)
        .await
        .expect(200)
        .body;
    assert!(usage.to_string().contains("\"reply\""), "{usage}");
}

#[tokio::test]
async fn the_same_message_delivered_twice_is_answered_once() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    let body = incoming_body("msg-dup", "chat-dup", LEAD, "Hello?");
    rt.post_webhook(&body).await.expect(200);
    // The same message in another delivery (Kommo retries with a new body).
    rt.post_webhook(&format!("{body}&retry=1"))
        .await
        .expect(200);
    rt.messages_when("chat-dup", "answered", answered).await;
    rt.settled_reply_jobs().await;
    let (_, messages) = rt
        .messages_when("chat-dup", "settled", |m| m.len() == 2)
        .await;
    assert_eq!(
        messages.iter().filter(|m| m["direction"] == "in").count(),
        1
    );
    assert_eq!(outbound(&messages).len(), 1);
    assert_eq!(rt.notes().len(), 1);
}

#[tokio::test]
async fn an_unrouted_stage_or_an_inactive_agent_is_recorded_without_an_answer() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    rt.kommo.set_lead(&rt.domain, lead(LEAD + 1, OTHER_STAGE));
    rt.incoming("msg-u", "chat-u", LEAD + 1, "Anyone there?")
        .await
        .expect(200);
    let (detail, messages) = rt
        .messages_when("chat-u", "the message is ignored", |m| {
            m.first().is_some_and(|m| m["delivery_status"] == "ignored")
        })
        .await;
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0]["error"]
            .as_str()
            .unwrap()
            .contains("no active agent"),
        "{messages:?}"
    );
    assert!(
        detail["notice"]
            .as_str()
            .unwrap()
            .contains("no active agent"),
        "{detail}"
    );

    // The routed stage, with the agent inactive: silent too.
    rt.app
        .post(
            &format!("/v1/orgs/{}/agents/{}/status", rt.org(), rt.agent_id()),
            rt.users.admin,
            json!({"status": "inactive"}),
        )
        .await
        .expect(200);
    rt.incoming("msg-i", "chat-i", LEAD, "Hello?")
        .await
        .expect(200);
    rt.messages_when("chat-i", "ignored", |m| {
        m.first().is_some_and(|m| m["delivery_status"] == "ignored")
    })
    .await;
    rt.settled_reply_jobs().await;
    assert!(rt.ai.chat_calls().is_empty(), "the model was never asked");
    assert!(rt.notes().is_empty());
}

#[tokio::test]
async fn provider_failures_are_retried_and_the_answer_goes_once() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    // Three calls per attempt fail (the call and its two retries), then two more.
    rt.ai.fail_next(5, 500, None);
    rt.incoming("msg-r", "chat-r", LEAD, "Do you deliver on Sundays?")
        .await
        .expect(200);
    rt.messages_when("chat-r", "answered after the outage", answered)
        .await;
    let jobs = rt.settled_reply_jobs().await;
    let attempts: Vec<i64> = jobs
        .iter()
        .map(|j| j["attempts"].as_i64().unwrap())
        .collect();
    assert!(attempts.iter().any(|a| *a > 1), "retried: {jobs:?}");
    assert_eq!(rt.notes().len(), 1);

    // A provider that stays down fails the job visibly, and the message stays unanswered.
    rt.ai.fail_next(10_000, 500, None);
    rt.incoming("msg-r2", "chat-r2", LEAD, "Still there?")
        .await
        .expect(200);
    let failed = eventually("the reply job fails", PATIENCE, || async {
        let page = rt
            .app
            .get(
                &format!("/v1/orgs/{}/jobs?type=agent:reply&status=failed", rt.org()),
                rt.users.admin,
            )
            .await
            .expect(200)
            .body;
        page["data"].as_array().and_then(|j| j.first().cloned())
    })
    .await;
    assert!(
        failed["error"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    let (_, messages) = rt
        .messages_when("chat-r2", "one message", |m| m.len() == 1)
        .await;
    assert_eq!(messages[0]["delivery_status"], "received");
    assert_eq!(rt.notes().len(), 1);
}

#[tokio::test]
async fn over_the_daily_token_quota_the_agent_stops_and_says_why() {
    let rt = Runtime::start(Options {
        routed: true,
        extra_env: vec![("AI_DAILY_TOKEN_QUOTA", "1".into())],
        ..Options::default()
    })
    .await;
    rt.incoming("msg-q1", "chat-q", LEAD, "First question")
        .await
        .expect(200);
    rt.messages_when("chat-q", "the first is answered", answered)
        .await;
    rt.settled_reply_jobs().await;
    rt.incoming("msg-q2", "chat-q", LEAD, "Second question")
        .await
        .expect(200);
    let (detail, messages) = rt
        .messages_when("chat-q", "the second is refused", |m| {
            m.iter().any(|m| m["delivery_status"] == "ignored")
        })
        .await;
    let refused = messages
        .iter()
        .find(|m| m["text"] == "Second question")
        .unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("quota"),
        "{refused}"
    );
    assert!(
        detail["notice"].as_str().unwrap().contains("quota"),
        "{detail}"
    );
    assert_eq!(outbound(&messages).len(), 1);
    assert_eq!(rt.ai.chat_calls().len(), 1);
}

#[tokio::test]
async fn with_a_chats_channel_the_answer_goes_into_the_chat_too() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    let path = format!(
        "/v1/orgs/{}/crm/connections/{}/chat-channel",
        rt.org(),
        rt.connection
    );
    rt.app
        .get(&path, rt.users.admin)
        .await
        .expect_problem(404, "not_found");
    let channel = json!({"scope_id": "chan_42-amojo", "secret": "chat-secret-value", "bot_id": "bot-1", "bot_name": "Anna"});
    rt.app
        .put(&path, rt.users.member, channel.clone())
        .await
        .expect_problem(403, "forbidden");
    rt.app
        .put(&path, rt.users.admin, json!({"scope_id": "../x", "secret": "chat-secret-value", "bot_id": "b", "bot_name": "n"}))
        .await
        .expect_problem(422, "validation_failed");
    let stored = rt
        .app
        .put(&path, rt.users.admin, channel)
        .await
        .expect(200)
        .body;
    assert_eq!(stored["secret_configured"], true);
    assert!(!stored.to_string().contains("chat-secret-value"));
    rt.kommo
        .register_chat_channel("chan_42-amojo", "chat-secret-value");

    rt.incoming("msg-c", "chat-c", LEAD, "Can you deliver tomorrow?")
        .await
        .expect(200);
    let (_, messages) = rt.messages_when("chat-c", "answered", answered).await;
    let reply = outbound(&messages)[0].clone();
    let sent = rt.kommo.chat_messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let payload = sent[0].clone();
    assert_eq!(payload["conversation_id"], "chat-c", "{payload}");
    assert_eq!(payload["msgid"], reply["id"], "{payload}");
    assert_eq!(payload["message"]["text"], reply["text"], "{payload}");
    assert!(reply["delivery"]["chat_msgid"].is_string(), "{reply}");
    assert_eq!(rt.notes().len(), 1, "the note goes as well");

    rt.app.delete(&path, rt.users.admin).await.expect(204);
    rt.app
        .get(&path, rt.users.admin)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn two_replicas_receiving_the_same_message_answer_once() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    let other = rt.app.replica(true).await;
    let body = incoming_body("msg-2r", "chat-2r", LEAD, "Which replica answers?");
    let send = |app: &TestApp, body: String| {
        let request = app
            .client
            .post(app.url(&rt.webhook_path))
            .header("user-agent", "amoCRM-Webhooks/3.0")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        async move { request.send().await.expect("webhook").status().as_u16() }
    };
    let (a, b) = tokio::join!(
        send(&rt.app, body.clone()),
        send(&other, format!("{body}&via=replica-2"))
    );
    assert_eq!((a, b), (200, 200));
    rt.messages_when("chat-2r", "answered", answered).await;
    rt.settled_reply_jobs().await;
    let (_, messages) = rt
        .messages_when("chat-2r", "settled", |m| m.len() == 2)
        .await;
    assert_eq!(outbound(&messages).len(), 1);
    assert_eq!(rt.notes().len(), 1);
    assert_eq!(rt.ai.chat_calls().len(), 1);
}

#[tokio::test]
async fn an_empty_answer_is_never_sent_and_the_model_is_asked_again() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    rt.ai
        .push_answer(crate::support::fake_ai::Answer::Text(String::new()));
    rt.incoming("msg-e", "chat-e", LEAD, "Hello?")
        .await
        .expect(200);
    let (_, messages) = rt.messages_when("chat-e", "answered", answered).await;
    let reply = outbound(&messages)[0];
    assert!(!reply["text"].as_str().unwrap().is_empty(), "{reply}");
    let jobs = rt.settled_reply_jobs().await;
    assert!(
        jobs.iter().any(|j| j["attempts"].as_i64() == Some(2)),
        "{jobs:?}"
    );
    assert_eq!(rt.notes().len(), 1);
}
