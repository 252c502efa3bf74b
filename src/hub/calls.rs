//! The hub's calls that reach a whole cluster — membership changes, closes, user groups — as
//! the REST API makes them: each goes to the shard that owns the connection (or to every
//! shard), and through the backplane to the other nodes.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::backplane::Backplane;
use super::connection::ConnectionId;
use super::definition::HubId;
use super::index::Target;
use super::node::ShardMsg;
use super::shard::Shard;
use crate::fault::CloseReason;

impl Shard {
    /// Sends a change for connection `id` to its owner: a shard of this node, or else the
    /// node that holds it.
    async fn to_connection(
        self: &Rc<Self>,
        id: ConnectionId,
        msg: ShardMsg,
        remote: impl FnOnce(&dyn Backplane),
    ) {
        if !self.to_owner(id, msg).await {
            remote(&*self.node.backplane);
        }
    }

    /// Connection `id` of `hub` joins `group`, wherever in the cluster it is.
    pub async fn add_to_group(self: &Rc<Self>, hub: HubId, id: ConnectionId, group: Arc<str>) {
        let msg = ShardMsg::Join {
            conn: id,
            group: group.clone(),
        };
        self.to_connection(id, msg, |b| b.join(hub, id, &group))
            .await;
    }

    /// Connection `id` of `hub` leaves `group`, wherever in the cluster it is.
    pub async fn remove_from_group(self: &Rc<Self>, hub: HubId, id: ConnectionId, group: Arc<str>) {
        let msg = ShardMsg::Leave {
            conn: id,
            group: group.clone(),
        };
        self.to_connection(id, msg, |b| b.leave(hub, id, &group))
            .await;
    }

    /// Connection `id` of `hub` leaves every group, wherever in the cluster it is.
    pub async fn leave_all_groups(self: &Rc<Self>, hub: HubId, id: ConnectionId) {
        self.to_connection(id, ShardMsg::LeaveAll { conn: id }, |b| {
            b.leave_all(hub, id);
        })
        .await;
    }

    /// Closes the connections of `hub` that `target` reaches, but `excluded`, on every node.
    pub async fn close(
        self: &Rc<Self>,
        hub: HubId,
        target: Target,
        excluded: Arc<Vec<ConnectionId>>,
        text: Option<String>,
    ) {
        let reason = CloseReason::ClosedByServer(text.clone());
        if let Target::Connection(id) = target {
            let msg = ShardMsg::Close {
                hub,
                target: target.clone(),
                excluded: excluded.clone(),
                reason,
            };
            self.to_connection(id, msg, |b| b.close(hub, &target, &excluded, text))
                .await;
            return;
        }
        self.node.backplane.close(hub, &target, &excluded, text);
        self.to_all(|| ShardMsg::Close {
            hub,
            target: target.clone(),
            excluded: excluded.clone(),
            reason: reason.clone(),
        })
        .await;
    }

    /// `user` joins `group` of `hub` on every node, until `until` (`None`: only while it has
    /// connections).
    pub async fn add_user_to_group(
        self: &Rc<Self>,
        hub: HubId,
        user: Arc<str>,
        group: Arc<str>,
        until: Option<Instant>,
    ) {
        self.node
            .backplane
            .add_user_to_group(hub, &user, &group, until);
        self.to_all(|| ShardMsg::AddUserToGroup {
            hub,
            user: user.clone(),
            group: group.clone(),
            until,
        })
        .await;
    }

    /// `user` leaves `group` of `hub` on every node.
    pub async fn remove_user_from_group(
        self: &Rc<Self>,
        hub: HubId,
        user: Arc<str>,
        group: Arc<str>,
    ) {
        self.node
            .backplane
            .remove_user_from_group(hub, &user, &group);
        self.to_all(|| ShardMsg::RemoveUserFromGroup {
            hub,
            user: user.clone(),
            group: group.clone(),
        })
        .await;
    }

