//! Request rate limits: one GCRA limit per key across every replica (`crate::gcra`). When
//! Redis cannot answer quickly, each process decides on its own — logged once, counted —
//! and keeps serving rather than failing requests.
//!
//! Asking Redis for every request cost a round trip per request on the hot path (and a
//! third of Redis's CPU). So a process admits requests of a key on its own while its
//! last answer from Redis is fresh ([`FRESH_FOR`]) and the bucket, as that answer and
//! its own admissions since put it, keeps [`LOCAL_MARGIN`] of the burst free; it reports
//! those admissions with its next question (`Gcra::take_after`). Every refusal, and every
//! admission near the limit, is Redis's answer. A process admits at most burst /
//! [`LOCAL_SHARE`] requests (rounded down) between two questions, so limits under 32 a
//! minute are always exact, and with R replicas a limit can be passed by at most
//! (R − 1) · ⌊burst/32⌋ requests: those another replica admitted and has not reported
//! yet when the bucket fills. One replica is exact.

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

/// A key's answer from Redis is trusted for local admissions this long.
pub const FRESH_FOR: Duration = Duration::from_millis(100);
/// Of a key's burst, a process admits at most this share between two questions.
pub const LOCAL_SHARE: u32 = 32;
/// Admitting without Redis needs at least burst / this still free afterwards.
pub const LOCAL_MARGIN: u32 = 8;
/// Keys whose bucket this process keeps a view of, at most; past it, keys ask Redis.
const LOCAL_VIEWS: usize = 100_000;

/// What this process knows of a key's bucket.
#[derive(Debug, Clone, Copy)]
struct View {
    /// The bucket's theoretical arrival time as Redis last answered, in local time, plus
    /// the admissions this process has since reported.
    tat: Instant,
    /// Admitted here since the last question, not yet reported to Redis.
    pending: u32,
    answered_at: Instant,
}

/// This process's views of the buckets it asked Redis about.
#[derive(Default)]
struct Views(Mutex<HashMap<String, View>>);

impl Views {
    /// Admits the request without asking Redis when this process's view of the bucket
    /// allows it (see the module's documentation); else hands back the admissions to
    /// report with the question. Those stay counted in the view, so that requests
    /// arriving while Redis is asked do not take them for free slots.
    fn admit(&self, key: &str, rate: Rate, now: Instant) -> Result<Decision, u32> {
        let mut views = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(view) = views.get_mut(key) else {
            return Err(0);
        };
        let limit = rate.burst.max(1);
        if now.duration_since(view.answered_at) < FRESH_FOR && view.pending < limit / LOCAL_SHARE {
            let after = view.tat.max(now) + rate.interval * (view.pending + 1);
            let used = used_slots(after - now, rate.interval);
            if used + limit.div_ceil(LOCAL_MARGIN) <= limit {
                view.pending += 1;
                return Ok(Decision {
                    allowed: true,
                    limit,
                    remaining: limit - used,
                    reset: after - now,
                    retry_after: Duration::ZERO,
                });
            }
        }
        let prior = std::mem::take(&mut view.pending);
        view.tat = view.tat.max(now) + rate.interval * prior;
        Err(prior)
    }

    /// Keeps Redis's answer (`reset`: until the bucket is full again) as the key's view.
    fn remember(&self, key: String, reset: Duration, now: Instant) {
        let mut views = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(view) = views.get_mut(&key) {
            // Admissions made here while Redis was asked are still pending, and counted.
            view.tat = now + reset;
            view.answered_at = now;
            return;
        }
        if views.len() >= LOCAL_VIEWS {
            // Stale views with nothing to report cost nothing to forget: the next
            // request of such a key asks Redis anyway.
            views.retain(|_, v| v.pending > 0 || now.duration_since(v.answered_at) < FRESH_FOR);
        }
        if views.len() < LOCAL_VIEWS {
            let view = View {
                tat: now + reset,
                pending: 0,
                answered_at: now,
            };
            views.insert(key, view);
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    gcra: Gcra,
    views: Arc<Views>,
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

/// How many of a bucket's slots are taken when it is full again after `reset`.
fn used_slots(reset: Duration, interval: Duration) -> u32 {
    let interval_ms = interval.as_millis().max(1) as u64;
    (reset.as_millis() as u64).div_ceil(interval_ms) as u32
}

impl RateLimiter {
    pub fn new(redis: RedisConn, anon: u32, user: u32, webhook: u32) -> RateLimiter {
        RateLimiter {
            gcra: Gcra::new(redis),
            views: Arc::default(),
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
        let key = format!("rl:{}:{key}", class.name());
        let prior = match self.views.admit(&key, rate, Instant::now()) {
            Ok(decision) => return decision,
            Err(prior) => prior,
        };
        let outcome = self.gcra.take_after(&key, rate, Mode::Check, prior).await;
        self.views.remember(key, outcome.reset, Instant::now());
        if outcome.local {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            crate::metrics::RATE_LIMIT_FALLBACK
                .with_label_values(&[class.name()])
                .inc();
        }
        let used = used_slots(outcome.reset, rate.interval);
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// `requests` at one instant (so nothing refills), asking "Redis" (here: an exact
    /// count kept by the test) when the views say so: (allowed, questions, counted).
    fn run(views: &Views, rate: Rate, requests: u32, now: Instant) -> (u32, u32, u32) {
        let (mut allowed, mut asked, mut counted) = (0, 0, 0u32);
        for i in 0..requests {
            match views.admit("k", rate, now) {
                Ok(d) => {
                    assert!(d.allowed);
                    let remaining = rate.burst - counted - pending(views);
                    assert_eq!(d.remaining, remaining, "request {i}");
                    allowed += 1;
                }
                Err(prior) => {
                    asked += 1;
                    counted += prior;
                    let taken = counted < rate.burst;
                    counted += u32::from(taken);
                    allowed += u32::from(taken);
                    views.remember("k".into(), rate.interval * counted, now);
                }
            }
        }
        (allowed, asked, counted + pending(views))
    }

    fn pending(views: &Views) -> u32 {
        let views = views.0.lock().unwrap_or_else(|e| e.into_inner());
        views.get("k").map_or(0, |v| v.pending)
    }

    #[test]
    fn a_large_limit_is_admitted_locally_between_questions_and_kept_exactly() {
        let views = Views::default();
        let rate = Rate::per_minute(3200);
        let (allowed, asked, counted) = run(&views, rate, 4000, Instant::now());
        assert_eq!(allowed, 3200);
        assert_eq!(counted, 3200, "every admission reaches the count");
        // 100 admitted locally per question while the bucket is clear of the margin,
        // then every request asks.
        assert!(asked < 4000 - 2500, "asked {asked} times");
    }

    #[test]
    fn small_limits_always_ask() {
        let views = Views::default();
        let rate = Rate::per_minute(31);
        let (allowed, asked, _) = run(&views, rate, 40, Instant::now());
        assert_eq!((allowed, asked), (31, 40));
    }

    #[test]
    fn a_stale_view_asks_again_and_reports_what_it_admitted() {
        let views = Views::default();
        let rate = Rate::per_minute(6400);
        let t0 = Instant::now();
        assert_eq!(views.admit("k", rate, t0).err(), Some(0));
        views.remember("k".into(), rate.interval, t0);
        for _ in 0..5 {
            assert!(views.admit("k", rate, t0 + MS).is_ok());
        }
        assert_eq!(views.admit("k", rate, t0 + FRESH_FOR).err(), Some(5));
    }
}
