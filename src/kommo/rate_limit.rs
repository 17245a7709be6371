//! At most 7 requests per second to one Kommo account (Kommo's own limit), shared by every
//! task and replica through Redis. Each call reserves the next free slot (one slot every
//! 150 ms, no burst), so any one-second window holds at most 7 calls; if Redis is
//! unreachable the process keeps its own slots instead of failing the call.

use std::time::Duration;

use crate::gcra::{Gcra, Mode, Rate};

/// 1 s / 7 rounded up, with room for clock jitter between replicas.
pub const SLOT: Duration = Duration::from_millis(150);

#[derive(Clone)]
pub struct AccountRateLimiter {
    gcra: Gcra,
}

impl AccountRateLimiter {
    pub fn new(gcra: Gcra) -> AccountRateLimiter {
        AccountRateLimiter { gcra }
    }

    /// Waits until this caller may send one request to `account`.
    pub async fn acquire(&self, account: &str) {
        let rate = Rate {
            interval: SLOT,
            burst: 1,
        };
        let slot = self
            .gcra
            .take(&format!("kommo:rate:{account}"), rate, Mode::Reserve)
            .await;
        if slot.local {
            crate::metrics::RATE_LIMIT_FALLBACK
                .with_label_values(&["kommo"])
                .inc();
        }
        if !slot.wait.is_zero() {
            tokio::time::sleep(slot.wait).await;
        }
    }
}
