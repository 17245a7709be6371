//! The agent runtime end to end (spec §13): a connected (fake) Kommo account, an agent
//! routed to a pipeline stage, a document it knows, and incoming-message webhooks that
//! the real jobs turn into conversations and answers, with the fake provider as the
//! model.

mod conversations;
mod handoff;
mod replies;
mod routes;
mod test_chat;
mod timing;

use std::sync::Arc;
use std::time::Duration;

use agents_api::agent::schedule::FixedClock;
use agents_api::state::AppState;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::knowledge::upload_and_wait;
use crate::knowledge::vectors::fast_ai_retries;
use crate::support::app::{OrgUsers, Response, TestApp, eventually, into_response};
use crate::support::fake_ai::FakeAi;
use crate::support::fake_kommo::FakeKommo;
use crate::support::kommo::{PUBLIC_BASE_URL, connected_org};

pub const PATIENCE: Duration = Duration::from_secs(30);
pub const PIPELINE: i64 = 3_104_455;
pub const STAGE: i64 = 36_341_584;
pub const OTHER_STAGE: i64 = 36_341_585;
pub const RESPONSIBLE: i64 = 777;
pub const LEAD: i64 = 9001;

pub const HANDBOOK: &str = "Delivery to Berlin costs 5 euros and takes two days. \
Orders above 100 euros ship free of charge. Returns are accepted within 30 days.";

#[derive(Default)]
pub struct Options {
    /// The runtime's clock, fixed at this time (else the system's).
    pub clock: Option<Arc<FixedClock>>,
    /// The agent's fields beyond name, model and instructions.
    pub agent: Value,
    /// Route the agent to `STAGE` (else no route).
    pub routed: bool,
    /// Upload `HANDBOOK` for the agent.
    pub handbook: bool,
    pub extra_env: Vec<(&'static str, String)>,
}

pub struct Runtime {
    pub app: TestApp,
    pub kommo: FakeKommo,
    pub ai: FakeAi,
    pub users: OrgUsers,
    pub connection: Uuid,
    pub webhook_path: String,
    pub domain: String,
    pub agent: Value,
}

impl Runtime {
    pub async fn start(options: Options) -> Runtime {
        let kommo = FakeKommo::start().await;
        let ai = FakeAi::start().await;
        let clock = options.clock.clone();
        let mut builder = TestApp::builder()
            .with_kommo(&kommo)
            .with_jobs()
            .env("AI_BASE_URL", &ai.base_url());
        for (key, value) in &options.extra_env {
            builder = builder.env(key, value);
        }
        let app = builder
            .adjust_state(move |state: &mut AppState| {
                fast_ai_retries(state);
                if let Some(clock) = clock {
                    let shared = state.unshared_mut().expect("the state is not shared yet");
                    shared.clock = clock;
                }
            })
            .spawn()
            .await;
        let domain = format!("rt{}.kommo.com", &Uuid::new_v4().simple().to_string()[..12]);
        let (users, created) = connected_org(&app, &kommo, &domain).await;
        let connection: Uuid = created["id"]
            .as_str()
            .expect("connection id")
            .parse()
            .expect("uuid");
        let url = created["webhook_url"].as_str().expect("webhook_url");
        let webhook_path = url
            .strip_prefix(PUBLIC_BASE_URL)
            .expect("the webhook URL is under PUBLIC_BASE_URL")
            .to_owned();
        kommo.set_lead(&domain, lead(LEAD, STAGE));
        let mut fields = json!({
            "name": "Anna",
            "model": "gpt-4o-mini",
            "instructions": "You sell delivery services for Acme.",
            "status": "active",
            "connection_id": connection,
        });
        if let (Some(fields), Some(extra)) = (fields.as_object_mut(), options.agent.as_object()) {
            for (k, v) in extra {
                fields.insert(k.clone(), v.clone());
            }
        }
        let agent = app
            .post(
                &format!("/v1/orgs/{}/agents", users.org),
                users.admin,
                fields,
            )
            .await
            .expect(201)
            .body;
        let runtime = Runtime {
            app,
            kommo,
            ai,
            users,
            connection,
            webhook_path,
            domain,
            agent,
        };
        if options.routed {
            runtime
                .put_routes(json!([{"connection_id": connection, "pipeline_id": PIPELINE, "stage_ids": [STAGE]}]))
                .await
                .expect(200);
        }
        if options.handbook {
            let asset = runtime.upload_handbook().await;
            assert_eq!(asset["status"], "indexed", "{asset}");
        }
        runtime
    }

    pub fn org(&self) -> Uuid {
        self.users.org
    }

    pub fn agent_id(&self) -> &str {
        self.agent["id"].as_str().expect("agent id")
    }

    pub async fn upload_handbook(&self) -> Value {
        upload_and_wait(
            &self.app,
            self.org(),
            self.users.admin,
            "handbook.txt",
            HANDBOOK.as_bytes(),
        )
        .await
    }

