//! A client connection as the hub sees it: identity, groups, phase, flow control and a
//! bounded outbound queue ([`outbound`]), with stateful reconnect's `replay` buffer.
//!
//! A `Connection` lives on the shard that owns it and is shared only within that thread
//! (`Rc`), so nothing here locks. It knows its transport's kind only to choose the wire form
//! its queue holds (whole WebSocket frames, or bare protocol bytes that Server-Sent Events and
//! long polling frame themselves); whichever transport serves it drains the queue, and an HTTP
//! transport's own state hangs on it as an [`Attachment`].

mod flow;
mod id;
pub mod outbound;
mod reconnect;
mod replay;

use self::flow::Watch;
pub use self::id::{ConnectionId, IdBuildHasher, IdHasher};
use self::outbound::Outbound;
pub use self::outbound::{Drained, MAX_SLICES, Queued, Refused, Wire};
pub use self::replay::Replay;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use std::rc::Rc;

use super::definition::HubId;
use super::outgoing::Encoded;
use crate::fault::CloseReason;
use crate::metrics::Pause;
use crate::protocol::{Protocol, TransportKind};

/// The public id of a connection: 16 random bytes, written as 22 base64url characters, as
/// ASP.NET Core writes its connection ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the SignalR handshake; not yet in any hub index.
    Handshaking,
    /// In the hub: receives publishes and presence events.
    Open,
    /// A close was requested; the transport is finishing.
    Closing,
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Added,
    Already,
    /// The connection is in as many groups as it may be.
    Full,
}

pub struct Connection {
    pub id: ConnectionId,
    pub hub: HubId,
    pub user: Option<Arc<str>>,
    pub transport: TransportKind,
    protocol: Cell<Protocol>,
    phase: Cell<Phase>,
    close: RefCell<Option<CloseReason>>,
    outbound: RefCell<Outbound>,
    cap: usize,
    waker: Cell<Option<Waker>>,
    /// A task waiting to read more from the client (a POST body paused by backpressure).
    input_waker: Cell<Option<Waker>>,
    /// Reading from the client is paused, why and since when.
    input_paused: Cell<Option<(Pause, Instant)>>,
    /// Set once the connection is on a shard: how its queue counts toward its hub's pressure.
    watch: std::cell::OnceCell<Watch>,
    /// The queue is backed up (above the high watermark, not yet down to the low one).
    backed_up: Cell<bool>,
    /// It published since Herald last looked (it may have to wait for its recipients).
    published: Cell<bool>,
    /// Waiting for backed-up recipients: since when no recipient made progress, and the
    /// hub's progress count then.
    recipient_progress: Cell<Option<(Instant, u64)>>,
    /// It waited the longest allowed without any progress: it goes on until a recipient
    /// makes progress again (the hub's progress count moves past this one).
    pressure_exempt: Cell<Option<u64>>,
    groups: RefCell<HashSet<Arc<str>>>,
    /// Leaves without a `left` event (the whole hub is being closed).
    silent: Cell<bool>,
    /// The handshake succeeded at some point (the phase says Closing once closing).
    opened: Cell<bool>,
    /// Stateful reconnect: what was sent and not acknowledged (`None` when off).
    replay: RefCell<Option<Replay>>,
    /// Stateful reconnect: trackable messages received from the client and processed.
    received: Cell<u64>,
    /// …of which the client has been told (by an Ack).
    acked_received: Cell<u64>,
    /// Stateful reconnect: after a reconnect, incoming messages are ignored until the
    /// client's Sequence message, and then this many are duplicates to drop.
    awaiting_sequence: Cell<bool>,
    skip: Cell<u64>,
    /// Stateful reconnect: when the transport went away (the connection waits for the
    /// client to come back, up to the disconnect timeout).
    disconnected: Cell<Option<Instant>>,
    /// A reconnect wants this connection's transport to let go.
    superseded: Cell<bool>,
    /// Negotiate agreed to stateful reconnect on a transport that supports it.
    may_be_stateful: Cell<bool>,
    pub opened_at: Instant,
    last_received: Cell<Instant>,
    last_sent: Cell<Instant>,
    stalled_since: Cell<Option<Instant>>,
    /// What the transport serving the connection keeps beside it (HTTP transports only).
    attachment: RefCell<Option<Rc<dyn Attachment>>>,
}

/// What a transport keeps beside a connection it serves over separate HTTP requests
/// (Server-Sent Events, long polling): found through the shard's one registry of connections,
/// and handed the data a client posted to another node of the cluster.
pub trait Attachment: Any {
    /// Data the client POSTed to another node, in the order it sent it.
    fn receive_forwarded(self: Rc<Self>, payload: Bytes) -> Pin<Box<dyn Future<Output = ()>>>;
}

