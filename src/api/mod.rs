//! The server REST API, compatible with Azure SignalR Service's data plane: the 2022-06-01
//! paths (`/api/hubs/{hub}/…`) and the older `/api/v1/hubs/{hub}/…` paths, so the Azure
//! Management SDK, Functions bindings and plain `curl` can drive Herald.
//!
//! Every operation is a hub call: sends become publishes (the same path a hub invocation
//! takes), membership changes, closes and existence checks are the shard's methods, which
//! reach the owning shard, every shard, and the other nodes through the backplane.

pub mod auth;

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value as Json;

use crate::fault::HttpFault;
use crate::hub::definition::HubDef;
use crate::hub::dispatch::MAX_GROUP_NAME;
use crate::hub::{ConnectionId, Outgoing, Publish, Query, Shard, Target};
use crate::protocol::Value;
use crate::web::{
    Body, decode_segment, full, query_param, query_params, read_body, read_only, status,
};

/// This API's OpenAPI description, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// How long a user stays in a group when `ttl` is not given, as in Azure SignalR Service.
const DEFAULT_USER_GROUP_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The API generation a path belongs to; they differ only in success statuses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2022,
}

/// One REST operation, whichever path spelled it.
enum Op {
    Health,
    Send(Target),
    Close(Target),
    ConnectionExists(String),
    CloseConnection(String),
    LeaveAllGroups(String),
    GroupExists(String),
    UserExists(String),
    AddToGroup { group: String, conn: String },
    RemoveFromGroup { group: String, conn: String },
    UserInGroup { user: String, group: String },
    AddUserToGroup { user: String, group: String },
    RemoveUserFromGroup { user: String, group: String },
    RemoveUserFromAllGroups(String),
}

/// Serves `/api/…`; `segs` are the path segments after `api`.
pub async fn handle(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    segs: &[&str],
) -> Result<Response<Body>, HttpFault> {
    let method = req.method().clone();
    let decoded: Vec<String> = segs
        .iter()
        .map(|s| decode_segment(s))
        .collect::<Result<_, _>>()?;
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if parts == ["openapi.json"] {
        read_only(&method)?;
        let mut response = Response::new(full(OPENAPI));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let (version, rest) = match parts.as_slice() {
        ["v1", rest @ ..] => (Version::V1, rest),
        rest => (Version::V2022, rest),
    };
    let (hub_name, op) = parse(&method, version, rest).map_err(|fault| match fault {
        // A path no method reaches names no resource.
        HttpFault::MethodNotAllowed { method, .. } => match allowed(version, rest) {
            allow if allow.is_empty() => HttpFault::NotFound,
            allow => HttpFault::MethodNotAllowed { method, allow },
        },
        fault => fault,
    })?;
    if matches!(op, Op::Health) {
        return Ok(status(StatusCode::OK));
    }
    let hub_name = hub_name.expect("every non-health route names a hub");
    auth::authorize(&shard.node, req.headers(), req.uri())?;
    let query = req.uri().query().map(str::to_string);
    let hub_key = match query_param(query.as_deref(), "application") {
        Some(app) => format!("{app}_{hub_name}"),
        None => hub_name.clone(),
    };
    let hub = shard
        .node
        .hubs
        .find(&hub_key)
        .ok_or(HttpFault::UnknownHub(hub_key.clone()))?
        .clone();
    let call = Call {
        shard,
        hub,
        version,
        query,
    };
    call.run(op, req).await
}

/// One REST operation on one hub, once routed and authorized.
struct Call<'a> {
    shard: &'a Rc<Shard>,
    hub: HubDef,
    version: Version,
    /// The request's query string.
    query: Option<String>,
}

