//! A shard's indexes of its own connections: per hub, everyone, each group and each user.
//!
//! Members are kept in insertion-ordered maps, so a fan-out walks a dense array and removal
//! is O(1). The index knows nothing of other shards: a publish reaches them through their
//! inboxes and each one consults its own index.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;

use super::connection::{Connection, ConnectionId, IdBuildHasher, Joined};
use super::definition::HubId;

pub type Members = IndexMap<ConnectionId, Rc<Connection>, IdBuildHasher>;

/// Who a publish is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Group(Arc<str>),
    User(Arc<str>),
    Connection(ConnectionId),
}

pub struct HubIndex {
    /// Most groups one connection may be in.
    max_groups: usize,
    all: Members,
    groups: HashMap<Arc<str>, Members>,
    users: HashMap<Arc<str>, Members>,
    /// Group memberships of users (set through the REST API), with their expiry: a user's
    /// connections, present and future, belong to these groups until then.
    user_groups: HashMap<Arc<str>, HashMap<Arc<str>, Instant>>,
    /// Records in `user_groups`, expired ones not yet purged included.
    records: usize,
}

impl Default for HubIndex {
    fn default() -> Self {
        HubIndex::new(usize::MAX)
    }
}

impl HubIndex {
    pub fn new(max_groups: usize) -> HubIndex {
        HubIndex {
            max_groups,
            all: Members::default(),
            groups: HashMap::new(),
            users: HashMap::new(),
            user_groups: HashMap::new(),
            records: 0,
        }
    }

    /// Adds an opened connection, and puts it in its user's groups.
    pub fn add(&mut self, conn: &Rc<Connection>, now: Instant) {
        self.all.insert(conn.id, conn.clone());
        if let Some(user) = &conn.user {
            self.users
                .entry(user.clone())
                .or_default()
                .insert(conn.id, conn.clone());
            let groups: Vec<Arc<str>> = match self.user_groups.get_mut(&**user) {
                Some(groups) => {
                    let before = groups.len();
                    groups.retain(|_, until| *until > now);
                    self.records -= before - groups.len();
                    groups.keys().cloned().collect()
                }
                None => Vec::new(),
            };
            // All of them, whatever the connection's own limit: the REST API bounds these
            // per user instead (`connections.max_groups_per_user`).
            for group in groups {
                let _ = self.join_within(conn, &group, usize::MAX);
            }
        }
    }

    /// Removes a connection from everything.
    pub fn remove(&mut self, conn: &Connection) {
        self.all.swap_remove(&conn.id);
        if let Some(user) = &conn.user {
            remove_member(&mut self.users, user, conn.id);
        }
        for group in conn.take_groups() {
            remove_member(&mut self.groups, &group, conn.id);
        }
    }

    /// The connection joins `group`, unless it is in as many groups as a connection may
    /// join itself.
    pub fn join(&mut self, conn: &Rc<Connection>, group: &Arc<str>) -> Joined {
        self.join_within(conn, group, self.max_groups)
    }

    fn join_within(&mut self, conn: &Rc<Connection>, group: &Arc<str>, max: usize) -> Joined {
        let joined = conn.add_group(group, max);
        if joined == Joined::Added {
            self.groups
                .entry(group.clone())
                .or_default()
                .insert(conn.id, conn.clone());
        }
        joined
    }

    pub fn leave(&mut self, conn: &Connection, group: &str) {
        if conn.remove_group(group) {
            remove_member(&mut self.groups, group, conn.id);
        }
    }

    /// Leaves every group.
    pub fn leave_all(&mut self, conn: &Connection) {
        for group in conn.take_groups() {
            remove_member(&mut self.groups, &group, conn.id);
        }
    }

    /// The local connections a publish to `target` reaches (for `Connection`, use the shard's
    /// connection table instead).
    pub fn members(&self, target: &Target) -> Option<&Members> {
        match target {
            Target::All => Some(&self.all),
            Target::Group(g) => self.groups.get(&**g),
            Target::User(u) => self.users.get(&**u),
            Target::Connection(_) => None,
        }
    }

