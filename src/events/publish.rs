//! Publishing: callers hand events over without waiting (`Publisher::publish` never
//! blocks and never fails), and one task per process writes whatever queued up meanwhile
//! to Redis in one script call — one round trip for a batch of job outcomes as for a
//! single event. Events of one process reach Redis in the order they were handed over.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use tokio::sync::mpsc;

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

/// A Lua function for scripts that publish: `append(key, retention, n, args, i)` appends
/// the n pairs of kind and data at `args[i]` to the org's stream `key` (also the channel),
/// trimming what is older than the retention in ms (`~`: whole nodes only, so at least the
/// retention is kept), lets the key expire once the org has been quiet for twice the
/// retention, and publishes the events as one message: lines of `<id> <kind> <data>` (JSON
/// data has no raw newline). Returns the index after the last pair. The job queue's push
/// scripts start with it too, so a job's `queued` is written in the same call as its push.
pub const APPEND_LUA: &str = r"
local function append(key, retention, n, args, i)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local minid = tostring(math.max(now - retention, 0)) .. '-0'
  local lines = {}
  for _ = 1, n do
    local kind, data = args[i], args[i + 1]
    i = i + 2
    local id = redis.call('XADD', key, 'MINID', '~', minid, '*', 'k', kind, 'd', data)
    lines[#lines + 1] = id .. ' ' .. kind .. ' ' .. data
  end
  redis.call('PEXPIRE', key, retention * 2)
  redis.call('PUBLISH', key, table.concat(lines, '\n'))
  return i
end
";

/// `ARGV`: retention (ms), then per org: stream key, n, then n pairs of kind and data.
const PUBLISH: &str = r"
local retention = tonumber(ARGV[1])
local i, published = 2, 0
while i <= #ARGV do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  i = append(key, retention, n, ARGV, i + 2)
  published = published + n
end
return published
";

static PUBLISH_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{APPEND_LUA}{PUBLISH}")));

/// Hands events to the process's writer task. Cloning is cheap.
#[derive(Clone)]
pub struct Publisher {
    sender: mpsc::Sender<Event>,
    redis: RedisConn,
    retention_ms: u64,
}

impl Publisher {
    /// The publisher, and its writer task when a runtime is there to run it (the task ends
    /// when the last `Publisher` is dropped). Without one, events are dropped and counted.
    pub fn new(redis: RedisConn, retention: Duration) -> Publisher {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let retention_ms = retention.as_millis() as u64;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write(redis.clone(), retention_ms, receiver));
        }
        Publisher {
            sender,
            redis,
            retention_ms,
        }
    }

    /// Queues an event; never waits. Call it after the change is committed.
    pub fn publish(&self, event: Event) {
        if self.sender.try_send(event).is_err() {
            metrics::EVENTS.with_label_values(&["dropped"]).inc();
        }
    }

    pub fn publish_all(&self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.publish(event);
        }
    }

    /// Adds `events`, all of `org_id`, to a call of a script that starts with
    /// [`APPEND_LUA`]: one more key (the org's stream), and the arguments `retention, n,`
    /// then n pairs of kind and data, for the script to pass to `append`. For events that
    /// must be written in the same call as another change (a job's `queued` with its
    /// push, so no replica's `running` can overtake it). Count them with
    /// [`Publisher::written`] once the call succeeded.
    pub fn append_to(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        org_id: OrgId,
        events: &[Event],
    ) {
        invocation
            .key(stream_key(&self.redis, org_id))
            .arg(self.retention_ms)
            .arg(events.len());
        for event in events {
            invocation.arg(event.kind.as_str()).arg(&event.data);
        }
    }

    /// The org's stream (and channel), for a script that names it among its arguments.
    pub fn stream_key(&self, org_id: OrgId) -> String {
        stream_key(&self.redis, org_id)
    }

    /// How long events are kept, in ms: what `append` takes as its retention.
    pub fn retention_ms(&self) -> u64 {
        self.retention_ms
    }

    /// Counts events that another script wrote (`append_to`).
    pub fn written(&self, n: usize) {
        metrics::EVENTS
            .with_label_values(&["published"])
            .inc_by(n as u64);
    }
}

async fn write(redis: RedisConn, retention_ms: u64, mut receiver: mpsc::Receiver<Event>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failing = false;
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        let sent = tokio::time::timeout(BUDGET, send(&redis, retention_ms, &batch)).await;
        batch.clear();
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
async fn send(redis: &RedisConn, retention_ms: u64, batch: &[Event]) -> redis::RedisResult<()> {
    let mut groups: Vec<(OrgId, Vec<&Event>)> = Vec::new();
    let mut index: HashMap<OrgId, usize> = HashMap::new();
    for event in batch {
        let slot = *index.entry(event.org_id).or_insert_with(|| {
            groups.push((event.org_id, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(event);
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
