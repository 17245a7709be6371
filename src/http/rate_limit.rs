//! Request rate limits: one GCRA limit per key across every replica (`crate::gcra`). When
//! Redis cannot answer quickly, each process decides on its own — logged once, counted —
//! and keeps serving rather than failing requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use crate::gcra::{Gcra, Mode, Rate};
use crate::redis_conn::RedisConn;

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

#[derive(Clone)]
pub struct RateLimiter {
    gcra: Gcra,
    anon: u32,
    user: u32,
    webhook: u32,
    /// Decisions taken by the in-memory fallback (for metrics).
    pub fallbacks: Arc<AtomicU64>,
    /// Client addresses whose refused webhooks used up their quota, until when. Kept in
    /// the process so that a blocked address costs no Redis or database round trip.
    webhook_blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

/// Addresses remembered as blocked at most; past it, expired entries are dropped first.
const BLOCKED_ADDRESSES: usize = 10_000;

impl RateLimiter {
    pub fn new(redis: RedisConn, anon: u32, user: u32, webhook: u32) -> RateLimiter {
        RateLimiter {
            gcra: Gcra::new(redis),
            anon: anon.max(1),
            user: user.max(1),
            webhook: webhook.max(1),
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

    fn per_minute(&self, class: LimitClass) -> u32 {
        match class {
            LimitClass::Anon => self.anon,
            LimitClass::User => self.user,
            LimitClass::Webhook => self.webhook,
        }
    }

    pub async fn check(&self, class: LimitClass, key: &str) -> Decision {
        let limit = self.per_minute(class);
        let rate = Rate::per_minute(limit);
        let outcome = self
            .gcra
            .take(&format!("rl:{}:{key}", class.name()), rate, Mode::Check)
            .await;
        if outcome.local {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            crate::metrics::RATE_LIMIT_FALLBACK
                .with_label_values(&[class.name()])
                .inc();
        }
        let interval_ms = rate.interval.as_millis().max(1) as u64;
        let used = (outcome.reset.as_millis() as u64).div_ceil(interval_ms) as u32;
        Decision {
            allowed: outcome.taken,
            limit,
            remaining: limit.saturating_sub(used),
            reset: outcome.reset,
            retry_after: if outcome.taken {
                Duration::ZERO
            } else {
                outcome.wait
            },
        }
    }
}
