//! Live events (`GET /v1/orgs/{org_id}/events`, issue 18): an event made on one replica
//! reaches a stream held by another, `Last-Event-ID` replays exactly what was missed,
//! every event carries an id, heartbeats arrive, the stream ends when the token expires
//! and when the server drains, and the refusals: no token, another org, too many streams.
//! The process's subscription stays up under a flood and is replaced when it goes silent.
//!
//! Streams are read frame by frame; waits are generous and nothing asserts a duration.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use agents_api::domain::OrgId;
use agents_api::events::hub::Subscription;
use agents_api::events::{Hub, stream_key};
use agents_api::redis_conn::RedisConn;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::knowledge::upload;
use crate::support::app::{
    JWT_SECRET, OrgUsers, TestApp, base_env, claims_for, config_from, eventually, into_response,
    redis_url, sign_hs256,
};
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::logs::Captured;

const PATIENCE: Duration = Duration::from_secs(30);

fn events_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/events")
}

/// One server-sent event, or a comment (`event` and `id` empty).
#[derive(Debug, Clone, Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comments: Vec<String>,
}

impl Frame {
    fn is_event(&self) -> bool {
        self.event.is_some() || !self.data.is_empty()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// An open stream, read frame by frame.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    /// The next frame; `None` when the stream ended. Panics after `PATIENCE` of silence.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream stays silent")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// The next event, skipping comments (heartbeats).
    async fn event(&mut self) -> Frame {
        loop {
            let frame = self.frame().await.expect("an event before the stream ends");
            if frame.is_event() {
                return frame;
            }
        }
    }

    /// Events until `done` holds for one (included).
    async fn events_until(&mut self, done: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut seen = Vec::new();
        loop {
            let frame = self.event().await;
            let stop = done(&frame);
            seen.push(frame);
            if stop {
                return seen;
            }
        }
    }

    /// Reads to the end; the comments of the last frames.
    async fn until_end(&mut self) -> Vec<String> {
        let mut comments = Vec::new();
        while let Some(frame) = self.frame().await {
            comments.extend(frame.comments);
        }
        comments
    }
}

fn parse(block: &str) -> Frame {
    let mut frame = Frame::default();
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim_start().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    frame
}

async fn connect(app: &TestApp, org: Uuid, token: &str, last: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&events_path(org)))
        .bearer_auth(token);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    request.send().await.expect("connect")
}

/// A stream that opened (200, `text/event-stream`).
async fn open(app: &TestApp, org: Uuid, token: &str, last: Option<&str>) -> Stream {
    let response = connect(app, org, token, last).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    Stream {
        response,
        buffer: String::new(),
    }
}

/// A token for `user` that expires `secs` from now.
fn token_expiring_in(user: Uuid, secs: i64) -> String {
    let mut claims = claims_for(user);
    claims["exp"] = json!(claims["iat"].as_i64().unwrap() + secs);
    sign_hs256(&claims, JWT_SECRET)
}

async fn enqueue(app: &TestApp, org: Uuid, admin: Uuid) -> String {
    let job = app
        .post(
            &format!("/v1/orgs/{org}/jobs"),
            admin,
            json!({"type": "test:sleep", "millis": 1}),
        )
        .await
        .expect(202)
        .body;
    job["id"].as_str().unwrap().to_owned()
}

async fn wait_succeeded(app: &TestApp, org: Uuid, user: Uuid, job_id: &str) {
    let path = format!("/v1/orgs/{org}/jobs/{job_id}");
    eventually("the job succeeds", PATIENCE, || async {
        let job = app.get(&path, user).await.expect(200).body;
        (job["status"] == "succeeded")
            .then_some(())
            .ok_or(job.to_string())
    })
    .await;
}

fn is_job(frame: &Frame, job_id: &str, status: &str) -> bool {
    let data = frame.json();
    frame.event.as_deref() == Some("job") && data["job_id"] == job_id && data["status"] == status
}

