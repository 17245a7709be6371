//! At most 7 requests per second to one Kommo account (Kommo's own limit), shared by every
//! task and replica through Redis. Each call reserves the next free slot with GCRA (one
//! slot every 150 ms, no burst), so any one-second window holds at most 7 calls; if
//! Redis is unreachable the process keeps its own slots instead of failing the call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis_conn::RedisConn;

/// 1 s / 7 rounded up, with room for clock jitter between replicas.
pub const SLOT: Duration = Duration::from_millis(150);

/// Reserves a slot: the theoretical arrival time moves one slot past max(now, itself), and
/// the caller waits until its slot begins. Times come from Redis, so replicas agree.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
redis.call('SET', KEYS[1], start + tonumber(ARGV[1]), 'PX', tonumber(ARGV[1]) * 20 + 1000)
return start - now
";

#[derive(Clone)]
pub struct AccountRateLimiter {
    redis: RedisConn,
    script: Arc<redis::Script>,
    local: Arc<Mutex<HashMap<String, Instant>>>,
    warned: Arc<std::sync::atomic::AtomicBool>,
}

impl AccountRateLimiter {
    pub fn new(redis: RedisConn) -> AccountRateLimiter {
        AccountRateLimiter {
            redis,
            script: Arc::new(redis::Script::new(RESERVE)),
            local: Arc::new(Mutex::new(HashMap::new())),
            warned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Waits until this caller may send one request to `account`.
    pub async fn acquire(&self, account: &str) {
        let wait = match self.reserve_shared(account).await {
            Ok(wait) => wait,
            Err(e) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Kommo rate limit falls back to this process: Redis unreachable");
                }
                self.reserve_local(account)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn reserve_shared(&self, account: &str) -> redis::RedisResult<Duration> {
        let mut conn = self.redis.connection();
        let wait_ms: i64 = self
            .script
            .key(self.redis.key(&format!("kommo:rate:{account}")))
            .arg(SLOT.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(Duration::from_millis(wait_ms.max(0) as u64))
    }

    fn reserve_local(&self, account: &str) -> Duration {
        let now = Instant::now();
        let mut slots = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let tat = slots.entry(account.to_string()).or_insert(now);
        let start = (*tat).max(now);
        *tat = start + SLOT;
        start - now
    }
}
