//! The tests' infrastructure, apart from the tests themselves.

pub mod app;
pub mod cluster;
pub mod documents;
pub mod fake_ai;
pub mod fake_kommo;
pub mod fault_proxy;
pub mod kommo;
pub mod logs;
pub mod process;
