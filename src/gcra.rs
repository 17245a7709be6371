//! GCRA (the generic cell rate algorithm, governor's model) shared by every replica
//! through Redis: the request limits, Kommo's per-account pace and, next, the per-org
//! limit on model calls all take from it. Each key has a theoretical arrival time (TAT)
//! that moves one emission interval per request taken; a request fits while the TAT is
//! within `burst` intervals of now. When Redis cannot answer within its budget, this
//! process keeps its own TATs for a while — logged once, reported to the caller — rather
//! than failing or stalling the request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::redis_conn::RedisConn;

/// A Redis answer slower than this counts as Redis being unavailable.
const REDIS_BUDGET: Duration = Duration::from_millis(150);
/// After a failure, Redis is not asked again for this long (no per-request timeouts).
const REDIS_BACKOFF: Duration = Duration::from_secs(5);
/// Keys this process tracks at most while Redis is down; past it, spent ones go first.
const LOCAL_KEYS: usize = 100_000;

/// `{taken, wait_ms, reset_ms}`, in Redis's time so replicas agree. `ARGV[3] = 1`
/// reserves: the request is always taken, and `wait_ms` says when its slot begins.
/// `ARGV[4]` requests were already admitted by the caller on its own (see
/// `Gcra::take_after`): they are counted first, whatever the answer for this one.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local prior = tonumber(ARGV[4])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + prior * interval
local allow_at = tat - (burst - 1) * interval
if now < allow_at and ARGV[3] ~= '1' then
  if prior > 0 then
    redis.call('SET', KEYS[1], tat, 'PX', tat - now + 1000)
  end
  return {0, allow_at - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return {1, math.max(allow_at - now, 0), new_tat - now}
";

/// A rate: one request per `interval`, up to `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// `n` per minute, all of them at once if need be.
    pub fn per_minute(n: u32) -> Rate {
        let n = n.max(1);
        Rate {
            interval: Duration::from_millis((60_000 / u64::from(n)).max(1)),
            burst: n,
        }
    }
}

/// Check (refuse a request over the rate) or reserve (always take the next slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Reserve,
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub taken: bool,
    /// Check: until a refused request would fit. Reserve: until the reserved slot begins.
    pub wait: Duration,
    /// Until the key is back to its full burst.
    pub reset: Duration,
    /// Decided by this process alone (Redis unavailable).
    pub local: bool,
}

#[derive(Clone)]
pub struct Gcra {
    redis: RedisConn,
    script: Arc<redis::Script>,
    local: Arc<Local>,
    redis_down_until_ms: Arc<AtomicU64>,
    warned: Arc<AtomicBool>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Gcra {
    pub fn new(redis: RedisConn) -> Gcra {
        Gcra {
            redis,
            script: Arc::new(redis::Script::new(SCRIPT)),
            local: Arc::new(Local::default()),
            redis_down_until_ms: Arc::new(AtomicU64::new(0)),
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Takes one request under `key` (prefixed as every Redis key).
    pub async fn take(&self, key: &str, rate: Rate, mode: Mode) -> Outcome {
        self.take_after(key, rate, mode, 0).await
    }

    /// `take`, after first counting `prior` requests that the caller already admitted
    /// on its own since it last asked (they count even when this one is refused).
    pub async fn take_after(&self, key: &str, rate: Rate, mode: Mode, prior: u32) -> Outcome {
        if now_ms() >= self.redis_down_until_ms.load(Ordering::Relaxed) {
            let shared = self.take_shared(key, rate, mode, prior);
            match tokio::time::timeout(REDIS_BUDGET, shared).await {
                Ok(Ok(outcome)) => {
                    if self.warned.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits are shared through Redis again");
                    }
                    return outcome;
                }
                Ok(Err(e)) => self.redis_failed(&e.to_string()),
                Err(_) => self.redis_failed("timed out"),
            }
        }
        self.local.take(key, rate, mode, prior)
    }

    fn redis_failed(&self, why: &str) {
        self.redis_down_until_ms.store(
            now_ms() + REDIS_BACKOFF.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                "Redis unavailable: rate limits fall back to this process"
            );
        }
    }

    #[tracing::instrument(name = "redis.rate_limit", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    async fn take_shared(
        &self,
        key: &str,
        rate: Rate,
        mode: Mode,
        prior: u32,
    ) -> redis::RedisResult<Outcome> {
        let mut conn = self.redis.connection();
        let (taken, wait_ms, reset_ms): (i64, i64, i64) = self
            .script
            .key(self.redis.key(key))
            .arg(rate.interval.as_millis() as u64)
            .arg(rate.burst.max(1))
            .arg(u8::from(mode == Mode::Reserve))
            .arg(prior)
            .invoke_async(&mut conn)
            .await?;
        Ok(Outcome {
            taken: taken == 1,
            wait: Duration::from_millis(wait_ms.max(0) as u64),
            reset: Duration::from_millis(reset_ms.max(0) as u64),
            local: false,
        })
    }
}

/// The TATs this process keeps while Redis is unavailable.
#[derive(Default)]
struct Local(Mutex<HashMap<String, Instant>>);

impl Local {
    /// The script's arithmetic on this process's own clock.
    fn take(&self, key: &str, rate: Rate, mode: Mode, prior: u32) -> Outcome {
        let now = Instant::now();
        let mut tats = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if tats.len() >= LOCAL_KEYS && !tats.contains_key(key) {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now).max(now) + rate.interval * prior;
        let allow_at = tat
            .checked_sub(rate.interval * rate.burst.max(1).saturating_sub(1))
            .unwrap_or(now);
        if now < allow_at && mode == Mode::Check {
            if prior > 0 && (tats.len() < LOCAL_KEYS || tats.contains_key(key)) {
                tats.insert(key.to_string(), tat);
            }
            return Outcome {
                taken: false,
                wait: allow_at - now,
                reset: tat - now,
                local: true,
            };
        }
        let new_tat = tat + rate.interval;
        if tats.len() < LOCAL_KEYS || tats.contains_key(key) {
            tats.insert(key.to_string(), new_tat);
        }
        Outcome {
            taken: true,
            wait: allow_at.saturating_duration_since(now),
            reset: new_tat - now,
            local: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_allows_the_burst_then_refuses_with_the_wait() {
        let g = Local::default();
        let rate = Rate::per_minute(3);
        for _ in 0..3 {
            assert!(g.take("k", rate, Mode::Check, 0).taken);
        }
        let refused = g.take("k", rate, Mode::Check, 0);
        assert!(!refused.taken);
        assert!(refused.wait > Duration::from_secs(19) && refused.wait <= Duration::from_secs(20));
        assert!(g.take("other", rate, Mode::Check, 0).taken);
    }

    #[test]
    fn reserve_spaces_the_slots_one_interval_apart() {
        let g = Local::default();
        let rate = Rate {
            interval: Duration::from_millis(150),
            burst: 1,
        };
        let waits: Vec<Duration> = (0..3)
            .map(|_| g.take("acct", rate, Mode::Reserve, 0).wait)
            .collect();
        assert!(waits[0] < Duration::from_millis(5));
        assert!(waits[1] > Duration::from_millis(140) && waits[1] <= Duration::from_millis(150));
        assert!(waits[2] > Duration::from_millis(290) && waits[2] <= Duration::from_millis(300));
    }
}
