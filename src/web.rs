//! HTTP plumbing every HTTP surface shares — the router, the transports and the REST API: the
//! response body type, plain and JSON responses, caching headers, query strings, path
//! segments, bearer tokens, bounded body reads. It imports none of those surfaces, so each of
//! them may import it without importing another.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::fault::HttpFault;

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

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A response with `status` and no body.
pub fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// Refuses every method but GET and HEAD, for resources that are only read.
pub fn read_only(method: &Method) -> Result<(), HttpFault> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(HttpFault::MethodNotAllowed {
            method: method.to_string(),
            allow: "GET, HEAD".into(),
        })
    }
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
/// than `timeout` (`server.body_timeout_ms`) to arrive.
pub async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, HttpFault> {
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

/// Marks a response as never to be cached (event streams and poll answers).
pub fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_queries_and_tokens() {
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
