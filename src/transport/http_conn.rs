//! Connections served over plain HTTP requests — Server-Sent Events and long polling. Their
//! session (handshake, partial messages) lives on the shard that owns them; a POST or a poll
//! that reaches another shard is relayed there through its inbox, and its answer comes back.
//!
//! A POST body streams into the session piece by piece as it arrives, each piece dispatched
//! before the next is read, so a body of any size (the official clients send a burst of
//! invocations as one POST) costs no more than one piece; and while the connection's own
//! queue is backed up the next piece waits, so TCP pushes back on the client.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::endpoint::{self, Accepted};
use super::http::{Body, TimedBody, status};
use super::inflow;
use super::longpoll::{self, PollReply};
use super::session::Session;
use crate::fault::{CloseReason, HttpFault};
use crate::hub::connection::Attachment;
use crate::hub::definition::HubDef;
use crate::hub::node::IdState;
use crate::hub::{Connection, ConnectionId, Encoded, Shard, TransportKind};
use crate::protocol::HubMessage;

/// A connection served over HTTP requests, on the shard that owns it.
pub struct HttpConn {
    pub shard: Rc<Shard>,
    pub conn: Rc<Connection>,
    /// Taken while a piece of a POST body is being handled.
    session: RefCell<Option<Session>>,
    /// A POST body is being read: a concurrent POST is refused (409).
    posting: Cell<bool>,
    /// Until when the id stays unusable after the connection ends.
    pub until: Option<Instant>,
    /// Long polling: the poll waiting for data, and when it must be answered empty.
    pub pending: RefCell<Option<oneshot::Sender<PollReply>>>,
    pub deadline: Cell<Instant>,
    /// Long polling: when the last poll was answered (a client that stops polling is closed
    /// after the disconnect timeout).
    pub last_poll: Cell<Instant>,
    pub first_poll_done: Cell<bool>,
    /// The transport's own task (the long-polling driver), woken when a poll arrives.
    pub driver: Cell<Option<Waker>>,
    /// Whether the Close message has been queued (once closing).
    pub close_queued: Cell<bool>,
    finished: Cell<bool>,
}

/// The HTTP-served connection `id`, on its shard.
pub fn get(shard: &Shard, id: ConnectionId) -> Option<Rc<HttpConn>> {
    shard.attachment::<HttpConn>(id)
}

/// Creates the connection for a claimed id on this shard.
pub fn create(shard: &Rc<Shard>, accepted: Accepted, transport: TransportKind) -> Rc<HttpConn> {
    let limits = &shard.node.config.connections;
    let conn = Rc::new(Connection::new(
        accepted.id,
        accepted.hub,
        accepted.user,
        transport,
        limits.outbound_queue_bytes,
    ));
    shard.attach(conn.clone());
    if shard.node.is_shutting_down() {
        conn.request_close(CloseReason::ServerShutdown);
    }
    let now = Instant::now();
    let hc = Rc::new(HttpConn {
        shard: shard.clone(),
        session: RefCell::new(Some(Session::new(shard.clone(), conn.clone()))),
        posting: Cell::new(false),
        conn,
        until: accepted.until,
        pending: RefCell::new(None),
        deadline: Cell::new(now),
        last_poll: Cell::new(now),
        first_poll_done: Cell::new(false),
        driver: Cell::new(None),
        close_queued: Cell::new(false),
        finished: Cell::new(false),
    });
    hc.conn.attach(hc.clone());
    shard
        .node
        .backplane
        .claimed(hc.conn.id, hc.conn.hub, hc.conn.user.clone());
    hc
}

impl Attachment for HttpConn {
    fn receive_forwarded(self: Rc<Self>, payload: Bytes) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            // Not held back by the connection's queue: the backplane's reader waits for this,
            // and must not wait for one client.
            if let Err(e) = receive(&self.shard, self.conn.id, payload, false).await {
                tracing::debug!(connection = %self.conn.id, "forwarded data refused: {e}");
            }
        })
    }
}

