//! Connections served over plain HTTP requests — Server-Sent Events and long polling: what
//! the transport keeps beside such a connection, on the shard that owns it. The connection
//! finds it again through the shard's registry ([`crate::hub::connection::Attachment`]); a
//! POST ([`super::post`]) or a poll ([`super::longpoll`]) that reaches another shard is
//! relayed there through its inbox, and its answer comes back.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::admission::Accepted;
use super::session::Session;
use crate::fault::CloseReason;
use crate::hub::{Connection, ConnectionId, Encoded, Shard, TransportKind};
use crate::protocol::HubMessage;

/// How the owning shard answers a poll.
#[derive(Debug)]
pub enum PollReply {
    /// Everything queued, in one body.
    Data(Bytes),
    /// Nothing within the poll timeout (or the first poll).
    Empty,
    /// The connection is over, or a newer poll took over: 204.
    Gone,
}

/// A connection served over HTTP requests, on the shard that owns it.
pub struct HttpConn {
    pub shard: Rc<Shard>,
    pub conn: Rc<Connection>,
    /// Taken while a piece of a POST body is being handled.
    pub(super) session: RefCell<Option<Session>>,
    /// A POST body is being read: a concurrent POST is refused (409).
    pub(super) posting: Cell<bool>,
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
