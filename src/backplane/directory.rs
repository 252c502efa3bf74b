//! The directory: what this node knows of the other nodes — that they are alive, and which
//! connections each one holds — so counts, presence and REST existence checks cover the whole
//! cluster, and a dead node's connections can be announced as gone. It also remembers the ids
//! of remote connections that ended until their tokens expire, so a connection token starts
//! one connection in the whole cluster, not one per node.
//!
//! Pure: callers pass `now`; no I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::connection::{ConnectionId, IdBuildHasher};
use crate::hub::definition::HubId;
use crate::hub::node::ClaimError;

/// A connection held by another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub hub: HubId,
    pub user: Option<Arc<str>>,
    /// Past its handshake. A connection still handshaking is known (so requests for it can
    /// be forwarded) but not counted.
    pub open: bool,
}

#[derive(Debug)]
struct Peer {
    name: String,
    last_seen: Instant,
    conns: HashMap<ConnectionId, Remote, IdBuildHasher>,
}

/// A node that stopped, with the connections it held.
#[derive(Debug)]
pub struct Departed {
    pub origin: u64,
    pub name: String,
    pub conns: Vec<(ConnectionId, Remote)>,
}

#[derive(Debug)]
pub struct Directory {
    peers: HashMap<u64, Peer>,
    /// Which peer holds each remote connection.
    owners: HashMap<ConnectionId, u64, IdBuildHasher>,
    /// Remote connections per hub.
    counts: Vec<i64>,
    /// Remote connections that ended, until their tokens expire.
    ended: HashMap<ConnectionId, Instant, IdBuildHasher>,
    /// How long a connection token outlives the end of its connection at most.
    token_life: Duration,
}

impl Directory {
    pub fn new(hubs: usize, token_life: Duration) -> Directory {
        Directory {
            peers: HashMap::new(),
            owners: HashMap::default(),
            counts: vec![0; hubs],
            ended: HashMap::default(),
            token_life,
        }
    }

    /// Whether this node may start connection `id`: not if another node holds it (a second
    /// use of its token, or a reconnect that should have gone to that node) or ended it while
    /// its token may still be valid.
    pub fn may_claim(&self, id: ConnectionId, now: Instant) -> Result<(), ClaimError> {
        if self.owners.contains_key(&id) {
            return Err(ClaimError::Active);
        }
        match self.ended.get(&id) {
            Some(until) if *until > now => Err(ClaimError::Ended),
            _ => Ok(()),
        }
    }

    fn peer(&mut self, origin: u64, now: Instant) -> &mut Peer {
        self.peers.entry(origin).or_insert_with(|| Peer {
            name: String::new(),
            last_seen: now,
            conns: HashMap::default(),
        })
    }

    /// A sign of life from `origin`. Returns true if the node was not known (new, or back
    /// after being declared dead): it should be asked for its roster.
    pub fn heard(&mut self, origin: u64, name: Option<&str>, now: Instant) -> bool {
        let known = self.peers.contains_key(&origin);
        let peer = self.peer(origin, now);
        peer.last_seen = now;
        if let Some(name) = name
            && peer.name != name
        {
            peer.name = name.to_string();
        }
        !known
    }

    /// A connection of `origin`'s was claimed or opened; true if it opened just now (it
    /// joins its hub's presence).
    pub fn open(&mut self, origin: u64, id: ConnectionId, remote: Remote, now: Instant) -> bool {
        let (hub, open) = (remote.hub as usize, remote.open);
        let peer = self.peer(origin, now);
        peer.last_seen = now;
        let was_open = peer.conns.insert(id, remote).is_some_and(|r| r.open);
        self.counts[hub] += i64::from(open) - i64::from(was_open);
        self.owners.insert(id, origin);
        open && !was_open
    }

    pub fn close(&mut self, origin: u64, id: ConnectionId, now: Instant) -> Option<Remote> {
        let removed = self.peers.get_mut(&origin)?.conns.remove(&id)?;
        self.counts[removed.hub as usize] -= i64::from(removed.open);
        if self.owners.get(&id) == Some(&origin) {
            self.owners.remove(&id);
        }
        self.ended.insert(id, now + self.token_life);
        Some(removed)
    }

    /// A part of `origin`'s roster; `reset` first forgets what was known of it.
    pub fn roster(
        &mut self,
        origin: u64,
        reset: bool,
        members: impl IntoIterator<Item = (ConnectionId, Remote)>,
        now: Instant,
    ) {
        if reset && let Some(peer) = self.peers.get_mut(&origin) {
            for (id, remote) in peer.conns.drain() {
                self.counts[remote.hub as usize] -= i64::from(remote.open);
                if self.owners.get(&id) == Some(&origin) {
                    self.owners.remove(&id);
                }
            }
        }
        self.heard(origin, None, now);
        for (id, remote) in members {
            self.open(origin, id, remote, now);
        }
    }

    /// Forgets `origin` and returns what it held; its connections' ids count as ended.
    pub fn remove(&mut self, origin: u64, now: Instant) -> Option<Departed> {
        let peer = self.peers.remove(&origin)?;
        let mut conns = Vec::with_capacity(peer.conns.len());
        for (id, remote) in peer.conns {
            self.counts[remote.hub as usize] -= i64::from(remote.open);
            if self.owners.get(&id) == Some(&origin) {
                self.owners.remove(&id);
            }
            self.ended.insert(id, now + self.token_life);
            conns.push((id, remote));
        }
        Some(Departed {
            origin,
            name: peer.name,
            conns,
        })
    }

