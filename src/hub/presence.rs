//! Presence: telling a hub's members who comes and goes.
//!
//! Four modes, per hub (`[hubs.NAME] presence`):
//!
//! - `events`: every join sends `joined(connectionId, userId, count)` to every member, and
//!   every leave `left(…)` to the rest — n joins cost n² messages, fine for small rooms.
//! - `batched`: joins and leaves are gathered for `presence_interval_ms`, then every member
//!   gets one `presence({joined, left, count})` for all of them: a reconnect storm costs one
//!   message per member per interval. A connection that joins and leaves within one interval
//!   is never announced. At most `presence_max_ids` ids of each kind go in one message; the
//!   rest wait for the next interval, so one message stays small however large the storm.
//! - `count`: every member gets `presence({count})` at most once per interval, when the count
//!   changed (or someone joined who has not heard it yet).
//! - `off`: nothing.
//!
//! In a cluster, `events` messages travel as publishes; `batched` and `count` do not travel at
//! all: every node already learns of the other nodes' connections (the backplane directory),
//! feeds those joins and leaves into its own batches, and tells its own members, with the
//! cluster-wide count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use super::config::{HubConfig, PresenceMode};
use super::connection::{ConnectionId, IdBuildHasher};
use super::definition::HubId;
use super::index::Target;
use super::node::{Node, Publish, ShardMsg};
use super::outgoing::Outgoing;
use crate::protocol::Value;

/// A hub's presence, as configured.
#[derive(Debug, Clone)]
pub enum PresenceDef {
    Off,
    Events {
        joined: Arc<str>,
        left: Arc<str>,
    },
    Batched {
        method: Arc<str>,
        interval: Duration,
        max_ids: usize,
    },
    Count {
        method: Arc<str>,
        interval: Duration,
    },
}

impl PresenceDef {
    pub fn from_config(hub: &HubConfig) -> PresenceDef {
        let interval = Duration::from_millis(hub.presence_interval_ms);
        match hub.presence {
            PresenceMode::Off => PresenceDef::Off,
            PresenceMode::Events => PresenceDef::Events {
                joined: hub.joined_method.as_str().into(),
                left: hub.left_method.as_str().into(),
            },
            PresenceMode::Batched => PresenceDef::Batched {
                method: hub.presence_method.as_str().into(),
                interval,
                max_ids: hub.presence_max_ids,
            },
            PresenceMode::Count => PresenceDef::Count {
                method: hub.presence_method.as_str().into(),
                interval,
            },
        }
    }

    /// Whether joins and leaves are gathered and sent on a timer (`batched`, `count`).
    pub fn is_periodic(&self) -> bool {
        matches!(
            self,
            PresenceDef::Batched { .. } | PresenceDef::Count { .. }
        )
    }
}

/// A connection as presence names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: ConnectionId,
    pub user: Option<Arc<str>>,
}

/// What one periodic presence message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// `None` in `count` mode, which lists nobody.
    pub changes: Option<(Vec<Member>, Vec<Member>)>,
    pub count: i64,
}

impl Update {
    /// The message's one argument: `{joined: [{connectionId, userId}], left: […], count}`, or
    /// `{count}`.
    pub fn to_value(&self) -> Value {
        let list = |members: &[Member]| {
            Value::Array(
                members
                    .iter()
                    .map(|m| {
                        Value::Map(vec![
                            ("connectionId".into(), Value::Str(m.id.to_string())),
                            ("userId".into(), m.user.as_deref().into()),
                        ])
                    })
                    .collect(),
            )
        };
        let mut fields = Vec::with_capacity(3);
        if let Some((joined, left)) = &self.changes {
            fields.push(("joined".to_string(), list(joined)));
            fields.push(("left".to_string(), list(left)));
        }
        fields.push(("count".to_string(), Value::Int(self.count)));
        Value::Map(fields)
    }
}

type Ids = IndexMap<ConnectionId, Option<Arc<str>>, IdBuildHasher>;

/// Joins and leaves of one hub since its last periodic message. Pure.
#[derive(Debug, Default)]
pub struct Batch {
    /// Whether ids are listed (`batched`) or only counted (`count`).
    lists: bool,
    joined: Ids,
    left: Ids,
    /// Someone joined since the last message (and must hear the count).
    newcomers: bool,
    last_count: Option<i64>,
}

impl Batch {
    pub fn new(lists: bool) -> Batch {
        Batch {
            lists,
            ..Batch::default()
        }
    }

    pub fn join(&mut self, id: ConnectionId, user: Option<Arc<str>>) {
        self.newcomers = true;
        if self.lists {
            self.joined.insert(id, user);
        }
    }

    pub fn leave(&mut self, id: ConnectionId, user: Option<Arc<str>>) {
        // One that joins and leaves before anyone heard of it is never announced.
        if self.lists && self.joined.swap_remove(&id).is_none() {
            self.left.insert(id, user);
        }
    }

    /// Ids waiting to be announced.
    pub fn waiting(&self) -> usize {
        self.joined.len() + self.left.len()
    }

