//! `agent:reply {conversation_id}`: the agent's answer to the lead's unanswered messages
//! (spec §13).
//!
//! One reply job is live per conversation (`conversations.reply_job_id`). The webhook job
//! records an inbound message and queues a reply job only when none is live, both under
//! the conversation's row lock; a reply job that finishes takes the same lock, and either
//! queues its successor (messages came in meanwhile) or clears the slot. So messages that
//! arrive together are answered together, and two replicas never answer one set twice.
//!
//! An attempt: route the conversation (the lead's pipeline stage from Kommo → the active
//! agent routed there); wait — as a delayed successor job — for the response delay since
//! the latest message and for working hours (or send the off-hours reply at once); hand
//! over to a person on a keyword or after `max_turns`; stop when the org's daily token
//! quota is used; else write the answer (instructions, knowledge found for the messages,
//! lead facts, recent history; tools), store it, then do what it asked for (tasks,
//! handoff) and deliver it as a note on the lead and, with a Chats channel, into the chat.
//!
//! Effects are idempotent per set of inbound messages: the answer is stored once per set
//! (`messages.reply_to`, unique) before any effect; its note, its tasks and the handoff
//! task carry a `[ref:…]` marker a rerun looks for before creating them again; the chat
//! message's `msgid` is the answer's id. The model is never called with a transaction
//! open, nor Kommo.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::agent::prompt::{self, Prompt, Turn};
use crate::agent::schedule::WorkingHours;
use crate::agent::tools::Intent;
use crate::agent::turn::{self, Settings, ToolUse};
use crate::ai::AiError;
use crate::db;
use crate::db::agents::{Agent, AgentStatus};
use crate::db::audit::Change;
use crate::db::conversations::{
    self as conv_db, Conversation, ConversationStatus, Message, NewReply,
};
use crate::db::jobs::ClaimedJob;
use crate::domain::{AgentId, ConnectionId, ConversationId, JobId, OrgId, RequestMeta};
use crate::events::Event;
use crate::jobs::job::{self, Job};
use crate::jobs::queue::Lane;
use crate::jobs::{JobContext, JobError};
use crate::knowledge::search::{self, Reader, SearchMode};
use crate::kommo::{ChatChannel, Lead, NewTask};
use crate::metrics::observe_agent_reply;

const USAGE_KIND: &str = "reply";
/// Handoff tasks are due this soon: a person should pick the chat up today.
const HANDOFF_TASK_HOURS: i64 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct AgentReply {
    pub conversation_id: ConversationId,
}

impl Job for AgentReply {
    const TYPE: &'static str = "agent:reply";
    const LANE: Lane = Lane::External;

    async fn run(&self, ctx: &JobContext, job: &ClaimedJob) -> Result<Value, JobError> {
        Reply {
            ctx,
            job,
            org: job.org_id,
            id: self.conversation_id,
        }
        .run()
        .await
    }
}

/// Records the incoming chat messages of a webhook delivery (in the webhook job's
/// transaction) and queues the reply jobs they need; returns those jobs, to push after
/// the commit, and adds the live events to publish then to `announce`.
pub async fn record_inbound(
    tx: &mut db::Tx,
    org_id: OrgId,
    connection_id: ConnectionId,
    messages: &[conv_db::Inbound],
    now: DateTime<Utc>,
    announce: &mut Vec<Event>,
) -> Result<Vec<db::jobs::Job>, db::Error> {
    let mut queued = Vec::new();
    for message in messages {
        let conversation = conv_db::upsert_for_inbound(tx, org_id, connection_id, message).await?;
        let id = ConversationId(conversation.id);
        let Some(stored) = conv_db::insert_inbound(tx, org_id, id, message, now).await? else {
            continue; // Kommo's id was seen before: a duplicate delivery.
        };
        announce.push(Event::message(org_id, id.0, stored, "inbound"));
        if conversation.status == ConversationStatus::HandedOff {
            conv_db::mark_ignored(tx, org_id, id, stored, "handed off to a person").await?;
            continue;
        }
        if let Some(live) = conversation.reply_job_id
            && conv_db::job_is_live(tx, live).await?
        {
            continue; // That job answers this message too.
        }
        let job = job::insert(
            tx,
            org_id,
            &AgentReply {
                conversation_id: id,
            },
            None,
        )
        .await?;
        conv_db::set_reply_job(tx, org_id, id, Some(job.id), None).await?;
        queued.push(job);
    }
    Ok(queued)
}

