//! One client's stream of its org's events, as frames the HTTP layer writes out.
//!
//! Its position is the id of the last event it sent (or, for a new client, the org's
//! latest event when it connected). It subscribes to the org's live events first, then
//! reads what it must replay from the Redis stream, and from then on sends only events
//! after its position: live ones from the hub, and — whenever the hub may have missed
//! some (it resubscribed, this receiver lagged behind a slow client, Redis failed) — the
//! rest from the Redis stream by id. So events arrive once each, in order, without gaps;
//! when a gap cannot be ruled out (the position is older than the retention), a `reset`
//! says so.
//!
//! It ends when the access token expires, when the server drains, or when the client
//! goes; a heartbeat comment keeps idle connections open through proxies and renews the
//! stream's slot in its user's count.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::domain::{AuthUser, OrgId};
use crate::events::hub::{READ_TIMEOUT, Stored, Subscription};
use crate::events::limit::{self, Slot};
use crate::events::{EventId, Events};
use crate::metrics;

/// Events read from Redis per call when replaying or catching up.
const PAGE: usize = 500;

/// What the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Event(Stored),
    /// What follows may not continue where the client left off (`id`: where it did).
    Reset {
        id: EventId,
        reason: &'static str,
    },
    Heartbeat,
    /// The last frame: why the stream ends.
    End(&'static str),
}