impl HttpConn {
    /// Queues the Close message once the connection is closing (if its handshake succeeded
    /// and the reason calls for one), for the transport to deliver last.
    pub fn queue_close(&self) {
        if self.close_queued.replace(true) {
            return;
        }
        let Some(reason) = self.conn.close_reason() else {
            return;
        };
        if self.conn.was_opened()
            && let Some((error, allow_reconnect)) = reason.close_message()
        {
            let close = HubMessage::Close {
                error,
                allow_reconnect,
            };
            self.conn
                .send_final(&Encoded::message(&close, self.conn.protocol()));
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished.get()
    }

    /// Ends the connection: it leaves the shard and the hub; a waiting poll gets 204.
    pub fn finish(self: &Rc<Self>) {
        if self.finished.replace(true) {
            return;
        }
        let reason = self.conn.close_reason().unwrap_or(CloseReason::ClientGone);
        self.conn.request_close(reason.clone());
        let waiting = self.pending.borrow_mut().take();
        if let Some(poll) = waiting {
            let _ = poll.send(PollReply::Gone);
        }
        if let Some(w) = self.driver.take() {
            w.wake();
        }
        self.conn.detach();
        let hc = self.clone();
        tokio::task::spawn_local(async move {
            hc.shard.detach(&hc.conn, &reason, hc.until).await;
        });
    }
}

/// Feeds a piece of a POST body to the connection's session, on the owning shard — with
/// `wait`, once the connection may be read (its own queue drained below the low watermark,
/// the node within its input budget).
async fn receive(
    shard: &Shard,
    id: ConnectionId,
    piece: Bytes,
    wait: bool,
) -> Result<(), HttpFault> {
    let hc = get(shard, id).ok_or(HttpFault::ConnectionNotFound)?;
    let Some(mut session) = hc.session.borrow_mut().take() else {
        return Err(HttpFault::ConnectionActive);
    };
    let readable = if wait {
        inflow::readable(&hc.shard, &hc.conn, session.has_partial()).await
    } else {
        Ok(())
    };
    let outcome = match readable {
        Ok(()) => {
            hc.conn.touch_received(hc.shard.coarse_now());
            hc.shard.metrics.bytes_in(piece.len());
            let outcome = session.receive(&piece).await;
            // As for a WebSocket: what a piece published reaches the other shards before
            // the next piece is read (`Shard::delivered_everywhere`).
            if wait && hc.conn.has_published() && hc.shard.node.shards() > 1 {
                hc.shard.delivered_everywhere().await;
            }
            outcome
        }
        // Closing meanwhile: what remains of the body is of no use.
        Err(()) => Ok(()),
    };
    *hc.session.borrow_mut() = Some(session);
    if let Err(reason) = outcome {
        hc.conn.request_close(reason);
    }
    Ok(())
}

/// Marks the start (`true`) or end of a POST body for connection `id`, on its shard; a
/// second POST while one is being read is refused.
fn posting(shard: &Shard, id: ConnectionId, start: bool) -> Result<(), HttpFault> {
    let hc = get(shard, id).ok_or(HttpFault::ConnectionNotFound)?;
    if start && hc.posting.replace(true) {
        return Err(HttpFault::ConnectionActive);
    }
    if !start {
        hc.posting.set(false);
    }
    Ok(())
}

/// Runs `f` on shard `owner` and returns its answer.
async fn on_owner<R: Send + 'static>(
    shard: &Rc<Shard>,
    owner: usize,
    f: impl FnOnce(&Shard) -> R + Send + 'static,
) -> Option<R> {
    let (tx, rx) = oneshot::channel();
    shard
        .run_on(owner, move |owner| {
            let _ = tx.send(f(owner));
        })
        .await;
    rx.await.ok()
}

/// `POST /hubs/{hub}?id=…`: data from a Server-Sent Events or long-polling client.
pub async fn send(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    hub: &HubDef,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, HttpFault> {
    let token = endpoint::token(shard, hub, id).ok_or(HttpFault::ConnectionNotFound)?;
    let timeout = Duration::from_millis(shard.node.config.server.body_timeout_ms);
    let owner = match shard.node.registry.state(token.id) {
        IdState::Ended => return Err(HttpFault::ConnectionNotFound),
        IdState::Active {
            transport: TransportKind::WebSockets,
            ..
        } => return Err(HttpFault::PostOnWebSocket),
        IdState::Active { shard: owner, .. } => owner,
        IdState::Unknown => {
            // Held by another node of the cluster: the data goes there, piece by piece, in
            // order.
            let backplane = &shard.node.backplane;
            if backplane.await_remote(token.id).await {
                let mut body = TimedBody::new(req.into_body(), timeout);
                while let Some(piece) = body.next().await? {
                    backplane.forward(hub.id, token.id, piece.to_vec());
                }
                return Ok(status(StatusCode::OK));
            }
            // A long-polling client may post its handshake before its first poll.
            if !hub.transports.contains(&TransportKind::LongPolling) {
                return Err(HttpFault::ConnectionNotFound);
            }
            longpoll::start(shard, hub, req.headers(), query, id)?;
            shard.id
        }
    };
    let id = token.id;
    on_owner(shard, owner, move |owner| posting(owner, id, true))
        .await
        .unwrap_or(Err(HttpFault::ConnectionNotFound))?;
    let mut body = TimedBody::new(req.into_body(), timeout);
    let outcome = async {
        while let Some(piece) = body.next().await? {
            let (tx, rx) = oneshot::channel();
            shard
                .run_on(owner, move |owner| {
                    let owner = owner.clone();
                    tokio::task::spawn_local(async move {
                        let _ = tx.send(receive(&owner, id, piece, true).await);
                    });
                })
                .await;
            rx.await.unwrap_or(Err(HttpFault::ConnectionNotFound))?;
        }
        Ok(())
    }
    .await;
    on_owner(shard, owner, move |owner| posting(owner, id, false)).await;
    outcome.map(|()| status(StatusCode::OK))
}
