//! What every handler can reach: configuration, the database, Redis and the token
//! verifier. Cloning is one reference count: axum clones the state for every request and
//! extractor, and cloning the parts one by one cost a dozen atomics and allocations each
//! time (it showed in the profile of the list route).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Db;
use crate::http::auth::JwtVerifier;
use crate::http::rate_limit::RateLimiter;
use crate::jobs::JobQueue;
use crate::kommo::Kommo;
use crate::redis_conn::RedisConn;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// The parts, for changes before the state is first cloned (tests swap one in).
    pub fn unshared_mut(&mut self) -> Option<&mut Shared> {
        Arc::get_mut(&mut self.0)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub ai: Arc<crate::ai::Ai>,
    pub db: Db,
    pub redis: RedisConn,
    pub jwt: Arc<JwtVerifier>,
    pub jobs: JobQueue,
    pub kommo: Kommo,
    pub limiter: RateLimiter,
    pub lifecycle: Lifecycle,
    /// Where uploaded files' bytes are kept.
    pub assets: crate::knowledge::store::AssetStore,
    /// What the agent runtime takes as now (working hours, response delays); tests fix it.
    pub clock: Arc<dyn crate::agent::schedule::Clock>,
    /// Live events: publishing, and the subscription that feeds the event streams.
    pub events: crate::events::Events,
}

/// Whether the process is draining: readiness answers 503 from the first signal on, so
/// the load balancer stops sending new requests before the listener closes. `closing`
/// is cancelled when the listener closes: long-lived responses (event streams) end then,
/// so the drain never waits on them and their clients reconnect to another replica.
#[derive(Clone, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    closing: CancellationToken,
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}
