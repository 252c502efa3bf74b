//! A shard: one thread's share of the node's connections, with its own indexes, metrics and
//! inbox. Everything here runs on the shard's thread; other shards reach it only through its
//! inbox, and it reaches them only through theirs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::connection::{
    Attachment, Connection, ConnectionId, IdBuildHasher, Joined, Phase, Refused, Wire,
};
use super::index::{ShardIndex, Target};
use super::node::{Node, Publish, Query, ShardMsg};
use super::outgoing::{Encoded, Outgoing};
use super::presence::PresenceDef;
use crate::fault::CloseReason;
use crate::metrics::{Pause, ShardMetrics, Snapshot};
use crate::protocol::handshake::{self, HandshakeError};
use crate::protocol::{HubMessage, Protocol, TransportKind, Value};

/// One delivered message in this many has its publish→write latency recorded.
pub const LATENCY_SAMPLE_EVERY: u64 = 8;

/// Messages handled per inbox wake-up before yielding to connections.
const INBOX_BATCH: usize = 256;

/// Size of the read buffer every connection of the shard shares (reads never yield while
/// holding it, so one per thread suffices and idle connections own no read buffer).
pub const SCRATCH_BYTES: usize = 64 * 1024;

struct State {
    conns: HashMap<ConnectionId, Rc<Connection>, IdBuildHasher>,
    index: ShardIndex,
}

pub struct Shard {
    pub id: usize,
    pub node: Arc<Node>,
    state: RefCell<State>,
    pub metrics: ShardMetrics,
    /// The keep-alive Ping, per protocol.
    ping: [Encoded; Protocol::COUNT],
    scratch: RefCell<Box<[u8]>>,
    http_connections: std::cell::Cell<usize>,
    /// The time as of the last timer tick: precise enough for keep-alive and timeouts, and
    /// free to read on every write.
    clock: std::cell::Cell<Instant>,
    /// Writes since start-up, for sampling latencies.
    writes: std::cell::Cell<u64>,
}

