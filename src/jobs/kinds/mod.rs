//! Every job type, one module each, and the registry that lists them once.

pub mod agent_reply;
pub mod extract_knowledge_graph;
pub mod process_asset;
pub mod send_message;
mod sync;
pub mod sync_contacts;
pub mod sync_pipelines;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod token_refresh;
pub mod webhook;

use crate::jobs::job::Registered;

pub use agent_reply::AgentReply;
pub use extract_knowledge_graph::ExtractKnowledgeGraph;
pub use process_asset::ProcessAsset;
pub use send_message::SendMessage;
pub use sync_contacts::SyncContacts;
pub use sync_pipelines::SyncPipelines;
pub use token_refresh::TokenRefresh;
pub use webhook::Webhook;

pub const REGISTRY: &[Registered] = &[
    Registered::of::<ProcessAsset>(),
    Registered::of::<ExtractKnowledgeGraph>(),
    Registered::of::<SyncPipelines>(),
    Registered::of::<SyncContacts>(),
    Registered::of::<SendMessage>(),
    Registered::of::<TokenRefresh>(),
    Registered::of::<Webhook>(),
    Registered::of::<AgentReply>(),
    #[cfg(feature = "test-support")]
    Registered::of::<testing::TestSleep>(),
    #[cfg(feature = "test-support")]
    Registered::of::<testing::TestFail>(),
    #[cfg(feature = "test-support")]
    Registered::of::<testing::TestPanic>(),
];
