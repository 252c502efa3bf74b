//! HTTP/1.1 on every shard: one hyper connection per socket, a router, CORS and fault
//! responses (the plumbing every HTTP surface shares is in [`crate::web`]). Requests that
//! upgrade to WebSocket leave hyper and continue on the raw socket.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::admission::origin_allowed;
use super::{endpoint, negotiate, page};
use crate::api;
use crate::fault::HttpFault;
use crate::hub::Shard;
use crate::metrics::Latency;
use crate::web::{Body, decode_segment, full, json, query_param, read_only, status};

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The response for a refused request: its status and a JSON error body.
pub fn fault_response(shard: &Shard, fault: &HttpFault, head_only: bool) -> Response<Body> {
    shard.metrics.http_fault(fault);
    let body = if head_only {
        Bytes::new()
    } else {
        Bytes::from(fault.body())
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = fault.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match fault {
        HttpFault::Unauthorized(_) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        HttpFault::WebSocketVersion => {
            headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
        }
        // The rest of the body is not coming, or not wanted: the socket is not reused.
        HttpFault::BodyTimeout | HttpFault::BodyTooLarge(_) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    if let Some(allow) = fault.allow()
        && let Ok(allow) = HeaderValue::from_str(allow)
    {
        headers.insert(header::ALLOW, allow);
    }
    response
}

/// Serves HTTP/1.1 on one socket until the client leaves or the node shuts down.
pub async fn serve<S>(shard: Rc<Shard>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_on(shard, io, false).await;
}

/// Serves HTTP/1.1 on one socket of the internal listener (`server.internal_listen`): the
/// operational endpoints only.
pub async fn serve_internal<S>(shard: Rc<Shard>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_on(shard, io, true).await;
}

async fn serve_on<S>(shard: Rc<Shard>, io: S, internal: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = shard.track_http();
    let service_shard = shard.clone();
    let service = service_fn(move |req| {
        let shard = service_shard.clone();
        async move {
            Ok::<_, Infallible>(if internal {
                internal_route(&shard, req).await
            } else {
                route::<S>(&shard, req).await
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let shutdown = shard.node.shutdown_signal();
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        () = shutdown => {
            conn.as_mut().graceful_shutdown();
            let drain = Duration::from_millis(shard.node.config.server.shutdown_drain_ms);
            let _ = tokio::time::timeout(drain, conn).await;
        }
    }
}

/// Splits a path into percent-encoded segments, ignoring one trailing slash.
fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

async fn route<S>(shard: &Rc<Shard>, req: Request<Incoming>) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    shard.metrics.http_request();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let head_only = req.method() == Method::HEAD;
    let preflight = (req.method() == Method::OPTIONS).then(|| {
        req.headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""))
    });
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let segs = segments(&path);
    let result = if preflight.is_some() {
        Ok(status(StatusCode::NO_CONTENT))
    } else {
        match segs.as_slice() {
            ["hubs", hub, "negotiate"] => match decode_segment(hub) {
                Ok(hub) => negotiate::negotiate(shard, &req, &hub),
                Err(e) => Err(e),
            },
            ["client", "negotiate"] => match query_param(query.as_deref(), "hub") {
                Some(hub) => negotiate::negotiate(shard, &req, &hub),
                None => Err(HttpFault::InvalidParameter(
                    "hub",
                    "the hub query parameter is required".into(),
                )),
            },
            ["hubs", hub] => match decode_segment(hub) {
                Ok(hub) => endpoint::handle::<S>(shard, req, &hub).await,
                Err(e) => Err(e),
            },
            ["client"] => match query_param(query.as_deref(), "hub") {
                Some(hub) => {
                    let hub = hub.into_owned();
                    endpoint::handle::<S>(shard, req, &hub).await
                }
                None => Err(HttpFault::InvalidParameter(
                    "hub",
                    "the hub query parameter is required".into(),
                )),
            },
            ["api", ..] => api::handle(shard, req, &segs[1..]).await,
            [] => page::index(shard, &req),
            ["page", name] => page::asset(shard, &req, name),
            ["metrics"] if !shard.node.config.server.public_metrics() => Err(HttpFault::NotFound),
            ["metrics" | "healthz" | "readyz"] => operational(shard, &segs, req.method()).await,
            _ => Err(HttpFault::NotFound),
        }
    };
    let mut response = match result {
        Ok(response) => response,
        Err(fault) => fault_response(shard, &fault, head_only),
    };
    cors(shard, origin.as_ref(), preflight.as_ref(), &mut response);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        shard.metrics.record(
            Latency::Request,
            crate::hub::shard::micros(started.elapsed()),
        );
    }
    response
}

/// The internal listener's routes: `/metrics`, `/readyz` and `/healthz`, for `GET` and `HEAD`.
async fn internal_route(shard: &Rc<Shard>, req: Request<Incoming>) -> Response<Body> {
    shard.metrics.http_request();
    let head_only = req.method() == Method::HEAD;
    let path = req.uri().path().to_string();
    match operational(shard, &segments(&path), req.method()).await {
        Ok(response) => response,
        Err(fault) => fault_response(shard, &fault, head_only),
    }
}

/// The operational endpoints, `/metrics`, `/readyz` and `/healthz`, for `GET` and `HEAD`; the
/// public router and the internal listener both serve them through here.
async fn operational(
    shard: &Rc<Shard>,
    segs: &[&str],
    method: &Method,
) -> Result<Response<Body>, HttpFault> {
    if !matches!(segs, ["metrics" | "readyz" | "healthz"]) {
        return Err(HttpFault::NotFound);
    }
    read_only(method)?;
    Ok(match segs {
        ["metrics"] => metrics(shard).await,
        ["readyz"] => ready(&shard.node),
        _ => health(true),
    })
}

/// Whether browsers from `origin` may call Herald (`server.cors.allowed_origins`).
/// CORS for browsers: allowed origins are echoed with credentials allowed, because the
/// SignalR browser client sends credentials by default. `preflight` holds the headers an
/// OPTIONS request asked for.
fn cors(
    shard: &Shard,
    origin: Option<&HeaderValue>,
    preflight: Option<&HeaderValue>,
    response: &mut Response<Body>,
) {
    let Some(origin) = origin else { return };
    let config = &shard.node.config.server.cors;
    let allowed = origin_allowed(shard, origin);
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if !allowed {
        return;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if let Some(requested) = preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, HEAD, OPTIONS"),
        );
        // Whatever headers the page asks for (a client configured with custom headers), or
        // the ones the SignalR clients send.
        let allow = if requested.is_empty() {
            HeaderValue::from_static(
                "Authorization, Content-Type, X-Requested-With, X-SignalR-User-Agent, Cache-Control, Pragma",
            )
        } else {
            requested.clone()
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow);
        if let Ok(age) = HeaderValue::from_str(&config.max_age_secs.to_string()) {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, age);
        }
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("WWW-Authenticate"),
        );
    }
}