impl Connection {
    pub fn new(
        id: ConnectionId,
        hub: HubId,
        user: Option<Arc<str>>,
        transport: TransportKind,
        cap: usize,
    ) -> Connection {
        let now = Instant::now();
        Connection {
            id,
            hub,
            user,
            transport,
            protocol: Cell::new(Protocol::Json),
            phase: Cell::new(Phase::Handshaking),
            close: RefCell::new(None),
            outbound: RefCell::new(Outbound::default()),
            cap,
            waker: Cell::new(None),
            input_waker: Cell::new(None),
            input_paused: Cell::new(None),
            watch: std::cell::OnceCell::new(),
            backed_up: Cell::new(false),
            published: Cell::new(false),
            recipient_progress: Cell::new(None),
            pressure_exempt: Cell::new(None),
            groups: RefCell::new(HashSet::default()),
            silent: Cell::new(false),
            opened: Cell::new(false),
            replay: RefCell::new(None),
            received: Cell::new(0),
            acked_received: Cell::new(0),
            awaiting_sequence: Cell::new(false),
            skip: Cell::new(0),
            disconnected: Cell::new(None),
            superseded: Cell::new(false),
            may_be_stateful: Cell::new(false),
            opened_at: now,
            last_received: Cell::new(now),
            last_sent: Cell::new(now),
            stalled_since: Cell::new(None),
            attachment: RefCell::new(None),
        }
    }

    /// Keeps the transport's state beside the connection until [`Connection::detach`].
    pub fn attach(&self, attachment: Rc<dyn Attachment>) {
        *self.attachment.borrow_mut() = Some(attachment);
    }

    /// The transport's state, while attached.
    pub fn attachment(&self) -> Option<Rc<dyn Attachment>> {
        self.attachment.borrow().clone()
    }

    /// Lets go of the transport's state (which holds the connection: this ends the cycle).
    pub fn detach(&self) -> Option<Rc<dyn Attachment>> {
        self.attachment.borrow_mut().take()
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol.get()
    }

    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// The handshake succeeded: the connection speaks `protocol` and joins the hub.
    pub fn open(&self, protocol: Protocol) {
        self.protocol.set(protocol);
        self.opened.set(true);
        if self.phase.get() == Phase::Handshaking {
            self.phase.set(Phase::Open);
        }
    }

