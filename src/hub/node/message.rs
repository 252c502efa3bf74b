//! What shards ask of each other: publishes, membership changes, closes, questions, and work
//! to run on the shard that owns a connection.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::fault::CloseReason;
use crate::hub::connection::ConnectionId;
use crate::hub::definition::HubId;
use crate::hub::index::Target;
use crate::hub::outgoing::Outgoing;
use crate::hub::shard::Shard;
use crate::metrics::Snapshot;

/// A message published to a hub target, shared by every shard it reaches.
#[derive(Debug)]
pub struct Publish {
    pub hub: HubId,
    pub target: Target,
    pub excluded: Vec<ConnectionId>,
    pub message: Outgoing,
    pub created: Instant,
}

/// A question every shard answers about its own connections; the node ORs the answers.
#[derive(Debug, Clone)]
pub enum Query {
    GroupExists {
        hub: HubId,
        group: Arc<str>,
    },
    UserExists {
        hub: HubId,
        user: Arc<str>,
    },
    UserInGroup {
        hub: HubId,
        user: Arc<str>,
        group: Arc<str>,
    },
}

/// What one shard asks of another.
#[derive(Debug)]
pub enum ShardMsg {
    Publish(Arc<Publish>),
    Join {
        conn: ConnectionId,
        group: Arc<str>,
    },
    Leave {
        conn: ConnectionId,
        group: Arc<str>,
    },
    LeaveAll {
        conn: ConnectionId,
    },
    AddUserToGroup {
        hub: HubId,
        user: Arc<str>,
        group: Arc<str>,
        until: Option<Instant>,
    },
    RemoveUserFromGroup {
        hub: HubId,
        user: Arc<str>,
        group: Arc<str>,
    },
    RemoveUserFromAllGroups {
        hub: HubId,
        user: Arc<str>,
    },
    Close {
        hub: HubId,
        target: Target,
        excluded: Arc<Vec<ConnectionId>>,
        reason: CloseReason,
    },
    Query(Query, oneshot::Sender<bool>),
    Snapshot(oneshot::Sender<Snapshot>),
    /// Work for the shard that owns a connection, from a transport on another shard (a
    /// long poll or a POST that arrived elsewhere). Runs on the target shard's thread.
    Run(Task),
}

/// Work to run on a shard's thread, given the shard.
pub type TaskFn = dyn FnOnce(&Rc<Shard>) + Send;

/// A closure run on another shard.
pub struct Task(pub Box<TaskFn>);

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}
