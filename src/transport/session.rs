//! A connection's inbound side, whatever its transport: the SignalR handshake, then hub
//! messages split out of the bytes the client sends, each handed to the dispatcher.
//!
//! Bytes arrive in whatever pieces the transport read them in; each complete message is
//! dispatched at once, and only an unfinished one is kept (at most
//! `connections.max_message_bytes`, counted in the node's input budget), so a transport
//! message of any size — a burst of hundreds of invocations — costs no more than one message.

use std::rc::Rc;

use crate::fault::CloseReason;
use crate::hub::dispatch::dispatch;
use crate::hub::{Connection, Encoded, Shard};
use crate::protocol::stream::{Framing, Oversized, Splitter};
use crate::protocol::{HubMessage, Protocol, ProtocolError, handshake};

pub struct Session {
    shard: Rc<Shard>,
    conn: Rc<Connection>,
    handshaken: bool,
    splitter: Splitter,
}

impl Session {
    pub fn new(shard: Rc<Shard>, conn: Rc<Connection>) -> Session {
        let limit = shard.node.config.connections.max_message_bytes;
        Session {
            shard,
            conn,
            handshaken: false,
            splitter: Splitter::new(Framing::Separated, limit),
        }
    }

    /// A session for a connection resumed after a reconnect: the handshake is long done.
    pub fn resumed(shard: Rc<Shard>, conn: Rc<Connection>) -> Session {
        let mut session = Session::new(shard, conn);
        session.handshaken = true;
        session
            .splitter
            .set_framing(Framing::of(session.conn.protocol()));
        session
    }

    pub fn handshaken(&self) -> bool {
        self.handshaken
    }

    /// Whether part of a message is held, waiting for the rest.
    pub fn has_partial(&self) -> bool {
        self.splitter.pending() > 0
    }

    /// Feeds bytes from the client: every message they complete is dispatched, in order,
    /// before this returns. An `Err` means the connection must close for that reason (a
    /// failed handshake has already queued its error answer); the messages before the one
    /// at fault have been dispatched.
    pub async fn receive(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        let before = self.splitter.pending();
        let outcome = self.split(bytes).await;
        let after = self.splitter.pending();
        self.shard.node.input.change(before, after);
        outcome
    }

    async fn split(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        let mut input = bytes;
        if !self.handshaken {
            let record = match self.splitter.next(&mut input) {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(Oversized { limit }) => {
                    return Err(self.refuse(handshake::HandshakeError::TooLarge(limit)));
                }
            };
            let request = match handshake::decode_request(&record, usize::MAX) {
                Ok(Some((request, _))) => request,
                Ok(None) => unreachable!("a record ends with its separator"),
                Err(e) => return Err(self.refuse(e)),
            };
            let protocol = match request.select_for(self.conn.transport.carries_binary()) {
                Ok(protocol) => protocol,
                Err(e) => return Err(self.refuse(e)),
            };
            let answer = Encoded::raw(&handshake::encode_response(None), protocol);
            self.conn.send(&answer).map_err(|_| self.conn.refusal())?;
            // Version 2 turns stateful reconnect on, if negotiate agreed to it.
            if request.version >= 2 && self.conn.may_be_stateful() {
                let limit = self
                    .shard
                    .node
                    .config
                    .connections
                    .stateful_reconnect_buffer_bytes;
                self.conn.enable_replay(limit);
            }
            self.handshaken = true;
            self.splitter.set_framing(Framing::of(protocol));
            self.shard.open(&self.conn, protocol).await;
        }
        let protocol = self.conn.protocol();
        loop {
            let record = match self.splitter.next(&mut input) {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(Oversized { limit }) => {
                    return Err(CloseReason::Protocol(ProtocolError::TooLarge { limit }));
                }
            };
            let message = match protocol.decode(&record, usize::MAX) {
                Ok(Some((message, _))) => message,
                Ok(None) => unreachable!("a record is one whole message"),
                Err(e) => return Err(CloseReason::Protocol(e)),
            };
            drop(record);
            if self.conn.is_stateful() && !self.sequence(&message)? {
                continue;
            }
            dispatch(&self.shard, &self.conn, message).await?;
        }
    }

    /// Stateful reconnect's bookkeeping of one incoming message: numbers trackable ones,
    /// drops duplicates replayed after a reconnect (and everything before the client's
    /// Sequence message), applies Acks and Sequences. Returns whether to dispatch it.
    fn sequence(&mut self, message: &HubMessage) -> Result<bool, CloseReason> {
        match message {
            HubMessage::Sequence { sequence_id } => {
                self.conn
                    .client_sequence(*sequence_id)
                    .map_err(|_| CloseReason::Protocol(ProtocolError::Sequence(*sequence_id)))?;
                Ok(false)
            }
            HubMessage::Ack { sequence_id } => {
                self.conn.ack(*sequence_id);
                Ok(false)
            }
            m if (1..=5).contains(&m.type_id()) => Ok(self.conn.receive_trackable()),
            _ => Ok(!self.conn.awaiting_sequence()),
        }
    }

    fn refuse(&mut self, error: handshake::HandshakeError) -> CloseReason {
        let answer = Encoded::raw(
            &handshake::encode_response(Some(&error.to_string())),
            Protocol::Json,
        );
        let _ = self.conn.send(&answer);
        CloseReason::Handshake(error)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shard.node.input.change(self.splitter.pending(), 0);
    }
}
