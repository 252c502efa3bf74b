//! The node: what every shard of one Herald process shares. It is immutable after start-up
//! except for lock-free inboxes, atomic counters and the connection registry, so shards reach
//! each other without contending on a lock in the hot path.

mod inbox;
mod keys;
mod message;
mod pressure;
mod registry;

pub use self::inbox::Inbox;
pub use self::keys::Keys;
pub use self::message::{Publish, Query, ShardMsg, Task};
pub use self::pressure::{InputBudget, Pressure};
pub use self::registry::{ClaimError, IdState, Registry};

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use super::backplane::{Backplane, Local};
use super::connection::ConnectionId;
use super::definition::{HubId, Hubs};
use super::shard::Shard;
use crate::config::Config;
use crate::protocol::TransportKind;

/// What every shard of the process shares: configuration, hubs, keys, the connection registry,
/// the shards' inboxes, counts, flow control and the backplane.
pub struct Node {
    pub config: Arc<Config>,
    pub hubs: Hubs,
    pub keys: Keys,
    pub registry: Registry,
    inboxes: Box<[Inbox]>,
    counts: Box<[AtomicI64]>,
    /// Joins and leaves waiting for each hub's next periodic presence message.
    presence: Box<[Mutex<super::presence::Batch>]>,
    /// Unfinished hub messages held for every connection.
    pub input: InputBudget,
    /// Per hub: recipients backed up, for their publishers.
    pressure: Box<[Arc<Pressure>]>,
    shutdown: watch::Sender<bool>,
    pub started: Instant,
    /// "uring" or "epoll", for the logs and /metrics.
    pub io: &'static str,
    /// What the other nodes of the cluster must see, and what they hold.
    pub backplane: Arc<dyn Backplane>,
}

impl Node {
    /// A node alone: the `local` backplane.
    pub fn new(config: Config, shards: usize, io: &'static str) -> Arc<Node> {
        Node::with_backplane(config, shards, io, Arc::new(Local))
    }

    pub fn with_backplane(
        config: Config,
        shards: usize,
        io: &'static str,
        backplane: Arc<dyn Backplane>,
    ) -> Arc<Node> {
        let hubs = Hubs::from_config(&config);
        let capacity = config.server.inbox_capacity;
        Arc::new(Node {
            backplane,
            keys: Keys::new(&config.auth.access_key),
            registry: Registry::default(),
            inboxes: (0..shards).map(|_| Inbox::new(capacity)).collect(),
            counts: (0..hubs.len()).map(|_| AtomicI64::new(0)).collect(),
            presence: hubs
                .list
                .iter()
                .map(|h| {
                    let lists = matches!(h.presence, super::presence::PresenceDef::Batched { .. });
                    Mutex::new(super::presence::Batch::new(lists))
                })
                .collect(),
            input: InputBudget::new(config.connections.input_budget_bytes),
            pressure: (0..hubs.len()).map(|_| Arc::default()).collect(),
            shutdown: watch::channel(false).0,
            started: Instant::now(),
            config: Arc::new(config),
            hubs,
            io,
        })
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    pub fn inbox(&self, shard: usize) -> &Inbox {
        &self.inboxes[shard]
    }

    /// Connections of the hub in the whole cluster.
    pub fn count(&self, hub: HubId) -> i64 {
        self.counts[hub as usize].load(Ordering::Relaxed) + self.remote_count(hub)
    }

    /// Connections of the hub on the other nodes.
    fn remote_count(&self, hub: HubId) -> i64 {
        self.backplane.count(hub)
    }

    /// Adds `delta` to the hub's count on this node and returns the cluster's new count.
    pub fn add_count(&self, hub: HubId, delta: i64) -> i64 {
        self.counts[hub as usize].fetch_add(delta, Ordering::Relaxed)
            + delta
            + self.remote_count(hub)
    }

    /// Hub `hub`'s backed-up recipients.
    pub fn pressure(&self, hub: HubId) -> &Arc<Pressure> {
        &self.pressure[hub as usize]
    }

    /// The joins and leaves waiting for hub `hub`'s next periodic presence message.
    pub fn presence(&self, hub: HubId) -> MutexGuard<'_, super::presence::Batch> {
        self.presence[hub as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a join of the hub's for periodic presence (a no-op for other modes).
    pub fn presence_joined(&self, hub: HubId, id: ConnectionId, user: Option<Arc<str>>) {
        if self.hubs.get(hub).presence.is_periodic() {
            self.presence(hub).join(id, user);
        }
    }

    /// Records a leave of the hub's for periodic presence (a no-op for other modes).
    pub fn presence_left(&self, hub: HubId, id: ConnectionId, user: Option<Arc<str>>) {
        if self.hubs.get(hub).presence.is_periodic() {
            self.presence(hub).leave(id, user);
        }
    }

    /// The hub of an active connection, on this node or another.
    pub fn hub_of(&self, id: ConnectionId) -> Option<HubId> {
        match self.registry.locate(id) {
            Some((_, hub)) => Some(hub),
            None => self.backplane.locate(id),
        }
    }

    /// Sends `msg` to the shard that owns connection `id` on this node; false if none does.
    pub async fn to_owner(&self, id: ConnectionId, msg: ShardMsg) -> bool {
        match self.registry.locate(id) {
            Some((shard, _)) => {
                self.inbox(shard).send(msg).await;
                true
            }
            None => false,
        }
    }

    /// Sends a message made by `make` to every shard but `except` (the caller, which
    /// applies its own).
    pub async fn to_shards(&self, except: Option<usize>, make: impl Fn() -> ShardMsg) {
        for shard in (0..self.shards()).filter(|s| Some(*s) != except) {
            self.inbox(shard).send(make()).await;
        }
    }

    /// Runs `task` on shard `shard`'s thread.
    pub async fn run_on(&self, shard: usize, task: impl FnOnce(&Rc<Shard>) + Send + 'static) {
        self.inbox(shard)
            .send(ShardMsg::Run(Task(Box::new(task))))
            .await;
    }

    /// Data a client POSTed to another node, for connection `id` of this node: handed to its
    /// transport on the owning shard. Returns once it has been handled, so what the other
    /// node forwards next is handled after it.
    pub async fn receive_forwarded(&self, id: ConnectionId, payload: Vec<u8>) {
        let IdState::Active { shard, transport } = self.registry.state(id) else {
            return;
        };
        if transport == TransportKind::WebSockets {
            return;
        }
        let (tx, rx) = oneshot::channel::<()>();
        self.run_on(shard, move |shard| {
            let Some(attachment) = shard.connection(id).and_then(|c| c.attachment()) else {
                return;
            };
            tokio::task::spawn_local(async move {
                attachment.receive_forwarded(payload.into()).await;
                let _ = tx.send(());
            });
        })
        .await;
        let _ = rx.await;
    }

    /// Asks every shard but `except` (the caller, which answers for itself); true if any
    /// says yes.
    pub async fn ask_shards(&self, query: &Query, except: Option<usize>) -> bool {
        let mut replies = Vec::with_capacity(self.shards());
        for shard in (0..self.shards()).filter(|s| Some(*s) != except) {
            let (tx, rx) = oneshot::channel();
            self.inbox(shard)
                .send(ShardMsg::Query(query.clone(), tx))
                .await;
            replies.push(rx);
        }
        for rx in replies {
            if rx.await.unwrap_or(false) {
                return true;
            }
        }
        false
    }

    /// Starts the graceful shutdown of every shard.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once shutdown has begun.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}
