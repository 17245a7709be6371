//! The Redis side of the job queue: which job runs next, and a wake-up for idle workers.
//! The `jobs` row is the record; Redis only orders job ids, so anything lost here is
//! found again by the sweep (`JobQueue::sweep`), which compares the unfinished rows with
//! the set of ids Redis holds.
//!
//! Keys, all under `REDIS_KEY_PREFIX`:
//! - `q:<lane>:org:<org>`: a list of job ids of one org, oldest first;
//! - `q:<lane>:ring`: the orgs that have work in the lane, each once; popping rotates it,
//!   so orgs take turns and a burst of one org waits behind nobody else's single job;
//! - `q:<lane>:wake`: tokens that end an idle worker's blocking pop (at most 64 kept);
//! - `q:delayed`: jobs not due yet (retries), scored by due time in ms;
//! - `q:pending`: every job id in a list or in `q:delayed`.
//!
//! Every change is one Lua script, so the ring, the lists and `q:pending` always agree.
//! The scripts touch keys they compute from the prefix, which a standalone Redis (what
//! the service supports) allows.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use tokio::sync::mpsc;

use crate::domain::{JobId, OrgId};
use crate::events::publish::APPEND_LUA;
use crate::events::{Event, Publisher};
use crate::redis_conn::RedisConn;

/// Work is split by what it waits on, so that a hanging Kommo holds only Kommo-bound
/// jobs while webhook parsing (and everything else local) carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Jobs that mostly wait on PostgreSQL: webhook parsing, local processing.
    Internal,
    /// Jobs that call Kommo.
    External,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Internal, Lane::External];

    /// The lane its type declares (`Job::LANE`); an unknown type fails at once, in the
    /// internal lane.
    pub fn of(job_type: &str) -> Lane {
        super::job::lane_of(job_type)
    }

    pub fn name(self) -> &'static str {
        match self {
            Lane::Internal => "internal",
            Lane::External => "external",
        }
    }
}

/// `KEYS`: org list, ring, pending, wake, then the org's event stream when the push
/// announces the job; `ARGV`: org, job, then `retention, n,` and n events for `append`.
const PUSH: &str = r"
if KEYS[5] then append(KEYS[5], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV, 5) end
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('RPUSH', KEYS[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 63)
return 1
";

/// `PUSH` for many jobs of one org: `KEYS` as `PUSH`; `ARGV`: org, n, the n jobs, then
/// the events as `PUSH`. Wakes one idle worker per job, up to the 64 tokens kept.
const PUSH_MANY: &str = r"
local n = tonumber(ARGV[2])
if KEYS[5] then append(KEYS[5], tonumber(ARGV[n + 3]), tonumber(ARGV[n + 4]), ARGV, n + 5) end
redis.call('SADD', KEYS[3], unpack(ARGV, 3, n + 2))
if redis.call('RPUSH', KEYS[1], unpack(ARGV, 3, n + 2)) == n then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
for _ = 1, math.min(n, 64) do redis.call('LPUSH', KEYS[4], '1') end
redis.call('LTRIM', KEYS[4], 0, 63)
return n
";

/// `PUSH_MANY` for the jobs of many orgs and lanes, with their events: `KEYS`: pending;
/// `ARGV`: retention, then per org and lane its list, ring, wake, org, stream, n jobs and
/// m events, then the n jobs and the m pairs of kind and data.
const PUSH_BATCH: &str = r"
local pending, retention = KEYS[1], tonumber(ARGV[1])
local i, pushed = 2, 0
while i <= #ARGV do
  local list, ring, wake, org, stream = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local n, m = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local first, last = i + 7, i + 6 + n
  if m > 0 then append(stream, retention, m, ARGV, last + 1) end
  redis.call('SADD', pending, unpack(ARGV, first, last))
  if redis.call('RPUSH', list, unpack(ARGV, first, last)) == n then
    redis.call('RPUSH', ring, org)
  end
  for _ = 1, math.min(n, 64) do redis.call('LPUSH', wake, '1') end
  redis.call('LTRIM', wake, 0, 63)
  i = last + 1 + 2 * m
  pushed = pushed + n
end
return pushed
";

/// `KEYS`: delayed, pending, then the stream as `PUSH`; `ARGV`: member (`lane|org|job`),
/// due (ms), job, then the events as `PUSH`.
const PUSH_DELAYED: &str = r"
if KEYS[3] then append(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV, 6) end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
";

/// `KEYS`: ring, pending; `ARGV`: org list prefix, the most jobs to take, then the orgs
/// to pass over (this process already runs its share of their jobs). Takes one job per
/// org in ring order, round after round, so orgs take turns within one pop too. When
/// only passed-over orgs have work, they are served anyway: no worker idles while the
/// lane has work. Returns `org, job, org, job, …`.
const POP: &str = r"
local ring, pending, prefix = KEYS[1], KEYS[2], ARGV[1]
local max = tonumber(ARGV[2])
local skip = {}
for i = 3, #ARGV do skip[ARGV[i]] = true end
local out = {}
local function take(org)
  local list = prefix .. org
  local job = redis.call('LPOP', list)
  if redis.call('LLEN', list) == 0 then redis.call('LREM', ring, 0, org) end
  if job then
    redis.call('SREM', pending, job)
    out[#out + 1] = org
    out[#out + 1] = job
    return true
  end
  return false
end
local function rounds(serve_skipped)
  while #out < 2 * max do
    local n = redis.call('LLEN', ring)
    local took = false
    for _ = 1, n do
      if #out >= 2 * max then break end
      local org = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
      if not org then break end
      if serve_skipped or not skip[org] then
        if take(org) then took = true end
      end
    end
    if not took then return end
  end
end
rounds(false)
if #out == 0 then rounds(true) end
return out
";

/// `KEYS`: delayed; `ARGV`: key prefix (`…q:`), now (ms), limit. Moves due jobs to their
/// lane and wakes a worker for each.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local lane, org, job = string.match(member, '^([^|]+)|([^|]+)|([^|]+)$')
  if lane then
    local base = ARGV[1] .. lane
    if redis.call('RPUSH', base .. ':org:' .. org, job) == 1 then
      redis.call('RPUSH', base .. ':ring', org)
    end
    redis.call('LPUSH', base .. ':wake', '1')
    redis.call('LTRIM', base .. ':wake', 0, 63)
  end
end
return #due
";

/// Ids per `PUSH_MANY` call.
const PUSH_MANY_CHUNK: usize = 500;

// Hashed once: `EVALSHA` with a fallback to `EVAL` when Redis lost its script cache.
// The pushes start with `append`, for the events they may write.
static PUSH_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_append(PUSH));
static PUSH_MANY_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_append(PUSH_MANY));
static PUSH_DELAYED_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_append(PUSH_DELAYED));
static PUSH_BATCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_append(PUSH_BATCH));
static POP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(POP));
static PROMOTE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PROMOTE));