impl Call<'_> {
    async fn run(self, op: Op, req: Request<Incoming>) -> Result<Response<Body>, HttpFault> {
        let (shard, hub) = (self.shard, self.hub.id);
        match op {
            Op::Health => Ok(status(StatusCode::OK)),
            Op::Send(target) => self.send(target, req).await,
            Op::Close(target) => {
                let target = checked_target(shard, &self.hub, target)?;
                shard
                    .close(hub, target, self.excluded(), self.reason())
                    .await;
                Ok(self.removed())
            }
            Op::ConnectionExists(conn) => {
                connection(shard, &self.hub, &conn)?;
                Ok(status(StatusCode::OK))
            }
            Op::CloseConnection(conn) => {
                let id = connection(shard, &self.hub, &conn)?;
                let target = Target::Connection(id);
                shard
                    .close(hub, target, Arc::default(), self.reason())
                    .await;
                Ok(self.accepted())
            }
            Op::LeaveAllGroups(conn) => {
                let id = connection(shard, &self.hub, &conn)?;
                shard.leave_all_groups(hub, id).await;
                Ok(self.accepted())
            }
            Op::AddToGroup { group, conn } => {
                let group = group_name(&group)?;
                let id = connection(shard, &self.hub, &conn)?;
                shard.add_to_group(hub, id, group).await;
                Ok(self.accepted())
            }
            Op::RemoveFromGroup { group, conn } => {
                let group = group_name(&group)?;
                let id = connection(shard, &self.hub, &conn)?;
                shard.remove_from_group(hub, id, group).await;
                Ok(self.accepted())
            }
            Op::GroupExists(name) => {
                let group = group_name(&name)?;
                exists(shard.query(Query::GroupExists { hub, group }).await, || {
                    HttpFault::GroupNotFound(name)
                })
            }
            Op::UserExists(name) => {
                let user = user_id(&name)?;
                exists(shard.query(Query::UserExists { hub, user }).await, || {
                    HttpFault::UserNotFound(name)
                })
            }
            Op::UserInGroup { user: u, group: g } => {
                let (user, group) = (user_id(&u)?, group_name(&g)?);
                exists(
                    shard.query(Query::UserInGroup { hub, user, group }).await,
                    || HttpFault::UserNotInGroup(u, g),
                )
            }
            Op::AddUserToGroup { user, group } => {
                let (user, group) = (user_id(&user)?, group_name(&group)?);
                let until = self.until()?;
                if until.is_some() {
                    shard
                        .user_group_allowed(hub, &user, &group)
                        .map_err(HttpFault::MembershipLimit)?;
                }
                shard.add_user_to_group(hub, user, group, until).await;
                Ok(self.accepted())
            }
            Op::RemoveUserFromGroup { user, group } => {
                let (user, group) = (user_id(&user)?, group_name(&group)?);
                shard.remove_user_from_group(hub, user, group).await;
                Ok(self.removed())
            }
            Op::RemoveUserFromAllGroups(user) => {
                let user = user_id(&user)?;
                shard.remove_user_from_all_groups(hub, user).await;
                Ok(self.removed())
            }
        }
    }

    /// A send: the body's `PayloadMessage`, published as a hub invocation's would be.
    async fn send(
        &self,
        target: Target,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, HttpFault> {
        let shard = self.shard;
        let target = checked_target(shard, &self.hub, target)?;
        let server = &shard.node.config.server;
        let timeout = Duration::from_millis(server.body_timeout_ms);
        let body = read_body(req.into_body(), server.max_request_body_bytes, timeout).await?;
        let message = payload_message(&body)?;
        shard
            .publish(Publish {
                hub: self.hub.id,
                target,
                excluded: self.excluded().to_vec(),
                message,
                created: Instant::now(),
            })
            .await;
        Ok(status(StatusCode::ACCEPTED))
    }

    /// The connections the `excluded` parameters name.
    fn excluded(&self) -> Arc<Vec<ConnectionId>> {
        Arc::new(
            query_params(self.query.as_deref(), "excluded")
                .iter()
                .filter_map(|id| id.parse().ok())
                .collect(),
        )
    }

    /// The `reason` parameter of a close.
    fn reason(&self) -> Option<String> {
        query_param(self.query.as_deref(), "reason").map(Cow::into_owned)
    }

    /// Until when a user joins a group: the `ttl` parameter in seconds (0: only while it has
    /// connections), a year when it is absent, as Azure SignalR Service does.
    fn until(&self) -> Result<Option<Instant>, HttpFault> {
        let Some(ttl) = query_param(self.query.as_deref(), "ttl") else {
            return Ok(Some(Instant::now() + DEFAULT_USER_GROUP_TTL));
        };
        match ttl.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(secs) => Ok(Some(
                Instant::now() + Duration::from_secs(secs.min(DEFAULT_USER_GROUP_TTL.as_secs())),
            )),
            Err(_) => Err(HttpFault::InvalidParameter(
                "ttl",
                format!("`{ttl}` is not a number of seconds"),
            )),
        }
    }

    /// A change taken: 202 in v1, 200 in 2022-06-01.
    fn accepted(&self) -> Response<Body> {
        status(match self.version {
            Version::V1 => StatusCode::ACCEPTED,
            Version::V2022 => StatusCode::OK,
        })
    }

    /// A removal or close taken: 202 in v1, 204 in 2022-06-01.
    fn removed(&self) -> Response<Body> {
        status(match self.version {
            Version::V1 => StatusCode::ACCEPTED,
            Version::V2022 => StatusCode::NO_CONTENT,
        })
    }
}