    /// Removes the nodes not heard from for `timeout`, counting only time since `reachable`
    /// (when this node last regained Redis: a node cannot hear others while it cannot reach
    /// Redis, and must not blame them for it). Also forgets ended ids whose tokens expired.
    pub fn expire(&mut self, now: Instant, timeout: Duration, reachable: Instant) -> Vec<Departed> {
        self.ended.retain(|_, until| *until > now);
        let dead: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen.max(reachable)) >= timeout)
            .map(|(origin, _)| *origin)
            .collect();
        dead.into_iter()
            .filter_map(|o| self.remove(o, now))
            .collect()
    }

    /// The hub of a remote connection.
    pub fn locate(&self, id: ConnectionId) -> Option<HubId> {
        let origin = self.owners.get(&id)?;
        self.peers.get(origin)?.conns.get(&id).map(|r| r.hub)
    }

    /// Connections of `hub` on other nodes.
    pub fn count(&self, hub: HubId) -> i64 {
        self.counts.get(hub as usize).copied().unwrap_or(0)
    }

    /// The other nodes known to be alive.
    pub fn peers(&self) -> Vec<u64> {
        self.peers.keys().copied().collect()
    }

    /// The other nodes alive, and the connections they hold (for metrics and readiness).
    pub fn totals(&self) -> (usize, usize) {
        let conns = self.peers.values().map(|p| p.conns.len()).sum();
        (self.peers.len(), conns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(hub: HubId, user: Option<&str>) -> Remote {
        Remote {
            hub,
            user: user.map(Arc::from),
            open: true,
        }
    }

    #[test]
    fn counts_follow_opens_closes_and_rosters() {
        let now = Instant::now();
        let mut d = Directory::new(2, Duration::from_secs(16));
        let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
        assert!(d.heard(10, Some("n1"), now));
        assert!(!d.heard(10, Some("n1"), now));
        d.open(10, a, remote(0, Some("ann")), now);
        d.open(10, a, remote(0, Some("ann")), now);
        d.open(20, b, remote(1, None), now);
        assert_eq!((d.count(0), d.count(1)), (1, 1));
        assert_eq!(d.locate(a), Some(0));
        assert_eq!(d.close(10, a, now), Some(remote(0, Some("ann"))));
        assert_eq!(d.close(10, a, now), None);
        assert_eq!(d.count(0), 0);
        // Known while handshaking, counted once open.
        let handshaking = Remote {
            open: false,
            ..remote(1, None)
        };
        d.open(20, ConnectionId(4), handshaking, now);
        assert_eq!((d.count(1), d.locate(ConnectionId(4))), (1, Some(1)));
        d.open(20, ConnectionId(4), remote(1, None), now);
        assert_eq!(d.count(1), 2);
        d.roster(20, true, [(c, remote(0, None))], now);
        assert_eq!((d.count(0), d.count(1)), (1, 0));
        assert_eq!(d.locate(b), None);
        let mut peers = d.peers();
        peers.sort_unstable();
        assert_eq!(peers, vec![10, 20]);
    }

    #[test]
    fn silent_nodes_expire_but_not_while_redis_was_away() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut d = Directory::new(1, Duration::from_secs(16));
        d.open(10, ConnectionId(1), remote(0, None), t0);
        d.heard(20, None, t0 + Duration::from_secs(8));
        // Redis came back at t0+5: node 10 has had 6 s, not 11, to speak.
        assert!(
            d.expire(
                t0 + Duration::from_secs(11),
                timeout,
                t0 + Duration::from_secs(5)
            )
            .is_empty()
        );
        let gone = d.expire(t0 + Duration::from_secs(11), timeout, t0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].origin, 10);
        assert_eq!(gone[0].conns.len(), 1);
        assert_eq!(d.count(0), 0);
        assert_eq!(d.peers(), vec![20]);
    }

    #[test]
    fn a_token_starts_one_connection_in_the_cluster() {
        let t0 = Instant::now();
        let life = Duration::from_secs(16);
        let mut d = Directory::new(1, life);
        let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
        assert_eq!(d.may_claim(a, t0), Ok(()));
        d.open(10, a, remote(0, None), t0);
        d.open(20, b, remote(0, None), t0);
        d.open(20, c, remote(0, None), t0);
        assert_eq!(d.may_claim(a, t0), Err(ClaimError::Active));
        d.close(10, a, t0);
        assert_eq!(d.may_claim(a, t0), Err(ClaimError::Ended));
        // A node that leaves: its connections' tokens cannot start new ones elsewhere either.
        d.remove(20, t0 + Duration::from_secs(10));
        assert_eq!(
            d.may_claim(b, t0 + Duration::from_secs(20)),
            Err(ClaimError::Ended)
        );
        // Once the tokens have expired the ids are forgotten.
        d.expire(t0 + Duration::from_secs(27), Duration::from_secs(60), t0);
        assert_eq!(d.may_claim(a, t0 + Duration::from_secs(27)), Ok(()));
        assert_eq!(d.may_claim(c, t0 + Duration::from_secs(27)), Ok(()));
        assert!(d.ended.is_empty());
    }
}
