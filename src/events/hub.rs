//! The process's one subscription to every org's channel (`PSUBSCRIBE <prefix>events:*`),
//! handed on to a broadcast channel per org that has open streams here; and the reads of
//! an org's stream that streams need to resume (`replay`) or to start (`top`).
//!
//! Whatever the subscription misses — it was not yet made, the connection broke, a slow
//! stream's receiver lagged — a stream takes from the Redis stream by id. The hub bumps
//! its `generation` after every (re)subscription so each open stream catches up then.
//!
//! A connection can die without closing (a blackholed network), so the subscription
//! PINGs it. A subscribed RESP2 connection answers `PING` with `["pong", ""]`, not
//! `+PONG`: the answer is taken as any value, since asking for a string failed every
//! ping and tore the subscription down every `PING_EVERY`. The PING is awaited beside
//! the messages, so a busy subscription keeps dispatching while it is out, and each
//! message that arrives meanwhile is proof enough that the connection lives.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::Script;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::domain::OrgId;
use crate::events::{EventId, stream_key};
use crate::redis_conn::RedisConn;

/// Messages (each a batch of one org's events) a stream's receiver may fall behind by
/// before it lags and catches up from Redis instead.
const CHANNEL_CAPACITY: usize = 256;
/// How often the subscription is checked with a PING, and how long the connection may
/// stay silent (no answer, no message) while one is out.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Redis calls of a stream (replay, start).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// One event as stored: its id, kind and data (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: EventId,
    pub kind: String,
    pub data: String,
}

pub type Batch = Arc<Vec<Stored>>;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisConn,
    orgs: Mutex<HashMap<OrgId, broadcast::Sender<Batch>>>,
    generation: watch::Sender<u64>,
    ping_every: Duration,
    ping_timeout: Duration,
}

impl Inner {
    /// The map stays usable after a panic elsewhere: every change to it is one call.
    fn orgs(&self) -> std::sync::MutexGuard<'_, HashMap<OrgId, broadcast::Sender<Batch>>> {
        self.orgs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A stream's view of its org's live events. Dropping it unsubscribes; the org's channel
/// goes with its last subscriber.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Batch>,
    pub generation: watch::Receiver<u64>,
    hub: Hub,
    org_id: OrgId,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut orgs = self.hub.inner.orgs();
        // Our own receiver is still alive here: one receiver left means it is the last.
        if orgs
            .get(&self.org_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            orgs.remove(&self.org_id);
        }
    }
}

/// `KEYS`: the org's stream; `ARGV`: the id to resume after, the most entries, the
/// retention (ms), whether to check for a gap. A gap: the id is older than the retention
/// and the stream's oldest entry is newer (events after it may have been trimmed, or the
/// key expired), or the id is from the future (another Redis, a clock that went back).
/// Then the replay starts from the oldest entry kept. Returns `{gap, entries}`.
const REPLAY: &str = r"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local after, count = ARGV[1], tonumber(ARGV[2])
local gap = 0
if ARGV[4] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local ms = parse(after)
  if ms > now + 60000 then
    gap = 1
  elseif ms < now - tonumber(ARGV[3]) then
    local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if #first == 0 or older(after, first[1][1]) then gap = 1 end
  end
end
local start = '(' .. after
if gap == 1 then start = '-' end
return {gap, redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)}
";

static REPLAY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REPLAY));

/// What a replay read: whether there is a gap before it, and up to the asked number of
/// events.
pub struct Replayed {
    pub gap: bool,
    pub events: Vec<Stored>,
}

impl Hub {
    pub fn new(redis: RedisConn) -> Hub {
        Hub::with_pings(redis, PING_EVERY, PING_TIMEOUT)
    }

    /// Tests check the subscription many times a second, where production waits
    /// `PING_EVERY` between checks.
    #[cfg(feature = "test-support")]
    pub fn with_ping_interval(redis: RedisConn, every: Duration, timeout: Duration) -> Hub {
        Hub::with_pings(redis, every, timeout)
    }