    /// Whether the handshake succeeded (so a Close message is due when it ends).
    pub fn was_opened(&self) -> bool {
        self.opened.get()
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Which wire form the transport takes: 0, whole WebSocket frames; 1, protocol bytes
    /// alone (Server-Sent Events and long polling frame them themselves).
    pub fn wire_form(&self) -> usize {
        match self.transport {
            TransportKind::WebSockets => 0,
            TransportKind::ServerSentEvents | TransportKind::LongPolling => 1,
        }
    }

    /// The bytes of `message` in this connection's wire form, ready to queue.
    pub fn wire(&self, message: &Encoded) -> Wire {
        match self.transport {
            TransportKind::WebSockets => Rc::from(&message.frame()[..]),
            // Server-Sent Events and long polling frame the protocol bytes themselves.
            TransportKind::ServerSentEvents | TransportKind::LongPolling => {
                Rc::from(&message.payload()[..])
            }
        }
    }

    /// Queues the last thing this connection sends (its Close message), even though it is
    /// closing, for transports that deliver it from the queue.
    pub fn send_final(&self, message: &Encoded) {
        let bytes = self.wire(message);
        self.outbound.borrow_mut().push(Queued {
            bytes,
            published: None,
            trackable: false,
        });
        self.wake();
    }

    /// Queues a message for this connection alone (an answer, a ping).
    pub fn send(&self, message: &Encoded) -> Result<(), Refused> {
        self.push(self.wire(message), None, message.trackable())
    }

    /// Queues a published message's wire bytes, shared with other recipients; `published`
    /// is when it was published, for the publish→write latency.
    pub fn send_wire(&self, bytes: &Wire, published: Option<Instant>) -> Result<(), Refused> {
        self.push(bytes.clone(), published, true)
    }

    /// Queues bytes already in wire form (transport control frames such as pongs).
    pub fn push_raw(&self, bytes: &[u8]) -> Result<(), Refused> {
        self.push(Rc::from(bytes), None, false)
    }

    /// Why the connection ends after a refused send.
    pub fn refusal(&self) -> CloseReason {
        self.close_reason()
            .unwrap_or(CloseReason::SlowConsumer { cap: self.cap })
    }

    /// Queues `bytes`. An empty queue takes any message, however large (a message bigger than
    /// the cap is not a slow client); otherwise a message that would pass the cap closes the
    /// connection as a slow consumer.
    fn push(
        &self,
        bytes: Wire,
        published: Option<Instant>,
        trackable: bool,
    ) -> Result<(), Refused> {
        if self.close.borrow().is_some() {
            return Err(Refused::Closing);
        }
        let mut out = self.outbound.borrow_mut();
        if !out.fits(bytes.len(), self.cap) {
            drop(out);
            self.request_close(CloseReason::SlowConsumer { cap: self.cap });
            return Err(Refused::Overflow);
        }
        let was_empty = out.is_empty();
        let queued = out.push(Queued {
            bytes,
            published,
            trackable,
        });
        drop(out);
        // Not closing: `push` refuses bytes once the connection is.
        self.track_backlog(queued, false);
        if was_empty {
            self.wake();
        }
        Ok(())
    }

    /// Asks the transport to close the connection. The first reason wins. Unless the reason
    /// lets the client finish reading (shutdown, a REST close), queued messages are dropped.
    pub fn request_close(&self, reason: CloseReason) {
        let mut close = self.close.borrow_mut();
        if close.is_some() {
            return;
        }
        let keep_queue = matches!(
            reason,
            CloseReason::ServerShutdown
                | CloseReason::ClosedByServer(_)
                | CloseReason::Handshake(_)
        );
        *close = Some(reason);
        drop(close);
        self.phase.set(Phase::Closing);
        if !keep_queue {
            self.outbound.borrow_mut().drop_unstarted();
        }
        self.track_backlog(0, true);
        self.wake();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close.borrow().clone()
    }

    pub fn is_closing(&self) -> bool {
        self.close.borrow().is_some()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.borrow().bytes()
    }

    pub fn has_queued(&self) -> bool {
        !self.outbound.borrow().is_empty()
    }

    /// Calls `write` with the queued bytes, oldest first, as at most [`MAX_SLICES`] slices for
    /// one vectored write, and returns what it returns.
    pub fn with_queued<R>(&self, write: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
        self.outbound.borrow().with_slices(write)
    }

    /// The queued messages [`Connection::with_queued`] would hand to one write, shared.
    pub fn peek_wires(&self) -> Vec<Wire> {
        self.outbound.borrow().peek()
    }

    /// Removes `n` written bytes from the front of the queue; calls `on_message` with the
    /// publish time of every message fully written.
    /// `now` is when the bytes were written.
    pub fn consume(
        &self,
        n: usize,
        now: Instant,
        mut on_message: impl FnMut(Option<Instant>),
    ) -> Drained {
        let mut out = self.outbound.borrow_mut();
        let drained = out.consume(n, |item| {
            on_message(item.published);
            if item.trackable
                && let Some(replay) = self.replay.borrow_mut().as_mut()
            {
                replay.push(item.bytes);
            }
        });
        let queued = out.bytes();
        drop(out);
        if drained.bytes > 0 {
            self.last_sent.set(now);
            self.track_backlog(queued, self.is_closing());
            // A backed-up queue being written is progress for the publishers waiting on it,
            // even before it drains to the low watermark.
            if self.backed_up.get()
                && let Some(watch) = self.watch.get()
            {
                watch.pressure.progressed();
            }
            if self.input_paused.get().is_some() {
                self.wake_reader();
            }
        }
        drained
    }

    /// Registers the task to wake when something is queued or a close is requested.
    pub fn register(&self, waker: &Waker) {
        let current = self.waker.take();
        match current {
            Some(w) if w.will_wake(waker) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(waker.clone())),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        self.wake_reader();
    }

    fn wake_reader(&self) {
        if let Some(w) = self.input_waker.take() {
            w.wake();
        }
    }

    /// Registers a task that waits to read more from the client, woken as the queue drains
    /// or the connection closes.
    pub fn register_input(&self, waker: &Waker) {
        let current = self.input_waker.take();
        match current {
            Some(w) if w.will_wake(waker) => self.input_waker.set(Some(w)),
            _ => self.input_waker.set(Some(waker.clone())),
        }
    }

    /// Wakes whatever reads from the client, to look again at whether it may.
    pub fn wake_input(&self) {
        self.wake();
    }

    pub fn input_paused(&self) -> Option<(Pause, Instant)> {
        self.input_paused.get()
    }

    pub fn set_input_paused(&self, paused: Option<(Pause, Instant)>) {
        self.input_paused.set(paused);
    }

    pub fn touch_received(&self, now: Instant) {
        self.last_received.set(now);
    }

    pub fn last_received(&self) -> Instant {
        self.last_received.get()
    }

    pub fn last_sent(&self) -> Instant {
        self.last_sent.get()
    }

    /// Records whether the socket refused more bytes, for the send timeout.
    pub fn set_stalled(&self, stalled: bool, now: Instant) {
        match (stalled, self.stalled_since.get()) {
            (true, None) => self.stalled_since.set(Some(now)),
            (false, Some(_)) => self.stalled_since.set(None),
            _ => {}
        }
    }

    pub fn stalled_since(&self) -> Option<Instant> {
        self.stalled_since.get()
    }

    /// Remembers that the connection is in `group` (for clean-up), unless it already is in
    /// `max` groups.
    pub fn add_group(&self, group: &Arc<str>, max: usize) -> Joined {
        let mut groups = self.groups.borrow_mut();
        if groups.contains(group) {
            return Joined::Already;
        }
        if groups.len() >= max {
            return Joined::Full;
        }
        groups.insert(group.clone());
        Joined::Added
    }

    pub fn remove_group(&self, group: &str) -> bool {
        self.groups.borrow_mut().remove(group)
    }

    pub fn take_groups(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.groups.borrow_mut())
            .into_iter()
            .collect()
    }