/// The answer to an existence check: 200, or 404 with the error the spec declares (whose
/// body a HEAD request does not get).
fn exists(found: bool, missing: impl FnOnce() -> HttpFault) -> Result<Response<Body>, HttpFault> {
    if found {
        Ok(status(StatusCode::OK))
    } else {
        Err(missing())
    }
}

/// The methods `parse` accepts for a path, for the `Allow` header of a 405.
fn allowed(version: Version, parts: &[&str]) -> String {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
    ]
    .into_iter()
    .filter(|m| {
        !matches!(
            parse(m, version, parts),
            Err(HttpFault::MethodNotAllowed { .. } | HttpFault::NotFound)
        )
    })
    .map(|m| m.to_string())
    .collect::<Vec<_>>()
    .join(", ")
}

/// Maps a method and path to an operation; the hub name is returned undecided (the
/// `application` parameter may prefix it).
#[allow(
    clippy::match_same_arms,
    reason = "one arm per route and API generation, so the table reads as the API's reference"
)]
fn parse(
    method: &Method,
    version: Version,
    parts: &[&str],
) -> Result<(Option<String>, Op), HttpFault> {
    use Method as M;
    let s = |x: &str| x.to_string();
    let is = |m: &Method| method == m;
    let exists = is(&M::HEAD) || is(&M::GET);
    let op = match (version, parts) {
        (_, ["health"]) if exists => return Ok((None, Op::Health)),
        (_, ["health"]) => return Err(not_allowed(method)),
        (Version::V2022, ["hubs", _, ":send"]) if is(&M::POST) => Op::Send(Target::All),
        (Version::V2022, ["hubs", _, ":closeConnections"]) if is(&M::POST) => {
            Op::Close(Target::All)
        }
        (Version::V2022, ["hubs", _, "connections", c]) if exists => Op::ConnectionExists(s(c)),
        (_, ["hubs", _, "connections", c]) if is(&M::DELETE) => Op::CloseConnection(s(c)),
        (Version::V2022, ["hubs", _, "connections", c, ":send"]) if is(&M::POST) => {
            Op::Send(Target::Connection(parse_id(c)?))
        }
        (_, ["hubs", _, "connections", c, "groups"]) if is(&M::DELETE) => Op::LeaveAllGroups(s(c)),
        (Version::V2022, ["hubs", _, "groups", g]) if exists => Op::GroupExists(s(g)),
        (Version::V2022, ["hubs", _, "groups", g, ":send"]) if is(&M::POST) => {
            Op::Send(Target::Group(g.to_string().into()))
        }
        (Version::V2022, ["hubs", _, "groups", g, ":closeConnections"]) if is(&M::POST) => {
            Op::Close(Target::Group(g.to_string().into()))
        }
        (_, ["hubs", _, "groups", g, "connections", c])
        | (Version::V1, ["hubs", _, "connections", c, "groups", g])
            if is(&M::PUT) =>
        {
            Op::AddToGroup {
                group: s(g),
                conn: s(c),
            }
        }
        (_, ["hubs", _, "groups", g, "connections", c])
        | (Version::V1, ["hubs", _, "connections", c, "groups", g])
            if is(&M::DELETE) =>
        {
            Op::RemoveFromGroup {
                group: s(g),
                conn: s(c),
            }
        }
        (Version::V2022, ["hubs", _, "users", u]) if exists => Op::UserExists(s(u)),
        (Version::V2022, ["hubs", _, "users", u, ":send"]) if is(&M::POST) => {
            Op::Send(Target::User(u.to_string().into()))
        }
        (Version::V2022, ["hubs", _, "users", u, ":closeConnections"]) if is(&M::POST) => {
            Op::Close(Target::User(u.to_string().into()))
        }
        (_, ["hubs", _, "users", u, "groups"]) if is(&M::DELETE) => {
            Op::RemoveUserFromAllGroups(s(u))
        }
        (_, ["hubs", _, "users", u, "groups", g])
        | (Version::V1, ["hubs", _, "groups", g, "users", u]) => match *method {
            M::HEAD | M::GET => Op::UserInGroup {
                user: s(u),
                group: s(g),
            },
            M::PUT => Op::AddUserToGroup {
                user: s(u),
                group: s(g),
            },
            M::DELETE => Op::RemoveUserFromGroup {
                user: s(u),
                group: s(g),
            },
            _ => return Err(not_allowed(method)),
        },
        // The v1 generation: POST sends, GET checks existence.
        (Version::V1, ["hubs", _]) if is(&M::POST) => Op::Send(Target::All),
        (Version::V1, ["hubs", _, "users", u]) if is(&M::POST) => {
            Op::Send(Target::User(u.to_string().into()))
        }
        (Version::V1, ["hubs", _, "users", u]) if exists => Op::UserExists(s(u)),
        (Version::V1, ["hubs", _, "connections", c]) if is(&M::POST) => {
            Op::Send(Target::Connection(parse_id(c)?))
        }
        (Version::V1, ["hubs", _, "connections", c]) if exists => Op::ConnectionExists(s(c)),
        (Version::V1, ["hubs", _, "groups", g]) if is(&M::POST) => {
            Op::Send(Target::Group(g.to_string().into()))
        }
        (Version::V1, ["hubs", _, "groups", g]) if exists => Op::GroupExists(s(g)),
        (_, ["hubs", ..]) if parts.len() >= 2 => return Err(not_allowed(method)),
        _ => return Err(HttpFault::NotFound),
    };
    Ok((Some(parts[1].to_string()), op))
}

