//! Admission to the connection URL: the connection token a request carries, who it is, and
//! the claim of its connection id on the shard that received it. Every transport starts a
//! connection through here; the URL's dispatcher ([`super::endpoint`]) picks the transport.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};

use super::connection_token::ConnectionToken;
use super::negotiate::authenticate_client;
use crate::config::HubAuth;
use crate::fault::HttpFault;
use crate::hub::definition::{HubDef, HubId};
use crate::hub::node::{ClaimError, IdState};
use crate::hub::{ConnectionId, Shard, TransportKind};
use crate::identity::jwt;

/// A transport request whose connection id and user are established.
pub struct Accepted {
    pub id: ConnectionId,
    pub hub: HubId,
    pub user: Option<Arc<str>>,
    /// Until when the id must stay unusable after the connection ends (its token's expiry).
    pub until: Option<Instant>,
    /// Negotiate agreed to stateful reconnect.
    pub stateful: bool,
}

/// Decodes the connection token of a request for `hub`; `None` if it is missing, forged,
/// for another hub, or expired before its connection started (all of which are "no such
/// connection" to the client). The expiry bounds when a connection may start: one that
/// started (here or on another node) keeps its token for as long as it lives, since every
/// poll and POST of a long-polling or Server-Sent Events client carries it.
pub fn token(shard: &Shard, hub: &HubDef, id: &str) -> Option<ConnectionToken> {
    let token = ConnectionToken::decode(id, &shard.node.keys.connection, 0)
        .ok()
        .filter(|t| t.hub.eq_ignore_ascii_case(&hub.name))?;
    let live = jwt::unix_now() <= token.expires
        || matches!(shard.node.registry.state(token.id), IdState::Active { .. })
        || shard.node.backplane.locate(token.id).is_some();
    live.then_some(token)
}

/// Establishes who a connection-starting request is: its access token (checked on every hub
/// that gets one, required on `token` hubs unless negotiate already saw one) and its
/// connection token (a new id when there is none, for WebSockets without negotiate).
pub fn accept(
    shard: &Shard,
    hub: &HubDef,
    headers: &HeaderMap,
    query: Option<&str>,
    id: Option<&str>,
) -> Result<Accepted, HttpFault> {
    let node = &shard.node;
    if node.is_shutting_down() {
        return Err(HttpFault::ShuttingDown);
    }
    // Browsers do not apply CORS to WebSockets or EventSource; a page from a disallowed
    // origin must not open a connection with the user's credentials.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin_allowed(shard, origin)
    {
        return Err(HttpFault::Forbidden(
            "this origin may not open connections".into(),
        ));
    }
    let principal = authenticate_client(node, hub, headers, query)?;
    Ok(match id {
        Some(text) => {
            let token = token(shard, hub, text).ok_or(HttpFault::ConnectionNotFound)?;
            if hub.auth == HubAuth::Token && principal.is_none() && !token.authenticated {
                return Err(HttpFault::Unauthorized(format!(
                    "hub '{}' requires an access token",
                    hub.name
                )));
            }
            let user = principal.and_then(|p| p.user_id).or(token.user);
            let left = token.expires.saturating_sub(jwt::unix_now()) + 1;
            Accepted {
                id: token.id,
                hub: hub.id,
                user: user.map(Arc::from),
                until: Some(Instant::now() + Duration::from_secs(left)),
                stateful: token.stateful,
            }
        }
        None => Accepted {
            id: ConnectionId::random(),
            hub: hub.id,
            user: principal.and_then(|p| p.user_id).map(Arc::from),
            until: None,
            stateful: false,
        },
    })
}

/// Claims `accepted.id` for `transport` on this shard; an id in use is a conflict (or a
/// transport switch), an ended one is gone — on this node or, in a cluster, on another.
pub fn claim(
    shard: &Shard,
    accepted: &Accepted,
    transport: TransportKind,
) -> Result<(), HttpFault> {
    if shard.node.registry.state(accepted.id) == IdState::Unknown {
        // Another node's connection (or its token, replayed here) is refused: the first use
        // of a token wins across the cluster, up to the backplane's lag.
        shard
            .node
            .backplane
            .may_claim(accepted.id, Instant::now())
            .map_err(|e| match e {
                ClaimError::Active => HttpFault::ConnectionActive,
                ClaimError::Ended => HttpFault::ConnectionNotFound,
            })?;
    }
    shard
        .node
        .registry
        .claim(accepted.id, shard.id, accepted.hub, transport)
        .map_err(|e| match e {
            ClaimError::Active => match shard.node.registry.state(accepted.id) {
                IdState::Active { transport: t, .. } if t != transport => {
                    HttpFault::TransportChanged
                }
                _ => HttpFault::ConnectionActive,
            },
            ClaimError::Ended => HttpFault::ConnectionNotFound,
        })
}

/// Whether `origin` is one of `server.cors.allowed_origins`.
pub fn origin_allowed(shard: &Shard, origin: &HeaderValue) -> bool {
    let config = &shard.node.config.server.cors;
    origin.to_str().is_ok_and(|o| {
        config
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
    })
}
