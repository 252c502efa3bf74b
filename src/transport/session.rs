//! A connection's inbound side, whatever its transport: the SignalR handshake, then hub
//! messages split out of the bytes the client sends, each handed to the dispatcher.

use std::rc::Rc;

use crate::fault::CloseReason;
use crate::hub::dispatch::dispatch;
use crate::hub::{Connection, Encoded, Shard};
use crate::protocol::{HubMessage, Protocol, ProtocolError, RECORD_SEPARATOR, handshake};

pub struct Session {
    shard: Rc<Shard>,
    conn: Rc<Connection>,
    handshaken: bool,
    /// Bytes of an unfinished message; unallocated between whole messages.
    pending: Vec<u8>,
}

impl Session {
    pub fn new(shard: Rc<Shard>, conn: Rc<Connection>) -> Session {
        Session {
            shard,
            conn,
            handshaken: false,
            pending: Vec::new(),
        }
    }

    /// A session for a connection resumed after a reconnect: the handshake is long done.
    pub fn resumed(shard: Rc<Shard>, conn: Rc<Connection>) -> Session {
        Session {
            shard,
            conn,
            handshaken: true,
            pending: Vec::new(),
        }
    }

    pub fn handshaken(&self) -> bool {
        self.handshaken
    }

    /// Feeds bytes from the client. An `Err` means the connection must close for that reason
    /// (a failed handshake has already queued its error answer).
    pub async fn receive(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        let limit = self.shard.node.config.connections.max_message_bytes;
        // Bytes that cannot complete the unfinished message are appended without parsing
        // again what was already seen.
        if !self.pending.is_empty() && !self.completes(bytes) {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() > limit {
                return Err(if self.handshaken {
                    CloseReason::Protocol(ProtocolError::TooLarge { limit })
                } else {
                    self.refuse(handshake::HandshakeError::TooLarge(limit))
                });
            }
            return Ok(());
        }
        let mut owned = Vec::new();
        let mut buf: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            owned = std::mem::take(&mut self.pending);
            owned.extend_from_slice(bytes);
            &owned
        };
        if !self.handshaken {
            let request = match handshake::decode_request(buf, limit) {
                Ok(Some(request)) => request,
                Ok(None) => {
                    self.keep(buf);
                    return Ok(());
                }
                Err(e) => return Err(self.refuse(e)),
            };
            let (request, used) = request;
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
            self.shard.open(&self.conn, protocol).await;
            buf = &buf[used..];
        }
        let protocol = self.conn.protocol();
        loop {
            match protocol.decode(buf, limit) {
                Ok(Some((message, used))) => {
                    buf = &buf[used..];
                    if self.conn.is_stateful() && !self.sequence(&message)? {
                        continue;
                    }
                    dispatch(&self.shard, &self.conn, message).await?;
                }
                Ok(None) => break,
                Err(e) => return Err(CloseReason::Protocol(e)),
            }
        }
        self.keep(buf);
        drop(owned);
        Ok(())
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

    /// Whether `more` may complete the message waiting in `pending`: text messages end at a
    /// separator; a MessagePack message's length prefix says how many bytes it needs.
    fn completes(&self, more: &[u8]) -> bool {
        if !self.handshaken || self.conn.protocol() == Protocol::Json {
            return more.contains(&RECORD_SEPARATOR);
        }
        let mut prefix = 0usize;
        let mut len = 0usize;
        for (i, b) in self.pending.iter().take(5).enumerate() {
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                prefix = i + 1;
                break;
            }
        }
        prefix == 0 || self.pending.len() + more.len() >= prefix + len
    }

    fn keep(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.pending.extend_from_slice(rest);
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
