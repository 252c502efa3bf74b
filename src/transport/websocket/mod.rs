//! The WebSocket transport: the upgrade request (`GET /hubs/{hub}?id=…`), then one task per
//! connection that reads frames into the session and writes the connection's queue.
//!
//! The task is a single poll loop that moves both directions at once: it writes whatever is
//! queued (everything queued, in one vectored write), reads into the shard's shared buffer,
//! and sleeps until the socket or the queue wakes it. An idle connection therefore owns no
//! read buffer and no timer.

pub mod relay;

use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::admission::{self, Accepted};
use super::inflow;
use super::session::Session;
use super::writer::poll_write_queue;
use crate::fault::{CloseReason, HttpFault};
use crate::hub::definition::HubDef;
use crate::hub::{Connection, Encoded, Shard, TransportKind};
use crate::protocol::HubMessage;
use crate::protocol::frame::{self, Decoder, Event, OpCode};
use crate::web::{Body, empty};

const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Reads per wake-up before the task yields to its neighbours.
const READS_PER_WAKE: usize = 4;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether a request asks to upgrade to WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::UPGRADE, "websocket")
}

/// Answers a WebSocket upgrade for the connection URL: with `id`, it starts the connection
/// negotiate created; without, it creates one (skipNegotiation).
pub async fn upgrade<S>(
    shard: &Rc<Shard>,
    mut req: Request<Incoming>,
    hub: &HubDef,
    id: Option<&str>,
    query: Option<&str>,
) -> Result<Response<Body>, HttpFault>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let headers = req.headers();
    // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 (or later) GET.
    if req.version() < http::Version::HTTP_11 {
        return Err(HttpFault::BadUpgrade("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HttpFault::BadUpgrade(
            "the Connection header does not contain 'Upgrade'",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(HttpFault::WebSocketVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| {
            STANDARD
                .decode(k.as_bytes())
                .is_ok_and(|raw| raw.len() == 16)
        })
        .ok_or(HttpFault::BadUpgrade(
            "Sec-WebSocket-Key is missing or malformed",
        ))?
        .clone();
    let accepted = admission::accept(shard, hub, headers, query, id)?;
    let resume = match admission::claim(shard, &accepted, TransportKind::WebSockets) {
        Ok(()) => None,
        // A stateful connection's WebSocket coming back: served through a relay to the
        // shard that holds the connection.
        Err(HttpFault::ConnectionActive) if accepted.stateful => {
            Some(relay::claim(shard, accepted.id).await?)
        }
        Err(e) => return Err(e),
    };

    let upgrade = hyper::upgrade::on(&mut req);
    let task_shard = shard.clone();
    tokio::task::spawn_local(async move {
        let (id, until) = (accepted.id, accepted.until);
        match (
            upgrade
                .await
                .map(hyper::upgrade::Upgraded::downcast::<TokioIo<S>>),
            resume,
        ) {
            (Ok(Ok(parts)), None) => {
                run(task_shard, parts.io.into_inner(), parts.read_buf, accepted).await;
            }
            (Ok(Ok(parts)), Some(owner)) => {
                relay::serve(task_shard, parts.io.into_inner(), parts.read_buf, owner, id).await;
            }
            (_, None) => task_shard.node.registry.end(id, until),
            (_, Some(_)) => {}
        }
    });

    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key(key.as_bytes())).expect("base64 is a valid header value"),
    );
    Ok(response)
}

/// What one turn of the connection loop produced.
enum Step {
    /// Frames arrived (in the events buffer); `more` if the read filled the buffer, so more
    /// is probably waiting.
    Events { more: bool },
    /// The connection must end.
    Closed(CloseReason),
}

/// Turns of reading a busy client in a row before its task lets the others run: the
/// recipients of what it sends, above all, so their queues drain as fast as it fills them.
const TURNS_PER_YIELD: usize = 16;