    pub async fn put_routes(&self, routes: Value) -> Response {
        self.app
            .put(
                &format!("/v1/orgs/{}/agents/{}/routes", self.org(), self.agent_id()),
                self.users.admin,
                routes,
            )
            .await
    }

    /// Posts Kommo's incoming-message webhook (form-encoded, as Kommo sends it).
    pub async fn incoming(
        &self,
        message_id: &str,
        chat_id: &str,
        lead_id: i64,
        text: &str,
    ) -> Response {
        let body = incoming_body(message_id, chat_id, lead_id, text);
        self.post_webhook(&body).await
    }

    pub async fn post_webhook(&self, body: &str) -> Response {
        let response = self
            .app
            .client
            .post(self.app.url(&self.webhook_path))
            .header("user-agent", "amoCRM-Webhooks/3.0")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .expect("webhook request");
        into_response(response).await
    }

    /// The conversation of `chat_id`, once it exists.
    pub async fn conversation(&self, chat_id: &str) -> Value {
        let path = format!("/v1/orgs/{}/conversations?limit=100", self.org());
        eventually("the conversation exists", PATIENCE, || async {
            let page = self
                .app
                .get(&path, self.users.member)
                .await
                .expect(200)
                .body;
            page["data"]
                .as_array()
                .and_then(|list| list.iter().find(|c| c["chat_id"] == chat_id).cloned())
        })
        .await
    }

    pub async fn detail(&self, conversation_id: &str) -> Value {
        self.app
            .get(
                &format!(
                    "/v1/orgs/{}/conversations/{conversation_id}?limit=100",
                    self.org()
                ),
                self.users.member,
            )
            .await
            .expect(200)
            .body
    }

    /// The conversation's messages once `done` says they are settled.
    pub async fn messages_when(
        &self,
        chat_id: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> (Value, Vec<Value>) {
        let id = self.conversation(chat_id).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually(what, PATIENCE, || async {
            let detail = self.detail(&id).await;
            let messages = detail["messages"]["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if done(&messages) {
                Ok((detail, messages))
            } else {
                Err(detail.to_string())
            }
        })
        .await
    }

    /// Every `agent:reply` job of the org once none is queued or running.
    pub async fn settled_reply_jobs(&self) -> Vec<Value> {
        let path = format!("/v1/orgs/{}/jobs?type=agent:reply&limit=100", self.org());
        eventually("the reply jobs settle", PATIENCE, || async {
            let page = self.app.get(&path, self.users.admin).await.expect(200).body;
            let jobs = page["data"].as_array().cloned().unwrap_or_default();
            let settled = !jobs.is_empty()
                && jobs
                    .iter()
                    .all(|j| matches!(j["status"].as_str(), Some("succeeded" | "failed")));
            if settled {
                Ok(jobs)
            } else {
                Err(page.to_string())
            }
        })
        .await
    }

    pub fn notes(&self) -> Vec<Value> {
        self.kommo.notes(&self.domain)
    }

    pub fn tasks(&self) -> Vec<Value> {
        self.kommo.tasks(&self.domain)
    }
}

/// A lead as Kommo's API returns it, in `PIPELINE` at `stage`.
pub fn lead(id: i64, stage: i64) -> Value {
    json!({
        "id": id,
        "name": "Order for Berlin",
        "price": 1200,
        "pipeline_id": PIPELINE,
        "status_id": stage,
        "responsible_user_id": RESPONSIBLE,
        "custom_fields_values": [{"field_name": "City", "values": [{"value": "Berlin"}]}],
    })
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Kommo's form body for one incoming chat message on a lead.
pub fn incoming_body(message_id: &str, chat_id: &str, lead_id: i64, text: &str) -> String {
    let fields = [
        ("message[add][0][id]", message_id.to_owned()),
        ("message[add][0][chat_id]", chat_id.to_owned()),
        ("message[add][0][talk_id]", "42".to_owned()),
        ("message[add][0][contact_id]", "501".to_owned()),
        ("message[add][0][text]", text.to_owned()),
        ("message[add][0][created_at]", "1765000000".to_owned()),
        ("message[add][0][type]", "incoming".to_owned()),
        ("message[add][0][entity_type]", "lead".to_owned()),
        ("message[add][0][entity_id]", lead_id.to_string()),
        ("message[add][0][author][id]", "ext-1".to_owned()),
        ("message[add][0][author][type]", "external".to_owned()),
        ("message[add][0][author][name]", "Ivan".to_owned()),
        ("message[add][0][origin]", "telegram".to_owned()),
        ("account[id]", "31000001".to_owned()),
        ("account[subdomain]", "acme".to_owned()),
    ];
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn outbound(messages: &[Value]) -> Vec<&Value> {
    messages
        .iter()
        .filter(|m| m["direction"] == "out")
        .collect()
}