struct Reply<'a> {
    ctx: &'a JobContext,
    job: &'a ClaimedJob,
    org: OrgId,
    id: ConversationId,
}

/// Who answers a conversation, or why nobody does.
enum Routed {
    Agent(Box<Agent>, Option<Lead>),
    Nobody(String),
}

impl Reply<'_> {
    async fn run(&self) -> Result<Value, JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let Some(conversation) = conv_db::get(&mut tx, self.org, self.id).await? else {
            return Ok(json!({"skipped": "the conversation no longer exists"}));
        };
        if let Some(other) = conversation.reply_job_id
            && other != self.job.id.0
            && conv_db::job_is_live(&mut tx, other).await?
        {
            return Ok(json!({"skipped": "another reply job answers this conversation"}));
        }
        let set = conv_db::unanswered(&mut tx, self.org, self.id).await?;
        let turns = conv_db::turns(&mut tx, self.org, self.id).await?;
        tx.commit().await?;
        let Some(last) = set.last().cloned() else {
            return self.finish(json!({"answered": 0})).await;
        };
        if conversation.status == ConversationStatus::HandedOff {
            return self
                .ignore(&last, "handed off to a person", "ignored")
                .await;
        }
        let (agent, lead) = match self.route(&conversation).await? {
            Routed::Agent(agent, lead) => (*agent, lead),
            Routed::Nobody(why) => return self.ignore(&last, &why, "unrouted").await,
        };

        let now = self.ctx.clock.now();
        if let Some(hours) = agent
            .working_hours
            .as_ref()
            .and_then(|v| WorkingHours::from_json(v).ok())
            && !hours.is_open(now)
        {
            if let Some(text) = agent.off_hours_reply.clone() {
                return self.off_hours(&conversation, &agent, &last, &text).await;
            }
            let Some(opening) = hours.next_opening(now) else {
                return self
                    .ignore(&last, "the agent's working hours never open", "ignored")
                    .await;
            };
            let notice = format!(
                "outside working hours: the answer waits until {}",
                opening.to_rfc3339()
            );
            return self.defer(opening, Some(&notice)).await;
        }
        let due = last.created_at + chrono::Duration::seconds(i64::from(agent.response_delay_secs));
        if due > now {
            return self.defer(due, None).await;
        }

        let keyword = keyword_in(&agent.handoff_keywords, &set);
        let over_turns = agent.max_turns.is_some_and(|max| turns >= i64::from(max));
        if let Some(word) = keyword {
            let reason = format!("the lead wrote the handoff keyword \"{word}\"");
            return self
                .hand_off(&conversation, lead.as_ref(), &last, &reason, "keyword")
                .await;
        }
        if over_turns {
            let reason = format!("the agent answered {turns} times, its max_turns");
            return self
                .hand_off(&conversation, lead.as_ref(), &last, &reason, "max_turns")
                .await;
        }
        if self.ctx.ai.over_quota(&self.ctx.db, self.org).await? {
            return self
                .ignore(
                    &last,
                    "the organization's daily AI token quota is used up",
                    "quota",
                )
                .await;
        }

        let reply = match self.stored_reply(&last).await? {
            Some(reply) => reply,
            None => {
                self.write_reply(&conversation, &agent, lead.as_ref(), &set, &last)
                    .await?
            }
        };
        self.carry_out(&conversation, lead.as_ref(), &reply).await?;
        let delivery = self.deliver(&conversation, &agent, &reply).await?;
        let handoff = tool_uses(&reply)
            .into_iter()
            .find_map(|used| match used.intent {
                Some(Intent::HandoffToHuman { reason }) => Some(reason),
                _ => None,
            });
        // Delivered, the set answered and the conversation's state: one transaction, so
        // nobody sees a delivered answer whose messages still wait.
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        conv_db::set_delivery(&mut tx, self.org, reply.id, "delivered", &delivery, None).await?;
        conv_db::mark_answered(&mut tx, self.org, self.id, last.id, reply.id).await?;
        let handed_off = match &handoff {
            Some(reason) => self.record_handoff(&mut tx, reason, "tool").await?,
            None => false,
        };
        conv_db::set_notice(&mut tx, self.org, self.id, None).await?;
        tx.commit().await?;
        self.announce_reply(&reply);
        if handed_off {
            self.announce_handoff();
        }
        observe_agent_reply(if handoff.is_some() {
            "handed_off"
        } else {
            "answered"
        });
        self.finish(json!({
            "answered": set.len(),
            "message_id": reply.id,
            "handed_off": handoff.is_some(),
        }))
        .await
    }

    /// The agent that works the lead's stage (read from Kommo now: a lead moves between
    /// stages), or why nobody answers.
    async fn route(&self, conversation: &Conversation) -> Result<Routed, JobError> {
        let Some(lead_id) = conversation.lead_id else {
            return Ok(Routed::Nobody("the chat is not linked to a lead".into()));
        };
        let connection_id = ConnectionId(conversation.connection_id);
        let kommo = &self.ctx.kommo;
        let lead = kommo
            .with_token(
                &self.ctx.db,
                self.org,
                connection_id,
                |domain, token| async move { kommo.client.lead(&domain, &token, lead_id).await },
            )
            .await?;
        let Some(lead) = lead else {
            return Ok(Routed::Nobody(format!("Kommo has no lead {lead_id}")));
        };
        let lead_json = serde_json::to_value(&lead).unwrap_or(Value::Null);
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let agent_id = db::agent_routes::agent_for_stage(
            &mut tx,
            self.org,
            connection_id,
            lead.pipeline_id,
            lead.status_id,
        )
        .await?;
        let agent = match agent_id {
            Some(id) => db::agents::get(&mut tx, self.org, id).await?,
            None => None,
        };
        let routed = match agent {
            Some(agent) if agent.status == AgentStatus::Active => {
                conv_db::set_routing(
                    &mut tx,
                    self.org,
                    self.id,
                    Some(AgentId(agent.id)),
                    Some(&lead_json),
                    None,
                )
                .await?;
                Routed::Agent(Box::new(agent), Some(lead))
            }
            _ => {
                let why = format!(
                    "no active agent is routed to stage {} of pipeline {}",
                    lead.status_id, lead.pipeline_id
                );
                conv_db::set_routing(
                    &mut tx,
                    self.org,
                    self.id,
                    None,
                    Some(&lead_json),
                    Some(&why),
                )
                .await?;
                Routed::Nobody(why)
            }
        };
        tx.commit().await?;
        Ok(routed)
    }

    /// The set up to `last` will not be answered, and the conversation says why.
    async fn ignore(&self, last: &Message, why: &str, outcome: &str) -> Result<Value, JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        conv_db::mark_ignored(&mut tx, self.org, self.id, last.id, why).await?;
        conv_db::set_notice(&mut tx, self.org, self.id, Some(why)).await?;
        tx.commit().await?;
        observe_agent_reply(outcome);
        self.finish(json!({"answered": 0, "ignored": why})).await
    }

    /// Ends the job: the next reply job, when messages came in meanwhile, else none.
    async fn finish(&self, result: Value) -> Result<Value, JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let Some(conversation) = conv_db::lock(&mut tx, self.org, self.id).await? else {
            return Ok(result);
        };
        if conversation.reply_job_id != Some(self.job.id.0) {
            tx.commit().await?;
            return Ok(result);
        }
        let more = conversation.status == ConversationStatus::Active
            && !conv_db::unanswered(&mut tx, self.org, self.id)
                .await?
                .is_empty();
        let next = if more {
            let next = job::insert(
                &mut tx,
                self.org,
                &AgentReply {
                    conversation_id: self.id,
                },
                None,
            )
            .await?;
            conv_db::set_reply_job(&mut tx, self.org, self.id, Some(next.id), None).await?;
            Some(next)
        } else {
            conv_db::set_reply_job(&mut tx, self.org, self.id, None, None).await?;
            None
        };
        tx.commit().await?;
        if let Some(next) = next {
            self.ctx
                .queue
                .enqueue_committed(JobId(next.id), self.org, &next.job_type)
                .await;
        }
        Ok(result)
    }

    /// Answers later: a successor job due at `due` becomes the conversation's reply job.
    async fn defer(&self, due: DateTime<Utc>, notice: Option<&str>) -> Result<Value, JobError> {
        let delay = (due - self.ctx.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let next = job::insert_delayed(
            &mut tx,
            self.org,
            &AgentReply {
                conversation_id: self.id,
            },
            delay,
        )
        .await?;
        conv_db::lock(&mut tx, self.org, self.id).await?;
        conv_db::set_reply_job(&mut tx, self.org, self.id, Some(next.id), Some(due)).await?;
        conv_db::set_notice(&mut tx, self.org, self.id, notice).await?;
        tx.commit().await?;
        self.ctx
            .queue
            .enqueue_committed_later(JobId(next.id), self.org, &next.job_type, delay)
            .await;
        observe_agent_reply("deferred");
        Ok(json!({"deferred_until": due, "next_job_id": next.id}))
    }

    async fn stored_reply(&self, last: &Message) -> Result<Option<Message>, JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let reply = conv_db::reply_for(&mut tx, self.org, self.id, last.id).await?;
        tx.commit().await?;
        Ok(reply)
    }

    /// The off-hours text, stored and delivered as the answer to the set.
    async fn off_hours(
        &self,
        conversation: &Conversation,
        agent: &Agent,
        last: &Message,
        text: &str,
    ) -> Result<Value, JobError> {
        let reply = match self.stored_reply(last).await? {
            Some(reply) => reply,
            None => {
                let mut tx = self.ctx.db.begin_worker(self.org).await?;
                let reply = conv_db::insert_reply(
                    &mut tx,
                    self.org,
                    self.id,
                    &NewReply {
                        reply_to: last.id,
                        kind: "off_hours",
                        text,
                        author: &agent.name,
                        model: None,
                        tokens_in: None,
                        tokens_out: None,
                        latency_ms: None,
                        sources: &json!([]),
                        tool_calls: &json!([]),
                    },
                )
                .await?;
                tx.commit().await?;
                reply
            }
        };
        let delivery = self.deliver(conversation, agent, &reply).await?;
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        conv_db::set_delivery(&mut tx, self.org, reply.id, "delivered", &delivery, None).await?;
        conv_db::mark_answered(&mut tx, self.org, self.id, last.id, reply.id).await?;
        conv_db::set_notice(
            &mut tx,
            self.org,
            self.id,
            Some("outside working hours: the off-hours reply was sent"),
        )
        .await?;
        tx.commit().await?;
        self.announce_reply(&reply);
        observe_agent_reply("off_hours");
        self.finish(json!({"answered": "off_hours", "message_id": reply.id}))
            .await
    }

    /// Asks the model and stores its answer for the set (once: a concurrent or earlier
    /// answer to the same set wins).
    async fn write_reply(
        &self,
        conversation: &Conversation,
        agent: &Agent,
        lead: Option<&Lead>,
        set: &[Message],
        last: &Message,
    ) -> Result<Message, JobError> {
        let Some(provider) = self.ctx.ai_provider(self.org).await? else {
            return Err(JobError::Permanent(AiError::NotConfigured.to_string()));
        };
        let question: String = set
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let knowledge = self.knowledge(agent, &question).await;
        let history = {
            let first = set.first().map_or(last.id, |m| m.id);
            let mut tx = self.ctx.db.begin_worker(self.org).await?;
            let history =
                conv_db::history(&mut tx, self.org, self.id, first, prompt::HISTORY_MESSAGES)
                    .await?;
            tx.commit().await?;
            history
        };
        let as_turn = |m: &Message| Turn {
            from_lead: m.direction == "in",
            text: m.text.clone(),
        };
        let history: Vec<Turn> = history.iter().map(as_turn).collect();
        let latest: Vec<Turn> = set.iter().map(as_turn).collect();
        let lead_json = lead
            .and_then(|l| serde_json::to_value(l).ok())
            .or_else(|| conversation.lead.clone());
        let facts = prompt::lead_facts(lead_json.as_ref());
        let built = prompt::build(&Prompt {
            agent_name: &agent.name,
            instructions: &agent.instructions,
            knowledge: &knowledge,
            lead_facts: &facts,
            history: &history,
            latest: &latest,
        });
        let settings = Settings {
            model: &agent.model,
            temperature: agent.temperature,
            max_tokens: agent.max_tokens,
        };
        let started = Instant::now();
        let answer = turn::complete(
            &self.ctx.ai,
            &self.ctx.db,
            self.org,
            &provider,
            turn::request(&settings, built.messages),
            USAGE_KIND,
        )
        .await?;
        let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let text = if !answer.text.is_empty() {
            answer.text.clone()
        } else if answer.tools.iter().any(ToolUse::is_handoff) {
            "A colleague will continue this conversation shortly.".to_owned()
        } else {
            // An empty note helps nobody; another attempt (a new sample) usually answers.
            return Err(JobError::retry("the model's answer was empty"));
        };
        let sources = serde_json::to_value(&built.sources).unwrap_or_else(|_| json!([]));
        let tool_calls = serde_json::to_value(&answer.tools).unwrap_or_else(|_| json!([]));
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let reply = conv_db::insert_reply(
            &mut tx,
            self.org,
            self.id,
            &NewReply {
                reply_to: last.id,
                kind: "reply",
                text: &text,
                author: &agent.name,
                model: Some(&agent.model),
                tokens_in: i32::try_from(answer.usage.prompt_tokens).ok(),
                tokens_out: i32::try_from(answer.usage.completion_tokens).ok(),
                latency_ms: Some(latency_ms),
                sources: &sources,
                tool_calls: &tool_calls,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(reply)
    }

    /// The passages of the agent's (and the org-wide) files that match the messages; an
    /// answer without them beats no answer, so a failed search is logged and skipped.
    async fn knowledge(&self, agent: &Agent, question: &str) -> Vec<db::knowledge::SearchHit> {
        let text: String = question.chars().take(1000).collect();
        if text.trim().is_empty() {
            return Vec::new();
        }
        let query = search::Query {
            text: &text,
            agent: Some(AgentId(agent.id)),
            limit: prompt::KNOWLEDGE_HITS,
            mode: SearchMode::Hybrid,
        };
        match search::search(&self.ctx.db, &self.ctx.ai, Reader::Worker, self.org, &query).await {
            Ok(found) => found.hits,
            Err(e) => {
                tracing::warn!(error = %e, conversation_id = %self.id, "knowledge search failed; answering without it");
                Vec::new()
            }
        }
    }

    /// Creates the tasks the answer asked for, each once.
    async fn carry_out(
        &self,
        conversation: &Conversation,
        lead: Option<&Lead>,
        reply: &Message,
    ) -> Result<(), JobError> {
        for (index, used) in tool_uses(reply).into_iter().enumerate() {
            let marker = format!("[ref:{}/{index}]", reply.id);
            let task = match used.intent {
                Some(Intent::CreateTask { text, due_in_hours }) => (text, i64::from(due_in_hours)),
                Some(Intent::HandoffToHuman { reason }) => (
                    format!("Take over the chat with this lead: {reason}"),
                    HANDOFF_TASK_HOURS,
                ),
                None => continue,
            };
            self.create_task(conversation, lead, &task.0, task.1, &marker)
                .await?;
        }
        Ok(())
    }

    /// A Kommo task on the lead for its responsible user, unless one with `marker` exists.
    async fn create_task(
        &self,
        conversation: &Conversation,
        lead: Option<&Lead>,
        text: &str,
        due_in_hours: i64,
        marker: &str,
    ) -> Result<(), JobError> {
        let Some(lead_id) = conversation.lead_id else {
            return Ok(());
        };
        let kommo = &self.ctx.kommo;
        let connection_id = ConnectionId(conversation.connection_id);
        if self.job.attempts > 1 {
            let existing = kommo
                .with_token(
                    &self.ctx.db,
                    self.org,
                    connection_id,
                    |domain, token| async move {
                        kommo.client.lead_tasks(&domain, &token, lead_id).await
                    },
                )
                .await?;
            let done = existing
                .iter()
                .any(|t| t["text"].as_str().is_some_and(|text| text.contains(marker)));
            if done {
                return Ok(());
            }
        }
        let task = NewTask {
            text: format!("{text}\n{marker}"),
            complete_till: (self.ctx.clock.now() + chrono::Duration::hours(due_in_hours))
                .timestamp(),
            lead_id,
            responsible_user_id: lead.and_then(|l| l.responsible_user_id),
        };
        let task = &task;
        kommo
            .with_token(
                &self.ctx.db,
                self.org,
                connection_id,
                |domain, token| async move { kommo.client.add_task(&domain, &token, task).await },
            )
            .await?;
        Ok(())
    }

    /// Hands the conversation over without an answer (a keyword, `max_turns`): the task
    /// for the responsible user first, then the status.
    async fn hand_off(
        &self,
        conversation: &Conversation,
        lead: Option<&Lead>,
        last: &Message,
        reason: &str,
        by: &str,
    ) -> Result<Value, JobError> {
        let marker = format!("[ref:{}/handoff]", last.id);
        let text = format!("Take over the chat with this lead: {reason}");
        self.create_task(conversation, lead, &text, HANDOFF_TASK_HOURS, &marker)
            .await?;
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        conv_db::mark_ignored(
            &mut tx,
            self.org,
            self.id,
            last.id,
            "handed off to a person",
        )
        .await?;
        let handed_off = self.record_handoff(&mut tx, reason, by).await?;
        tx.commit().await?;
        if handed_off {
            self.announce_handoff();
        }
        observe_agent_reply("handed_off");
        self.finish(json!({"answered": 0, "handed_off": reason}))
            .await
    }

    /// An answer delivered: its live event, after the commit.
    fn announce_reply(&self, reply: &Message) {
        let event = Event::message(self.org, self.id.0, reply.id, &reply.kind);
        self.ctx.events.publish(event);
    }

    fn announce_handoff(&self) {
        let event = Event::handoff(self.org, self.id.0, ConversationStatus::HandedOff);
        self.ctx.events.publish(event);
    }

    /// The conversation's status and its audit entry (the agent as the actor); whether
    /// it was handed off now (to announce after the commit).
    async fn record_handoff(
        &self,
        tx: &mut db::Tx,
        reason: &str,
        by: &str,
    ) -> Result<bool, JobError> {
        let handed_off = conv_db::hand_off(tx, self.org, self.id, reason)
            .await?
            .is_some();
        if handed_off {
            let change = Change::new(
                "conversation.handoff",
                "conversation",
                self.id,
                json!({"by": by, "reason": reason, "job_id": self.job.id}),
            );
            db::audit::record(tx, self.org, None, &RequestMeta::default(), change).await?;
        }
        Ok(handed_off)
    }

    /// Delivers the answer: a `common` note on the lead, then, with a Chats channel on
    /// the connection, the chat message; returns where it went. The note is recorded as
    /// soon as Kommo has it, so a retry does only what is left (and the chat message's
    /// `msgid` makes a repeat harmless).
    async fn deliver(
        &self,
        conversation: &Conversation,
        agent: &Agent,
        reply: &Message,
    ) -> Result<Value, JobError> {
        if reply.delivery_status == "delivered" {
            return Ok(reply.delivery.clone());
        }
        let mut delivery = reply.delivery.clone();
        if !delivery.is_object() {
            delivery = json!({});
        }
        if delivery.get("note_id").is_none()
            && let Some(lead_id) = conversation.lead_id
        {
            let note_id = self.post_note(conversation, lead_id, reply).await?;
            delivery["note_id"] = json!(note_id);
            self.record_delivery(reply.id, "pending", &delivery).await?;
        }
        if delivery.get("chat_msgid").is_none()
            && let Some(msgid) = self.send_chat(conversation, agent, reply).await?
        {
            delivery["chat_msgid"] = json!(msgid);
        }
        Ok(delivery)
    }

    async fn record_delivery(
        &self,
        id: Uuid,
        status: &str,
        delivery: &Value,
    ) -> Result<(), JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        conv_db::set_delivery(&mut tx, self.org, id, status, delivery, None).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn post_note(
        &self,
        conversation: &Conversation,
        lead_id: i64,
        reply: &Message,
    ) -> Result<Option<i64>, JobError> {
        let kommo = &self.ctx.kommo;
        let connection_id = ConnectionId(conversation.connection_id);
        let marker = format!("[ref:{}]", reply.id);
        if self.job.attempts > 1 {
            let notes = kommo
                .with_token(
                    &self.ctx.db,
                    self.org,
                    connection_id,
                    |domain, token| async move {
                        kommo.client.lead_notes(&domain, &token, lead_id).await
                    },
                )
                .await?;
            if let Some(note) = notes.iter().find(|n| {
                n["params"]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&marker))
            }) {
                return Ok(note["id"].as_i64());
            }
        }
        let note = json!({"note_type": "common", "params": {"text": format!("{}: {}\n\n{marker}", reply.author.as_deref().unwrap_or("Agent"), reply.text)}});
        let id = kommo
            .with_token(&self.ctx.db, self.org, connection_id, |domain, token| {
                let note = note.clone();
                async move { kommo.client.add_note(&domain, &token, lead_id, note).await }
            })
            .await?;
        Ok(id)
    }

    /// The chat message, when the connection has a Chats channel; its `msgid` is the
    /// answer's id, which Kommo de-duplicates.
    async fn send_chat(
        &self,
        conversation: &Conversation,
        agent: &Agent,
        reply: &Message,
    ) -> Result<Option<String>, JobError> {
        let channel = self
            .chat_channel(ConnectionId(conversation.connection_id))
            .await?;
        let Some(channel) = channel else {
            return Ok(None);
        };
        let sent = self
            .ctx
            .kommo
            .client
            .send_chat_message(
                &channel,
                &conversation.chat_id,
                &reply.id.to_string(),
                &agent.name,
                &reply.text,
            )
            .await
            .map_err(crate::kommo::tokens::TokenError::from)?;
        Ok(Some(sent.unwrap_or_else(|| reply.id.to_string())))
    }
}

