//! The cap on open streams per user, across replicas: a sorted set per user
//! (`<prefix>events:streams:<user>`) holds one member per open stream, scored by when it
//! lapses. A stream's heartbeat pushes that time on; a closed stream removes its member;
//! the streams of a replica that died simply lapse (after three heartbeats), so a crash
//! never locks a user out for long.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use crate::domain::UserId;
use crate::redis_conn::RedisConn;

/// `KEYS`: the user's set; `ARGV`: member, cap, slot lifetime (ms). Drops lapsed slots,
/// then takes one: `-1`, or when the cap is reached the ms until the oldest slot lapses.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) - now, 0)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return -1
";

/// `KEYS`: the user's set; `ARGV`: member, slot lifetime (ms). Also puts back a slot that
/// Redis lost (a restart), so the count recovers.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));

/// One open stream's place in its user's count.
pub struct Slot {
    redis: RedisConn,
    key: String,
    member: String,
    ttl: Duration,
}

/// Takes a slot, or says how long until one may free up.
pub async fn take(
    redis: &RedisConn,
    user: UserId,
    cap: u32,
    ttl: Duration,
) -> redis::RedisResult<Result<Slot, Duration>> {
    let slot = Slot {
        redis: redis.clone(),
        key: redis.key(&format!("events:streams:{user}")),
        member: Uuid::new_v4().simple().to_string(),
        ttl,
    };
    let mut conn = redis.connection();
    let answer: i64 = TAKE_SCRIPT
        .key(&slot.key)
        .arg(&slot.member)
        .arg(cap)
        .arg(ttl.as_millis() as u64)
        .invoke_async(&mut conn)
        .await?;
    Ok(if answer < 0 {
        Ok(slot)
    } else {
        Err(Duration::from_millis(answer as u64))
    })
}

impl Slot {
    /// Keeps the slot alive for another lifetime (at each heartbeat).
    pub async fn renew(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection();
        RENEW_SCRIPT
            .key(&self.key)
            .arg(&self.member)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}

impl Drop for Slot {
    /// Frees the slot; if that fails (Redis away, the runtime gone), it lapses on its own.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let redis = self.redis.clone();
        let key = std::mem::take(&mut self.key);
        let member = std::mem::take(&mut self.member);
        runtime.spawn(async move {
            let mut conn = redis.connection();
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&key).arg(&member);
            let removed = zrem.query_async::<i64>(&mut conn);
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), removed).await {
                tracing::debug!(error = %e, "could not free an event stream's slot; it lapses");
            }
        });
    }
}