/// Ids as the server sent them, checked to be present and increasing.
fn assert_ids_increase(frames: &[Frame]) {
    let mut last = (0u64, 0u64);
    for frame in frames {
        let id = frame
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("no id: {frame:?}"));
        let (ms, seq) = id.split_once('-').expect("ms-seq");
        let id = (ms.parse().unwrap(), seq.parse().unwrap());
        assert!(id > last, "ids must increase: {frames:?}");
        last = id;
    }
}

#[tokio::test]
async fn an_event_made_on_one_replica_arrives_on_a_stream_held_by_another() {
    let a = TestApp::builder().with_jobs().spawn().await;
    let b = a.replica(false).await;
    let OrgUsers {
        org, admin, member, ..
    } = a.org_with_roles().await;
    let mut stream = open(&b, org, &b.token(member), None).await;

    // Created through replica A, run by A's workers: B runs no jobs at all.
    let job_id = enqueue(&a, org, admin).await;
    let seen = stream
        .events_until(|f| is_job(f, &job_id, "succeeded"))
        .await;
    let statuses: Vec<String> = seen
        .iter()
        .filter(|f| f.json()["job_id"] == job_id.as_str())
        .map(|f| f.json()["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(statuses, ["queued", "running", "succeeded"], "{seen:?}");
    assert_ids_increase(&seen);
    let data = seen.last().unwrap().json();
    assert_eq!(data["type"], "test:sleep");
    assert_eq!(data["attempts"], 1);
}

#[tokio::test]
async fn an_upload_on_one_replica_shows_its_progress_on_another() {
    let a = TestApp::builder().with_jobs().spawn().await;
    let b = a.replica(false).await;
    let OrgUsers {
        org, admin, member, ..
    } = a.org_with_roles().await;
    let mut stream = open(&b, org, &b.token(member), None).await;
    let uploaded = upload(&a, org, admin, "faq.txt", b"Delivery takes two days.\n")
        .await
        .expect(202)
        .body;
    let asset_id = uploaded["asset"]["id"].as_str().unwrap().to_owned();
    let seen = stream
        .events_until(|f| {
            f.event.as_deref() == Some("asset")
                && f.json()["asset_id"] == asset_id.as_str()
                && f.json()["status"] == "indexed"
        })
        .await;
    let assets: Vec<Value> = seen
        .iter()
        .filter(|f| f.event.as_deref() == Some("asset"))
        .map(Frame::json)
        .collect();
    assert_eq!(
        assets.first().map(|a| a["status"].clone()),
        Some(json!("queued")),
        "{assets:?}"
    );
    assert!(
        assets.iter().any(|a| a["status"] == "processing"),
        "{assets:?}"
    );
    let indexed = assets.last().unwrap();
    assert_eq!(indexed["done"], indexed["total"]);
    assert_ids_increase(&seen);
}

#[tokio::test]
async fn resuming_with_last_event_id_replays_exactly_the_missed_events() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let token = app.token(member);

    let mut stream = open(&app, org, &token, None).await;
    let first = enqueue(&app, org, admin).await;
    let before = stream
        .events_until(|f| is_job(f, &first, "succeeded"))
        .await;
    let last_id = before.last().unwrap().id.clone().unwrap();
    drop(stream);

    // Missed while disconnected.
    let missed = [
        enqueue(&app, org, admin).await,
        enqueue(&app, org, admin).await,
    ];
    for job in &missed {
        wait_succeeded(&app, org, member, job).await;
    }

    let mut resumed = open(&app, org, &token, Some(&last_id)).await;
    // Then one made after the reconnect, which must come once, after the replay.
    let after = enqueue(&app, org, admin).await;
    let seen = resumed
        .events_until(|f| is_job(f, &after, "succeeded"))
        .await;
    assert_ids_increase(&seen);
    let ids: HashSet<&str> = seen.iter().filter_map(|f| f.id.as_deref()).collect();
    assert_eq!(ids.len(), seen.len(), "no event twice: {seen:?}");
    let jobs: Vec<(String, String)> = seen
        .iter()
        .map(|f| {
            let data = f.json();
            (
                data["job_id"].as_str().unwrap_or_default().to_owned(),
                data["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for job in missed.iter().chain([&after]) {
        for status in ["queued", "running", "succeeded"] {
            expected.push((job.clone(), status.to_owned()));
        }
    }
    // The missed jobs ran one after the other; each job's own events are in order, and
    // nothing of the first job (seen before) comes again.
    let mut sorted = jobs.clone();
    sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted, "{seen:?}");
    for job in missed.iter().chain([&after]) {
        let order: Vec<&str> = jobs
            .iter()
            .filter(|(id, _)| id == job)
            .map(|(_, status)| status.as_str())
            .collect();
        assert_eq!(order, ["queued", "running", "succeeded"]);
    }
    // The replayed events come before the live one's.
    let first_live = jobs.iter().position(|(id, _)| id == &after).unwrap();
    assert!(jobs[..first_live].iter().all(|(id, _)| missed.contains(id)));
    assert_eq!(first_live, 6);
}

#[tokio::test]
async fn an_id_older_than_what_is_kept_gets_a_reset_then_what_is_kept() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let job = enqueue(&app, org, admin).await;
    wait_succeeded(&app, org, member, &job).await;

    let mut stream = open(&app, org, &app.token(member), Some("1-0")).await;
    let reset = stream.event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.id.as_deref(), Some("1-0"));
    assert!(reset.json()["reason"].is_string());
    let kept = stream.events_until(|f| is_job(f, &job, "succeeded")).await;
    assert!(is_job(&kept[0], &job, "queued"), "{kept:?}");

    // Not an id at all: refused, so a broken client notices.
    connect(&app, org, &app.token(member), Some("yesterday"))
        .await
        .status()
        .eq(&StatusCode::BAD_REQUEST)
        .then_some(())
        .expect("400 for a malformed Last-Event-ID");
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_open() {
    let app = TestApp::builder()
        .env("EVENTS_HEARTBEAT_SECS", "1")
        .spawn()
        .await;
    let OrgUsers { org, member, .. } = app.org_with_roles().await;
    let mut stream = open(&app, org, &app.token(member), None).await;
    for _ in 0..2 {
        let frame = stream.frame().await.expect("a heartbeat");
        assert!(!frame.is_event(), "{frame:?}");
        assert_eq!(frame.comments, ["keep-alive"]);
    }
}

#[tokio::test]
async fn the_stream_ends_when_the_token_expires() {
    let app = TestApp::builder()
        .env("EVENTS_HEARTBEAT_SECS", "1")
        .spawn()
        .await;
    let OrgUsers { org, member, .. } = app.org_with_roles().await;
    let mut stream = open(&app, org, &token_expiring_in(member, 3), None).await;
    let comments = stream.until_end().await;
    assert_eq!(
        comments.last().map(String::as_str),
        Some("the access token expired"),
        "{comments:?}"
    );
    // Past its `exp` (but within the verifier's leeway for clock skew) a token opens no
    // stream.
    into_response(connect(&app, org, &token_expiring_in(member, -5), None).await)
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn streams_end_when_the_server_drains() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, member, .. } = app.org_with_roles().await;
    let mut stream = open(&app, org, &app.token(member), None).await;
    app.shutdown();
    let comments = stream.until_end().await;
    assert_eq!(
        comments.last().map(String::as_str),
        Some("the server is shutting down; reconnect"),
        "{comments:?}"
    );
}

#[tokio::test]
async fn streams_are_refused_without_a_token_and_to_outsiders() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, .. } = app.org_with_roles().await;
    let response = app
        .client
        .get(app.url(&events_path(org)))
        .send()
        .await
        .unwrap();
    into_response(response)
        .await
        .expect_problem(401, "unauthorized");
    let outsider = Uuid::now_v7();
    app.create_org(outsider).await;
    into_response(connect(&app, org, &app.token(outsider), None).await)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn open_streams_per_user_are_capped_across_replicas() {
    let a = TestApp::builder()
        .env("EVENTS_MAX_STREAMS_PER_USER", "2")
        .spawn()
        .await;
    let b = a.replica(false).await;
    let OrgUsers {
        org, member, admin, ..
    } = a.org_with_roles().await;
    let first = open(&a, org, &a.token(member), None).await;
    let _second = open(&b, org, &b.token(member), None).await;

    let refused = into_response(connect(&a, org, &a.token(member), None).await)
        .await
        .expect_problem(429, "rate_limited");
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after >= 1);
    // Another user is not affected.
    drop(open(&b, org, &b.token(admin), None).await);

    // A closed stream frees its slot.
    drop(first);
    let token = a.token(member);
    let reopened = eventually("a slot frees up", PATIENCE, || async {
        let response = connect(&a, org, &token, None).await;
        if response.status() == StatusCode::OK {
            Ok(Stream {
                response,
                buffer: String::new(),
            })
        } else {
            Err(response.status().to_string())
        }
    })
    .await;
    drop(reopened);
}

