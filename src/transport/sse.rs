//! Server-Sent Events: a `GET` with `Accept: text/event-stream` opens a stream that carries
//! the server's messages as events; the client sends with `POST`. Text only (JSON).
//!
//! The stream starts with a comment (some browsers fire `open` only on the first bytes),
//! then writes each message as an event the moment it is queued: hyper sends every frame of
//! the body as its own chunk, with nothing buffered.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;

use super::admission;
use super::http_conn::{self, HttpConn};
use super::writer::take_queued;
use crate::fault::{CloseReason, HttpFault};
use crate::hub::definition::HubDef;
use crate::hub::{Shard, TransportKind};
use crate::web::Body;

/// Appends `payload` as one event: each line (split at `\n`, a trailing `\r` dropped) becomes
/// `data: <line>\r\n`, and a blank line ends the event.
pub fn event(payload: &[u8], out: &mut Vec<u8>) {
    for line in payload.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `GET /hubs/{hub}?id=…` with `Accept: text/event-stream`.
pub fn start(
    shard: &Rc<Shard>,
    req: &Request<Incoming>,
    hub: &HubDef,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, HttpFault> {
    let accepted = admission::accept(shard, hub, req.headers(), query, Some(id))?;
    admission::claim(shard, &accepted, TransportKind::ServerSentEvents)?;
    let hc = http_conn::create(shard, accepted, TransportKind::ServerSentEvents);
    let body = Stream {
        hc,
        started: false,
        ended: false,
    };
    let mut response = Response::new(Body::local(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    crate::web::no_cache(h);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    // Tell buffering proxies (nginx) to pass events through at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The event stream: the connection's queue, as events, until the connection ends.
struct Stream {
    hc: Rc<HttpConn>,
    started: bool,
    ended: bool,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b":\r\n")))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let hc = self.hc.clone();
        if hc.conn.is_closing() {
            hc.queue_close();
        }
        if hc.conn.has_queued() {
            let mut out = Vec::new();
            for item in take_queued(&hc.shard, &hc.conn) {
                event(&item, &mut out);
            }
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
        }
        if hc.conn.is_closing() || hc.is_finished() {
            self.ended = true;
            hc.finish();
            return Poll::Ready(None);
        }
        hc.conn.register(cx.waker());
        Poll::Pending
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The request went away (the client closed its EventSource, or the network did).
        if !self.hc.is_finished() {
            if !self.hc.conn.is_closing() {
                self.hc.conn.request_close(CloseReason::ClientGone);
            }
            self.hc.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_byte_for_byte() {
        let mut out = Vec::new();
        event(b"{\"type\":6}\x1e", &mut out);
        assert_eq!(out, b"data: {\"type\":6}\x1e\r\n\r\n");
        let mut out = Vec::new();
        event(b"a\r\nb\nc", &mut out);
        assert_eq!(out, b"data: a\r\ndata: b\r\ndata: c\r\n\r\n");
        let mut out = Vec::new();
        event(b"", &mut out);
        assert_eq!(out, b"data: \r\n\r\n");
    }
}
