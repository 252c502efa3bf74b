//! What a node does with the messages other nodes send, and the heartbeat that tells them
//! it is alive.
//!
//! Messages reach the shards through the same inboxes a local publish uses, so a message
//! from another node is delivered exactly as one from this node would be. Everything here
//! runs on the control runtime, never on a shard thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::directory::{Departed, Remote};
use super::envelope::{Body, Envelope, Member};
use super::{Cluster, hub_query, hub_target, unix_us};
use crate::fault::CloseReason;
use crate::hub::connection::ConnectionId;
use crate::hub::definition::HubId;
use crate::hub::presence::PresenceDef;
use crate::hub::{Node, Outgoing, Publish, ShardMsg, Target};
use crate::protocol::Value;

/// An instant `unix_ms` milliseconds after the Unix epoch, on this node's monotonic clock.
fn instant_at(unix_ms: u64) -> Instant {
    let now = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if unix_ms >= wall {
        now + Duration::from_millis(unix_ms - wall)
    } else {
        now.checked_sub(Duration::from_millis(wall - unix_ms))
            .unwrap_or(now)
    }
}

/// Applies one message from another node (duplicates already dropped).
pub async fn apply(node: &Arc<Node>, cluster: &Arc<Cluster>, env: Envelope) {
    let now = Instant::now();
    heard(cluster, &env, now);
    let Envelope {
        origin,
        sent_us,
        body,
        ..
    } = env;
    match body {
        Body::Claimed(_)
        | Body::Opened(_)
        | Body::Closed { .. }
        | Body::Roster { .. }
        | Body::Goodbye => whereabouts(node, cluster, origin, body, now).await,
        Body::Heartbeat { .. } => {}
        Body::RosterRequest { to } => {
            if to == 0 || to == cluster.origin {
                cluster.send_roster();
            }
        }
        Body::Query { id, hub, question } => {
            let Some(hub) = node.hubs.find(&hub).map(|h| h.id) else {
                cluster.answer(origin, id, false);
                return;
            };
            // Answered off the read loop: the shards' replies must not hold up delivery.
            let (node, cluster) = (node.clone(), cluster.clone());
            tokio::spawn(async move {
                let yes = node.ask_shards(&hub_query(hub, question), None).await;
                cluster.answer(origin, id, yes);
            });
        }
        Body::Answer { to, id, yes } => {
            if to == cluster.origin {
                cluster.answered(id, origin, yes);
            }
        }
        Body::Inbound { conn, payload } => {
            node.receive_forwarded(ConnectionId(conn), payload).await;
        }
        change => apply_change(node, cluster, change, sent_us, now).await,
    }
}

