//! The agent runtime: how agents answer leads in Kommo chats (spec §13). Below `jobs/`
//! and `routes/`: what an incoming message is (`inbound`), when an agent answers
//! (`schedule`), what it is told (`prompt`), the tools it may call (`tools`) and one
//! answer made with the model (`turn`). The job that answers a conversation is
//! `jobs::kinds::agent_reply`; the test chat is `routes::test_chat`.

pub mod inbound;
pub mod prompt;
pub mod schedule;
pub mod tools;
pub mod turn;