async fn metrics(shard: &Rc<Shard>) -> Response<Body> {
    let snapshot = shard.snapshot().await;
    let node = &shard.node;
    let mut text = snapshot.render(
        &node.hubs.names(),
        node.io,
        node.shards(),
        node.started.elapsed().as_secs_f64(),
    );
    text.push_str(&node.backplane.metrics());
    if node.config.server.tls.enabled() {
        super::tls::render_metrics(&mut text);
    }
    crate::metrics::process::render(&mut text);
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Ready unless shutting down. A node whose Redis is away stays ready — it keeps serving its
/// own clients and buffers cluster messages — and says so in the body, with the backplane's
/// lag and backlog, for dashboards and alerts.
fn ready(node: &crate::hub::Node) -> Response<Body> {
    let Some(backplane) = node.backplane.status() else {
        return health(!node.is_shutting_down());
    };
    let down = node.is_shutting_down();
    let status = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "status": if down { "shutting_down" } else { "ok" },
        "backplane": backplane,
    });
    json(status, &body)
}

fn health(ok: bool) -> Response<Body> {
    if ok {
        json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "shutting_down"}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            segments("/hubs/chat/negotiate"),
            vec!["hubs", "chat", "negotiate"]
        );
        assert_eq!(segments("/client/"), vec!["client"]);
        assert!(segments("/").is_empty());
    }
}
