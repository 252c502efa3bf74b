//! HTTP/1.1 on every shard: one hyper connection per socket, a router, CORS, and the helpers
//! every handler shares. Requests that upgrade to WebSocket leave hyper and continue on the raw
//! socket.

use std::borrow::Cow;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{endpoint, negotiate};
use crate::api;
use crate::fault::HttpFault;
use crate::hub::Shard;
use crate::metrics::Latency;

/// A response body: whole, or a stream that lives on this shard (an event stream), which
/// need not be `Send` because a response never leaves its shard.
pub enum Body {
    Full(Full<Bytes>),
    Local(std::pin::Pin<Box<dyn http_body::Body<Data = Bytes, Error = Infallible>>>),
}

impl Body {
    pub fn local(body: impl http_body::Body<Data = Bytes, Error = Infallible> + 'static) -> Body {
        Body::Local(Box::pin(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            Body::Local(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Local(body) => body.size_hint(),
        }
    }
}

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).expect("JSON encodes")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

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
    response
}

/// The first value of query parameter `name`, percent-decoded.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Every value of query parameter `name`, percent-decoded.
pub fn query_params(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-decodes one path segment (`+` stays `+` in paths).
pub fn decode_segment(segment: &str) -> Result<String, HttpFault> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    HttpFault::InvalidParameter("path", "bad percent-encoding".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HttpFault::InvalidParameter("path", "not UTF-8".into()))
}

/// A request body read piece by piece against a time budget: the client has
/// `server.body_timeout_ms` in all to send it, so one that trickles or stops gets 408 instead
/// of holding its socket and buffers for ever. Time the reader spends elsewhere between
/// pieces (waiting for a connection's queue to drain) is not the client's and does not count.
pub struct TimedBody {
    body: Incoming,
    left: Duration,
}

impl TimedBody {
    pub fn new(body: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            body,
            left: timeout,
        }
    }

    /// The next piece of data, or `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, HttpFault> {
        loop {
            let started = Instant::now();
            let frame = tokio::time::timeout(self.left, self.body.frame()).await;
            self.left = self.left.saturating_sub(started.elapsed());
            match frame {
                Err(_) => return Err(HttpFault::BodyTimeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(HttpFault::InvalidBody(format!("cannot read the body: {e}")));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers carry nothing Herald reads.
                }
            }
        }
    }
}

/// Reads a whole request body, refusing bodies over `limit` bytes and bodies that take more
/// than `server.body_timeout_ms` to arrive.
pub async fn read_body(shard: &Shard, body: Incoming, limit: usize) -> Result<Bytes, HttpFault> {
    let timeout = Duration::from_millis(shard.node.config.server.body_timeout_ms);
    let mut body = TimedBody::new(body, timeout);
    let mut whole = bytes::BytesMut::new();
    while let Some(piece) = body.next().await? {
        if whole.len() + piece.len() > limit {
            return Err(HttpFault::BodyTooLarge(limit));
        }
        if whole.is_empty() && body.body.is_end_stream() {
            return Ok(piece);
        }
        whole.extend_from_slice(&piece);
    }
    Ok(whole.freeze())
}

/// The bearer token of a request: the `Authorization` header, or the `access_token` query
/// parameter (browsers cannot set headers on WebSockets or EventSource).
pub fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim().to_string());
        }
    }
    query_param(query, "access_token").map(Cow::into_owned)
}

/// Serves HTTP/1.1 on one socket until the client leaves or the node shuts down.
pub async fn serve<S>(shard: Rc<Shard>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = shard.track_http();
    let service_shard = shard.clone();
    let service = service_fn(move |req| {
        let shard = service_shard.clone();
        async move { Ok::<_, Infallible>(route::<S>(&shard, req).await) }
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
        _ = shutdown => {
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
                Ok(hub) => negotiate::negotiate(shard, req, &hub),
                Err(e) => Err(e),
            },
            ["client", "negotiate"] => match query_param(query.as_deref(), "hub") {
                Some(hub) => negotiate::negotiate(shard, req, &hub),
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
            ["metrics"] => Ok(metrics(shard).await),
            ["healthz"] => Ok(health(true)),
            ["readyz"] => Ok(ready(&shard.node)),
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

/// Whether browsers from `origin` may call Herald (`server.cors.allowed_origins`).
pub fn origin_allowed(shard: &Shard, origin: &HeaderValue) -> bool {
    let config = &shard.node.config.server.cors;
    origin.to_str().is_ok_and(|o| {
        config
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
    })
}

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
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Marks a response as never to be cached (event streams and poll answers).
pub fn no_cache(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
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
    fn paths_and_queries() {
        assert_eq!(
            segments("/hubs/chat/negotiate"),
            vec!["hubs", "chat", "negotiate"]
        );
        assert_eq!(segments("/client/"), vec!["client"]);
        assert!(segments("/").is_empty());
        assert_eq!(decode_segment("a%20b+c").unwrap(), "a b+c");
        assert!(decode_segment("%zz").is_err());
        assert_eq!(
            query_param(Some("hub=chat&id=x%2By"), "id").as_deref(),
            Some("x+y")
        );
        assert_eq!(
            query_params(Some("excluded=a&excluded=b"), "excluded"),
            vec!["a", "b"]
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&headers, None).as_deref(), Some("abc"));
        assert_eq!(
            bearer_token(&HeaderMap::new(), Some("access_token=t")).as_deref(),
            Some("t")
        );
    }
}