    fn with_pings(redis: RedisConn, ping_every: Duration, ping_timeout: Duration) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                redis,
                orgs: Mutex::new(HashMap::new()),
                generation: watch::Sender::new(0),
                ping_every,
                ping_timeout,
            }),
        }
    }

    pub fn subscribe(&self, org_id: OrgId) -> Subscription {
        let receiver = self
            .inner
            .orgs()
            .entry(org_id)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Subscription {
            receiver,
            generation: self.inner.generation.subscribe(),
            hub: self.clone(),
            org_id,
        }
    }

    /// Up to `count` events after `after` (with the gap check when `check_gap`).
    pub async fn replay(
        &self,
        org_id: OrgId,
        after: EventId,
        count: usize,
        retention: Duration,
        check_gap: bool,
    ) -> redis::RedisResult<Replayed> {
        let mut conn = self.inner.redis.connection();
        let (gap, entries): (i64, Vec<(String, Vec<String>)>) = REPLAY_SCRIPT
            .key(stream_key(&self.inner.redis, org_id))
            .arg(after.to_string())
            .arg(count)
            .arg(retention.as_millis() as u64)
            .arg(if check_gap { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(Replayed {
            gap: gap == 1,
            events: entries.into_iter().filter_map(entry).collect(),
        })
    }

    /// The id of the org's latest event, `ZERO` when it has none kept.
    pub async fn top(&self, org_id: OrgId) -> redis::RedisResult<EventId> {
        let mut conn = self.inner.redis.connection();
        let latest: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(stream_key(&self.inner.redis, org_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(latest
            .first()
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or(EventId::ZERO))
    }

    /// Keeps the subscription until `stop`: connects, subscribes, hands messages on, and
    /// starts over (after a pause) when the connection fails or stops answering pings.
    pub async fn run(self, stop: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        let mut failing = false;
        loop {
            let before = *self.inner.generation.borrow();
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.subscribed() => outcome,
            };
            if *self.inner.generation.borrow() != before {
                // It was subscribed: this is a new outage, retried quickly at first.
                pause = Duration::from_millis(100);
                failing = false;
            }
            let error = match outcome {
                Ok(()) => "the subscription ended".to_owned(),
                Err(e) => e.to_string(),
            };
            if failing {
                tracing::debug!(error = %error, "live events: still reconnecting");
            } else {
                tracing::warn!(error = %error,
                    "live events: the Redis subscription failed; reconnecting");
                failing = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// One subscription, until its connection fails.
    async fn subscribed(&self) -> anyhow::Result<()> {
        let redis = &self.inner.redis;
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, redis.pubsub())
            .await
            .map_err(|_| anyhow::anyhow!("no connection within {CONNECT_TIMEOUT:?}"))??;
        let (mut sink, mut messages) = pubsub.split();
        let channel_prefix = stream_key_prefix(redis);
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            sink.psubscribe(format!("{}*", glob_escape(&channel_prefix))),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no PSUBSCRIBE answer within {CONNECT_TIMEOUT:?}"))??;
        // Subscribed: every stream catches up on what the subscription may have missed.
        self.inner.generation.send_modify(|g| *g += 1);
        tracing::info!("live events: subscribed");
        let timeout = self.inner.ping_timeout;
        let mut ping = tokio::time::interval(self.inner.ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut pong: Option<Pong> = None;
        let mut silence = std::pin::pin!(tokio::time::sleep(timeout));
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Ok(()) };
                    heard = Instant::now();
                    self.dispatch(&channel_prefix, &message);
                }
                _ = ping.tick(), if pong.is_none() => {
                    let mut sink = sink.clone();
                    pong = Some(Box::pin(async move { sink.ping::<redis::Value>().await }));
                    silence.as_mut().reset(Instant::now() + timeout);
                }
                answer = answer(&mut pong) => {
                    pong = None;
                    answer?;
                }
                () = &mut silence, if pong.is_some() => {
                    // Redis answers after the messages it queued before the PING: under a
                    // flood the answer waits behind them, and each one that arrives shows
                    // the connection delivers as well as the answer would. A dead one stays
                    // silent once what was already read is dispatched.
                    if heard.elapsed() < timeout {
                        silence.as_mut().reset(heard + timeout);
                    } else {
                        anyhow::bail!("no PING answer and no message within {timeout:?}");
                    }
                }
            }
        }
    }

    fn dispatch(&self, channel_prefix: &str, message: &redis::Msg) {
        let Some(org_id) = message
            .get_channel_name()
            .strip_prefix(channel_prefix)
            .and_then(|org| org.parse().ok())
            .map(OrgId)
        else {
            return;
        };
        // Most messages are for orgs nobody here listens to: nothing is parsed for them.
        let sender = self.inner.orgs().get(&org_id).cloned();
        let Some(sender) = sender else { return };
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            return;
        };
        let batch: Vec<Stored> = payload.lines().filter_map(parse_line).collect();
        if !batch.is_empty() {
            let _ = sender.send(Arc::new(batch));
        }
    }
}

/// A PING on its way: its answer is awaited beside the messages.
type Pong = BoxFuture<'static, redis::RedisResult<redis::Value>>;

/// The answer to the PING that is out; never, while none is.
async fn answer(pong: &mut Option<Pong>) -> redis::RedisResult<redis::Value> {
    match pong {
        Some(pong) => pong.await,
        None => std::future::pending().await,
    }
}

/// `<id> <kind> <data>`, as the publish script writes it.
fn parse_line(line: &str) -> Option<Stored> {
    let (id, rest) = line.split_once(' ')?;
    let (kind, data) = rest.split_once(' ')?;
    Some(Stored {
        id: id.parse().ok()?,
        kind: kind.to_owned(),
        data: data.to_owned(),
    })
}

/// An `XRANGE` entry with the fields the publish script writes (`k`, `d`).
fn entry((id, fields): (String, Vec<String>)) -> Option<Stored> {
    let mut kind = None;
    let mut data = None;
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            "k" => kind = Some(pair[1].clone()),
            "d" => data = Some(pair[1].clone()),
            _ => {}
        }
    }
    Some(Stored {
        id: id.parse().ok()?,
        kind: kind?,
        data: data?,
    })
}

fn stream_key_prefix(redis: &RedisConn) -> String {
    redis.key("events:")
}

/// The prefix as a literal inside a glob pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_the_script_writes_them() {
        let parsed = parse_line(r#"1700000000000-3 job {"a":"b c"}"#).unwrap();
        assert_eq!(
            parsed.id,
            EventId {
                ms: 1_700_000_000_000,
                seq: 3
            }
        );
        assert_eq!(parsed.kind, "job");
        assert_eq!(parsed.data, r#"{"a":"b c"}"#);
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("x-1 job {}").is_none());
    }

    #[test]
    fn glob_characters_of_the_prefix_are_literal() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
