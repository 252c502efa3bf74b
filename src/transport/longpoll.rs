//! Long polling: `GET` returns what is queued (or 200 empty after the poll timeout), `POST`
//! sends, `DELETE` ends the connection.
//!
//! The first poll answers at once (clients wait for it to start); a newer poll ends the one
//! waiting with 204; a poll for a connection that is over gets 204; a client that stops
//! polling is closed after the disconnect timeout. No pings: polling keeps the connection
//! alive. Polls that reach another shard are relayed to the owner's, which answers them.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::admission;
use super::http_conn::{self, HttpConn, PollReply};
use super::writer::take_queued;
use crate::fault::{CloseReason, HttpFault};
use crate::hub::definition::HubDef;
use crate::hub::node::IdState;
use crate::hub::{ConnectionId, Shard, TransportKind};
use crate::web::{Body, full, status};

fn reply(r: PollReply) -> Response<Body> {
    let mut response = match r {
        PollReply::Data(bytes) => {
            let mut response = Response::new(full(bytes));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        PollReply::Empty => status(StatusCode::OK),
        PollReply::Gone => status(StatusCode::NO_CONTENT),
    };
    let h = response.headers_mut();
    crate::web::no_cache(h);
    h.insert(
        header::EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    response
}

/// Everything queued for `hc`, concatenated (each message is already framed).
fn take_all(hc: &HttpConn) -> Bytes {
    let items = take_queued(&hc.shard, &hc.conn);
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len()).sum());
    for item in items {
        body.extend_from_slice(&item);
    }
    Bytes::from(body)
}

/// A poll, on the owning shard.
fn on_poll(shard: &Shard, id: ConnectionId, tx: oneshot::Sender<PollReply>) {
    let Some(hc) = http_conn::get(shard, id) else {
        let _ = tx.send(PollReply::Gone);
        return;
    };
    let older = hc.pending.borrow_mut().take();
    if let Some(older) = older {
        let _ = older.send(PollReply::Gone);
    }
    let now = Instant::now();
    if !hc.first_poll_done.replace(true) {
        hc.last_poll.set(now);
        let _ = tx.send(PollReply::Empty);
        return;
    }
    if hc.conn.is_closing() {
        hc.queue_close();
    }
    if hc.conn.has_queued() {
        hc.last_poll.set(now);
        let _ = tx.send(PollReply::Data(take_all(&hc)));
        if hc.conn.is_closing() {
            hc.finish();
        }
        return;
    }
    if hc.conn.is_closing() {
        let _ = tx.send(PollReply::Gone);
        hc.finish();
        return;
    }
    let timeout = Duration::from_millis(hc.shard.node.config.connections.long_poll_timeout_ms);
    hc.deadline.set(Instant::now() + timeout);
    *hc.pending.borrow_mut() = Some(tx);
    hc.shard.metrics.long_poll_waited();
    if let Some(w) = hc.driver.take() {
        w.wake();
    }
}

