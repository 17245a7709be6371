//! One module per resource, each exposing `router()`.

pub mod agents;
pub mod audit;
pub mod crm;
pub mod health;
pub mod jobs;
pub mod kommo;
pub mod me;
pub mod members;
pub mod orgs;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod webhooks;
