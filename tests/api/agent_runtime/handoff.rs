//! Handoff to a person: by the model's tool, by a keyword, after `max_turns`, and by
//! people through the API; the agent is silent until the conversation is resumed. And
//! the `create_task` tool.

use serde_json::{Value, json};

use super::*;

fn delivered(messages: &[Value]) -> usize {
    outbound(messages)
        .iter()
        .filter(|m| m["delivery_status"] == "delivered")
        .count()
}

async fn conversation_path(rt: &Runtime, chat: &str) -> String {
    let id = rt.conversation(chat).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    format!("/v1/orgs/{}/conversations/{id}", rt.org())
}

async fn wait_status(rt: &Runtime, chat: &str, status: &str) -> Value {
    eventually("the conversation's status", PATIENCE, || async {
        let c = rt.conversation(chat).await;
        if c["status"] == status {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await
}

#[tokio::test]
async fn the_handoff_tool_hands_over_until_resumed() {
    let rt = Runtime::start(Options {
        routed: true,
        handbook: true,
        ..Options::default()
    })
    .await;
    rt.incoming(
        "msg-h1",
        "chat-h",
        LEAD,
        r#"I want a discount, a person please [[call:handoff_to_human {"reason":"wants a discount"}]]"#,
    )
    .await
    .expect(200);
    let conversation = wait_status(&rt, "chat-h", "handed_off").await;
    assert_eq!(conversation["handoff_reason"], "wants a discount");
    let (_, messages) = rt
        .messages_when("chat-h", "the last answer is delivered", |m| {
            delivered(m) == 1
        })
        .await;
    let reply = outbound(&messages)[0];
    assert_eq!(
        reply["tool_calls"][0]["name"], "handoff_to_human",
        "{reply}"
    );
    // A task for the lead's responsible user.
    let tasks = rt.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["responsible_user_id"], RESPONSIBLE);
    assert_eq!(tasks[0]["entity_id"], LEAD);
    assert!(
        tasks[0]["text"]
            .as_str()
            .unwrap()
            .contains("wants a discount")
    );
    let mut db = rt.app.admin_db().await;
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'conversation.handoff' AND org_id = $1",
    )
    .bind(rt.org())
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // Silent while handed off.
    rt.incoming("msg-h2", "chat-h", LEAD, "Hello? Anyone?")
        .await
        .expect(200);
    let (_, messages) = rt
        .messages_when("chat-h", "the next message is ignored", |m| {
            m.iter()
                .any(|m| m["text"] == "Hello? Anyone?" && m["delivery_status"] == "ignored")
        })
        .await;
    assert_eq!(delivered(&messages), 1);

    // People hand back: members may not, a second resume is a conflict.
    let path = conversation_path(&rt, "chat-h").await;
    rt.app
        .post(&format!("{path}/resume"), rt.users.member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    let resumed = rt
        .app
        .post(&format!("{path}/resume"), rt.users.admin, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(resumed["status"], "active");
    rt.app
        .post(&format!("{path}/resume"), rt.users.admin, json!({}))
        .await
        .expect_problem(409, "conflict");
    rt.incoming("msg-h3", "chat-h", LEAD, "What about returns?")
        .await
        .expect(200);
    rt.messages_when("chat-h", "answered again", |m| delivered(m) == 2)
        .await;
}

#[tokio::test]
async fn a_handoff_keyword_hands_over_without_asking_the_model() {
    let rt = Runtime::start(Options {
        routed: true,
        agent: json!({"handoff_keywords": ["manager", "оператор"]}),
        ..Options::default()
    })
    .await;
    rt.incoming("msg-k", "chat-k", LEAD, "Позовите ОПЕРАТОР пожалуйста")
        .await
        .expect(200);
    let conversation = wait_status(&rt, "chat-k", "handed_off").await;
    assert!(
        conversation["handoff_reason"]
            .as_str()
            .unwrap()
            .contains("оператор"),
        "{conversation}"
    );
    rt.settled_reply_jobs().await;
    assert!(rt.ai.chat_calls().is_empty());
    assert_eq!(rt.tasks().len(), 1);
    let path = conversation_path(&rt, "chat-k").await;
    // Already handed off: a person's handoff is a conflict.
    rt.app
        .post(
            &format!("{path}/handoff"),
            rt.users.admin,
            json!({"reason": "mine"}),
        )
        .await
        .expect_problem(409, "conflict");
}

#[tokio::test]
async fn after_max_turns_a_person_takes_over() {
    let rt = Runtime::start(Options {
        routed: true,
        agent: json!({"max_turns": 1}),
        ..Options::default()
    })
    .await;
    rt.incoming("msg-t1", "chat-t", LEAD, "First")
        .await
        .expect(200);
    rt.messages_when("chat-t", "the first answer", |m| delivered(m) == 1)
        .await;
    rt.settled_reply_jobs().await;
    rt.incoming("msg-t2", "chat-t", LEAD, "Second")
        .await
        .expect(200);
    let conversation = wait_status(&rt, "chat-t", "handed_off").await;
    assert!(
        conversation["handoff_reason"]
            .as_str()
            .unwrap()
            .contains("max_turns")
    );
    assert_eq!(rt.ai.chat_calls().len(), 1);
}

#[tokio::test]
async fn people_hand_over_through_the_api_and_the_create_task_tool_makes_a_task() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    rt.incoming(
        "msg-ct",
        "chat-ct",
        LEAD,
        r#"Send me a quote [[call:create_task {"text":"Send a quote for 3 pumps","due_in_hours":24}]]"#,
    )
    .await
    .expect(200);
    rt.messages_when("chat-ct", "answered", |m| delivered(m) == 1)
        .await;
    let tasks = rt.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(
        tasks[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Send a quote for 3 pumps")
    );
    assert_eq!(rt.conversation("chat-ct").await["status"], "active");

    let path = conversation_path(&rt, "chat-ct").await;
    rt.app
        .post(&format!("{path}/handoff"), rt.users.member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    rt.app
        .post(
            &format!("{path}/handoff"),
            rt.users.admin,
            json!({"reason": ""}),
        )
        .await
        .expect_problem(422, "validation_failed");
    let handed = rt
        .app
        .post(
            &format!("{path}/handoff"),
            rt.users.admin,
            json!({"reason": "VIP customer"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(handed["status"], "handed_off");
    assert_eq!(handed["handoff_reason"], "VIP customer");
}