    /// The connection will leave without a `left` event.
    pub fn set_silent(&self) {
        self.silent.set(true);
    }

    pub fn is_silent(&self) -> bool {
        self.silent.get()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.backed_up.get()
            && let Some(watch) = self.watch.get()
        {
            watch.pressure.fall();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(cap: usize) -> Connection {
        Connection::new(
            ConnectionId::random(),
            0,
            None,
            TransportKind::WebSockets,
            cap,
        )
    }

    #[test]
    fn queue_is_capped_in_bytes_and_partial_writes_are_tracked() {
        let c = conn(10);
        c.push_raw(b"abcd").unwrap();
        c.push_raw(b"efgh").unwrap();
        assert_eq!(c.queued_bytes(), 8);
        assert_eq!(c.with_queued(|s| s.len()), 2);
        let d = c.consume(5, Instant::now(), |_| {});
        assert_eq!(
            d,
            Drained {
                bytes: 5,
                messages: 1
            }
        );
        assert_eq!(c.with_queued(|s| s[0].to_vec()), b"fgh");
        assert_eq!(c.queued_bytes(), 3);
        // 3 + 8 > 10: the client is a slow consumer; the partly written item is kept.
        assert_eq!(c.push_raw(b"12345678"), Err(Refused::Overflow));
        assert_eq!(
            c.close_reason(),
            Some(CloseReason::SlowConsumer { cap: 10 })
        );
        assert_eq!(c.queued_bytes(), 3);
        // Nothing more is queued once closing.
        assert_eq!(c.push_raw(b"x"), Err(Refused::Closing));
        assert_eq!(c.queued_bytes(), 3);
    }

    #[test]
    fn written_trackable_messages_wait_in_the_replay_buffer_until_acked() {
        let c = conn(1 << 20);
        c.enable_replay(10);
        c.push(Rc::from(&b"aaaa"[..]), None, true).unwrap();
        c.push_raw(b"ping").unwrap();
        c.push(Rc::from(&b"bbbb"[..]), None, true).unwrap();
        c.consume(12, Instant::now(), |_| {});
        let (first, next, n) = c
            .with_replay(|r| (r.first(), r.next(), r.items().count()))
            .unwrap();
        assert_eq!((first, next, n), (1, 3, 2), "the ping is not numbered");
        assert!(!c.replay_full());
        c.push(Rc::from(&b"cccc"[..]), None, true).unwrap();
        c.consume(4, Instant::now(), |_| {});
        assert!(c.replay_full(), "12 bytes ≥ 10");
        c.ack(2);
        assert_eq!(c.with_replay(|r| (r.first(), r.next())).unwrap(), (3, 4));
        assert!(!c.replay_full());
        c.ack(99);
        assert_eq!(c.with_replay(|r| (r.first(), r.next())).unwrap(), (4, 4));
    }

    #[test]
    fn received_messages_are_counted_and_duplicates_dropped_after_a_reconnect() {
        let c = conn(1 << 20);
        c.enable_replay(100);
        assert!(c.receive_trackable());
        assert!(c.receive_trackable());
        assert_eq!(c.ack_due(), Some(2));
        assert_eq!(c.ack_due(), None);
        c.resume(Instant::now());
        assert!(!c.receive_trackable(), "ignored until Sequence");
        assert_eq!(c.client_sequence(5), Err(3), "beyond what was received");
        c.client_sequence(2).unwrap();
        assert!(!c.receive_trackable(), "message 2 again: a duplicate");
        assert!(c.receive_trackable(), "message 3 is new");
        assert_eq!(c.ack_due(), Some(3));
    }

    #[test]
    fn an_empty_queue_takes_a_message_larger_than_the_cap() {
        let c = conn(10);
        c.push_raw(&[0u8; 50]).unwrap();
        assert_eq!(c.close_reason(), None);
        assert_eq!(c.push_raw(b"x"), Err(Refused::Overflow));
    }
}