/// A 405 whose `Allow` the caller fills in (see [`allowed`]).
fn not_allowed(method: &Method) -> HttpFault {
    HttpFault::MethodNotAllowed {
        method: method.to_string(),
        allow: String::new(),
    }
}

/// A connection id from a path; an id that cannot exist is simply not found.
fn parse_id(text: &str) -> Result<ConnectionId, HttpFault> {
    text.parse().map_err(|()| HttpFault::ConnectionNotFound)
}

/// The id of an active connection of `hub`, on this node or another.
fn connection(shard: &Shard, hub: &HubDef, text: &str) -> Result<ConnectionId, HttpFault> {
    let id = parse_id(text)?;
    match shard.node.hub_of(id) {
        Some(h) if h == hub.id => Ok(id),
        _ => Err(HttpFault::ConnectionNotFound),
    }
}

/// Validates the names in a send or close target.
fn checked_target(shard: &Shard, hub: &HubDef, target: Target) -> Result<Target, HttpFault> {
    match &target {
        Target::Group(g) => {
            group_name(g)?;
        }
        Target::User(u) => {
            user_id(u)?;
        }
        Target::Connection(id) => {
            connection(shard, hub, &id.to_string())?;
        }
        Target::All => {}
    }
    Ok(target)
}

fn group_name(group: &str) -> Result<Arc<str>, HttpFault> {
    let len = group.chars().count();
    if len == 0 || len > MAX_GROUP_NAME {
        return Err(HttpFault::InvalidParameter(
            "group",
            format!("a group name is 1 to {MAX_GROUP_NAME} characters"),
        ));
    }
    Ok(group.into())
}

fn user_id(user: &str) -> Result<Arc<str>, HttpFault> {
    if user.is_empty() || user.len() > 1024 {
        return Err(HttpFault::InvalidParameter(
            "user",
            "a user id is 1 to 1024 bytes".into(),
        ));
    }
    Ok(user.into())
}