#[tokio::test]
async fn a_member_never_sees_another_orgs_events() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let ours = app.org_with_roles().await;
    let theirs = app.org_with_roles().await;
    let mut stream = open(&app, ours.org, &app.token(ours.member), None).await;
    // A member of both orgs still sees only the org of the path.
    app.add_member(theirs.org, theirs.owner, ours.member, "member")
        .await;

    let foreign = enqueue(&app, theirs.org, theirs.admin).await;
    wait_succeeded(&app, theirs.org, theirs.member, &foreign).await;
    let own = enqueue(&app, ours.org, ours.admin).await;
    let seen = stream.events_until(|f| is_job(f, &own, "succeeded")).await;
    assert!(
        seen.iter().all(|f| f.json()["job_id"] == own.as_str()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_stream_and_its_events() {
    let app = TestApp::builder().spawn().await;
    let doc = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let op = &doc["paths"]["/v1/orgs/{org_id}/events"]["get"];
    assert!(
        op["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{op}"
    );
    assert!(op["responses"]["429"].is_object());
    for schema in [
        "LiveEvent",
        "JobEvent",
        "AssetEvent",
        "ConversationMessageEvent",
        "ConversationHandoffEvent",
        "ConnectionEvent",
        "ResetEvent",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

#[tokio::test]
async fn a_removed_member_stops_hearing_the_org() {
    let app = TestApp::builder()
        .adjust_state(|state| {
            if let Some(shared) = state.unshared_mut() {
                shared.events.settings.membership_recheck = Duration::from_millis(200);
            }
        })
        .spawn()
        .await;
    let OrgUsers {
        org, owner, member, ..
    } = app.org_with_roles().await;
    let mut stream = open(&app, org, &app.token(member), None).await;
    app.delete(&format!("/v1/orgs/{org}/members/{member}"), owner)
        .await
        .expect(204);
    let comments = stream.until_end().await;
    assert_eq!(
        comments.last().map(String::as_str),
        Some("no longer a member of this organization"),
        "{comments:?}"
    );
}

#[tokio::test]
async fn conversations_and_connections_announce_their_changes() {
    use crate::agent_runtime::{LEAD, Options, Runtime};
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    let (org, admin) = (rt.org(), rt.users.admin);
    let mut stream = open(&rt.app, org, &rt.app.token(rt.users.member), None).await;

    rt.incoming("msg-ev-1", "chat-ev", LEAD, "Do you deliver to Berlin?")
        .await
        .expect(200);
    let is_message = |f: &Frame, direction: &str| {
        f.event.as_deref() == Some("conversation.message") && f.json()["direction"] == direction
    };
    let seen = stream.events_until(|f| is_message(f, "out")).await;
    let inbound = seen
        .iter()
        .find(|f| is_message(f, "in"))
        .expect("the lead's message is announced before the answer");
    let conversation = inbound.json()["conversation_id"].clone();
    assert_eq!(inbound.json()["kind"], "inbound");
    let reply = seen.last().unwrap().json();
    assert_eq!(reply["conversation_id"], conversation);
    assert_eq!(reply["kind"], "reply");
    assert!(reply["message_id"].is_string());

    let path = format!(
        "/v1/orgs/{org}/conversations/{}",
        conversation.as_str().unwrap()
    );
    rt.app
        .post(&format!("{path}/handoff"), admin, json!({"reason": "VIP"}))
        .await
        .expect(200);
    rt.app
        .post(&format!("{path}/resume"), admin, json!({}))
        .await
        .expect(200);
    let handoffs: Vec<Value> = stream
        .events_until(|f| {
            f.event.as_deref() == Some("conversation.handoff") && f.json()["status"] == "active"
        })
        .await
        .iter()
        .filter(|f| f.event.as_deref() == Some("conversation.handoff"))
        .map(Frame::json)
        .collect();
    assert_eq!(
        handoffs,
        [
            json!({"conversation_id": conversation, "status": "handed_off"}),
            json!({"conversation_id": conversation, "status": "active"}),
        ]
    );

    rt.app
        .delete(
            &format!("/v1/orgs/{org}/crm/connections/{}", rt.connection),
            admin,
        )
        .await
        .expect(204);
    let disconnected = stream
        .events_until(|f| f.event.as_deref() == Some("connection"))
        .await;
    assert_eq!(
        disconnected.last().unwrap().json(),
        json!({"connection_id": rt.connection, "status": "disconnected"})
    );
}

#[tokio::test]
async fn events_published_while_the_subscription_is_down_still_arrive_once() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let mut stream = open(&app, org, &app.token(member), None).await;
    let _cut = SUBSCRIBERS_CUT.lock().await;

    // Every subscriber connection on this Redis is cut (other tests' replicas recover the
    // same way); the replica subscribes again and each stream reads what it missed by id.
    let redis = redis::Client::open(redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);
    let jobs = [
        enqueue(&app, org, admin).await,
        enqueue(&app, org, admin).await,
    ];
    let mut seen: Vec<Frame> = Vec::new();
    while !jobs
        .iter()
        .all(|job| seen.iter().any(|f| is_job(f, job, "succeeded")))
    {
        seen.push(stream.event().await);
    }
    assert_ids_increase(&seen);
    for job in &jobs {
        let statuses: Vec<String> = seen
            .iter()
            .filter(|f| f.json()["job_id"] == job.as_str())
            .map(|f| f.json()["status"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(statuses, ["queued", "running", "succeeded"], "{seen:?}");
    }
}

/// Held while this Redis's subscribers are cut, and by the tests that watch one hub's
/// subscription, so that the cut is never taken for a failure of their own.
static SUBSCRIBERS_CUT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Redis connection of its own at `url`, with a key prefix of its own.
fn redis_at(url: &str) -> RedisConn {
    let mut env = base_env("unused");
    env.insert("REDIS_URL".into(), url.into());
    env.insert(
        "REDIS_KEY_PREFIX".into(),
        format!("test:{}:", Uuid::new_v4().simple()),
    );
    RedisConn::new(&config_from(&env)).expect("a Redis client")
}

/// A hub checking its subscription every `every`, running until the guard drops; and
/// the generation its subscription started with.
async fn running_hub(
    redis: &RedisConn,
    org: OrgId,
    every: Duration,
    timeout: Duration,
) -> (Subscription, u64, DropGuard) {
    let hub = Hub::with_ping_interval(redis.clone(), every, timeout);
    let mut subscription = hub.subscribe(org);
    let stop = CancellationToken::new();
    tokio::spawn(hub.run(stop.clone()));
    let subscribed = *tokio::time::timeout(
        PATIENCE,
        subscription
            .generation
            .wait_for(|generation| *generation > 0),
    )
    .await
    .expect("the hub subscribes")
    .expect("the hub runs");
    (subscription, subscribed, stop.drop_guard())
}

/// Thousands of messages a second while the hub PINGs every 50 ms: every PING is
/// answered (a subscribed connection answers `["pong", ""]`), so the subscription is
/// never torn down and every message reaches the org's receiver.
#[tokio::test]
async fn a_flooded_subscription_is_never_torn_down() {
    let _alone = SUBSCRIBERS_CUT.lock().await;
    let redis = redis_at(&redis_url());
    let org = OrgId::new();
    let (mut subscription, subscribed, _hub) = running_hub(
        &redis,
        org,
        Duration::from_millis(50),
        Duration::from_secs(2),
    )
    .await;

    const BATCHES: u64 = 200;
    const PER_BATCH: u64 = 50;
    let total = BATCHES * PER_BATCH;
    let channel = stream_key(&redis, org);
    let publisher = tokio::spawn({
        let mut conn = redis.connection();
        async move {
            // 50 every 10 ms: 5,000 a second for 2 s, some 40 PINGs.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for batch in 0..BATCHES {
                tick.tick().await;
                let mut pipe = redis::pipe();
                for n in 0..PER_BATCH {
                    let seq = batch * PER_BATCH + n;
                    pipe.cmd("PUBLISH")
                        .arg(&channel)
                        .arg(format!("1700000000000-{seq} flood {{}}"))
                        .ignore();
                }
                let () = pipe.query_async(&mut conn).await.expect("PUBLISH");
            }
        }
    });
    let mut last = 0;
    while last + 1 < total {
        match tokio::time::timeout(PATIENCE, subscription.receiver.recv()).await {
            Ok(Ok(batch)) => last = batch.last().map_or(last, |event| event.id.seq),
            // A lagging receiver is the stream's to catch up from Redis; the hub is fine.
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(closed)) => panic!("the org's channel closed: {closed}"),
            Err(_) => panic!(
                "silence after message {last} of {total}; subscription {subscribed}, now {}",
                *subscription.generation.borrow()
            ),
        }
    }
    publisher.await.expect("the publisher");
    assert_eq!(
        *subscription.generation.borrow(),
        subscribed,
        "the subscription was made again during the flood"
    );
}

/// A connection that stops delivering anything (a blackholed network) is given up when
/// its PING goes unanswered, and the hub subscribes again once Redis is reachable.
#[tokio::test]
async fn a_subscription_that_stops_answering_is_replaced() {
    let upstream = {
        let url = url::Url::parse(&redis_url()).expect("the Redis URL");
        format!(
            "{}:{}",
            url.host_str().expect("a host"),
            url.port().unwrap_or(6379)
        )
    };
    // A cut just before the blackhole would leave nothing subscribed to PING.
    let _alone = SUBSCRIBERS_CUT.lock().await;
    let proxy = FaultProxy::start(&upstream).await;
    let (logs, _capture) = Captured::start();
    let redis = redis_at(&format!("redis://{}", proxy.addr));
    let (mut subscription, subscribed, _hub) = running_hub(
        &redis,
        OrgId::new(),
        Duration::from_millis(100),
        Duration::from_millis(300),
    )
    .await;

    proxy.set(Fault::Blackhole);
    eventually("the unanswered PING is noticed", PATIENCE, || async {
        let text = logs.text();
        text.contains("no PING answer").then_some(()).ok_or(text)
    })
    .await;
    proxy.set(Fault::Pass);
    tokio::time::timeout(
        PATIENCE,
        subscription
            .generation
            .wait_for(|generation| *generation > subscribed),
    )
    .await
    .expect("the hub subscribes again")
    .expect("the hub runs");
}