/// `GET /hubs/{hub}?id=…` without an upgrade or an event-stream Accept.
pub async fn poll(
    shard: &Rc<Shard>,
    req: &Request<Incoming>,
    hub: &HubDef,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, HttpFault> {
    let token = admission::token(shard, hub, id).ok_or(HttpFault::ConnectionNotFound)?;
    let owner = match shard.node.registry.state(token.id) {
        IdState::Ended => return Ok(reply(PollReply::Gone)),
        IdState::Active {
            transport: TransportKind::LongPolling,
            shard: owner,
        } => owner,
        IdState::Active { .. } => return Err(HttpFault::TransportChanged),
        IdState::Unknown => {
            start(shard, hub, req.headers(), query, id)?;
            shard.id
        }
    };
    let (tx, rx) = oneshot::channel();
    shard
        .run_on(owner, move |owner| on_poll(owner, token.id, tx))
        .await;
    Ok(reply(rx.await.unwrap_or(PollReply::Gone)))
}

/// Starts the long-polling connection of token `id` on this shard: its first poll, or a
/// POST that came before it.
pub fn start(
    shard: &Rc<Shard>,
    hub: &HubDef,
    headers: &http::HeaderMap,
    query: Option<&str>,
    id: &str,
) -> Result<(), HttpFault> {
    let accepted = admission::accept(shard, hub, headers, query, Some(id))?;
    admission::claim(shard, &accepted, TransportKind::LongPolling)?;
    let hc = http_conn::create(shard, accepted, TransportKind::LongPolling);
    tokio::task::spawn_local(drive(hc));
    Ok(())
}

/// `DELETE /hubs/{hub}?id=…`: the client ends its long-polling connection (202).
pub async fn delete(
    shard: &Rc<Shard>,
    hub: &HubDef,
    id: &str,
) -> Result<Response<Body>, HttpFault> {
    let token = admission::token(shard, hub, id).ok_or(HttpFault::ConnectionNotFound)?;
    let owner = match shard.node.registry.state(token.id) {
        IdState::Active {
            transport: TransportKind::LongPolling,
            shard: owner,
        } => owner,
        // Other transports end by closing their socket or event stream.
        IdState::Active { transport, .. } => {
            return Err(HttpFault::MethodNotAllowed {
                method: "DELETE".into(),
                allow: if transport == TransportKind::WebSockets {
                    "GET"
                } else {
                    "GET, POST"
                }
                .into(),
            });
        }
        IdState::Ended | IdState::Unknown => return Err(HttpFault::ConnectionNotFound),
    };
    shard
        .on_shard(owner, move |owner| {
            if let Some(hc) = http_conn::get(owner, token.id) {
                hc.conn.request_close(CloseReason::ClientClosed);
                hc.finish();
            }
        })
        .await;
    Ok(status(StatusCode::ACCEPTED))
}

enum Wake {
    Deliver,
    Closing,
    /// The waiting poll's request went away unanswered.
    Abandoned,
    Timer,
}

/// The owner's side of one long-polling connection: answers the waiting poll when messages
/// arrive or its timeout passes, delivers the Close message, and closes a client that stopped
/// polling.
pub async fn drive(hc: Rc<HttpConn>) {
    let disconnect = Duration::from_millis(hc.shard.node.config.connections.disconnect_timeout_ms);
    loop {
        if hc.is_finished() {
            return;
        }
        let waiting = hc.pending.borrow().is_some();
        let deadline = if waiting {
            hc.deadline.get()
        } else {
            hc.last_poll.get() + disconnect
        };
        let event = tokio::select! {
            event = poll_fn(|cx| {
                hc.conn.register(cx.waker());
                hc.driver.set(Some(cx.waker().clone()));
                if hc.is_finished() {
                    return Poll::Ready(Wake::Timer);
                }
                if hc.conn.is_closing() && !hc.close_queued.get() {
                    return Poll::Ready(Wake::Closing);
                }
                if hc.pending.borrow().is_some() != waiting {
                    return Poll::Ready(Wake::Timer);
                }
                if waiting && hc.conn.has_queued() {
                    return Poll::Ready(Wake::Deliver);
                }
                if waiting
                    && hc
                        .pending
                        .borrow_mut()
                        .as_mut()
                        .is_some_and(|tx| tx.poll_closed(cx).is_ready())
                {
                    return Poll::Ready(Wake::Abandoned);
                }
                Poll::Pending
            }) => event,
            () = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
        };
        match event {
            Wake::Deliver | Wake::Closing => {
                if hc.conn.is_closing() {
                    hc.queue_close();
                }
                let waiting = hc.pending.borrow_mut().take();
                if let Some(tx) = waiting {
                    hc.last_poll.set(Instant::now());
                    let _ = tx.send(PollReply::Data(take_all(&hc)));
                    if hc.conn.is_closing() {
                        hc.finish();
                    }
                }
            }
            Wake::Abandoned => {
                // The client dropped its poll (a closed tab): it has stopped polling now, not
                // when the poll would have timed out.
                hc.pending.borrow_mut().take();
                hc.last_poll.set(Instant::now());
            }
            Wake::Timer => {
                let now = Instant::now();
                let waiting = hc.pending.borrow().is_some();
                if waiting && now >= hc.deadline.get() {
                    let tx = hc.pending.borrow_mut().take();
                    if let Some(tx) = tx {
                        hc.last_poll.set(Instant::now());
                        let _ = tx.send(PollReply::Empty);
                    }
                } else if !waiting && now >= hc.last_poll.get() + disconnect {
                    // The client stopped polling (or never read its Close message).
                    if !hc.conn.is_closing() {
                        hc.conn.request_close(CloseReason::ClientGone);
                    }
                    hc.finish();
                    return;
                }
            }
        }
    }
}
