//! The integration tests: one binary, the real app against real PostgreSQL and Redis.

// Many tests drive the test-only job types and routes; without the feature they would
// silently not exist.
#[cfg(not(feature = "test-support"))]
compile_error!(
    "the integration tests need the `test-support` feature: run ./scripts/test.sh, or \
     cargo test --features test-support"
);

/// What the tests share: the app and its requests, the fake Kommo, the fault proxy, the
/// process and cluster runners.
mod support;

mod agent_runtime;
mod agents;
mod ai_client;
mod ai_settings;
mod ai_usage;
mod audit;
mod auth;
mod cli;
mod crypto;
mod edge;
mod errors;
mod events;
mod faults;
mod health;
mod job_processes;
mod jobs;
mod knowledge;
mod kommo_oauth;
mod kommo_sync;
mod log_redaction;
mod members;
mod observability;
mod openapi;
mod orgs;
mod replicas;
mod rls;
mod rolling_restart;
mod telemetry;
mod webhooks;
