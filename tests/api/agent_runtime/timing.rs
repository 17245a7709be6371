//! Timing: messages within the response delay get one answer; outside working hours the
//! off-hours reply goes at once, or the answer waits for the next opening (a fixed
//! clock stands in for the time of day).

use std::sync::Arc;

use agents_api::agent::schedule::FixedClock;
use agents_api::domain::{JobId, OrgId};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;

fn weekdays_nine_to_six() -> Value {
    json!({
        "timezone": "Europe/Berlin",
        "days": {
            "mon": [["09:00", "18:00"]], "tue": [["09:00", "18:00"]], "wed": [["09:00", "18:00"]],
            "thu": [["09:00", "18:00"]], "fri": [["09:00", "18:00"]],
        },
    })
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a time")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn messages_within_the_response_delay_get_one_answer() {
    let rt = Runtime::start(Options {
        routed: true,
        agent: json!({"response_delay_secs": 2}),
        ..Options::default()
    })
    .await;
    for (i, text) in ["Hi", "I need a delivery", "to Berlin, tomorrow"]
        .iter()
        .enumerate()
    {
        rt.incoming(&format!("msg-d{i}"), "chat-d", LEAD, text)
            .await
            .expect(200);
    }
    let (_, messages) = rt
        .messages_when("chat-d", "one answer for three messages", |m| {
            m.len() == 4 && m.iter().any(|m| m["delivery_status"] == "delivered")
        })
        .await;
    let replies = outbound(&messages);
    assert_eq!(replies.len(), 1, "{messages:?}");
    let inbound: Vec<&Value> = messages.iter().filter(|m| m["direction"] == "in").collect();
    for message in &inbound {
        assert_eq!(message["answered_by"], replies[0]["id"], "{message}");
    }
    assert_eq!(replies[0]["reply_to"], inbound[2]["id"]);
    // The model saw all three.
    let calls = rt.ai.chat_calls();
    assert_eq!(calls.len(), 1);
    let prompt = calls[0].body.to_string();
    assert!(prompt.contains("I need a delivery") && prompt.contains("to Berlin, tomorrow"));
    // The first job waited (deferred) rather than answering the first message alone.
    let jobs = rt.settled_reply_jobs().await;
    assert!(
        jobs.iter()
            .any(|j| j["result"]["deferred_until"].is_string()),
        "{jobs:?}"
    );
}

#[tokio::test]
async fn outside_working_hours_the_off_hours_reply_goes_at_once() {
    // Saturday 03:00 in Berlin.
    let clock = Arc::new(FixedClock::new(at("2026-12-12T02:00:00Z")));
    let rt = Runtime::start(Options {
        routed: true,
        clock: Some(clock),
        agent: json!({
            "working_hours": weekdays_nine_to_six(),
            "off_hours_reply": "We are closed now and will answer on Monday at 9.",
        }),
        ..Options::default()
    })
    .await;
    rt.incoming("msg-o", "chat-o", LEAD, "Are you open?")
        .await
        .expect(200);
    let (_, messages) = rt
        .messages_when("chat-o", "the off-hours reply", |m| {
            m.iter().any(|m| m["delivery_status"] == "delivered")
        })
        .await;
    let reply = outbound(&messages)[0];
    assert_eq!(reply["kind"], "off_hours");
    assert_eq!(
        reply["text"],
        "We are closed now and will answer on Monday at 9."
    );
    // A retried attempt may route again (and clear the notice) before it finds the
    // reply already sent and says so again: wait for the settled notice.
    eventually("the conversation says why", PATIENCE, || async {
        let c = rt.conversation("chat-o").await;
        c["notice"]
            .as_str()
            .is_some_and(|n| n.contains("off-hours"))
            .then_some(())
    })
    .await;
    assert_eq!(rt.notes().len(), 1);
    assert!(rt.ai.chat_calls().is_empty(), "no model call outside hours");
}

#[tokio::test]
async fn outside_working_hours_the_answer_waits_for_the_next_opening() {
    let clock = Arc::new(FixedClock::new(at("2026-12-12T02:00:00Z")));
    let rt = Runtime::start(Options {
        routed: true,
        clock: Some(clock.clone()),
        agent: json!({"working_hours": weekdays_nine_to_six()}),
        ..Options::default()
    })
    .await;
    rt.incoming("msg-w", "chat-w", LEAD, "Are you open?")
        .await
        .expect(200);
    // Monday 09:00 in Berlin (CET, UTC+1) is 08:00 UTC.
    let conversation = eventually("the answer is scheduled", PATIENCE, || async {
        let c = rt.conversation("chat-w").await;
        (c["reply_due_at"] == "2026-12-14T08:00:00Z").then_some(c)
    })
    .await;
    assert!(
        conversation["notice"]
            .as_str()
            .unwrap()
            .contains("working hours"),
        "{conversation}"
    );
    let detail = rt.detail(conversation["id"].as_str().unwrap()).await;
    assert_eq!(
        outbound(detail["messages"]["data"].as_array().unwrap()).len(),
        0
    );

    // Monday morning: the waiting job becomes due, and the lead gets the answer.
    clock.set(at("2026-12-14T08:00:05Z"));
    let mut db = rt.app.admin_db().await;
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE jobs SET run_after = now() WHERE type = 'agent:reply' AND status = 'queued'
         RETURNING id",
    )
    .fetch_all(&mut db)
    .await
    .expect("make the waiting job due");
    assert_eq!(waiting.len(), 1);
    // Redis still holds it as due on Monday; a second push is harmless (one claim wins).
    rt.app
        .state
        .jobs
        .enqueue_committed(JobId(waiting[0]), OrgId(rt.org()), "agent:reply")
        .await;
    rt.messages_when("chat-w", "answered at the opening", |m| {
        m.iter().any(|m| m["delivery_status"] == "delivered")
    })
    .await;
    assert_eq!(rt.ai.chat_calls().len(), 1);
}
