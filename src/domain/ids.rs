//! Typed ids. Many functions take an org and the id of something in it; with a type per
//! kind of row, passing a user where an agent belongs (or swapping two ids) does not
//! compile. They are plain UUIDs on the wire and in PostgreSQL.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id (UUIDv7), as every table's primary key.
            pub fn new() -> $name {
                $name(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> $name {
                $name(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<$name, uuid::Error> {
                Uuid::parse_str(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An organization (tenant).
    OrgId
);
id_type!(
    /// A user, as the identity provider's `sub`.
    UserId
);
id_type!(
    /// An AI agent of an org.
    AgentId
);
id_type!(
    /// A CRM connection of an org.
    ConnectionId
);
id_type!(
    /// A background job.
    JobId
);
id_type!(
    /// A file in an org's knowledge base.
    AssetId
);
id_type!(
    /// An entity of an org's knowledge graph.
    EntityId
);
id_type!(
    /// A conversation of an agent with a lead (one Kommo chat).
    ConversationId
);
