//! The hub: hub definitions, connections, per-shard indexes, the dispatcher, presence and
//! fan-out; the node (what every shard shares) and the shards; the [`Backplane`] interface
//! through which the hub reaches the other nodes of a cluster.
//!
//! Hub logic is transport-free: it works on connection ids and messages, and a publish is
//! encoded once per protocol and handed to every shard through its inbox. Membership changes,
//! closes and existence checks are [`Shard`] methods, which the dispatcher and the REST API
//! call alike.

pub(crate) mod backplane;
mod calls;
pub mod config;
pub mod connection;
pub(crate) mod definition;
pub(crate) mod dispatch;
pub(crate) mod index;
pub(crate) mod node;
pub(crate) mod outgoing;
pub(crate) mod presence;
pub(crate) mod shard;

pub use crate::protocol::TransportKind;
pub use backplane::Backplane;
pub use connection::{Connection, ConnectionId};
pub use definition::{HubDef, HubId, Hubs};
pub use index::Target;
pub use node::{Node, Publish, Query, ShardMsg};
pub use outgoing::{Encoded, Outgoing};
pub use shard::Shard;