    /// The message due now, given the current `count`: at most `max_ids` joins and as many
    /// leaves, oldest first; `None` if there is nothing new to tell.
    pub fn take(&mut self, count: i64, max_ids: usize) -> Option<Update> {
        let changed = self.last_count != Some(count);
        if self.lists {
            if self.joined.is_empty() && self.left.is_empty() && !changed {
                return None;
            }
            let take = |ids: &mut Ids| -> Vec<Member> {
                let n = ids.len().min(max_ids);
                ids.drain(..n)
                    .map(|(id, user)| Member { id, user })
                    .collect()
            };
            let joined = take(&mut self.joined);
            let left = take(&mut self.left);
            self.newcomers = false;
            self.last_count = Some(count);
            return Some(Update {
                changes: Some((joined, left)),
                count,
            });
        }
        if !changed && !self.newcomers {
            return None;
        }
        self.newcomers = false;
        self.last_count = Some(count);
        Some(Update {
            changes: None,
            count,
        })
    }
}

/// Starts the timer of every hub with periodic presence on `runtime` (the control runtime):
/// each interval, the hub's batch becomes one message to each of this node's members.
pub fn start(node: &Arc<Node>, runtime: &tokio::runtime::Handle) {
    for hub in &node.hubs.list {
        let (method, interval, max_ids) = match &hub.presence {
            PresenceDef::Batched {
                method,
                interval,
                max_ids,
            } => (method.clone(), *interval, *max_ids),
            PresenceDef::Count { method, interval } => (method.clone(), *interval, 0),
            PresenceDef::Off | PresenceDef::Events { .. } => continue,
        };
        runtime.spawn(run(node.clone(), hub.id, method, interval, max_ids));
    }
}

async fn run(node: Arc<Node>, hub: HubId, method: Arc<str>, interval: Duration, max_ids: usize) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if node.is_shutting_down() {
            return;
        }
        let count = node.count(hub);
        let Some(update) = node.presence(hub).take(count, max_ids) else {
            continue;
        };
        let publish = Arc::new(Publish {
            hub,
            target: Target::All,
            excluded: Vec::new(),
            message: Outgoing::new(method.clone(), vec![update.to_value()]),
            created: Instant::now(),
        });
        // This node's members only: the other nodes tell theirs.
        for shard in 0..node.shards() {
            node.inbox(shard)
                .send(ShardMsg::Publish(publish.clone()))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ConnectionId {
        ConnectionId(n)
    }

    #[test]
    fn joins_and_leaves_coalesce_into_one_update() {
        let mut b = Batch::new(true);
        assert_eq!(b.take(0, 10).unwrap().count, 0, "the first count is news");
        assert_eq!(b.take(0, 10), None);
        b.join(id(1), Some("alice".into()));
        b.join(id(2), None);
        b.join(id(3), None);
        // 3 joins and leaves before anyone heard of it: never announced.
        b.leave(id(3), None);
        let update = b.take(2, 10).unwrap();
        let (joined, left) = update.changes.unwrap();
        assert_eq!(
            joined.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![id(1), id(2)]
        );
        assert!(left.is_empty());
        assert_eq!(update.count, 2);
        b.leave(id(1), Some("alice".into()));
        let (joined, left) = b.take(1, 10).unwrap().changes.unwrap();
        assert!(joined.is_empty());
        assert_eq!(
            left,
            vec![Member {
                id: id(1),
                user: Some("alice".into())
            }]
        );
        assert_eq!(b.take(1, 10), None);
        // A count that changed without ids (a node's roster) is still news.
        assert_eq!(b.take(5, 10).unwrap().count, 5);
    }

    #[test]
    fn a_storm_is_spread_over_intervals_and_nothing_is_lost() {
        let mut b = Batch::new(true);
        for n in 0..2500 {
            b.join(id(n), None);
        }
        let mut seen = Vec::new();
        let mut updates = 0;
        while let Some(update) = b.take(2500, 1000) {
            let (joined, _) = update.changes.unwrap();
            assert!(joined.len() <= 1000);
            assert_eq!(update.count, 2500);
            seen.extend(joined.into_iter().map(|m| m.id));
            updates += 1;
        }
        assert_eq!(updates, 3);
        assert_eq!(seen, (0..2500).map(id).collect::<Vec<_>>());
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn count_mode_lists_nobody_and_tells_newcomers() {
        let mut b = Batch::new(false);
        b.join(id(1), None);
        assert_eq!(
            b.take(1, 0),
            Some(Update {
                changes: None,
                count: 1
            })
        );
        assert_eq!(b.take(1, 0), None);
        // A join and a leave leave the count as it was, but the newcomer has not heard it.
        b.join(id(2), None);
        b.leave(id(3), None);
        assert_eq!(b.take(1, 0).unwrap().count, 1);
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn the_message_shape() {
        let update = Update {
            changes: Some((
                vec![Member {
                    id: id(1),
                    user: Some("alice".into()),
                }],
                vec![],
            )),
            count: 3,
        };
        let mut out = Vec::new();
        crate::protocol::json::encode_send("presence", &[update.to_value()], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{{\"type\":1,\"target\":\"presence\",\"arguments\":[{{\"joined\":[{{\"connectionId\":\"{}\",\"userId\":\"alice\"}}],\"left\":[],\"count\":3}}]}}\x1e",
                id(1)
            )
        );
        let count = Update {
            changes: None,
            count: 7,
        };
        assert_eq!(
            count.to_value(),
            Value::Map(vec![("count".into(), Value::Int(7))])
        );
    }
}