/// A change for this node's shards: a publish, a membership change, a close.
async fn apply_change(node: &Node, cluster: &Cluster, body: Body, sent_us: u64, now: Instant) {
    let hub_of = |name: &str| node.hubs.find(name).map(|h| h.id);
    match body {
        Body::Publish {
            hub,
            target,
            excluded,
            method,
            arguments,
        } => {
            let Some(hub) = hub_of(&hub) else { return };
            let Ok(Value::Array(args)) = crate::protocol::msgpack::read_value(&arguments) else {
                cluster.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let lag = Duration::from_micros(unix_us().saturating_sub(sent_us));
            let publish = Publish {
                hub,
                target: hub_target(&target),
                excluded: excluded.into_iter().map(ConnectionId).collect(),
                message: Outgoing::new(method.into(), args),
                created: now.checked_sub(lag).unwrap_or(now),
            };
            deliver(node, publish).await;
        }
        Body::Join { conn, group, .. } => {
            let conn = ConnectionId(conn);
            let group = group.into();
            node.to_owner(conn, ShardMsg::Join { conn, group }).await;
        }
        Body::Leave { conn, group, .. } => {
            let conn = ConnectionId(conn);
            let group = group.into();
            node.to_owner(conn, ShardMsg::Leave { conn, group }).await;
        }
        Body::LeaveAll { conn, .. } => {
            let conn = ConnectionId(conn);
            node.to_owner(conn, ShardMsg::LeaveAll { conn }).await;
        }
        Body::AddUserToGroup {
            hub,
            user,
            group,
            until_ms,
        } => {
            let Some(hub) = hub_of(&hub) else { return };
            let (user, group): (Arc<str>, Arc<str>) = (user.into(), group.into());
            let until = until_ms.map(instant_at);
            node.to_shards(None, || ShardMsg::AddUserToGroup {
                hub,
                user: user.clone(),
                group: group.clone(),
                until,
            })
            .await;
        }
        Body::RemoveUserFromGroup { hub, user, group } => {
            let Some(hub) = hub_of(&hub) else { return };
            let (user, group): (Arc<str>, Arc<str>) = (user.into(), group.into());
            node.to_shards(None, || ShardMsg::RemoveUserFromGroup {
                hub,
                user: user.clone(),
                group: group.clone(),
            })
            .await;
        }
        Body::RemoveUserFromAllGroups { hub, user } => {
            let Some(hub) = hub_of(&hub) else { return };
            let user: Arc<str> = user.into();
            node.to_shards(None, || ShardMsg::RemoveUserFromAllGroups {
                hub,
                user: user.clone(),
            })
            .await;
        }
        Body::Close {
            hub,
            target,
            excluded,
            reason,
        } => {
            let Some(hub) = hub_of(&hub) else { return };
            let excluded = excluded.into_iter().map(ConnectionId).collect();
            close(node, hub, hub_target(&target), excluded, reason).await;
        }
        _ => {}
    }
}

/// Where other nodes' connections are: one opened, claimed or closed, a node's roster, a
/// node leaving.
async fn whereabouts(node: &Node, cluster: &Cluster, origin: u64, body: Body, now: Instant) {
    let hub_of = |name: &str| node.hubs.find(name).map(|h| h.id);
    match body {
        Body::Claimed(member) | Body::Opened(member) => {
            let Some(hub) = hub_of(&member.hub) else {
                return;
            };
            opened(node, cluster, origin, hub, member, now);
        }
        Body::Closed { conn } => {
            let id = ConnectionId(conn);
            let closed = cluster.directory().close(origin, id, now);
            if let Some(remote) = closed.filter(|r| r.open) {
                node.presence_left(remote.hub, id, remote.user);
            }
        }
        Body::Roster { reset, members } => {
            let members: Vec<(ConnectionId, Remote)> = members
                .into_iter()
                .filter_map(|m| {
                    let hub = hub_of(&m.hub)?;
                    Some((ConnectionId(m.conn), remote(hub, m)))
                })
                .collect();
            cluster.directory().roster(origin, reset, members, now);
        }
        Body::Goodbye => {
            let departed = cluster.directory().remove(origin, now);
            cluster.forget_peer(origin);
            if let Some(departed) = departed {
                tracing::info!(node = %departed.name, connections = departed.conns.len(), "a node left the cluster");
                announce(node, departed).await;
            }
        }
        _ => {}
    }
}

/// Notes that the envelope's origin is alive. A node this one did not know (new, or back
/// after being declared dead) is asked what it holds, unless it is saying so already.
fn heard(cluster: &Cluster, env: &Envelope, now: Instant) {
    let name = match &env.body {
        Body::Heartbeat { node } => Some(node.as_str()),
        _ => None,
    };
    let unknown = cluster.directory().heard(env.origin, name, now);
    if unknown && !matches!(env.body, Body::Roster { .. } | Body::Goodbye) {
        cluster.request_roster(env.origin);
    }
}

/// Hands a publish from another node to the shards that may hold its recipients.
async fn deliver(node: &Node, publish: Publish) {
    let publish = Arc::new(publish);
    match publish.target {
        Target::Connection(id) => {
            node.to_owner(id, ShardMsg::Publish(publish)).await;
        }
        _ => {
            node.to_shards(None, || ShardMsg::Publish(publish.clone()))
                .await;
        }
    }
}

/// Closes, on this node, the connections another node's close reaches.
async fn close(
    node: &Node,
    hub: HubId,
    target: Target,
    excluded: Vec<ConnectionId>,
    reason: Option<String>,
) {
    let excluded = Arc::new(excluded);
    let reason = CloseReason::ClosedByServer(reason);
    let make = || ShardMsg::Close {
        hub,
        target: target.clone(),
        excluded: excluded.clone(),
        reason: reason.clone(),
    };
    match target {
        Target::Connection(id) => {
            node.to_owner(id, make()).await;
        }
        _ => node.to_shards(None, make).await,
    }
}

/// A connection another node claimed or opened: the directory learns where it is, and an
/// open one joins the hub's presence.
fn opened(node: &Node, cluster: &Cluster, origin: u64, hub: HubId, member: Member, now: Instant) {
    let id = ConnectionId(member.conn);
    let remote = remote(hub, member);
    let user = remote.user.clone();
    if cluster.directory().open(origin, id, remote, now) {
        node.presence_joined(hub, id, user);
    }
}

/// What the directory keeps of another node's connection.
fn remote(hub: HubId, member: Member) -> Remote {
    Remote {
        hub,
        user: member.user.map(Arc::from),
        open: member.open,
    }
}

/// Tells this node's clients that a departed node's connections left, with counts that fall
/// one by one.
async fn announce(node: &Node, departed: Departed) {
    let mut remaining: HashMap<HubId, i64> = HashMap::new();
    let conns: Vec<_> = departed.conns.into_iter().filter(|(_, r)| r.open).collect();
    for (_, remote) in &conns {
        *remaining.entry(remote.hub).or_default() += 1;
    }
    for (id, remote) in conns {
        let left = remaining.entry(remote.hub).or_default();
        *left -= 1;
        let left_method = match &node.hubs.get(remote.hub).presence {
            PresenceDef::Events { left, .. } => left.clone(),
            PresenceDef::Batched { .. } | PresenceDef::Count { .. } => {
                node.presence_left(remote.hub, id, remote.user.clone());
                continue;
            }
            PresenceDef::Off => continue,
        };
        let count = node.count(remote.hub) + *left;
        let args = vec![
            Value::Str(id.to_string()),
            Value::from(remote.user.as_deref()),
            Value::Int(count),
        ];
        let publish = Arc::new(Publish {
            hub: remote.hub,
            target: Target::All,
            excluded: Vec::new(),
            message: Outgoing::new(left_method, args),
            created: Instant::now(),
        });
        node.to_shards(None, || ShardMsg::Publish(publish.clone()))
            .await;
    }
}

/// Heartbeats, and the judgement of nodes that stopped sending theirs.
pub async fn run_heartbeat(node: Arc<Node>, cluster: Arc<Cluster>) {
    let config = &cluster.config;
    let timeout = Duration::from_millis(config.node_timeout_ms);
    let mut ticker = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        cluster.send(
            cluster.home,
            Body::Heartbeat {
                node: cluster.name.clone(),
            },
        );
        let now = Instant::now();
        cluster.outbox().prune(now);
        let Some(reachable) = cluster.reachable_since() else {
            continue;
        };
        let departed = cluster.directory().expire(now, timeout, reachable);
        for d in departed {
            cluster.stats.nodes_expired.fetch_add(1, Ordering::Relaxed);
            cluster.forget_peer(d.origin);
            tracing::warn!(node = %d.name, connections = d.conns.len(), "a node stopped sending heartbeats: its connections are gone");
            announce(&node, d).await;
        }
    }
}