fn with_append(script: &str) -> Script {
    Script::new(&format!("{APPEND_LUA}{script}"))
}

/// Pushes per `PUSH_BATCH` call; beyond it, the next call takes the rest.
const BATCH: usize = 256;
/// Pushes waiting for the batch writer; when it is full, callers push on their own.
const BATCH_QUEUE: usize = 4096;
/// How long the writer waits for more pushes to join a call, when the last call carried
/// more than one (pushes are arriving faster than a call takes). An idle process never
/// waits. A millisecond is the runtime timer's resolution.
const LINGER: Duration = Duration::from_millis(1);

/// A due-now push waiting for the batch writer (`Batcher`).
struct Waiting {
    lane: Lane,
    org_id: OrgId,
    job_id: JobId,
    events: Vec<Event>,
}

/// Hands due-now pushes to one writer task per process, which writes those that queued
/// up meanwhile in one `PUSH_BATCH` call. Under a webhook flood the route pushes a job
/// per delivery, and a script call cost Redis ~100 µs of CPU however few jobs it carried
/// (`INFO commandstats`: the call, its `TIME`, `PEXPIRE` and `PUBLISH`, each `redis.call`'s
/// own overhead), which the jobs of a batch share. The caller does not wait for the call:
/// the row is committed, and a push that fails is found again by the sweep.
#[derive(Clone)]
pub struct Batcher {
    sender: mpsc::Sender<Waiting>,
}

impl Batcher {
    /// The batcher and its writer task, when a runtime is there to run it (the task ends
    /// when the last `Batcher` is dropped).
    pub(super) fn start(
        store: RedisQueue,
        events: Publisher,
        breaker: Arc<super::Breaker>,
    ) -> Option<Batcher> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = mpsc::channel(BATCH_QUEUE);
        runtime.spawn(write_batches(store, events, breaker, receiver));
        Some(Batcher { sender })
    }

    /// Queues a due-now job with its events (all of `org_id`) for the next call. The
    /// events are the writer's from here on: when the call fails, it hands them to the
    /// publisher's own queue. A full queue (or a stopped writer) gives them back, for the
    /// caller to push on its own.
    pub fn submit(
        &self,
        lane: Lane,
        org_id: OrgId,
        job_id: JobId,
        events: Vec<Event>,
    ) -> Result<(), Vec<Event>> {
        let waiting = Waiting {
            lane,
            org_id,
            job_id,
            events,
        };
        self.sender.try_send(waiting).map_err(|e| match e {
            mpsc::error::TrySendError::Full(waiting)
            | mpsc::error::TrySendError::Closed(waiting) => waiting.events,
        })
    }
}

