//! The backplane: how the nodes of a cluster share what each must see — publishes, group and
//! user membership changes, closes, presence and counts.
//!
//! The hub defines what it needs of the other nodes as one interface,
//! [`crate::hub::Backplane`], with two implementations: `local` (`hub::backplane::Local`:
//! one node, nothing leaves the process) and `redis`, this module's [`Cluster`]
//! (`redis`), which carries [`envelope::Envelope`]s over Redis Streams and applies what
//! other nodes send (`inbound`) through the node's shard inboxes. The composition root
//! (`runtime`) picks one from `cluster.backplane` and starts its links.
//!
//! The hot path never waits for Redis: a shard delivers a publish to its own node at once and
//! drops a copy in the `outbox::Outbox` (a mutex held for a push); one writer task per Redis
//! server drains it in pipelined batches. One reader task per Redis server reads every
//! partition stream it holds with a blocking `XREAD` from the last id it has seen, skips its
//! own node's entries, drops duplicates and hands the rest to the shards' inboxes.

pub(crate) mod client;
pub mod config;
pub(crate) mod directory;
pub mod envelope;
pub(crate) mod inbound;
pub(crate) mod link;
pub(crate) mod outbox;
pub(crate) mod redis;

pub use self::client::{LinkError, redis_client};
pub use self::redis::{
    Cluster, Stats, hub_query, hub_target, start, unix_us, wire_question, wire_target,
};