    pub fn connection(&self, id: ConnectionId) -> Option<&Rc<Connection>> {
        self.all.get(&id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|m| !m.is_empty())
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|m| !m.is_empty())
    }

    /// Whether `user` belongs to `group`, by a recorded membership or through a connection.
    pub fn user_in_group(&self, user: &str, group: &str, now: Instant) -> bool {
        let recorded = self
            .user_groups
            .get(user)
            .and_then(|g| g.get(group))
            .is_some_and(|until| *until > now);
        recorded
            || self.users.get(user).is_some_and(|conns| {
                self.groups
                    .get(group)
                    .is_some_and(|members| conns.keys().any(|id| members.contains_key(id)))
            })
    }

    /// Adds `user` to `group`: the user's connections join now, and those that connect before
    /// `until` join too. Without `until`, only the present connections join.
    pub fn add_user_to_group(&mut self, user: &Arc<str>, group: &Arc<str>, until: Option<Instant>) {
        if let Some(until) = until
            && self
                .user_groups
                .entry(user.clone())
                .or_default()
                .insert(group.clone(), until)
                .is_none()
        {
            self.records += 1;
        }
        let conns: Vec<Rc<Connection>> = self
            .users
            .get(&**user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for conn in conns {
            let _ = self.join_within(&conn, group, usize::MAX);
        }
    }

    /// Whether `user` may be recorded in `group` (a membership that outlives its connections)
    /// without passing `per_user` such memberships: a renewal always may. Expired records do
    /// not count.
    pub fn user_group_allowed(
        &self,
        user: &str,
        group: &str,
        per_user: usize,
        now: Instant,
    ) -> bool {
        let Some(groups) = self.user_groups.get(user) else {
            return per_user > 0;
        };
        groups.contains_key(group)
            || groups.values().filter(|until| **until > now).count() < per_user
    }

    /// Whether a record of `user` in `group` is held (expired or not).
    pub fn has_user_group_record(&self, user: &str, group: &str) -> bool {
        self.user_groups
            .get(user)
            .is_some_and(|groups| groups.contains_key(group))
    }

    /// User-group records held, expired ones not yet purged included.
    pub fn user_group_records(&self) -> usize {
        self.records
    }

    pub fn remove_user_from_group(&mut self, user: &str, group: &str) {
        if let Some(groups) = self.user_groups.get_mut(user) {
            if groups.remove(group).is_some() {
                self.records -= 1;
            }
            if groups.is_empty() {
                self.user_groups.remove(user);
            }
        }
        for conn in self.user_connections(user) {
            self.leave(&conn, group);
        }
    }

    pub fn remove_user_from_all_groups(&mut self, user: &str) {
        if let Some(groups) = self.user_groups.remove(user) {
            self.records -= groups.len();
        }
        for conn in self.user_connections(user) {
            self.leave_all(&conn);
        }
    }

    fn user_connections(&self, user: &str) -> Vec<Rc<Connection>> {
        self.users
            .get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops expired user-group records.
    pub fn purge(&mut self, now: Instant) {
        self.user_groups.retain(|_, groups| {
            groups.retain(|_, until| *until > now);
            !groups.is_empty()
        });
        self.records = self.user_groups.values().map(HashMap::len).sum();
    }
}

fn remove_member(map: &mut HashMap<Arc<str>, Members>, key: &str, id: ConnectionId) {
    if let Some(members) = map.get_mut(key) {
        members.swap_remove(&id);
        if members.is_empty() {
            map.remove(key);
        }
    }
}

/// The indexes of every hub on one shard.
pub struct ShardIndex {
    hubs: Vec<HubIndex>,
}

impl ShardIndex {
    pub fn new(hubs: usize, max_groups: usize) -> ShardIndex {
        ShardIndex {
            hubs: (0..hubs).map(|_| HubIndex::new(max_groups)).collect(),
        }
    }

    pub fn hub(&self, id: HubId) -> &HubIndex {
        &self.hubs[id as usize]
    }

    pub fn hub_mut(&mut self, id: HubId) -> &mut HubIndex {
        &mut self.hubs[id as usize]
    }

    pub fn purge(&mut self, now: Instant) {
        for hub in &mut self.hubs {
            hub.purge(now);
        }
    }

    /// User-group records of every hub.
    pub fn user_group_records(&self) -> usize {
        self.hubs.iter().map(HubIndex::user_group_records).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TransportKind;
    use std::time::Duration;

    fn conn(user: Option<&str>) -> Rc<Connection> {
        Rc::new(Connection::new(
            ConnectionId::random(),
            0,
            user.map(Arc::from),
            TransportKind::WebSockets,
            1 << 20,
        ))
    }

    #[test]
    fn groups_and_users_follow_connections() {
        let now = Instant::now();
        let mut hub = HubIndex::default();
        let a = conn(Some("alice"));
        let b = conn(None);
        hub.add(&a, now);
        hub.add(&b, now);
        let g: Arc<str> = "room".into();
        assert_eq!(hub.join(&a, &g), Joined::Added);
        assert_eq!(hub.join(&b, &g), Joined::Added);
        assert_eq!(hub.join(&b, &g), Joined::Already);
        let mut small = HubIndex::new(1);
        let c = conn(None);
        small.add(&c, now);
        assert_eq!(small.join(&c, &"x".into()), Joined::Added);
        assert_eq!(small.join(&c, &"y".into()), Joined::Full);
        assert_eq!(hub.members(&Target::Group(g.clone())).unwrap().len(), 2);
        assert!(hub.has_user("alice"));
        assert!(hub.user_in_group("alice", "room", now));
        hub.leave(&b, "room");
        assert_eq!(hub.members(&Target::Group(g.clone())).unwrap().len(), 1);
        hub.remove(&a);
        assert!(!hub.has_group("room"));
        assert!(!hub.has_user("alice"));
        assert_eq!(hub.len(), 1);
    }

    #[test]
    fn user_group_membership_outlives_connections_until_expiry() {
        let now = Instant::now();
        let mut hub = HubIndex::default();
        let user: Arc<str> = "bob".into();
        let group: Arc<str> = "vip".into();
        hub.add_user_to_group(&user, &group, Some(now + Duration::from_secs(60)));
        assert!(hub.user_in_group("bob", "vip", now));
        let c = conn(Some("bob"));
        hub.add(&c, now);
        assert!(
            hub.members(&Target::Group(group.clone()))
                .unwrap()
                .contains_key(&c.id)
        );
        hub.remove(&c);
        // A later connection of the same user joins again; after expiry it does not.
        let d = conn(Some("bob"));
        hub.add(&d, now);
        assert!(hub.has_group("vip"));
        hub.remove(&d);
        let e = conn(Some("bob"));
        hub.add(&e, now + Duration::from_secs(61));
        assert!(!hub.has_group("vip"));
        // ttl = 0: present connections only.
        hub.add_user_to_group(&user, &group, None);
        assert!(hub.has_group("vip"));
        hub.remove_user_from_all_groups("bob");
        assert!(!hub.has_group("vip"));
    }
}
