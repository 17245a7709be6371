//! The integration tests: one binary, the real app against real PostgreSQL and Redis.

mod helpers;

mod agents;
mod auth;
mod cli;
mod errors;
mod health;
mod members;
mod orgs;
mod rls;