impl Reply<'_> {
    /// The connection's Chats channel, its secret opened; `None` when it has none.
    async fn chat_channel(
        &self,
        connection_id: ConnectionId,
    ) -> Result<Option<ChatChannel>, JobError> {
        let mut tx = self.ctx.db.begin_worker(self.org).await?;
        let stored = db::crm::chat_channel(&mut tx, self.org, connection_id).await?;
        tx.commit().await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let secret = self
            .ctx
            .kommo
            .keys()
            .and_then(|keys| {
                keys.decrypt(
                    &stored.secret_enc,
                    connection_id.0,
                    crate::crypto::CHAT_SECRET,
                )
            })
            .map_err(|e| {
                JobError::Permanent(format!("the chat channel's secret cannot be read: {e}"))
            })?;
        let field = |key: &str| stored.channel[key].as_str().unwrap_or_default().to_owned();
        Ok(Some(ChatChannel {
            scope_id: field("scope_id"),
            secret,
            bot_id: field("bot_id"),
            bot_name: field("bot_name"),
        }))
    }
}

/// The tool calls stored on an answer.
fn tool_uses(reply: &Message) -> Vec<ToolUse> {
    serde_json::from_value(reply.tool_calls.clone()).unwrap_or_default()
}

/// The first of the agent's handoff keywords that one of the messages contains (any case).
fn keyword_in<'a>(keywords: &'a [String], set: &[Message]) -> Option<&'a str> {
    let texts: Vec<String> = set.iter().map(|m| m.text.to_lowercase()).collect();
    keywords
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .find(|k| {
            let k = k.to_lowercase();
            texts.iter().any(|t| t.contains(&k))
        })
}