async fn write_batches(
    store: RedisQueue,
    events: Publisher,
    breaker: Arc<super::Breaker>,
    mut receiver: mpsc::Receiver<Waiting>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut linger = false;
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        if linger {
            let until = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                let more = tokio::time::timeout_at(until, receiver.recv_many(&mut batch, room));
                if !matches!(more.await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
        linger = batch.len() > 1;
        let written =
            tokio::time::timeout(super::PUSH_BUDGET, store.push_batch(&batch, &events)).await;
        let error = match written {
            Ok(Ok(())) => {
                batch.clear();
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", super::PUSH_BUDGET.as_millis()),
        };
        let jobs = batch.len();
        for waiting in batch.drain(..) {
            // Best effort, like every event; the sweep pushes the job later.
            events.publish_all(waiting.events);
        }
        if breaker.trip() {
            tracing::warn!(jobs, error = %error,
                "could not push jobs; pushes pause for 5 s and the sweep pushes what is waiting");
        }
    }
}

/// Events a push writes in its own script call: all of its org.
pub type Announce<'a> = Option<(&'a Publisher, &'a [Event])>;

/// A job id taken from a lane.
#[derive(Debug, Clone, Copy)]
pub struct Popped {
    pub job_id: JobId,
    pub org_id: OrgId,
}

#[derive(Clone)]
pub struct RedisQueue {
    redis: RedisConn,
    base: String,
}

impl RedisQueue {
    pub fn new(redis: RedisConn) -> RedisQueue {
        let base = redis.key("q:");
        RedisQueue { redis, base }
    }

    pub fn redis(&self) -> &RedisConn {
        &self.redis
    }

    fn lane_key(&self, lane: Lane, what: &str) -> String {
        format!("{}{}:{what}", self.base, lane.name())
    }

    fn org_prefix(&self, lane: Lane) -> String {
        self.lane_key(lane, "org:")
    }

    pub fn wake_key(&self, lane: Lane) -> String {
        self.lane_key(lane, "wake")
    }

    fn delayed_key(&self) -> String {
        format!("{}delayed", self.base)
    }

    fn pending_key(&self) -> String {
        format!("{}pending", self.base)
    }

    /// Pushes a job, due now or after `delay`, writing `announce`'s events in the same
    /// call.
    pub async fn push(
        &self,
        lane: Lane,
        org_id: OrgId,
        job_id: JobId,
        delay: Option<Duration>,
        announce: Announce<'_>,
    ) -> redis::RedisResult<()> {
        let mut invocation = match delay.filter(|d| !d.is_zero()) {
            None => {
                let mut invocation = PUSH_SCRIPT.prepare_invoke();
                invocation
                    .key(format!("{}{org_id}", self.org_prefix(lane)))
                    .key(self.lane_key(lane, "ring"))
                    .key(self.pending_key())
                    .key(self.wake_key(lane))
                    .arg(org_id.to_string())
                    .arg(job_id.to_string());
                invocation
            }
            Some(delay) => {
                let due = now_ms().saturating_add(delay.as_millis() as u64);
                let mut invocation = PUSH_DELAYED_SCRIPT.prepare_invoke();
                invocation
                    .key(self.delayed_key())
                    .key(self.pending_key())
                    .arg(format!("{}|{org_id}|{job_id}", lane.name()))
                    .arg(due)
                    .arg(job_id.to_string());
                invocation
            }
        };
        self.invoke_announcing(&mut invocation, org_id, announce)
            .await
    }

    async fn invoke_announcing(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        org_id: OrgId,
        announce: Announce<'_>,
    ) -> redis::RedisResult<()> {
        let announce = announce.filter(|(_, events)| !events.is_empty());
        if let Some((publisher, events)) = announce {
            publisher.append_to(invocation, org_id, events);
        }
        let mut conn = self.redis.connection();
        invocation.invoke_async::<i64>(&mut conn).await?;
        if let Some((publisher, events)) = announce {
            publisher.written(events.len());
        }
        Ok(())
    }

    /// The pushes of `batch` in one call, grouped by lane and org in the order they came.
    async fn push_batch(&self, batch: &[Waiting], events: &Publisher) -> redis::RedisResult<()> {
        let mut groups: Vec<(Lane, OrgId, Vec<&Waiting>)> = Vec::new();
        for waiting in batch {
            match groups
                .iter_mut()
                .find(|(lane, org, _)| *lane == waiting.lane && *org == waiting.org_id)
            {
                Some((_, _, members)) => members.push(waiting),
                None => groups.push((waiting.lane, waiting.org_id, vec![waiting])),
            }
        }
        let mut invocation = PUSH_BATCH_SCRIPT.prepare_invoke();
        invocation
            .key(self.pending_key())
            .arg(events.retention_ms());
        let mut announced = 0;
        for (lane, org_id, members) in &groups {
            let n_events: usize = members.iter().map(|w| w.events.len()).sum();
            invocation
                .arg(format!("{}{org_id}", self.org_prefix(*lane)))
                .arg(self.lane_key(*lane, "ring"))
                .arg(self.wake_key(*lane))
                .arg(org_id.to_string())
                .arg(events.stream_key(*org_id))
                .arg(members.len())
                .arg(n_events);
            for waiting in members {
                invocation.arg(waiting.job_id.to_string());
            }
            for event in members.iter().flat_map(|w| &w.events) {
                invocation.arg(event.kind.as_str()).arg(&event.data);
            }
            announced += n_events;
        }
        let mut conn = self.redis.connection();
        invocation.invoke_async::<i64>(&mut conn).await?;
        events.written(announced);
        Ok(())
    }

    /// Jobs of one org, due now, in one call (at most `PUSH_MANY_CHUNK` ids a call, so
    /// the script's argument list stays small), each chunk with its jobs' events: the
    /// events of `announce` are one per job, in the jobs' order.
    pub async fn push_many(
        &self,
        lane: Lane,
        org_id: OrgId,
        job_ids: &[JobId],
        announce: Announce<'_>,
    ) -> redis::RedisResult<()> {
        for (i, chunk) in job_ids.chunks(PUSH_MANY_CHUNK).enumerate() {
            let mut invocation = PUSH_MANY_SCRIPT.prepare_invoke();
            invocation
                .key(format!("{}{org_id}", self.org_prefix(lane)))
                .key(self.lane_key(lane, "ring"))
                .key(self.pending_key())
                .key(self.wake_key(lane))
                .arg(org_id.to_string())
                .arg(chunk.len());
            for id in chunk {
                invocation.arg(id.to_string());
            }
            let events = announce.map(|(publisher, events)| {
                let from = (i * PUSH_MANY_CHUNK).min(events.len());
                let to = (from + chunk.len()).min(events.len());
                (publisher, &events[from..to])
            });
            self.invoke_announcing(&mut invocation, org_id, events)
                .await?;
        }
        Ok(())
    }

    /// Up to `max` jobs of the lane, orgs taking turns, passing over `skip` unless
    /// nobody else has work.
    pub async fn pop(
        &self,
        lane: Lane,
        max: usize,
        skip: &[OrgId],
    ) -> redis::RedisResult<Vec<Popped>> {
        let mut conn = self.redis.connection();
        let mut invocation = POP_SCRIPT.prepare_invoke();
        invocation
            .key(self.lane_key(lane, "ring"))
            .key(self.pending_key())
            .arg(self.org_prefix(lane))
            .arg(max.max(1));
        for org in skip {
            invocation.arg(org.to_string());
        }
        let got: Vec<String> = invocation.invoke_async(&mut conn).await?;
        // Anything in a list that we did not write is dropped: safe, because the sweep
        // works from the rows, not from Redis.
        Ok(got
            .chunks_exact(2)
            .filter_map(|pair| {
                Some(Popped {
                    org_id: pair[0].parse().ok()?,
                    job_id: pair[1].parse().ok()?,
                })
            })
            .collect())
    }

    /// Moves jobs whose delay is over into their lanes; how many moved.
    pub async fn promote_due(&self, limit: usize) -> redis::RedisResult<i64> {
        let mut conn = self.redis.connection();
        PROMOTE_SCRIPT
            .key(self.delayed_key())
            .arg(&self.base)
            .arg(now_ms())
            .arg(limit)
            .invoke_async(&mut conn)
            .await
    }

    /// For each id, whether Redis holds it (in a lane or delayed).
    pub async fn held(&self, ids: &[JobId]) -> redis::RedisResult<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.connection();
        let mut cmd = redis::cmd("SMISMEMBER");
        cmd.arg(self.pending_key());
        for id in ids {
            cmd.arg(id.to_string());
        }
        cmd.query_async(&mut conn).await
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kommo_bound_types_go_to_the_external_lane() {
        assert_eq!(Lane::of("crm:sync-pipelines"), Lane::External);
        assert_eq!(Lane::of("crm:sync-contacts"), Lane::External);
        assert_eq!(Lane::of("kommo:send-message"), Lane::External);
        assert_eq!(Lane::of("kommo:token-refresh"), Lane::External);
        assert_eq!(Lane::of("kommo:webhook"), Lane::Internal);
        assert_eq!(Lane::of("process-asset"), Lane::Internal);
        assert_eq!(Lane::of("test:sleep"), Lane::Internal);
    }
}
