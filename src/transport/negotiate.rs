//! Negotiate: `POST /hubs/{hub}/negotiate` (and `/client/negotiate?hub=`) creates a
//! connection and tells the client which transports it may use.
//!
//! Nothing is stored: the connection token is signed and self-describing, so the transport
//! request may reach any shard.

use std::rc::Rc;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::connection_token::ConnectionToken;
use super::http::{Body, bearer_token, query_param};
use crate::config::HubAuth;
use crate::fault::HttpFault;
use crate::hub::definition::HubDef;
use crate::hub::{ConnectionId, Node, Shard};
use crate::identity::jwt;
use crate::identity::{Principal, Role};

/// The highest negotiate version Herald speaks.
const MAX_NEGOTIATE_VERSION: u32 = 1;

/// Checks the access token a client presented for `hub`. `Ok(None)` is an anonymous client
/// (allowed on `anonymous` hubs only); a token that is present but invalid is refused on
/// every hub.
pub fn authenticate_client(
    node: &Node,
    hub: &HubDef,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Principal>, HttpFault> {
    let Some(token) = bearer_token(headers, query) else {
        return match hub.auth {
            HubAuth::Token => Err(HttpFault::Unauthorized(format!(
                "hub '{}' requires an access token",
                hub.name
            ))),
            HubAuth::Anonymous => Ok(None),
        };
    };
    let skew = node.config.auth.clock_skew_ms / 1000;
    let claims = jwt::verify(&token, &node.keys.access, jwt::unix_now(), skew)
        .map_err(|e| HttpFault::Unauthorized(e.to_string()))?;
    let principal = Principal::from_claims(&claims);
    if principal.role == Role::Server {
        return Err(HttpFault::Unauthorized(
            "a server token cannot open a client connection".into(),
        ));
    }
    Ok(Some(principal))
}

pub fn negotiate(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    hub_name: &str,
) -> Result<Response<Body>, HttpFault> {
    if req.method() != Method::POST {
        return Err(HttpFault::MethodNotAllowed(req.method().to_string()));
    }
    let node = &shard.node;
    let hub = node
        .hubs
        .find(hub_name)
        .ok_or_else(|| HttpFault::UnknownHub(hub_name.to_string()))?;
    let query = req.uri().query();
    let version = match query_param(query, "negotiateVersion") {
        None => 0,
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| {
                HttpFault::InvalidParameter("negotiateVersion", format!("`{v}` is not a number"))
            })?
            .min(MAX_NEGOTIATE_VERSION),
    };
    let principal = authenticate_client(node, hub, req.headers(), query)?;
    let id = ConnectionId::random();
    let ttl = node
        .config
        .connections
        .disconnect_timeout_ms
        .div_ceil(1000)
        .max(1);
    let token = ConnectionToken {
        id,
        hub: hub.name.to_ascii_lowercase(),
        user: principal.as_ref().and_then(|p| p.user_id.clone()),
        authenticated: principal.is_some(),
        expires: jwt::unix_now() + ttl,
    }
    .encode(&node.keys.connection);
    let transports = json!([
        {"transport": "WebSockets", "transferFormats": ["Text"]},
    ]);
    // Version 0 has no separate token: the client sends `connectionId` back as `id`. Herald
    // still keeps the public id apart (hub members see the short id, never the secret token).
    let body = if version == 0 {
        json!({
            "connectionId": token,
            "negotiateVersion": 0,
            "availableTransports": transports,
        })
    } else {
        json!({
            "connectionId": id.to_string(),
            "connectionToken": token,
            "negotiateVersion": version,
            "availableTransports": transports,
        })
    };
    let mut response = super::http::json(StatusCode::OK, &body);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, no-store"),
    );
    Ok(response)
}
