//! The node: what every shard of one Herald process shares. It is immutable after start-up
//! except for lock-free inboxes, atomic counters and the connection registry, so shards reach
//! each other without contending on a lock in the hot path.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam::queue::ArrayQueue;
use tokio::sync::{Notify, oneshot, watch};

use super::backplane::{Backplane, Local};
use super::connection::{ConnectionId, IdBuildHasher};
use super::definition::{HubId, Hubs};
use super::index::Target;
use super::outgoing::Outgoing;
use super::shard::Shard;
use crate::config::Config;
use crate::fault::CloseReason;
use crate::metrics::Snapshot;
use crate::protocol::TransportKind;

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

/// A bounded, lock-free multi-producer inbox. Senders wait (rather than drop) when it is full,
/// so a slow shard slows its publishers instead of losing messages or growing without bound.
pub struct Inbox {
    queue: ArrayQueue<ShardMsg>,
    ready: Notify,
    space: Notify,
}

impl Inbox {
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            queue: ArrayQueue::new(capacity),
            ready: Notify::new(),
            space: Notify::new(),
        }
    }

    pub async fn send(&self, mut msg: ShardMsg) {
        loop {
            match self.queue.push(msg) {
                Ok(()) => {
                    self.ready.notify_one();
                    return;
                }
                Err(back) => msg = back,
            }
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.queue.push(msg) {
                Ok(()) => {
                    self.ready.notify_one();
                    return;
                }
                Err(back) => msg = back,
            }
            space.await;
        }
    }

    /// How many messages are queued now.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Moves the messages already queued (up to `max`) into `out`, without waiting.
    pub fn try_recv(&self, out: &mut Vec<ShardMsg>, max: usize) {
        let before = out.len();
        while out.len() - before < max {
            match self.queue.pop() {
                Some(m) => out.push(m),
                None => break,
            }
        }
        if out.len() > before {
            self.space.notify_waiters();
        }
    }

    /// Waits for messages and moves up to `max` of them into `out`.
    pub async fn recv(&self, out: &mut Vec<ShardMsg>, max: usize) {
        loop {
            while out.len() < max {
                match self.queue.pop() {
                    Some(m) => out.push(m),
                    None => break,
                }
            }
            if !out.is_empty() {
                self.space.notify_waiters();
                return;
            }
            self.ready.notified().await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Active {
        shard: u16,
        hub: HubId,
        transport: TransportKind,
    },
    /// Ended, but its connection token is still valid until then: the id must not start a
    /// new connection.
    Ended { until: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the connection is active")]
    Active,
    #[error("the connection has ended")]
    Ended,
}

/// What is known of a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdState {
    Active {
        shard: usize,
        transport: TransportKind,
    },
    Ended,
    Unknown,
}

const REGISTRY_SEGMENTS: usize = 64;

/// Which shard owns each connection id of this node, and which ids ended recently. Touched on
/// connect, disconnect and REST lookups only, never per message.
pub struct Registry {
    segments: Box<[Mutex<HashMap<ConnectionId, Slot, IdBuildHasher>>]>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            segments: (0..REGISTRY_SEGMENTS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
}

impl Registry {
    fn segment(
        &self,
        id: ConnectionId,
    ) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Slot, IdBuildHasher>> {
        self.segments[(id.0 as usize) % REGISTRY_SEGMENTS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `shard` now owns `id`, served by `transport`, unless the id is active or
    /// ended.
    pub fn claim(
        &self,
        id: ConnectionId,
        shard: usize,
        hub: HubId,
        transport: TransportKind,
    ) -> Result<(), ClaimError> {
        let mut seg = self.segment(id);
        match seg.get(&id) {
            Some(Slot::Active { .. }) => Err(ClaimError::Active),
            Some(Slot::Ended { until }) if *until > Instant::now() => Err(ClaimError::Ended),
            _ => {
                seg.insert(
                    id,
                    Slot::Active {
                        shard: shard as u16,
                        hub,
                        transport,
                    },
                );
                Ok(())
            }
        }
    }

    /// Marks `id` ended; it stays unusable until `until` (when its token expires).
    pub fn end(&self, id: ConnectionId, until: Option<Instant>) {
        let mut seg = self.segment(id);
        match until {
            Some(until) if until > Instant::now() => {
                seg.insert(id, Slot::Ended { until });
            }
            _ => {
                seg.remove(&id);
            }
        }
    }

    /// The shard and hub of an active connection.
    pub fn locate(&self, id: ConnectionId) -> Option<(usize, HubId)> {
        match self.segment(id).get(&id) {
            Some(Slot::Active { shard, hub, .. }) => Some((*shard as usize, *hub)),
            _ => None,
        }
    }

    /// What the registry knows of `id`: active (on which shard, with which transport), ended
    /// (its token is still valid), or unknown.
    pub fn state(&self, id: ConnectionId) -> IdState {
        match self.segment(id).get(&id) {
            Some(Slot::Active {
                shard, transport, ..
            }) => IdState::Active {
                shard: *shard as usize,
                transport: *transport,
            },
            Some(Slot::Ended { until }) if *until > Instant::now() => IdState::Ended,
            _ => IdState::Unknown,
        }
    }

    /// Forgets ended ids whose tokens have expired, in the segments `part` of `parts` covers.
    pub fn purge(&self, now: Instant, part: usize, parts: usize) {
        for (i, seg) in self.segments.iter().enumerate() {
            if i % parts.max(1) == part {
                seg.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|_, slot| !matches!(slot, Slot::Ended { until } if *until <= now));
            }
        }
    }
}

/// Bytes of unfinished hub messages the node holds for all its clients, against
/// `connections.input_budget_bytes`: past it, clients holding one are not read (see
/// `transport::inflow`).
pub struct InputBudget {
    held: AtomicUsize,
    limit: usize,
}

impl InputBudget {
    pub fn new(limit: usize) -> InputBudget {
        InputBudget {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// A connection's held bytes went from `before` to `after`.
    pub fn change(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn is_over(&self) -> bool {
        self.held() > self.limit
    }
}

/// One hub's connections whose outbound queue is backed up — above
/// `connections.outbound_high_watermark_bytes`, until it drains to the low watermark — and the
/// publishers holding back for them. Shared by every shard: a recipient on one shard slows a
/// publisher on another.
#[derive(Default)]
pub struct Pressure {
    backed_up: AtomicUsize,
    /// Writes to backed-up connections, and their draining or closing: the progress that
    /// keeps publishers waiting rather than going on.
    progress: std::sync::atomic::AtomicU64,
    waiters: Mutex<Vec<std::task::Waker>>,
}

impl Pressure {
    /// A connection's queue backed up.
    pub fn rise(&self) {
        self.backed_up.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's queue drained (or it closed): the publishers waiting look again.
    pub fn fall(&self) {
        self.backed_up.fetch_sub(1, Ordering::Relaxed);
        self.progressed();
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    /// Connections of the hub backed up now.
    pub fn backed_up(&self) -> usize {
        self.backed_up.load(Ordering::Relaxed)
    }

    /// A backed-up connection's socket took some of its queue.
    pub fn progressed(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Progress so far: it moves whenever a backed-up connection is written to, drains or
    /// closes.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Wakes `waker` at the next fall.
    pub fn wait(&self, waker: &std::task::Waker) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }
}

/// The keys derived from the configured access key.
pub struct Keys {
    /// Signs and verifies access tokens (JWT HS256), as Azure SignalR does.
    pub access: Vec<u8>,
    /// Signs connection tokens; derived so that a connection token is never a valid JWT key.
    pub connection: [u8; 32],
}

impl Keys {
    pub fn new(access_key: &str) -> Keys {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(access_key.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"herald connection token v1");
        Keys {
            access: access_key.as_bytes().to_vec(),
            connection: mac.finalize().into_bytes().into(),
        }
    }
}

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
            .unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn registry_claims_once_and_remembers_ended_ids() {
        let r = Registry::default();
        let id = ConnectionId::random();
        r.claim(id, 1, 0, TransportKind::WebSockets).unwrap();
        assert_eq!(r.locate(id), Some((1, 0)));
        assert_eq!(
            r.state(id),
            IdState::Active {
                shard: 1,
                transport: TransportKind::WebSockets
            }
        );
        assert_eq!(
            r.claim(id, 0, 0, TransportKind::LongPolling),
            Err(ClaimError::Active)
        );
        r.end(id, Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(r.locate(id), None);
        assert_eq!(r.state(id), IdState::Ended);
        assert_eq!(
            r.claim(id, 0, 0, TransportKind::WebSockets),
            Err(ClaimError::Ended)
        );
        r.purge(Instant::now() + Duration::from_secs(61), 0, 1);
        assert!(r.claim(id, 0, 0, TransportKind::WebSockets).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn inbox_waits_when_full_and_loses_nothing() {
        let inbox = Arc::new(Inbox::new(2));
        let sender = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                for i in 0..100u64 {
                    inbox
                        .send(ShardMsg::LeaveAll {
                            conn: ConnectionId(i as u128),
                        })
                        .await;
                }
            })
        };
        let mut got = Vec::new();
        let mut batch = Vec::new();
        while got.len() < 100 {
            inbox.recv(&mut batch, 16).await;
            for m in batch.drain(..) {
                let ShardMsg::LeaveAll { conn } = m else {
                    panic!()
                };
                got.push(conn.0 as u64);
            }
        }
        sender.await.unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}
