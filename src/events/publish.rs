//! Publishing: callers hand events over without waiting (`Publisher::publish` never
//! blocks and never fails), and one task per process writes whatever queued up meanwhile
//! to Redis in one script call — one round trip for a batch of job outcomes as for a
//! single event. Events of one process reach Redis in the order they were handed over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use tokio::sync::{mpsc, oneshot};

use crate::domain::OrgId;
use crate::events::{Event, stream_key};
use crate::metrics;
use crate::redis_conn::RedisConn;

/// Events waiting for the writer; beyond this (Redis far behind) new ones are dropped.
const QUEUE: usize = 8192;
/// Events per script call.
const BATCH: usize = 256;
/// How long one call may take before its events are given up as failed.
const BUDGET: Duration = Duration::from_secs(1);

/// `ARGV`: retention (ms), then per org: stream key (also the channel), n, then n pairs
/// of kind and data. Appends each event to its org's stream, trimming what is older than
/// the retention (`~`: whole nodes only, so at least the retention is kept), lets the key
/// expire once the org has been quiet for twice the retention, and publishes each org's
/// events as one message: lines of `<id> <kind> <data>` (JSON data has no raw newline).
const PUBLISH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local minid = tostring(math.max(now - retention, 0)) .. '-0'
local i, published = 2, 0
while i <= #ARGV do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local lines = {}
  for _ = 1, n do
    local kind, data = ARGV[i], ARGV[i + 1]
    i = i + 2
    local id = redis.call('XADD', key, 'MINID', '~', minid, '*', 'k', kind, 'd', data)
    lines[#lines + 1] = id .. ' ' .. kind .. ' ' .. data
  end
  redis.call('PEXPIRE', key, retention * 2)
  redis.call('PUBLISH', key, table.concat(lines, '\n'))
  published = published + n
end
return published
";

static PUBLISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH));

/// How long `publish_before` waits for its events to be written; past it the caller goes
/// on (the events are still written, only their order against what follows is not sure).
const FLUSH_BUDGET: Duration = Duration::from_millis(250);

/// Hands events to the process's writer task. Cloning is cheap.
#[derive(Clone)]
pub struct Publisher {
    sender: mpsc::Sender<Queued>,
    /// The last write failed: nobody waits for the writer until one succeeds again.
    failing: Arc<AtomicBool>,
}

/// An event waiting for the writer, and whoever waits until it is written.
struct Queued {
    event: Event,
    written: Option<oneshot::Sender<()>>,
}

impl Publisher {
    /// The publisher, and its writer task when a runtime is there to run it (the task ends
    /// when the last `Publisher` is dropped). Without one, events are dropped and counted.
    pub fn new(redis: RedisConn, retention: Duration) -> Publisher {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let failing = Arc::new(AtomicBool::new(false));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write(redis, retention, receiver, failing.clone()));
        }
        Publisher { sender, failing }
    }

    /// Queues an event; never waits. Call it after the change is committed.
    pub fn publish(&self, event: Event) {
        self.queue(event, None);
    }

    pub fn publish_all(&self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.publish(event);
        }
    }

    /// Publishes `events` and waits (briefly) until they, and everything queued before
    /// them, are written: for events that must reach Redis before what the caller does
    /// next can cause others elsewhere (a job announced as queued before it is pushed,
    /// so no replica's `running` can overtake it).
    /// While Redis fails, it waits for nothing: a dead Redis never holds up a request.
    pub async fn publish_before(&self, events: Vec<Event>) {
        if self.failing.load(Ordering::Relaxed) {
            return self.publish_all(events);
        }
        let mut events = events.into_iter().peekable();
        let mut written = None;
        while let Some(event) = events.next() {
            if events.peek().is_some() {
                self.publish(event);
            } else {
                let (done, wait) = oneshot::channel();
                if self.queue(event, Some(done)) {
                    written = Some(wait);
                }
            }
        }
        if let Some(wait) = written {
            let _ = tokio::time::timeout(FLUSH_BUDGET, wait).await;
        }
    }

    fn queue(&self, event: Event, written: Option<oneshot::Sender<()>>) -> bool {
        let queued = self.sender.try_send(Queued { event, written }).is_ok();
        if !queued {
            metrics::EVENTS.with_label_values(&["dropped"]).inc();
        }
        queued
    }
}

async fn write(
    redis: RedisConn,
    retention: Duration,
    mut receiver: mpsc::Receiver<Queued>,
    failing_flag: Arc<AtomicBool>,
) {
    let retention_ms = retention.as_millis() as u64;
    let mut queued = Vec::with_capacity(BATCH);
    let mut failing = false;
    while receiver.recv_many(&mut queued, BATCH).await > 0 {
        let n = queued.len() as u64;
        let batch: Vec<&Event> = queued.iter().map(|q| &q.event).collect();
        let sent = tokio::time::timeout(BUDGET, send(&redis, retention_ms, &batch)).await;
        failing_flag.store(!matches!(sent, Ok(Ok(()))), Ordering::Relaxed);
        // Written or given up: either way nobody waits longer.
        for waiting in queued.drain(..).filter_map(|q| q.written) {
            let _ = waiting.send(());
        }
        let error = match sent {
            Ok(Ok(())) => {
                metrics::EVENTS.with_label_values(&["published"]).inc_by(n);
                if failing {
                    tracing::info!("live events are published again");
                    failing = false;
                }
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", BUDGET.as_millis()),
        };
        metrics::EVENTS.with_label_values(&["failed"]).inc_by(n);
        // Once per outage: a dead Redis would otherwise log every batch.
        if !failing {
            tracing::warn!(events = n, error = %error,
                "could not publish live events; clients reconnecting later get a reset");
            failing = true;
        }
    }
}

/// One script call for the batch, its events grouped by org in their order.
async fn send(redis: &RedisConn, retention_ms: u64, batch: &[&Event]) -> redis::RedisResult<()> {
    let mut groups: Vec<(OrgId, Vec<&Event>)> = Vec::new();
    let mut index: HashMap<OrgId, usize> = HashMap::new();
    for event in batch {
        let slot = *index.entry(event.org_id).or_insert_with(|| {
            groups.push((event.org_id, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(*event);
    }
    let mut invocation = PUBLISH_SCRIPT.prepare_invoke();
    invocation.arg(retention_ms);
    for (org_id, events) in &groups {
        invocation.arg(stream_key(redis, *org_id)).arg(events.len());
        for event in events {
            invocation.arg(event.kind.as_str()).arg(&event.data);
        }
    }
    let mut conn = redis.connection();
    invocation.invoke_async::<i64>(&mut conn).await?;
    Ok(())
}