/// Runs an upgraded connection until it ends, then takes it out of the hub.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    mut io: S,
    leftover: Bytes,
    accepted: Accepted,
) {
    let limits = &shard.node.config.connections;
    let conn = Rc::new(Connection::new(
        accepted.id,
        accepted.hub,
        accepted.user,
        TransportKind::WebSockets,
        limits.outbound_queue_bytes,
    ));
    if accepted.stateful {
        conn.allow_stateful();
    }
    shard.attach(conn.clone());
    // Shutdown may have begun between the upgrade request and now.
    if shard.node.is_shutting_down() {
        conn.request_close(CloseReason::ServerShutdown);
    }
    let mut session = Session::new(shard.clone(), conn.clone());
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    let mut turns = 0;

    let mut reason = None;
    // `leftover` may share hyper's whole read buffer: feed it and let it go at once, or every
    // idle connection would keep that buffer alive.
    if !leftover.is_empty() {
        conn.touch_received(Instant::now());
        if let Err(e) = decoder.feed(&leftover, &mut events) {
            reason = Some(CloseReason::WebSocket(e));
        }
    }
    drop(leftover);

    let reason = loop {
        if let Some(reason) = reason.take() {
            break reason;
        }
        let mut more = false;
        if events.is_empty() {
            let partial = session.has_partial();
            match poll_fn(|cx| {
                poll_step(
                    cx,
                    &shard,
                    &conn,
                    &mut io,
                    &mut decoder,
                    &mut events,
                    partial,
                )
            })
            .await
            {
                Step::Events { more: m } => more = m,
                Step::Closed(reason) => break reason,
            }
        }
        for event in events.drain(..) {
            let outcome = match event {
                // Boxed: the dispatcher's future is large and only lives while a message is
                // handled, while this loop's state lives as long as the (mostly idle)
                // connection.
                Event::Data { payload, .. } => Box::pin(session.receive(&payload)).await,
                Event::Ping(payload) => {
                    shard.send_raw(&conn, &frame::encode(OpCode::Pong, &payload))
                }
                Event::Pong => Ok(()),
                Event::Close { .. } => Err(CloseReason::ClientClosed),
            };
            if let Err(e) = outcome {
                reason = Some(e);
                break;
            }
        }
        turns += 1;
        if more && conn.has_published() && shard.node.shards() > 1 {
            // A large piece published: its recipients on other shards take it before more is
            // read (see `Shard::delivered_everywhere`); waiting also lets the others run.
            turns = 0;
            shard.delivered_everywhere().await;
        } else if more || turns >= TURNS_PER_YIELD {
            turns = 0;
            tokio::task::yield_now().await;
        }
    };
    // With stateful reconnect, a transport that went away (or gave way to a reconnect) is
    // not the end: the connection waits for the client to come back.
    if conn.is_stateful() && (reason == CloseReason::ClientGone || conn.is_superseded()) {
        conn.disconnect(Instant::now());
        let _ = tokio::time::timeout(Duration::from_millis(100), io.shutdown()).await;
        return;
    }
    Box::pin(finish(
        &shard,
        &conn,
        &mut io,
        &reason,
        session.handshaken(),
    ))
    .await;
    Box::pin(shard.detach(&conn, &reason, accepted.until)).await;
}

/// One turn: write what is queued, notice a requested close, read what arrived — unless
/// reading is paused (`inflow::gate`; `partial` says whether the session holds part of a
/// message).
fn poll_step<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    shard: &Shard,
    conn: &Connection,
    io: &mut S,
    decoder: &mut Decoder,
    events: &mut Vec<Event>,
    partial: bool,
) -> Poll<Step> {
    let mut written = 0;
    if let Poll::Ready(Err(_)) = poll_write_queue(cx, shard, conn, io, &mut written) {
        return Poll::Ready(Step::Closed(CloseReason::ClientGone));
    }
    if let Some(reason) = conn.close_reason() {
        return Poll::Ready(Step::Closed(reason));
    }
    if conn.is_superseded() {
        return Poll::Ready(Step::Closed(CloseReason::ClientGone));
    }
    if let Err(why) = inflow::gate(shard, conn, partial) {
        // Woken as the queue drains (the write above registered the socket, or the queue's
        // next change does), when the node is back under its input budget, or when a
        // backed-up recipient drains (or the shard's timer says the wait is over).
        conn.register(cx.waker());
        if why == inflow::Pause::Recipients {
            conn.wait_for_recipients(cx.waker());
        }
        return Poll::Pending;
    }
    for _ in 0..READS_PER_WAKE {
        let mut scratch = shard.scratch();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Step::Closed(CloseReason::ClientGone));
                }
                shard.metrics.bytes_in(n);
                conn.touch_received(shard.coarse_now());
                if let Err(e) = decoder.feed(&scratch[..n], events) {
                    return Poll::Ready(Step::Closed(CloseReason::WebSocket(e)));
                }
                if !events.is_empty() {
                    return Poll::Ready(Step::Events {
                        more: n == scratch.len(),
                    });
                }
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Step::Closed(CloseReason::ClientGone)),
            Poll::Pending => {
                conn.register(cx.waker());
                return Poll::Pending;
            }
        }
    }
    // Partial frames kept arriving: let other connections run, then continue.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Ends the connection politely: what may still be sent is flushed, then the SignalR Close
/// message and a WebSocket close frame, all within the send timeout.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    conn: &Connection,
    io: &mut S,
    reason: &CloseReason,
    handshaken: bool,
) {
    if *reason == CloseReason::ClientGone {
        let _ = tokio::time::timeout(Duration::from_millis(100), io.shutdown()).await;
        return;
    }
    let mut tail = Vec::new();
    if handshaken && let Some((error, allow_reconnect)) = reason.close_message() {
        let close = HubMessage::Close {
            error,
            allow_reconnect,
        };
        tail.extend_from_slice(&Encoded::message(&close, conn.protocol()).frame());
    }
    tail.extend_from_slice(&frame::encode_close(reason.websocket_code(), ""));
    let timeout = Duration::from_millis(shard.node.config.connections.send_timeout_ms);
    let _ = tokio::time::timeout(timeout, async {
        let mut written = 0;
        poll_fn(|cx| poll_write_queue(cx, shard, conn, io, &mut written)).await?;
        io.write_all(&tail).await?;
        io.flush().await?;
        io.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