impl Shard {
    pub fn new(id: usize, node: Arc<Node>) -> Rc<Shard> {
        let hubs = node.hubs.len();
        Rc::new(Shard {
            id,
            state: RefCell::new(State {
                conns: HashMap::default(),
                index: ShardIndex::new(hubs, node.config.connections.max_groups_per_connection),
            }),
            metrics: ShardMetrics::new(hubs),
            ping: Protocol::ALL.map(|p| Encoded::message(&HubMessage::Ping, p)),
            scratch: RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice()),
            http_connections: std::cell::Cell::new(0),
            clock: std::cell::Cell::new(Instant::now()),
            writes: std::cell::Cell::new(0),
            node,
        })
    }

    /// The shard's shared read buffer.
    pub fn scratch(&self) -> std::cell::RefMut<'_, Box<[u8]>> {
        self.scratch.borrow_mut()
    }

    /// The time as of the last timer tick (at most one tick interval old).
    pub fn coarse_now(&self) -> Instant {
        self.clock.get()
    }

    /// Whether this message's publish→write latency is recorded: one in
    /// `LATENCY_SAMPLE_EVERY`, so the clock is read once per so many deliveries.
    pub fn sample_latency(&self) -> bool {
        let n = self.writes.get().wrapping_add(1);
        self.writes.set(n);
        n.is_multiple_of(LATENCY_SAMPLE_EVERY)
    }

    /// HTTP connections being served (upgraded ones count as hub connections instead).
    pub fn http_connections(&self) -> usize {
        self.http_connections.get()
    }

    /// Counts an HTTP connection until the returned guard drops.
    pub fn track_http(self: &Rc<Self>) -> HttpGuard {
        self.http_connections.set(self.http_connections.get() + 1);
        HttpGuard(self.clone())
    }

    /// Takes a new connection (still handshaking) onto this shard.
    pub fn attach(&self, conn: Rc<Connection>) {
        let c = &self.node.config.connections;
        conn.watch(
            self.node.pressure(conn.hub).clone(),
            c.high_watermark(),
            c.low_watermark(),
        );
        self.state.borrow_mut().conns.insert(conn.id, conn);
    }

    pub fn connection(&self, id: ConnectionId) -> Option<Rc<Connection>> {
        self.state.borrow().conns.get(&id).cloned()
    }

    /// What the transport of connection `id` keeps beside it, if it is a `T`.
    pub fn attachment<T: Attachment>(&self, id: ConnectionId) -> Option<Rc<T>> {
        let attachment: Rc<dyn std::any::Any> = self.connection(id)?.attachment()?;
        attachment.downcast().ok()
    }

    /// Connections on this shard, handshaking ones included.
    pub fn connection_count(&self) -> usize {
        self.state.borrow().conns.len()
    }

    /// The handshake succeeded: the connection joins its hub, and presence is announced.
    pub async fn open(self: &Rc<Self>, conn: &Rc<Connection>, protocol: Protocol) {
        conn.open(protocol);
        let now = Instant::now();
        self.state
            .borrow_mut()
            .index
            .hub_mut(conn.hub)
            .add(conn, now);
        let count = self.node.add_count(conn.hub, 1);
        self.node
            .backplane
            .opened(conn.id, conn.hub, conn.user.clone());
        self.metrics.connection_opened();
        self.metrics.record(
            crate::metrics::Latency::Handshake,
            micros(now - conn.opened_at),
        );
        self.announce(conn, true, count, now).await;
    }

    /// Takes a closing connection out of its hub at once — indexes, count, presence — so
    /// counts and existence checks stop seeing it while its transport says goodbye.
    /// Idempotent.
    pub async fn retire(self: &Rc<Self>, conn: &Rc<Connection>) {
        let was_open = {
            let mut state = self.state.borrow_mut();
            let open = state.index.hub(conn.hub).connection(conn.id).is_some();
            state.index.hub_mut(conn.hub).remove(conn);
            open
        };
        if !was_open {
            return;
        }
        let count = self.node.add_count(conn.hub, -1);
        // A node that shuts down says goodbye once instead.
        self.node
            .backplane
            .closed(conn.id, !self.node.is_shutting_down());
        // During shutdown, or when the whole hub is closed, every connection leaves:
        // announcing each to all the others would be quadratic and tell nobody anything.
        if self.node.is_shutting_down() || conn.is_silent() {
            return;
        }
        self.announce(conn, false, count, Instant::now()).await;
    }

    /// Tells the hub that `conn` joined (or left), leaving `count` connections, as its
    /// presence mode says: an event to every member now, or a record for the next periodic
    /// message.
    async fn announce(self: &Rc<Self>, conn: &Connection, joined: bool, count: i64, now: Instant) {
        match &self.node.hubs.get(conn.hub).presence {
            PresenceDef::Events {
                joined: on_join,
                left: on_leave,
            } => {
                let method = if joined { on_join } else { on_leave };
                let args = vec![
                    Value::Str(conn.id.to_string()),
                    conn.user_id().into(),
                    Value::Int(count),
                ];
                self.publish(Publish {
                    hub: conn.hub,
                    target: Target::All,
                    excluded: Vec::new(),
                    message: Outgoing::new(method.clone(), args),
                    created: now,
                })
                .await;
            }
            PresenceDef::Batched { .. } | PresenceDef::Count { .. } if joined => {
                self.node
                    .presence_joined(conn.hub, conn.id, conn.user.clone());
            }
            PresenceDef::Batched { .. } | PresenceDef::Count { .. } => {
                self.node
                    .presence_left(conn.hub, conn.id, conn.user.clone());
            }
            PresenceDef::Off => {}
        }
    }

    /// The connection is gone: it leaves its hub (if [`Shard::retire`] has not done so
    /// already) and the shard, and its id ends (unusable until `until`).
    pub async fn detach(
        self: &Rc<Self>,
        conn: &Rc<Connection>,
        reason: &CloseReason,
        until: Option<Instant>,
    ) {
        self.retire(conn).await;
        // One that never opened was only claimed: the others forget it now.
        self.node
            .backplane
            .closed(conn.id, !self.node.is_shutting_down());
        self.state.borrow_mut().conns.remove(&conn.id);
        conn.detach();
        self.node.registry.end(conn.id, until);
        // A client cut while it was not being read (a slow consumer whose own queue was
        // backed up) was paused until now: that time counts like any other pause.
        if let Some((why, since)) = conn.input_paused() {
            conn.set_input_paused(None);
            self.metrics
                .input_resumed(why, Instant::now().saturating_duration_since(since));
        }
        self.metrics.closed(reason, conn.was_opened());
    }

    /// Delivers a publish on this shard and hands it to every other shard that may hold a
    /// recipient. Each shard's inbox is FIFO, so one publisher's messages to one target arrive
    /// in the order sent.
    pub async fn publish(self: &Rc<Self>, publish: Publish) {
        // What other shards (or nodes) handed this shard before now is delivered first: a
        // REST client whose requests land on different shards sees its publishes in the
        // order it made them.
        self.catch_up();
        let publish = Arc::new(publish);
        if let Target::Connection(id) = publish.target {
            match self.node.registry.locate(id) {
                Some((shard, _)) if shard == self.id => self.deliver(&publish),
                Some((shard, _)) => {
                    self.node
                        .inbox(shard)
                        .send(ShardMsg::Publish(publish))
                        .await;
                }
                None if self.node.backplane.locate(id).is_some() => {
                    self.node.backplane.publish(&publish);
                }
                None => {}
            }
            return;
        }
        self.node.backplane.publish(&publish);
        self.deliver(&publish);
        self.node
            .to_shards(Some(self.id), || ShardMsg::Publish(publish.clone()))
            .await;
    }

    /// Queues a publish to this shard's recipients.
    fn deliver(&self, publish: &Publish) {
        let state = self.state.borrow();
        let mut delivered = 0u64;
        // This shard's own copy of each encoding: every recipient clones it, and a buffer
        // shared with other shards would bounce its reference count between their cores.
        // Per protocol and wire form (framed for WebSockets, bare for the HTTP transports).
        let mut local: [Option<Wire>; Protocol::COUNT * 2] = Default::default();
        let mut send = |conn: &Rc<Connection>| {
            if conn.phase() != Phase::Open || publish.excluded.contains(&conn.id) {
                return;
            }
            let protocol = conn.protocol();
            let wire = local[protocol.index() * 2 + conn.wire_form()]
                .get_or_insert_with(|| conn.wire(publish.message.encoded(protocol)));
            if self.counted(conn.send_wire(wire, Some(publish.created))) {
                delivered += 1;
            }
        };
        match &publish.target {
            Target::Connection(id) => {
                if let Some(conn) = state.conns.get(id).filter(|c| c.hub == publish.hub) {
                    send(conn);
                }
            }
            target => {
                if let Some(members) = state.index.hub(publish.hub).members(target) {
                    members.values().for_each(&mut send);
                }
            }
        }
        self.metrics.messages_out(publish.hub, delivered);
    }

    /// Queues `message` for `conn`; a connection whose queue overflows is counted as a slow
    /// consumer (it closes itself). Returns whether the message was queued.
    pub fn send_to(&self, conn: &Connection, message: &Encoded) -> bool {
        self.counted(conn.send(message))
    }

    /// Queues bytes already in wire form for `conn` (a pong); a connection whose queue
    /// overflows is counted as a slow consumer, as for any send. `Err` says why it ends.
    pub fn send_raw(&self, conn: &Connection, bytes: &[u8]) -> Result<(), CloseReason> {
        let sent = conn.push_raw(bytes);
        if self.counted(sent) {
            Ok(())
        } else {
            Err(conn.refusal())
        }
    }

    /// Counts a slow consumer cut by a send; returns whether the send queued.
    fn counted(&self, sent: Result<(), Refused>) -> bool {
        match sent {
            Ok(()) => true,
            Err(Refused::Overflow) => {
                self.metrics.slow_consumer();
                false
            }
            Err(Refused::Closing) => false,
        }
    }

    /// The caller joins `group` (groups are per hub); false when it is already in as many
    /// groups as a connection may be.
    pub fn join(&self, conn: &Rc<Connection>, group: &Arc<str>) -> bool {
        if conn.phase() != Phase::Open {
            return true;
        }
        let joined = self
            .state
            .borrow_mut()
            .index
            .hub_mut(conn.hub)
            .join(conn, group);
        joined != Joined::Full
    }

    pub fn leave(&self, conn: &Connection, group: &str) {
        self.state
            .borrow_mut()
            .index
            .hub_mut(conn.hub)
            .leave(conn, group);
    }

    /// Applies a message from another shard (or from this shard's own REST handlers).
    pub fn apply(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(publish) => self.deliver(&publish),
            ShardMsg::Join { conn, group } => {
                if let Some(conn) = self.connection(conn)
                    && !self.join(&conn, &group)
                {
                    tracing::warn!(connection = %conn.id, %group, "join refused: the connection is in too many groups");
                }
            }
            ShardMsg::Leave { conn, group } => {
                if let Some(conn) = self.connection(conn) {
                    self.leave(&conn, &group);
                }
            }
            ShardMsg::LeaveAll { conn } => {
                if let Some(conn) = self.connection(conn) {
                    self.state
                        .borrow_mut()
                        .index
                        .hub_mut(conn.hub)
                        .leave_all(&conn);
                }
            }
            ShardMsg::AddUserToGroup {
                hub,
                user,
                group,
                until,
            } => {
                self.state
                    .borrow_mut()
                    .index
                    .hub_mut(hub)
                    .add_user_to_group(&user, &group, until);
            }
            ShardMsg::RemoveUserFromGroup { hub, user, group } => {
                self.state
                    .borrow_mut()
                    .index
                    .hub_mut(hub)
                    .remove_user_from_group(&user, &group);
            }
            ShardMsg::RemoveUserFromAllGroups { hub, user } => {
                self.state
                    .borrow_mut()
                    .index
                    .hub_mut(hub)
                    .remove_user_from_all_groups(&user);
            }
            ShardMsg::Close {
                hub,
                target,
                excluded,
                reason,
            } => {
                let victims: Vec<Rc<Connection>> = {
                    let state = self.state.borrow();
                    match &target {
                        Target::Connection(id) => {
                            state.conns.get(id).cloned().into_iter().collect()
                        }
                        target => state
                            .index
                            .hub(hub)
                            .members(target)
                            .map(|m| m.values().cloned().collect())
                            .unwrap_or_default(),
                    }
                };
                for conn in victims {
                    if conn.hub == hub && !excluded.contains(&conn.id) {
                        if target == Target::All {
                            conn.set_silent();
                        }
                        conn.request_close(reason.clone());
                    }
                }
            }
            ShardMsg::Query(query, reply) => {
                let _ = reply.send(self.answer(&query));
            }
            ShardMsg::Run(task) => (task.0)(self),
            ShardMsg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot_local());
            }
        }
    }

    fn answer(&self, query: &Query) -> bool {
        let state = self.state.borrow();
        match query {
            Query::GroupExists { hub, group } => state.index.hub(*hub).has_group(group),
            Query::UserExists { hub, user } => state.index.hub(*hub).has_user(user),
            Query::UserInGroup { hub, user, group } => {
                state
                    .index
                    .hub(*hub)
                    .user_in_group(user, group, Instant::now())
            }
        }
    }

    /// Whether `user` may be put in `group` of `hub` for longer than its present connections
    /// (the REST API's user-group call), within `connections.max_groups_per_user` and
    /// `max_user_group_memberships`; the error says which limit it would pass. Every shard
    /// holds the same records, so this one's (after what other shards handed it) decide.
    pub fn user_group_allowed(
        self: &Rc<Self>,
        hub: super::HubId,
        user: &str,
        group: &str,
    ) -> Result<(), String> {
        self.catch_up();
        let c = &self.node.config.connections;
        let now = Instant::now();
        let mut state = self.state.borrow_mut();
        if !state
            .index
            .hub(hub)
            .user_group_allowed(user, group, c.max_groups_per_user, now)
        {
            return Err(format!(
                "User '{user}' is already in {} groups, the most connections.max_groups_per_user allows.",
                c.max_groups_per_user
            ));
        }
        let renewal = state.index.hub(hub).has_user_group_record(user, group);
        if !renewal && state.index.user_group_records() >= c.max_user_group_memberships {
            state.index.purge(now);
            if state.index.user_group_records() >= c.max_user_group_memberships {
                return Err(format!(
                    "Herald already holds {} user-group memberships, the most connections.max_user_group_memberships allows.",
                    c.max_user_group_memberships
                ));
            }
        }
        Ok(())
    }

    /// Sends `msg` to the shard of this node that owns connection `id` (applied here at once
    /// if it is this one); false if no shard does.
    pub async fn to_owner(self: &Rc<Self>, id: ConnectionId, msg: ShardMsg) -> bool {
        match self.node.registry.locate(id) {
            Some((shard, _)) if shard == self.id => {
                self.apply(msg);
                true
            }
            Some((shard, _)) => {
                self.node.inbox(shard).send(msg).await;
                true
            }
            None => false,
        }
    }

    /// Sends a message made by `make` to every shard of this node, this one included.
    pub async fn to_all(self: &Rc<Self>, make: impl Fn() -> ShardMsg) {
        self.apply(make());
        self.node.to_shards(Some(self.id), make).await;
    }

    /// Waits until every other shard has delivered what this one handed it so far (their
    /// inboxes are FIFO). A connection that published a large piece waits for this before it
    /// is read again, so its recipients on other shards are seen to be backed up (and hold it
    /// back) before it hands them more: without it, a fast publisher could fill another
    /// shard's inbox with megabytes that then land on one recipient at once.
    pub async fn delivered_everywhere(self: &Rc<Self>) {
        let mut replies = Vec::with_capacity(self.node.shards());
        for shard in (0..self.node.shards()).filter(|s| *s != self.id) {
            let (tx, rx) = oneshot::channel::<()>();
            self.node
                .run_on(shard, move |_| {
                    let _ = tx.send(());
                })
                .await;
            replies.push(rx);
        }
        for rx in replies {
            let _ = rx.await;
        }
    }

    /// Runs `task` on shard `target` (here at once if it is this shard).
    pub async fn run_on(
        self: &Rc<Self>,
        target: usize,
        task: impl FnOnce(&Rc<Shard>) + Send + 'static,
    ) {
        if target == self.id {
            task(self);
        } else {
            self.node.run_on(target, task).await;
        }
    }

    /// Runs `f` on shard `target` (here at once if it is this shard) and returns its answer;
    /// `None` if that shard stopped first.
    pub async fn on_shard<R: Send + 'static>(
        self: &Rc<Self>,
        target: usize,
        f: impl FnOnce(&Rc<Shard>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.run_on(target, move |shard| {
            let _ = tx.send(f(shard));
        })
        .await;
        rx.await.ok()
    }

    /// Asks every shard, and every node of the cluster; true if any answers yes.
    pub async fn query(self: &Rc<Self>, query: Query) -> bool {
        self.query_node(&query).await || self.node.backplane.ask(&query).await
    }

    /// Asks every shard of this node. Changes other shards handed this one before now are
    /// applied first, so a REST client whose requests land on different shards reads its own
    /// writes; the other shards answer through their FIFO inboxes, after what was sent to them.
    async fn query_node(self: &Rc<Self>, query: &Query) -> bool {
        self.catch_up();
        self.answer(query) || self.node.ask_shards(query, Some(self.id)).await
    }

    fn snapshot_local(&self) -> Snapshot {
        let state = self.state.borrow();
        let transports = TransportKind::ALL.len();
        let mut gauges = vec![0u64; self.node.hubs.len() * transports];
        let mut paused = [0u64; Pause::ALL.len()];
        let mut awaiting_reconnect = 0;
        for conn in state.conns.values() {
            if let Some((why, _)) = conn.input_paused() {
                paused[why.index()] += 1;
            }
            if conn.disconnected_since().is_some() {
                awaiting_reconnect += 1;
            }
            if conn.phase() == Phase::Open {
                let t = TransportKind::ALL
                    .iter()
                    .position(|t| *t == conn.transport)
                    .unwrap_or(0);
                gauges[conn.hub as usize * transports + t] += 1;
            }
        }
        let mut snapshot = self.metrics.snapshot(gauges, paused);
        snapshot.awaiting_reconnect = awaiting_reconnect;
        snapshot.input_held = self.node.input.held() as u64;
        snapshot.input_budget = self.node.input.limit() as u64;
        snapshot
    }

    /// The metrics of every shard, merged.
    pub async fn snapshot(&self) -> Snapshot {
        let mut merged = self.snapshot_local();
        for shard in (0..self.node.shards()).filter(|s| *s != self.id) {
            let (tx, rx) = oneshot::channel();
            self.node.inbox(shard).send(ShardMsg::Snapshot(tx)).await;
            if let Ok(snapshot) = rx.await {
                merged.merge(&snapshot);
            }
        }
        merged
    }

    /// Applies everything that was in this shard's inbox when called (bounded by the inbox's
    /// capacity; what arrives meanwhile waits for the inbox loop).
    fn catch_up(self: &Rc<Self>) {
        let inbox = self.node.inbox(self.id);
        let mut batch = Vec::new();
        inbox.try_recv(&mut batch, inbox.queued());
        for msg in batch {
            self.apply(msg);
        }
    }

    /// Serves the inbox until the runtime stops.
    pub async fn run_inbox(self: Rc<Self>) {
        let mut batch = Vec::with_capacity(INBOX_BATCH);
        loop {
            self.node.inbox(self.id).recv(&mut batch, INBOX_BATCH).await;
            for msg in batch.drain(..) {
                self.apply(msg);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Asks every connection to close with `reason`.
    pub fn close_all(&self, reason: &CloseReason) {
        let conns: Vec<Rc<Connection>> = self.state.borrow().conns.values().cloned().collect();
        for conn in conns {
            conn.request_close(reason.clone());
        }
    }

    /// How often timers are checked: a quarter of the shortest timeout, within [10 ms, 1 s].
    pub fn tick_interval(&self) -> Duration {
        let c = &self.node.config.connections;
        let shortest = [
            c.keep_alive_interval_ms,
            c.client_timeout_ms,
            c.handshake_timeout_ms,
            c.send_timeout_ms,
        ]
        .into_iter()
        .min()
        .unwrap_or(1000);
        Duration::from_millis((shortest / 4).clamp(10, 1000))
    }

    /// Keep-alive pings and timeouts for every connection, batched in one timer per shard
    /// instead of timers per connection.
    pub async fn run_housekeeping(self: Rc<Self>) {
        let c = self.node.config.connections.clone();
        let keep_alive = Duration::from_millis(c.keep_alive_interval_ms);
        let client_timeout = Duration::from_millis(c.client_timeout_ms);
        let handshake_timeout = Duration::from_millis(c.handshake_timeout_ms);
        let send_timeout = Duration::from_millis(c.send_timeout_ms);
        let mut ticker = tokio::time::interval(self.tick_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            ticker.tick().await;
            ticks += 1;
            let now = Instant::now();
            self.clock.set(now);
            let conns: Vec<Rc<Connection>> = self.state.borrow().conns.values().cloned().collect();
            let disconnect_timeout = Duration::from_millis(c.disconnect_timeout_ms);
            let under_budget = !self.node.input.is_over();
            let mut budget_paused = Vec::new();
            for conn in conns {
                // Reading paused: one waiting for recipients looks again (its wait may be
                // over); those paused for the input budget resume once it is free, those
                // paused first first.
                match conn.input_paused() {
                    Some((Pause::Recipients, _)) => conn.wake_input(),
                    Some((Pause::Budget, since)) if under_budget => {
                        budget_paused.push((since, conn.clone()));
                    }
                    _ => {}
                }
                // Stateful reconnect: a connection without a transport waits for its client
                // up to the disconnect timeout (or ends at once if asked to close).
                if let Some(since) = conn.disconnected_since() {
                    if conn.is_closing() || now - since >= disconnect_timeout {
                        if !conn.is_closing() {
                            conn.request_close(CloseReason::ClientGone);
                        }
                        conn.stop_waiting();
                        let shard = self.clone();
                        // Its token may still be valid: keep the id unusable a while.
                        let until = Some(now + disconnect_timeout);
                        tokio::task::spawn_local(async move {
                            shard.detach(&conn, &CloseReason::ClientGone, until).await;
                        });
                    }
                    continue;
                }
                if conn.is_closing() {
                    continue;
                }
                if let Some(sequence_id) = conn.ack_due() {
                    let ack = Encoded::message(&HubMessage::Ack { sequence_id }, conn.protocol());
                    self.send_to(&conn, &ack);
                }
                if let Some(since) = conn.stalled_since()
                    && now - since >= send_timeout
                {
                    conn.request_close(CloseReason::SendTimeout);
                    continue;
                }
                match conn.phase() {
                    Phase::Handshaking if now - conn.opened_at >= handshake_timeout => {
                        let error = HandshakeError::TimedOut;
                        let answer = handshake::encode_response(Some(&error.to_string()));
                        self.send_to(&conn, &Encoded::raw(&answer, Protocol::Json));
                        conn.request_close(CloseReason::Handshake(error));
                    }
                    // Long polling keeps itself alive: its transport closes a client that
                    // stops polling.
                    Phase::Open if conn.transport.inherent_keep_alive() => {}
                    // A client Herald stopped reading for its own backed-up queue is not
                    // silent; one paused for the input budget is timed out as usual, which is
                    // what frees the budget from clients that stall mid-message.
                    Phase::Open
                        if now - conn.last_received() >= client_timeout
                            && !matches!(conn.input_paused(), Some((Pause::Outbound, _))) =>
                    {
                        conn.request_close(CloseReason::ClientTimeout);
                    }
                    Phase::Open if now - conn.last_sent() >= keep_alive && !conn.has_queued() => {
                        self.send_to(&conn, &self.ping[conn.protocol().index()]);
                    }
                    _ => {}
                }
            }
            budget_paused.sort_by_key(|(since, _)| *since);
            for (_, conn) in budget_paused {
                conn.wake_input();
            }
            if ticks.is_multiple_of(64) {
                self.state.borrow_mut().index.purge(now);
                self.node.registry.purge(now, self.id, self.node.shards());
            }
        }
    }
}

pub struct HttpGuard(Rc<Shard>);

impl Drop for HttpGuard {
    fn drop(&mut self) {
        let n = &self.0.http_connections;
        n.set(n.get().saturating_sub(1));
    }
}

pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Helpers for tests that drive shards without sockets.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::Config;

    /// A node of `shards` shards living on the current thread, with their inboxes served.
    pub fn node(shards: usize, config: Config) -> Vec<Rc<Shard>> {
        node_with(shards, config, Arc::new(crate::hub::backplane::Local))
    }

    /// [`node`], with `backplane` for the other nodes of its cluster.
    pub fn node_with(
        shards: usize,
        config: Config,
        backplane: Arc<dyn crate::hub::Backplane>,
    ) -> Vec<Rc<Shard>> {
        let node = Node::with_backplane(config, shards, "test", backplane);
        (0..shards)
            .map(|i| {
                let shard = Shard::new(i, node.clone());
                tokio::task::spawn_local(shard.clone().run_inbox());
                shard
            })
            .collect()
    }

    /// An opened connection on `shard` with no transport: its queue is the fake socket.
    pub async fn connect(shard: &Rc<Shard>, user: Option<&str>) -> Rc<Connection> {
        let conn = Rc::new(Connection::new(
            ConnectionId::random(),
            0,
            user.map(Arc::from),
            TransportKind::WebSockets,
            1 << 20,
        ));
        shard
            .node
            .registry
            .claim(conn.id, shard.id, 0, TransportKind::WebSockets)
            .unwrap();
        shard.attach(conn.clone());
        shard.open(&conn, Protocol::Json).await;
        conn
    }

    /// Lets other shards' inbox tasks run.
    pub async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    /// Takes every queued message as text (WebSocket framing stripped).
    pub fn drain(conn: &Connection) -> Vec<String> {
        let mut frames = Vec::new();
        while conn.has_queued() {
            let n = conn.with_queued(|slices| {
                let mut n = 0;
                for s in slices {
                    let header = if s[1] & 0x7f == 126 { 4 } else { 2 };
                    frames.push(String::from_utf8(s[header..s.len() - 1].to_vec()).unwrap());
                    n += s.len();
                }
                n
            });
            conn.consume(n, Instant::now(), |_| {});
        }
        frames
    }
}
