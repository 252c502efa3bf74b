//! The connection URL (`/hubs/{hub}?id=…`, `/client/?hub=…&id=…`): which transport a request
//! is for, and who it is.
//!
//! A WebSocket upgrade, a Server-Sent Events stream (`Accept: text/event-stream`), a long
//! poll (any other GET), data from the client (POST) and the end of a long-polling connection
//! (DELETE) all arrive here. The first request of a connection claims its id on the shard
//! that received it; later requests that reach another shard are relayed to that one.

use std::borrow::Cow;
use std::rc::Rc;

use http::header::{self, HeaderMap};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{longpoll, post, sse, websocket};
use crate::fault::HttpFault;
use crate::hub::definition::HubDef;
use crate::hub::{Shard, TransportKind};
use crate::web::{Body, query_param};

fn enabled(hub: &HubDef, transport: TransportKind) -> Result<(), HttpFault> {
    if hub.transports.contains(&transport) {
        Ok(())
    } else {
        Err(HttpFault::TransportNotSupported(transport.signalr_name()))
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

/// Handles a request for the connection URL of `hub_name`.
pub async fn handle<S>(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    hub_name: &str,
) -> Result<Response<Body>, HttpFault>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hub = shard
        .node
        .hubs
        .find(hub_name)
        .ok_or_else(|| HttpFault::UnknownHub(hub_name.to_string()))?
        .clone();
    let query = req.uri().query().map(str::to_string);
    let id = query_param(query.as_deref(), "id").map(Cow::into_owned);
    match *req.method() {
        Method::GET if websocket::is_upgrade(req.headers()) => {
            enabled(&hub, TransportKind::WebSockets)?;
            websocket::upgrade::<S>(shard, req, &hub, id.as_deref(), query.as_deref()).await
        }
        Method::GET if wants_event_stream(req.headers()) => {
            enabled(&hub, TransportKind::ServerSentEvents)?;
            let id = id.ok_or(HttpFault::ConnectionIdRequired)?;
            sse::start(shard, &req, &hub, &id, query.as_deref())
        }
        Method::GET => {
            enabled(&hub, TransportKind::LongPolling)?;
            let id = id.ok_or(HttpFault::ConnectionIdRequired)?;
            longpoll::poll(shard, &req, &hub, &id, query.as_deref()).await
        }
        Method::POST => {
            let id = id.ok_or(HttpFault::ConnectionIdRequired)?;
            post::send(shard, req, &hub, &id, query.as_deref()).await
        }
        Method::DELETE => {
            let id = id.ok_or(HttpFault::ConnectionIdRequired)?;
            longpoll::delete(shard, &hub, &id).await
        }
        ref other => Err(HttpFault::MethodNotAllowed {
            method: other.to_string(),
            allow: "GET, POST, DELETE".into(),
        }),
    }
}
