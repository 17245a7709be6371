//! Request rate limits with GCRA (governor's model): one limit per key across every
//! replica, kept in Redis by an atomic script. When Redis cannot answer quickly, each
//! process falls back to its own in-memory governor limiter — logged once, counted — and
//! keeps serving rather than failing requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter as Governor};

use crate::redis_conn::RedisConn;

/// A Redis answer slower than this counts as Redis being unavailable.
const REDIS_BUDGET: Duration = Duration::from_millis(150);
/// After a failure, Redis is not asked again for this long (no per-request timeouts).
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

/// `{allowed, wait_ms, reset_ms}`; times from Redis so replicas agree. The theoretical
/// arrival time (TAT) advances one emission interval per allowed request; a request is
/// allowed while TAT is within `burst` intervals of now.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return {1, 0, new_tat - now}
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitClass {
    /// Per client IP, requests without a valid token.
    Anon,
    /// Per user (JWT `sub`).
    User,
    /// Per CRM connection, webhooks.
    Webhook,
}

impl LimitClass {
    pub fn name(self) -> &'static str {
        match self {
            LimitClass::Anon => "anon",
            LimitClass::User => "user",
            LimitClass::Webhook => "webhook",
        }
    }
}

/// The outcome of one check, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the quota is fully available again.
    pub reset: Duration,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(self.reset.as_secs_f64().ceil() as u64),
        );
    }
}

type Local = Governor<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

struct ClassLimit {
    per_minute: u32,
    local: Local,
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisConn,
    script: Arc<redis::Script>,
    anon: Arc<ClassLimit>,
    user: Arc<ClassLimit>,
    webhook: Arc<ClassLimit>,
    redis_down_until_ms: Arc<AtomicU64>,
    warned: Arc<AtomicBool>,
    /// Decisions taken by the in-memory fallback (for metrics).
    pub fallbacks: Arc<AtomicU64>,
    /// Client addresses whose refused webhooks used up their quota, until when. Kept in
    /// the process so that a blocked address costs no Redis or database round trip.
    webhook_blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

/// Addresses remembered as blocked at most; past it, expired entries are dropped first.
const BLOCKED_ADDRESSES: usize = 10_000;

fn class_limit(per_minute: u32) -> Arc<ClassLimit> {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    Arc::new(ClassLimit {
        per_minute: n.get(),
        local: Governor::keyed(Quota::per_minute(n))
            .with_middleware::<StateInformationMiddleware>(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RateLimiter {
    pub fn new(redis: RedisConn, anon: u32, user: u32, webhook: u32) -> RateLimiter {
        RateLimiter {
            redis,
            script: Arc::new(redis::Script::new(GCRA)),
            anon: class_limit(anon),
            user: class_limit(user),
            webhook: class_limit(webhook),
            redis_down_until_ms: Arc::new(AtomicU64::new(0)),
            warned: Arc::new(AtomicBool::new(false)),
            fallbacks: Arc::new(AtomicU64::new(0)),
            webhook_blocked: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How long `ip` must still wait after too many refused webhooks, if it must. Checked
    /// before any database work, so junk sent to webhook URLs costs the database nothing
    /// once its quota (`RATE_LIMIT_ANON_PER_MIN` refusals per address) is used.
    pub fn webhook_blocked(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self
            .webhook_blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&ip)?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts one refused webhook from `ip` (unknown connection, wrong token) against the
    /// address's anonymous quota, shared by every replica; once it is used up, the
    /// address is blocked here until the quota allows it again.
    pub async fn webhook_refused(&self, ip: IpAddr) -> Decision {
        let decision = self
            .check(LimitClass::Anon, &format!("webhook-refused:{ip}"))
            .await;
        if !decision.allowed {
            let mut blocked = self
                .webhook_blocked
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if blocked.len() >= BLOCKED_ADDRESSES {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < BLOCKED_ADDRESSES {
                blocked.insert(
                    ip,
                    now + decision.retry_after.max(Duration::from_millis(100)),
                );
            }
        }
        decision
    }

    fn class(&self, class: LimitClass) -> &ClassLimit {
        match class {
            LimitClass::Anon => &self.anon,
            LimitClass::User => &self.user,
            LimitClass::Webhook => &self.webhook,
        }
    }

    pub async fn check(&self, class: LimitClass, key: &str) -> Decision {
        let limit = self.class(class);
        if now_ms() >= self.redis_down_until_ms.load(Ordering::Relaxed) {
            match tokio::time::timeout(REDIS_BUDGET, self.check_shared(class, limit, key)).await {
                Ok(Ok(decision)) => {
                    if self.warned.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits are shared through Redis again");
                    }
                    return decision;
                }
                Ok(Err(e)) => self.redis_failed(&e.to_string()),
                Err(_) => self.redis_failed("timed out"),
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        crate::metrics::RATE_LIMIT_FALLBACK
            .with_label_values(&[class.name()])
            .inc();
        self.check_local(limit, key)
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
    async fn check_shared(
        &self,
        class: LimitClass,
        limit: &ClassLimit,
        key: &str,
    ) -> redis::RedisResult<Decision> {
        let interval_ms = (60_000 / limit.per_minute as u64).max(1);
        let mut conn = self.redis.connection();
        let (allowed, wait_ms, reset_ms): (i64, i64, i64) = self
            .script
            .key(self.redis.key(&format!("rl:{}:{key}", class.name())))
            .arg(interval_ms)
            .arg(limit.per_minute)
            .invoke_async(&mut conn)
            .await?;
        let reset_ms = reset_ms.max(0) as u64;
        let used = reset_ms.div_ceil(interval_ms) as u32;
        Ok(Decision {
            allowed: allowed == 1,
            limit: limit.per_minute,
            remaining: limit.per_minute.saturating_sub(used),
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(wait_ms.max(0) as u64),
        })
    }

    fn check_local(&self, limit: &ClassLimit, key: &str) -> Decision {
        let interval = Duration::from_millis((60_000 / limit.per_minute as u64).max(1));
        match limit.local.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: limit.per_minute,
                    remaining,
                    reset: interval * (limit.per_minute - remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    limit: limit.per_minute,
                    remaining: 0,
                    reset: interval * limit.per_minute,
                    retry_after: wait,
                }
            }
        }
    }
}
