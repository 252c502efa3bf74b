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
            b.leave_all(hub, id)
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
