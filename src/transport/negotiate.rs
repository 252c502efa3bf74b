//! Negotiate: `POST /hubs/{hub}/negotiate` (and `/client/negotiate?hub=`) creates a
//! connection and tells the client which transports it may use.
//!
//! Nothing is stored: the connection token is signed and self-describing, so the transport
//! request may reach any shard.

use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::connection_token::ConnectionToken;
use crate::config::HubAuth;
use crate::fault::HttpFault;
use crate::hub::definition::HubDef;
use crate::hub::{ConnectionId, Node, Shard};
use crate::identity::jwt;
use crate::identity::{Principal, Role};
use crate::web::{Body, bearer_token};

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
    if !principal.audiences.is_empty()
        && !principal
            .audiences
            .iter()
            .any(|aud| audience_names_hub(aud, &hub.name))
    {
        return Err(HttpFault::Unauthorized(format!(
            "the token's audience (aud) is not hub '{}'",
            hub.name
        )));
    }
    Ok(Some(principal))
}

/// Whether a client token's audience names `hub`: the Azure form `…/client/?hub=NAME`, or a
/// URL ending in `/hubs/NAME` (case-insensitive). A token without an audience is good for
/// every hub.
pub fn audience_names_hub(aud: &str, hub: &str) -> bool {
    let (path, query) = aud.split_once('?').unwrap_or((aud, ""));
    let by_query = form_urlencoded::parse(query.as_bytes())
        .any(|(k, v)| k.eq_ignore_ascii_case("hub") && v.eq_ignore_ascii_case(hub));
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let by_path = path
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with(&format!("/hubs/{}", hub.to_ascii_lowercase()));
    // A REST audience (`…/api/v1/hubs/NAME`) is a server's, never a client's.
    let rest = path.contains("/api/");
    !rest && (by_query || (by_path && last.eq_ignore_ascii_case(hub)))
}

pub fn negotiate(
    shard: &Rc<Shard>,
    req: &Request<Incoming>,
    hub_name: &str,
) -> Result<Response<Body>, HttpFault> {
    if req.method() != Method::POST {
        return Err(HttpFault::MethodNotAllowed {
            method: req.method().to_string(),
            allow: "POST".into(),
        });
    }
    let node = &shard.node;
    let hub = node
        .hubs
        .find(hub_name)
        .ok_or_else(|| HttpFault::UnknownHub(hub_name.to_string()))?;
    let query = req.uri().query();
    let requested = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case("negotiateVersion"))
            .map(|(_, v)| v.into_owned())
    });
    let version = match requested {
        None => 0,
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| {
                HttpFault::InvalidParameter("negotiateVersion", format!("`{v}` is not a number"))
            })?
            .min(MAX_NEGOTIATE_VERSION),
    };
    let principal = authenticate_client(node, hub, req.headers(), query)?;
    // Stateful reconnect only when the client asks (a client that did not ask fails when the
    // server offers it) and the server and hub allow it (WebSockets only).
    let stateful = node.config.connections.stateful_reconnect
        && hub
            .transports
            .contains(&crate::hub::TransportKind::WebSockets)
        && query.is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, v)| {
                k.eq_ignore_ascii_case("useStatefulReconnect") && v.eq_ignore_ascii_case("true")
            })
        });
    let id = ConnectionId::random();
    let ttl = token_lifetime(&node.config.connections).as_secs();
    let token = ConnectionToken {
        id,
        hub: hub.name.to_ascii_lowercase(),
        user: principal.as_ref().and_then(|p| p.user_id.clone()),
        authenticated: principal.is_some(),
        stateful,
        expires: jwt::unix_now() + ttl,
    }
    .encode(&node.keys.connection);
    let transports: Vec<serde_json::Value> = hub
        .transports
        .iter()
        .map(|t| {
            let formats = if t.carries_binary() {
                json!(["Text", "Binary"])
            } else {
                json!(["Text"])
            };
            json!({"transport": t.signalr_name(), "transferFormats": formats})
        })
        .collect();
    // Version 0 has no separate token: the client sends `connectionId` back as `id`. Herald
    // still keeps the public id apart (hub members see the short id, never the secret token).
    let mut body = if version == 0 {
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
    if stateful {
        body["useStatefulReconnect"] = json!(true);
    }
    let mut response = crate::web::json(StatusCode::OK, &body);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, no-store"),
    );
    Ok(response)
}

/// How long a connection token is valid after negotiate: the disconnect timeout, so a client
/// that loses its connection can come back with the same token, and no longer.
pub fn token_lifetime(connections: &crate::config::ConnectionsConfig) -> Duration {
    Duration::from_secs(connections.disconnect_timeout_ms.div_ceil(1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_audiences_name_their_hub() {
        assert!(audience_names_hub(
            "https://svc.example/client/?hub=chat",
            "chat"
        ));
        assert!(audience_names_hub(
            "http://h:5000/client/?hub=Chat&x=1",
            "chat"
        ));
        assert!(audience_names_hub("http://h:5000/hubs/chat", "chat"));
        assert!(audience_names_hub("http://h:5000/hubs/chat/", "CHAT"));
        assert!(!audience_names_hub(
            "https://svc.example/client/?hub=other",
            "chat"
        ));
        assert!(!audience_names_hub(
            "http://h:5000/api/hubs/chat/:send",
            "chat"
        ));
        assert!(!audience_names_hub("http://h:5000/hubs/chatroom", "chat"));
        assert!(!audience_names_hub(
            "http://h:5000/api/v1/hubs/chat",
            "chat"
        ));
    }
}
