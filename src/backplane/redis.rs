//! The `redis` backplane: this node's side of a cluster whose nodes meet in Redis Streams.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, oneshot};

use super::config::ClusterConfig;
use super::directory::{Directory, Remote};
use super::envelope::{self, Body, Envelope, Member, Question, Target as WireTarget};
use super::outbox::Outbox;
use super::{inbound, link};
use crate::hub::backplane::{Answer, Backplane};
use crate::hub::connection::{ConnectionId, IdBuildHasher};
use crate::hub::definition::{HubId, Hubs};
use crate::hub::node::ClaimError;
use crate::hub::{Node, Publish, Query, Target};

/// How long a POST for an unknown id waits to learn that another node holds the connection
/// (a Server-Sent Events client posts its handshake as soon as its stream opens, possibly
/// before this node has read the other node's announcement).
const REMOTE_WAIT: Duration = Duration::from_millis(500);

/// Roster entries per envelope.
const ROSTER_CHUNK: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Counters and gauges of the backplane, for `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub written: AtomicU64,
    pub read: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicates: AtomicU64,
    pub gaps: AtomicU64,
    pub undecodable: AtomicU64,
    /// Entries of a newer envelope version than this node reads.
    pub newer_version: AtomicU64,
    /// Age-trimming passes (`XTRIM`) Redis accepted, and refused.
    pub trims: AtomicU64,
    pub trims_refused: AtomicU64,
    pub commands: AtomicU64,
    pub epoch_changes: AtomicU64,
    pub replayed: AtomicU64,
    pub reconnects: AtomicU64,
    pub link_failures: AtomicU64,
    pub nodes_expired: AtomicU64,
    pub query_timeouts: AtomicU64,
    /// Send→read delay of the last entry read from another node, in microseconds.
    pub lag_us: AtomicU64,
}

/// One Redis server's connection state.
pub(super) struct LinkState {
    pub(super) up: AtomicBool,
    /// When the link last came up (or start-up, before it ever did).
    since: Mutex<Instant>,
    /// Why the link is down, while it is (a refused certificate, a wrong password…).
    error: Mutex<Option<String>>,
}

struct Pending {
    waiting: HashSet<u64>,
    reply: Option<oneshot::Sender<bool>>,
}

/// This node's side of a Redis Streams cluster.
pub struct Cluster {
    pub config: ClusterConfig,
    /// This incarnation's id, random at every start.
    pub origin: u64,
    /// The configured (or generated) node id.
    pub name: String,
    hub_names: Vec<Arc<str>>,
    /// The partition this node's own messages go to.
    pub(super) home: usize,
    outbox: Mutex<Outbox>,
    /// Wakes each server's writer.
    wake: Box<[Notify]>,
    pub(super) links: Box<[LinkState]>,
    directory: Mutex<Directory>,
    /// This node's open connections, for rosters.
    local: Mutex<HashMap<ConnectionId, Remote, IdBuildHasher>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_query: AtomicU64,
    pub stats: Stats,
}

impl Cluster {
    /// `token_life`: how long a connection token may outlive its connection (ids of remote
    /// connections that ended are refused that long).
    pub fn new(config: &ClusterConfig, hubs: &Hubs, token_life: Duration) -> Cluster {
        let origin = loop {
            let o: u64 = rand::random();
            if o != 0 {
                break o;
            }
        };
        let name = if config.node_id.is_empty() {
            format!("node-{:08x}", origin as u32)
        } else {
            config.node_id.clone()
        };
        let servers = config.redis_urls.len().max(1);
        let now = Instant::now();
        Cluster {
            origin,
            name,
            hub_names: hubs.list.iter().map(|h| h.name.clone()).collect(),
            home: envelope::partition_of_node(origin, config.partitions),
            outbox: Mutex::new(Outbox::new(
                config.partitions,
                config.buffer_max_messages,
                Duration::from_millis(config.replay_window_ms),
                config.replay_window_messages,
            )),
            wake: (0..servers).map(|_| Notify::new()).collect(),
            links: (0..servers)
                .map(|_| LinkState {
                    up: AtomicBool::new(false),
                    since: Mutex::new(now),
                    error: Mutex::new(None),
                })
                .collect(),
            directory: Mutex::new(Directory::new(hubs.len(), token_life)),
            local: Mutex::new(HashMap::default()),
            pending: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
            stats: Stats::default(),
            config: config.clone(),
        }
    }

    /// The Redis server that holds `partition`.
    pub fn server_of(&self, partition: usize) -> usize {
        partition % self.links.len()
    }

    /// The partitions Redis server `server` holds.
    pub fn partitions_of(&self, server: usize) -> Vec<usize> {
        (0..self.config.partitions)
            .filter(|p| self.server_of(*p) == server)
            .collect()
    }

    pub fn stream_key(&self, partition: usize) -> String {
        format!("{}:{partition}", self.config.stream_prefix)
    }

    fn hub_name(&self, hub: HubId) -> &str {
        &self.hub_names[hub as usize]
    }

    /// Queues `body` for every other node, on `partition`.
    pub fn send(&self, partition: usize, body: Body) {
        let pushed = lock(&self.outbox).push(partition, |seq| {
            Envelope {
                origin: self.origin,
                partition: partition as u32,
                seq,
                sent_us: unix_us(),
                body,
            }
            .encode()
        });
        match pushed {
            Ok(()) => self.wake[self.server_of(partition)].notify_one(),
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn send_to_target(&self, hub: HubId, target: &WireTarget, body: Body) {
        let partition =
            envelope::partition_of_target(self.hub_name(hub), target, self.config.partitions);
        self.send(partition, body);
    }

    /// Sends a publish made on this node to the other nodes.
    pub fn publish(&self, publish: &Publish) {
        let args = publish.message.arguments();
        let mut arguments = Vec::with_capacity(16 + args.len() * 16);
        crate::protocol::msgpack::write_array_len(args.len(), &mut arguments);
        for value in args {
            crate::protocol::msgpack::write_value(value, &mut arguments);
        }
        let target = wire_target(&publish.target);
        let body = Body::Publish {
            hub: self.hub_name(publish.hub).to_string(),
            target: target.clone(),
            excluded: publish.excluded.iter().map(|id| id.0).collect(),
            method: publish.message.target().to_string(),
            arguments,
        };
        self.send_to_target(publish.hub, &target, body);
    }

    /// Closes, on the other nodes, the connections `target` reaches.
    pub fn close(
        &self,
        hub: HubId,
        target: &Target,
        excluded: &[ConnectionId],
        reason: Option<String>,
    ) {
        let target = wire_target(target);
        let body = Body::Close {
            hub: self.hub_name(hub).to_string(),
            target: target.clone(),
            excluded: excluded.iter().map(|id| id.0).collect(),
            reason,
        };
        self.send_to_target(hub, &target, body);
    }

    /// A membership change for one connection held by another node.
    pub fn to_connection(&self, hub: HubId, id: ConnectionId, body: Body) {
        self.send_to_target(hub, &WireTarget::Connection(id.0), body);
    }

    /// A change to a user's group memberships, for every node.
    pub fn to_user(&self, hub: HubId, user: &str, body: Body) {
        self.send_to_target(hub, &WireTarget::User(user.to_string()), body);
    }

    pub fn hub_string(&self, hub: HubId) -> String {
        self.hub_name(hub).to_string()
    }

    /// A connection served over HTTP requests started on this node: the others learn where
    /// to forward its POSTs.
    pub fn claimed(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>) {
        self.announce(id, hub, user, false);
    }

    /// A connection of this node opened.
    pub fn opened(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>) {
        self.announce(id, hub, user, true);
    }

    fn announce(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>, open: bool) {
        let remote = Remote {
            hub,
            user: user.clone(),
            open,
        };
        lock(&self.local).insert(id, remote);
        let member = Member {
            conn: id.0,
            hub: self.hub_string(hub),
            user: user.map(|u| u.to_string()),
            open,
        };
        let body = if open {
            Body::Opened(member)
        } else {
            Body::Claimed(member)
        };
        self.send(self.home, body);
    }

    /// A connection of this node left its hub (or ended before its handshake). Idempotent.
    pub fn closed(&self, id: ConnectionId, announce: bool) {
        if lock(&self.local).remove(&id).is_some() && announce {
            self.send(self.home, Body::Closed { conn: id.0 });
        }
    }

    /// Hands data a client POSTed here to the node holding its connection.
    pub fn forward(&self, hub: HubId, id: ConnectionId, payload: Vec<u8>) {
        self.to_connection(
            hub,
            id,
            Body::Inbound {
                conn: id.0,
                payload,
            },
        );
    }

    /// This node is leaving: the others forget its connections at once.
    pub fn goodbye(&self) {
        self.send(self.home, Body::Goodbye);
    }

    /// Asks the other nodes for their rosters (at start-up, or of one node back from the
    /// dead).
    pub fn request_roster(&self, to: u64) {
        self.send(self.home, Body::RosterRequest { to });
    }

    /// Sends this node's open connections.
    pub fn send_roster(&self) {
        let members: Vec<Member> = lock(&self.local)
            .iter()
            .map(|(id, remote)| Member {
                conn: id.0,
                hub: self.hub_string(remote.hub),
                user: remote.user.as_deref().map(str::to_owned),
                open: remote.open,
            })
            .collect();
        // An empty roster is still sent: it resets what the others knew.
        let chunks: Vec<&[Member]> = if members.is_empty() {
            vec![&[]]
        } else {
            members.chunks(ROSTER_CHUNK).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.send(
                self.home,
                Body::Roster {
                    reset: i == 0,
                    members: chunk.to_vec(),
                },
            );
        }
    }

    /// Connections of `hub` on the other nodes.
    pub fn count(&self, hub: HubId) -> i64 {
        lock(&self.directory).count(hub)
    }

    /// The hub of a connection another node holds.
    pub fn locate(&self, id: ConnectionId) -> Option<HubId> {
        lock(&self.directory).locate(id)
    }

    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        lock(&self.directory)
    }

    /// Asks every other node; true as soon as one says yes, false when all said no (or did
    /// not answer in time).
    pub async fn ask(&self, query: &Query) -> bool {
        let (hub, question) = wire_question(query);
        let waiting: HashSet<u64> = lock(&self.directory).peers().into_iter().collect();
        if waiting.is_empty() {
            return false;
        }
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(
            id,
            Pending {
                waiting,
                reply: Some(tx),
            },
        );
        self.send(
            self.home,
            Body::Query {
                id,
                hub: self.hub_string(hub),
                question,
            },
        );
        let timeout = Duration::from_millis(self.config.query_timeout_ms);
        let answer = tokio::time::timeout(timeout, rx).await;
        lock(&self.pending).remove(&id);
        if let Ok(Ok(yes)) = answer {
            yes
        } else {
            self.stats.query_timeouts.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Node `from` answered query `id`.
    pub(crate) fn answered(&self, id: u64, from: u64, yes: bool) {
        let mut pending = lock(&self.pending);
        let Some(p) = pending.get_mut(&id) else {
            return;
        };
        p.waiting.remove(&from);
        if (yes || p.waiting.is_empty())
            && let Some(reply) = p.reply.take()
        {
            let _ = reply.send(yes);
        }
    }

    /// A node left the cluster: pending questions stop waiting for it.
    pub(crate) fn forget_peer(&self, origin: u64) {
        let mut pending = lock(&self.pending);
        for p in pending.values_mut() {
            if p.waiting.remove(&origin)
                && p.waiting.is_empty()
                && let Some(reply) = p.reply.take()
            {
                let _ = reply.send(false);
            }
        }
    }

    pub(crate) fn answer(&self, to: u64, id: u64, yes: bool) {
        self.send(self.home, Body::Answer { to, id, yes });
    }

    pub(crate) fn set_link(&self, server: usize, up: bool) {
        if up {
            *lock(&self.links[server].since) = Instant::now();
            *lock(&self.links[server].error) = None;
        }
        self.links[server].up.store(up, Ordering::Relaxed);
    }

    /// Records why link `server` failed (it is down until it comes up again).
    pub(crate) fn link_failed(&self, server: usize, error: String) {
        self.stats.link_failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.links[server].error) = Some(error);
    }

    /// The reason the first failing link gave, while one is down.
    pub fn link_error(&self) -> Option<String> {
        self.links.iter().find_map(|l| {
            if l.up.load(Ordering::Relaxed) {
                None
            } else {
                lock(&l.error).clone()
            }
        })
    }

    /// Whether every Redis server is reachable.
    pub fn is_up(&self) -> bool {
        self.links.iter().all(|l| l.up.load(Ordering::Relaxed))
    }

    /// Since when every Redis server has been reachable (None while one is not).
    pub fn reachable_since(&self) -> Option<Instant> {
        if !self.is_up() {
            return None;
        }
        self.links.iter().map(|l| *lock(&l.since)).max()
    }

    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    pub(crate) fn wake(&self, server: usize) -> &Notify {
        &self.wake[server]
    }

    /// The backplane's lines of the Prometheus exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let s = &self.stats;
        let connected = self
            .links
            .iter()
            .filter(|l| l.up.load(Ordering::Relaxed))
            .count();
        let (peers, remote) = lock(&self.directory).totals();
        let queued = lock(&self.outbox).queued();
        let gauges: [(&str, &str, u64); 6] = [
            (
                "herald_backplane_redis_up",
                "1 while this node is connected to every configured Redis server, else 0.",
                u64::from(connected == self.links.len()),
            ),
            (
                "herald_backplane_redis_connected_servers",
                "Redis servers this node is connected to (of herald_backplane_redis_servers).",
                connected as u64,
            ),
            (
                "herald_backplane_redis_servers",
                "Redis servers configured.",
                self.links.len() as u64,
            ),
            (
                "herald_backplane_peers",
                "Other nodes alive (heard from within cluster.node_timeout_ms).",
                peers as u64,
            ),
            (
                "herald_backplane_remote_connections",
                "Connections held by the other nodes.",
                remote as u64,
            ),
            (
                "herald_backplane_queued",
                "Cluster messages waiting to be written to Redis.",
                queued as u64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP herald_backplane_lag_seconds Send-to-read delay of the last cluster message read from another node.\n# TYPE herald_backplane_lag_seconds gauge\nherald_backplane_lag_seconds {:.6}",
            s.lag_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let counters: [(&str, &str, &AtomicU64); 16] = [
            (
                "herald_backplane_written_total",
                "Cluster messages written to Redis.",
                &s.written,
            ),
            (
                "herald_backplane_read_total",
                "Cluster messages read from other nodes (duplicates excluded).",
                &s.read,
            ),
            (
                "herald_backplane_dropped_total",
                "Cluster messages dropped because the outbox was full while Redis was unreachable.",
                &s.dropped,
            ),
            (
                "herald_backplane_duplicates_total",
                "Cluster messages read twice (after a replay) and dropped.",
                &s.duplicates,
            ),
            (
                "herald_backplane_gaps_total",
                "Cluster messages from other nodes that never arrived (trimmed, or lost beyond the replay window).",
                &s.gaps,
            ),
            (
                "herald_backplane_undecodable_total",
                "Stream entries this node could not read (corrupt, or an envelope version older than it reads).",
                &s.undecodable,
            ),
            (
                "herald_backplane_newer_version_total",
                "Stream entries of an envelope version newer than this node reads (a node of a later release), skipped.",
                &s.newer_version,
            ),
            (
                "herald_backplane_trims_total",
                "Age-trimming passes over the streams (XTRIM) Redis accepted.",
                &s.trims,
            ),
            (
                "herald_backplane_trim_refused_total",
                "Age-trimming passes Redis refused (a missing +xtrim permission): the streams are bounded by cluster.stream_max_len only.",
                &s.trims_refused,
            ),
            (
                "herald_backplane_redis_commands_total",
                "Redis commands sent (each command of a pipeline counts).",
                &s.commands,
            ),
            (
                "herald_backplane_epoch_changes_total",
                "Times Redis came back without its streams.",
                &s.epoch_changes,
            ),
            (
                "herald_backplane_replayed_total",
                "Cluster messages written again after Redis lost them.",
                &s.replayed,
            ),
            (
                "herald_backplane_reconnects_total",
                "Connections to Redis re-established after a failure.",
                &s.reconnects,
            ),
            (
                "herald_backplane_link_failures_total",
                "Failed attempts to connect to Redis, and links lost (the reason is on /readyz).",
                &s.link_failures,
            ),
            (
                "herald_backplane_nodes_expired_total",
                "Nodes declared dead after missing their heartbeats.",
                &s.nodes_expired,
            ),
            (
                "herald_backplane_query_timeouts_total",
                "Cluster questions (REST existence checks) some node did not answer in time.",
                &s.query_timeouts,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        o
    }
}

/// The `redis` implementation of the hub's [`Backplane`]: changes become envelopes on the
/// partition of their target, questions wait for every node's answer.
impl Backplane for Cluster {
    fn publish(&self, publish: &Publish) {
        Cluster::publish(self, publish);
    }

    fn close(
        &self,
        hub: HubId,
        target: &Target,
        excluded: &[ConnectionId],
        reason: Option<String>,
    ) {
        Cluster::close(self, hub, target, excluded, reason);
    }

    fn join(&self, hub: HubId, conn: ConnectionId, group: &str) {
        let body = Body::Join {
            hub: self.hub_string(hub),
            conn: conn.0,
            group: group.to_string(),
        };
        self.to_connection(hub, conn, body);
    }

    fn leave(&self, hub: HubId, conn: ConnectionId, group: &str) {
        let body = Body::Leave {
            hub: self.hub_string(hub),
            conn: conn.0,
            group: group.to_string(),
        };
        self.to_connection(hub, conn, body);
    }

    fn leave_all(&self, hub: HubId, conn: ConnectionId) {
        let body = Body::LeaveAll {
            hub: self.hub_string(hub),
            conn: conn.0,
        };
        self.to_connection(hub, conn, body);
    }

    fn add_user_to_group(&self, hub: HubId, user: &str, group: &str, until: Option<Instant>) {
        // On the wire as wall-clock time: each node maps it back to its own clock.
        let until_ms = until.map(|until| {
            let left = until.saturating_duration_since(Instant::now());
            unix_us() / 1000 + left.as_millis() as u64
        });
        let body = Body::AddUserToGroup {
            hub: self.hub_string(hub),
            user: user.to_string(),
            group: group.to_string(),
            until_ms,
        };
        self.to_user(hub, user, body);
    }

    fn remove_user_from_group(&self, hub: HubId, user: &str, group: &str) {
        let body = Body::RemoveUserFromGroup {
            hub: self.hub_string(hub),
            user: user.to_string(),
            group: group.to_string(),
        };
        self.to_user(hub, user, body);
    }

    fn remove_user_from_all_groups(&self, hub: HubId, user: &str) {
        let body = Body::RemoveUserFromAllGroups {
            hub: self.hub_string(hub),
            user: user.to_string(),
        };
        self.to_user(hub, user, body);
    }

    fn claimed(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>) {
        Cluster::claimed(self, id, hub, user);
    }

    fn opened(&self, id: ConnectionId, hub: HubId, user: Option<Arc<str>>) {
        Cluster::opened(self, id, hub, user);
    }

    fn closed(&self, id: ConnectionId, announce: bool) {
        Cluster::closed(self, id, announce);
    }

    fn forward(&self, hub: HubId, id: ConnectionId, payload: Vec<u8>) {
        Cluster::forward(self, hub, id, payload);
    }

    fn locate(&self, id: ConnectionId) -> Option<HubId> {
        Cluster::locate(self, id)
    }

    fn await_remote(&self, id: ConnectionId) -> Answer<'_, bool> {
        Box::pin(async move {
            let deadline = Instant::now() + REMOTE_WAIT;
            loop {
                if Cluster::locate(self, id).is_some() {
                    return true;
                }
                if Instant::now() >= deadline || !Cluster::is_up(self) {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    fn may_claim(&self, id: ConnectionId, now: Instant) -> Result<(), ClaimError> {
        self.directory().may_claim(id, now)
    }

    fn count(&self, hub: HubId) -> i64 {
        Cluster::count(self, hub)
    }

    fn ask<'a>(&'a self, query: &'a Query) -> Answer<'a, bool> {
        Box::pin(Cluster::ask(self, query))
    }

    fn is_up(&self) -> bool {
        Cluster::is_up(self)
    }

    fn goodbye(&self) {
        Cluster::goodbye(self);
    }

    fn flush(&self, until: Instant) {
        while self.outbox().queued() > 0 && Cluster::is_up(self) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn metrics(&self) -> String {
        self.render()
    }

    fn status(&self) -> Option<serde_json::Value> {
        let (peers, remote) = self.directory().totals();
        Some(serde_json::json!({
            "kind": "redis",
            "node": self.name,
            "state": if Cluster::is_up(self) { "up" } else { "down" },
            "error": self.link_error(),
            "lag_ms": self.stats.lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "queued": self.outbox().queued(),
            "peers": peers,
            "remote_connections": remote,
        }))
    }
}

/// Starts the links to Redis and the heartbeat on the control runtime, and asks the nodes
/// already running what they hold.
pub fn start(cluster: &Arc<Cluster>, node: &Arc<Node>, runtime: &tokio::runtime::Handle) {
    let cluster = cluster.clone();
    cluster.request_roster(0);
    for server in 0..cluster.links.len() {
        runtime.spawn(link::run(node.clone(), cluster.clone(), server));
    }
    runtime.spawn(inbound::run_heartbeat(node.clone(), cluster));
}

pub fn wire_target(target: &Target) -> WireTarget {
    match target {
        Target::All => WireTarget::All,
        Target::Group(g) => WireTarget::Group(g.to_string()),
        Target::User(u) => WireTarget::User(u.to_string()),
        Target::Connection(id) => WireTarget::Connection(id.0),
    }
}

/// A question about connections, in cluster form.
pub fn wire_question(query: &Query) -> (HubId, Question) {
    match query {
        Query::GroupExists { hub, group } => (
            *hub,
            Question::GroupExists {
                group: group.to_string(),
            },
        ),
        Query::UserExists { hub, user } => (
            *hub,
            Question::UserExists {
                user: user.to_string(),
            },
        ),
        Query::UserInGroup { hub, user, group } => (
            *hub,
            Question::UserInGroup {
                user: user.to_string(),
                group: group.to_string(),
            },
        ),
    }
}

/// A question from another node, for this node's shards.
pub fn hub_query(hub: HubId, question: Question) -> Query {
    match question {
        Question::GroupExists { group } => Query::GroupExists {
            hub,
            group: group.into(),
        },
        Question::UserExists { user } => Query::UserExists {
            hub,
            user: user.into(),
        },
        Question::UserInGroup { user, group } => Query::UserInGroup {
            hub,
            user: user.into(),
            group: group.into(),
        },
    }
}

pub fn hub_target(target: &WireTarget) -> Target {
    match target {
        WireTarget::All => Target::All,
        WireTarget::Group(g) => Target::Group(g.as_str().into()),
        WireTarget::User(u) => Target::User(u.as_str().into()),
        WireTarget::Connection(id) => Target::Connection(ConnectionId(*id)),
    }
}
