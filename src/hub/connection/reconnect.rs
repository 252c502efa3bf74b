//! Stateful reconnect, as the connection keeps it: what was sent and not acknowledged, what was
//! received, and the wait for the client to come back on a new transport.

use std::time::Instant;

use super::Connection;
use super::replay::Replay;
use crate::protocol::TransportKind;

impl Connection {
    /// Records that negotiate agreed to stateful reconnect for this connection.
    pub fn allow_stateful(&self) {
        self.may_be_stateful
            .set(self.transport == TransportKind::WebSockets);
    }

    pub fn may_be_stateful(&self) -> bool {
        self.may_be_stateful.get()
    }

    /// Turns stateful reconnect on (a version 2 handshake on a connection that negotiated
    /// it), keeping up to `limit` bytes of unacknowledged messages.
    pub fn enable_replay(&self, limit: usize) {
        *self.replay.borrow_mut() = Some(Replay::new(limit));
    }

    pub fn is_stateful(&self) -> bool {
        self.replay.borrow().is_some()
    }

    /// Whether unacknowledged messages fill the replay buffer: the transport stops writing
    /// until the client acknowledges (and the queue behind closes a client that never does).
    pub fn replay_full(&self) -> bool {
        self.replay.borrow().as_ref().is_some_and(Replay::is_full)
    }

    /// The client acknowledged everything up to `sequence_id`.
    pub fn ack(&self, sequence_id: u64) {
        if let Some(replay) = self.replay.borrow_mut().as_mut() {
            replay.ack(sequence_id);
        }
        self.wake();
    }

    /// Calls `f` with the replay buffer (stateful connections only).
    pub fn with_replay<R>(&self, f: impl FnOnce(&Replay) -> R) -> Option<R> {
        self.replay.borrow().as_ref().map(f)
    }

    /// Counts a trackable message received; false if it is a duplicate to drop (after a
    /// reconnect) or arrives before the client's Sequence message.
    pub fn receive_trackable(&self) -> bool {
        if self.awaiting_sequence.get() {
            return false;
        }
        if self.skip.get() > 0 {
            self.skip.set(self.skip.get() - 1);
            return false;
        }
        self.received.set(self.received.get() + 1);
        true
    }

    /// The client's Sequence message after a reconnect: its next message has `sequence_id`.
    /// An id past what was received is fatal.
    pub fn client_sequence(&self, sequence_id: u64) -> Result<(), u64> {
        let next = self.received.get() + 1;
        if sequence_id > next {
            return Err(next);
        }
        self.awaiting_sequence.set(false);
        self.skip.set(next - sequence_id);
        Ok(())
    }

    /// Whether messages arriving now are ignored until the client's Sequence message.
    pub fn awaiting_sequence(&self) -> bool {
        self.awaiting_sequence.get()
    }

    /// The Ack due to the client, if it has sent messages since the last one.
    pub fn ack_due(&self) -> Option<u64> {
        let received = self.received.get();
        (self.is_stateful() && received > self.acked_received.get()).then(|| {
            self.acked_received.set(received);
            received
        })
    }

    /// The transport went away; the connection waits for a reconnect.
    pub fn disconnect(&self, now: Instant) {
        self.disconnected.set(Some(now));
        self.superseded.set(false);
        self.outbound.borrow_mut().rewind();
        self.wake();
    }

    /// No more waiting for the client: the connection is being taken down.
    pub fn stop_waiting(&self) {
        self.disconnected.set(None);
    }

    pub fn disconnected_since(&self) -> Option<Instant> {
        self.disconnected.get()
    }

    /// A transport took the connection back after a reconnect: the client's next messages
    /// start with its Sequence message.
    pub fn resume(&self, now: Instant) {
        self.disconnected.set(None);
        self.awaiting_sequence.set(true);
        self.last_received.set(now);
    }

    /// Asks the current transport to let go (a reconnect arrived while it still runs).
    pub fn supersede(&self) {
        self.superseded.set(true);
        self.wake();
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded.get()
    }
}