/// Parses a `PayloadMessage`: `{"target": "method", "arguments": [...]}` (property names are
/// matched case-insensitively, as ASP.NET Core binds them).
fn payload_message(body: &[u8]) -> Result<Outgoing, HttpFault> {
    let invalid = |why: &str| HttpFault::InvalidBody(why.to_string());
    let json: Json =
        serde_json::from_slice(body).map_err(|e| invalid(&format!("not JSON: {e}")))?;
    let Json::Object(fields) = json else {
        return Err(invalid(
            "expected a JSON object {\"target\": ..., \"arguments\": [...]}",
        ));
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let target = match field("target") {
        Some(Json::String(t)) if !t.is_empty() => t.clone(),
        Some(_) => return Err(invalid("`target` must be a non-empty string")),
        None => return Err(invalid("`target` is required")),
    };
    let arguments = match field("arguments") {
        None | Some(Json::Null) => Vec::new(),
        Some(args @ Json::Array(_)) => match serde_json::from_value::<Value>(args.clone()) {
            Ok(Value::Array(items)) => items,
            _ => return Err(invalid("`arguments` must be an array")),
        },
        Some(_) => return Err(invalid("`arguments` must be an array")),
    };
    Ok(Outgoing::new(target.into(), arguments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_messages() {
        let m = payload_message(br#"{"Target":"t","Arguments":[1,"a"]}"#).unwrap();
        assert_eq!(m.target(), "t");
        assert_eq!(m.arguments().len(), 2);
        assert!(
            payload_message(br#"{"target":"t"}"#)
                .unwrap()
                .arguments()
                .is_empty()
        );
        for bad in [
            &b"nope"[..],
            b"[]",
            br#"{"arguments":[]}"#,
            br#"{"target":1}"#,
            br#"{"target":"t","arguments":{}}"#,
        ] {
            assert!(matches!(
                payload_message(bad),
                Err(HttpFault::InvalidBody(_))
            ));
        }
    }

    #[test]
    fn openapi_describes_every_route_the_router_takes() {
        let doc: Json = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let paths = doc["paths"].as_object().unwrap();
        let mut checked = 0;
        for (path, ops) in paths {
            let Some(rest) = path.strip_prefix("/api/") else {
                continue;
            };
            if rest == "openapi.json" {
                continue;
            }
            for method in ops.as_object().unwrap().keys() {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let concrete: Vec<String> = rest
                    .split('/')
                    .map(|seg| match seg {
                        "{connectionId}" => "AAAAAAAAAAAAAAAAAAAAAA".to_string(),
                        s if s.starts_with('{') => "x".to_string(),
                        s => s.to_string(),
                    })
                    .collect();
                let parts: Vec<&str> = concrete.iter().map(String::as_str).collect();
                let (version, rest) = match parts.as_slice() {
                    ["v1", rest @ ..] => (Version::V1, rest),
                    rest => (Version::V2022, rest),
                };
                assert!(
                    parse(&method, version, rest).is_ok(),
                    "{method} {path} is documented but not routed"
                );
                checked += 1;
            }
        }
        assert!(checked > 40, "only {checked} operations checked");
    }

    #[test]
    fn routes() {
        let p = |m: Method, path: &str| {
            let parts: Vec<&str> = path.split('/').collect();
            let (v, rest) = match parts.as_slice() {
                ["v1", rest @ ..] => (Version::V1, rest.to_vec()),
                rest => (Version::V2022, rest.to_vec()),
            };
            parse(&m, v, &rest).map(|(hub, _)| hub)
        };
        assert_eq!(
            p(Method::POST, "hubs/chat/:send").unwrap().as_deref(),
            Some("chat")
        );
        assert!(p(Method::HEAD, "health").is_ok());
        assert!(p(Method::PUT, "v1/hubs/chat/groups/g/users/u").is_ok());
        assert!(p(Method::PUT, "hubs/chat/users/u/groups/g").is_ok());
        assert!(matches!(
            p(Method::GET, "hubs/chat/:send"),
            Err(HttpFault::MethodNotAllowed { .. })
        ));
        assert_eq!(allowed(Version::V2022, &["hubs", "chat", ":send"]), "POST");
        assert_eq!(
            allowed(
                Version::V2022,
                &["hubs", "chat", "users", "u", "groups", "g"]
            ),
            "GET, HEAD, PUT, DELETE"
        );
        assert_eq!(
            allowed(Version::V1, &["hubs", "chat", "groups", "g"]),
            "GET, HEAD, POST"
        );
        assert_eq!(allowed(Version::V2022, &["health"]), "GET, HEAD");
        assert!(matches!(
            p(Method::GET, "nothing"),
            Err(HttpFault::NotFound)
        ));
    }
}
