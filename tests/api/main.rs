//! The integration tests: one binary, the real app against real PostgreSQL and Redis.

mod helpers;
#[allow(dead_code)]
mod kommo_support;
mod process;

mod agents;
mod audit;
mod auth;
mod cli;
#[cfg(feature = "test-support")]
mod cluster;
mod crypto;
mod edge;
mod errors;
mod fake_kommo;
mod fault_proxy;
#[cfg(feature = "test-support")]
mod faults;
mod health;
#[cfg(feature = "test-support")]
mod job_processes;
#[cfg(feature = "test-support")]
mod jobs;
mod kommo_oauth;
mod kommo_sync;
mod log_redaction;
mod members;
mod observability;
mod openapi;
mod orgs;
#[cfg(feature = "test-support")]
mod replicas;
mod rls;
#[cfg(feature = "test-support")]
mod rolling_restart;
#[cfg(feature = "test-support")]
mod telemetry;
mod webhooks;