    /// `user` leaves every group of `hub` on every node.
    pub async fn remove_user_from_all_groups(self: &Rc<Self>, hub: HubId, user: Arc<str>) {
        self.node.backplane.remove_user_from_all_groups(hub, &user);
        self.to_all(|| ShardMsg::RemoveUserFromAllGroups {
            hub,
            user: user.clone(),
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Config;
    use crate::hub::backplane::Answer;
    use crate::hub::node::{ClaimError, Publish, Query};
    use crate::hub::shard::testing::{connect, drain, node_with, settle};

    /// A cluster of which this node sees only what it is told: every call is written down,
    /// and connection `remote` is held by another node.
    struct Recorder {
        calls: Mutex<Vec<String>>,
        remote: ConnectionId,
    }

    impl Recorder {
        fn note(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl Backplane for Recorder {
        fn publish(&self, p: &Publish) {
            self.note(format!("publish {:?}", p.target));
        }
        fn close(&self, _: HubId, t: &Target, _: &[ConnectionId], r: Option<String>) {
            self.note(format!("close {t:?} {r:?}"));
        }
        fn join(&self, _: HubId, c: ConnectionId, g: &str) {
            self.note(format!("join {c} {g}"));
        }
        fn leave(&self, _: HubId, c: ConnectionId, g: &str) {
            self.note(format!("leave {c} {g}"));
        }
        fn leave_all(&self, _: HubId, c: ConnectionId) {
            self.note(format!("leave_all {c}"));
        }
        fn add_user_to_group(&self, _: HubId, u: &str, g: &str, _: Option<Instant>) {
            self.note(format!("add_user_to_group {u} {g}"));
        }
        fn remove_user_from_group(&self, _: HubId, u: &str, g: &str) {
            self.note(format!("remove_user_from_group {u} {g}"));
        }
        fn remove_user_from_all_groups(&self, _: HubId, u: &str) {
            self.note(format!("remove_user_from_all_groups {u}"));
        }
        fn claimed(&self, _: ConnectionId, _: HubId, _: Option<Arc<str>>) {}
        fn opened(&self, _: ConnectionId, _: HubId, _: Option<Arc<str>>) {}
        fn closed(&self, _: ConnectionId, _: bool) {}
        fn forward(&self, _: HubId, _: ConnectionId, _: Vec<u8>) {}
        fn locate(&self, id: ConnectionId) -> Option<HubId> {
            (id == self.remote).then_some(0)
        }
        fn await_remote(&self, id: ConnectionId) -> Answer<'_, bool> {
            Box::pin(std::future::ready(id == self.remote))
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

    /// A connection's membership changes go to its shard when this node holds it, and to the
    /// backplane only when another node does; changes for a user go to both.
    #[tokio::test(flavor = "current_thread")]
    async fn changes_reach_the_owner_or_the_backplane() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let remote = ConnectionId::random();
                let recorder = Arc::new(Recorder {
                    calls: Mutex::new(Vec::new()),
                    remote,
                });
                let config = Config::from_toml("[hubs.chat]\npresence = false\n").unwrap();
                let shards = node_with(2, config, recorder.clone());
                let local = connect(&shards[1], Some("ann")).await;
                let group: Arc<str> = "g".into();

                // Asked on shard 0, held by shard 1: applied there, nothing for the cluster.
                shards[0].add_to_group(0, local.id, group.clone()).await;
                settle().await;
                assert!(recorder.take().is_empty());
                let exists = Query::GroupExists {
                    hub: 0,
                    group: group.clone(),
                };
                assert!(shards[0].query(exists).await);
                shards[0]
                    .remove_from_group(0, local.id, group.clone())
                    .await;
                shards[0].leave_all_groups(0, local.id).await;
                assert!(recorder.take().is_empty());

                // Held by another node: the backplane carries it.
                shards[0].add_to_group(0, remote, group.clone()).await;
                shards[0].remove_from_group(0, remote, group.clone()).await;
                shards[0].leave_all_groups(0, remote).await;
                shards[0]
                    .close(0, Target::Connection(remote), Arc::default(), None)
                    .await;
                assert_eq!(
                    recorder.take(),
                    vec![
                        format!("join {remote} g"),
                        format!("leave {remote} g"),
                        format!("leave_all {remote}"),
                        format!("close Connection({remote}) None"),
                    ]
                );

                // A user's groups and a hub-wide close: every node, this one included.
                let (user, reason) = (Arc::<str>::from("ann"), Some("bye".to_string()));
                shards[0]
                    .add_user_to_group(0, user.clone(), group.clone(), None)
                    .await;
                shards[0]
                    .remove_user_from_group(0, user.clone(), group.clone())
                    .await;
                shards[0].remove_user_from_all_groups(0, user).await;
                shards[0]
                    .close(0, Target::All, Arc::default(), reason)
                    .await;
                settle().await;
                assert_eq!(
                    recorder.take(),
                    vec![
                        "add_user_to_group ann g".to_string(),
                        "remove_user_from_group ann g".to_string(),
                        "remove_user_from_all_groups ann".to_string(),
                        "close All Some(\"bye\")".to_string(),
                    ]
                );
                assert!(local.is_closing());
                drain(&local);
            })
            .await;
    }
}