/// A stream to open.
pub struct Open {
    pub org_id: OrgId,
    /// The caller, whose membership was checked at connect and is checked again every
    /// `Settings::membership_recheck` (a member removed meanwhile stops hearing the org).
    pub user: AuthUser,
    pub db: Db,
    pub last_event_id: Option<EventId>,
    /// When the access token expires.
    pub deadline: Instant,
    /// Cancelled when the server drains.
    pub closing: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the user has as many streams open as allowed")]
    TooMany { retry_after: Duration },
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> OpenError {
    OpenError::Unavailable(e.to_string())
}

async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, OpenError> {
    tokio::time::timeout(READ_TIMEOUT, call)
        .await
        .map_err(|_| unavailable("no answer in time"))?
        .map_err(unavailable)
}

/// Takes a slot in the user's count, subscribes, and reads what the client missed
/// (before any byte is sent, so Redis trouble is a 503 and the cap a 429).
pub async fn open(
    events: &Events,
    request: Open,
) -> Result<impl Stream<Item = Frame> + Send + use<>, OpenError> {
    let settings = events.settings;
    let slot = bounded(limit::take(
        events.redis(),
        request.user.id,
        settings.max_streams_per_user,
        settings.slot_ttl(),
    ))
    .await?
    .map_err(|retry_after| OpenError::TooMany { retry_after })?;
    let subscription = events.hub.subscribe(request.org_id);
    // Counted from here: dropping `live`, on any path, counts it out.
    metrics::EVENT_STREAMS.inc();
    let mut live = Live {
        events: events.clone(),
        org_id: request.org_id,
        subscription,
        slot,
        position: EventId::ZERO,
        pending: VecDeque::new(),
        more: false,
        stale: false,
        done: false,
        deadline: request.deadline,
        closing: request.closing,
        heartbeat: heartbeat(settings.heartbeat),
        recheck: heartbeat(settings.membership_recheck),
        user: request.user,
        db: request.db,
    };
    match request.last_event_id {
        Some(last) => {
            live.position = last;
            let replayed = bounded(live.read_after(last, true)).await?;
            live.take(replayed);
        }
        None => live.position = bounded(events.hub.top(request.org_id)).await?,
    }
    Ok(futures_util::stream::unfold(live, |mut live| async move {
        loop {
            if let Some(frame) = live.pending.pop_front() {
                return Some((frame, live));
            }
            if live.done {
                return None;
            }
            live.step().await;
        }
    }))
}

fn heartbeat(every: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + every, every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

struct Live {
    events: Events,
    org_id: OrgId,
    subscription: Subscription,
    slot: Slot,
    /// The id of the last event sent (or skipped as already known).
    position: EventId,
    pending: VecDeque<Frame>,
    /// A replay page came back full: read on before waiting for anything.
    more: bool,
    /// A read from Redis failed: try again at the next heartbeat.
    stale: bool,
    done: bool,
    deadline: Instant,
    closing: CancellationToken,
    heartbeat: Interval,
    recheck: Interval,
    user: AuthUser,
    db: Db,
}

impl Drop for Live {
    fn drop(&mut self) {
        metrics::EVENT_STREAMS.dec();
    }
}

impl Live {
    /// Waits for the next thing to send (or the end) and queues it.
    async fn step(&mut self) {
        if self.more {
            return self.catch_up().await;
        }
        tokio::select! {
            biased;
            _ = self.closing.cancelled() => self.end("the server is shutting down; reconnect"),
            _ = tokio::time::sleep_until(self.deadline) => self.end("the access token expired"),
            _ = self.heartbeat.tick() => {
                self.pending.push_back(Frame::Heartbeat);
                let _ = tokio::time::timeout(READ_TIMEOUT, self.slot.renew()).await;
                if self.stale {
                    self.catch_up().await;
                }
            }
            _ = self.recheck.tick() => {
                if !self.still_member().await {
                    self.end("no longer a member of this organization");
                }
            }
            changed = self.subscription.generation.changed() => match changed {
                // The hub subscribed (again): whatever it missed meanwhile is read by id.
                Ok(()) => self.catch_up().await,
                Err(_) => self.end("the server is shutting down; reconnect"),
            },
            received = self.subscription.receiver.recv() => match received {
                Ok(batch) => {
                    for event in batch.iter() {
                        self.send(event.clone());
                    }
                }
                // A slow client: the events it fell behind by are read from Redis.
                Err(RecvError::Lagged(_)) => self.catch_up().await,
                Err(RecvError::Closed) => self.end("the server is shutting down; reconnect"),
            },
        }
    }

    /// Whether the user is still a member; a database that does not answer is no reason
    /// to end the stream (the next check decides).
    async fn still_member(&self) -> bool {
        let checked = tokio::time::timeout(READ_TIMEOUT, async {
            let (tx, role) = self.db.begin_member(&self.user, self.org_id).await?;
            tx.commit().await?;
            Ok::<_, crate::db::Error>(role.is_some())
        })
        .await;
        match checked {
            Ok(Ok(member)) => member,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not recheck an event stream's membership");
                true
            }
            Err(_) => true,
        }
    }

    fn end(&mut self, why: &'static str) {
        self.pending.push_back(Frame::End(why));
        self.done = true;
    }

    fn send(&mut self, event: Stored) {
        if event.id > self.position {
            self.position = event.id;
            self.pending.push_back(Frame::Event(event));
        }
    }

    /// One page of what came after the position, from Redis.
    async fn catch_up(&mut self) {
        let check_gap = self.position != EventId::ZERO;
        let read =
            tokio::time::timeout(READ_TIMEOUT, self.read_after(self.position, check_gap)).await;
        match read {
            Ok(Ok(replayed)) => {
                self.stale = false;
                self.take(replayed);
            }
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("no answer in time"),
        }
    }

    fn failed(&mut self, error: &str) {
        tracing::debug!(error, org_id = %self.org_id, "an event stream could not catch up; retrying");
        self.stale = true;
        self.more = false;
    }

    async fn read_after(
        &self,
        after: EventId,
        check_gap: bool,
    ) -> redis::RedisResult<crate::events::hub::Replayed> {
        let retention = self.events.settings.retention;
        self.events
            .hub
            .replay(self.org_id, after, PAGE, retention, check_gap)
            .await
    }

    fn take(&mut self, replayed: crate::events::hub::Replayed) {
        self.more = replayed.events.len() >= PAGE;
        if replayed.gap {
            self.pending.push_back(Frame::Reset {
                id: self.position,
                reason: "events after Last-Event-ID are no longer kept; refetch",
            });
            self.position = EventId::ZERO;
        }
        for event in replayed.events {
            self.send(event);
        }
    }
}
