//! The `Backplane` interface: everything the hub tells the other nodes of a cluster, and asks
//! of them. Two implementations: [`Local`], for a node alone (nothing leaves the process), and
//! `redis` (the `backplane` module's `Cluster`, over Redis Streams), chosen by the composition
//! root (`runtime`) from `cluster.backplane`.
//!
//! The hub owns the interface and the `backplane` module implements it, so the dependency runs
//! one way (`backplane` → `hub`). Hub code calls it unconditionally: whether a node is alone is
//! the implementation's business, not a branch at every call site. One call per publish, never
//! per recipient.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::connection::ConnectionId;
use super::definition::HubId;
use super::index::Target;
use super::node::{ClaimError, Publish, Query};

/// An answer the backplane gives once the other nodes have (boxed: the interface is used as a
/// trait object).
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the hub needs of the other nodes of its cluster.
pub trait Backplane: Send + Sync {
    /// A publish made on this node, for the recipients on the others.
    fn publish(&self, publish: &Publish);

    /// Closes, on the other nodes, the connections `target` reaches.
    fn close(&self, hub: HubId, target: &Target, excluded: &[ConnectionId], reason: Option<String>);

    /// Connection `conn`, held by another node, joins `group`.
    fn join(&self, hub: HubId, conn: ConnectionId, group: &str);

    /// Connection `conn`, held by another node, leaves `group`.
    fn leave(&self, hub: HubId, conn: ConnectionId, group: &str);

    /// Connection `conn`, held by another node, leaves every group.
    fn leave_all(&self, hub: HubId, conn: ConnectionId);

    /// `user` joins `group` on every node, until `until` (`None`: for as long as it has
    /// connections).
    fn add_user_to_group(&self, hub: HubId, user: &str, group: &str, until: Option<Instant>);

    /// `user` leaves `group` on every node.
    fn remove_user_from_group(&self, hub: HubId, user: &str, group: &str);

    /// `user` leaves every group of the hub on every node.
    fn remove_user_from_all_groups(&self, hub: HubId, user: &str);

    /// A connection served over HTTP requests started on this node: the others learn where
    /// to forward its POSTs.
    fn claimed(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>);

    /// A connection of this node opened (completed its handshake).
    fn opened(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>);

    /// A connection of this node left its hub, or ended before its handshake; `announce` is
    /// false while the node shuts down (it says goodbye once instead). Idempotent.
    fn closed(&self, id: ConnectionId, announce: bool);

    /// Hands data a client POSTed here to the node holding its connection.
    fn forward(&self, hub: HubId, id: ConnectionId, payload: Vec<u8>);

    /// The hub of a connection another node holds.
    fn locate(&self, id: ConnectionId) -> Option<HubId>;

    /// Whether another node holds connection `id`, waiting a moment to find out (a client may
    /// reach this node before the news of its connection does).
    fn await_remote(&self, id: ConnectionId) -> Answer<'_, bool>;

    /// Whether connection id `id` may start a connection here: not active, nor ended with a
    /// token still valid, on another node.
    fn may_claim(&self, id: ConnectionId, now: Instant) -> Result<(), ClaimError>;

    /// Connections of `hub` on the other nodes.
    fn count(&self, hub: HubId) -> i64;

    /// Asks every other node; true as soon as one says yes.
    fn ask<'a>(&'a self, query: &'a Query) -> Answer<'a, bool>;

    /// Whether the other nodes can be reached now.
    fn is_up(&self) -> bool;

    /// This node is leaving: the others forget its connections at once.
    fn goodbye(&self);

    /// Waits (blocking the thread, at shutdown) until what is queued for the other nodes has
    /// left, the link is down, or `until` passes.
    fn flush(&self, until: Instant);

    /// The backplane's lines of the Prometheus exposition.
    fn metrics(&self) -> String;

    /// The backplane's state for `/readyz`; `None` when there is nothing to tell.
    fn status(&self) -> Option<serde_json::Value>;
}

/// The `local` backplane: one node, no cluster; nothing leaves the process, and no other node
/// holds anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Backplane for Local {
    fn publish(&self, _: &Publish) {}
    fn close(&self, _: HubId, _: &Target, _: &[ConnectionId], _: Option<String>) {}
    fn join(&self, _: HubId, _: ConnectionId, _: &str) {}
    fn leave(&self, _: HubId, _: ConnectionId, _: &str) {}
    fn leave_all(&self, _: HubId, _: ConnectionId) {}
    fn add_user_to_group(&self, _: HubId, _: &str, _: &str, _: Option<Instant>) {}
    fn remove_user_from_group(&self, _: HubId, _: &str, _: &str) {}
    fn remove_user_from_all_groups(&self, _: HubId, _: &str) {}
    fn claimed(&self, _: ConnectionId, _: HubId, _: Option<Arc<str>>) {}
    fn opened(&self, _: ConnectionId, _: HubId, _: Option<Arc<str>>) {}
    fn closed(&self, _: ConnectionId, _: bool) {}
    fn forward(&self, _: HubId, _: ConnectionId, _: Vec<u8>) {}
    fn locate(&self, _: ConnectionId) -> Option<HubId> {
        None
    }
    fn await_remote(&self, _: ConnectionId) -> Answer<'_, bool> {
        Box::pin(std::future::ready(false))
    }
    fn may_claim(&self, _: ConnectionId, _: Instant) -> Result<(), ClaimError> {
        Ok(())
    }
    fn count(&self, _: HubId) -> i64 {
        0
    }
    fn ask<'a>(&'a self, _: &'a Query) -> Answer<'a, bool> {
        Box::pin(std::future::ready(false))
    }
    fn is_up(&self) -> bool {
        true
    }
    fn goodbye(&self) {}
    fn flush(&self, _: Instant) {}
    fn metrics(&self) -> String {
        String::new()
    }
    fn status(&self) -> Option<serde_json::Value> {
        None
    }
}
