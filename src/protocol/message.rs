//! The nine hub message types, independent of their encoding.

use super::value::Value;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// A method with no return value.
    Void,
    /// A method's return value, which the client's `invoke` promise resolves with.
    Result(Value),
    /// A failed call; the text reaches the caller's code, so it never carries server internals.
    Error(String),
}

/// A SignalR hub message (the protocol's nine types), the one shape both codecs decode into
/// and encode from, so the hub never depends on the encoding a client chose.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1. Without an `invocation_id` the caller expects no answer.
    Invocation {
        /// Set when the caller awaits a Completion with this id.
        invocation_id: Option<String>,
        /// The hub method called (case-insensitive on the server, as in ASP.NET).
        target: String,
        /// The method's arguments, in order.
        arguments: Vec<Value>,
        /// Ids of client-to-server streams that feed the call's stream parameters.
        stream_ids: Vec<String>,
    },
    /// Type 2: one item of a stream.
    StreamItem {
        /// The invocation (or client stream id) the item belongs to.
        invocation_id: String,
        /// The item.
        item: Value,
    },
    /// Type 3: the end of an invocation or of a stream.
    Completion {
        /// The invocation that ended.
        invocation_id: String,
        /// How it ended.
        completion: Completion,
    },
    /// Type 4: a call whose results come back as stream items.
    StreamInvocation {
        /// The id the stream items and the final Completion carry.
        invocation_id: String,
        /// The hub method called.
        target: String,
        /// The method's arguments, in order.
        arguments: Vec<Value>,
        /// Ids of client-to-server streams that feed the call's stream parameters.
        stream_ids: Vec<String>,
    },
    /// Type 5: the client stops a server-to-client stream.
    CancelInvocation {
        /// The stream invocation to stop.
        invocation_id: String,
    },
    /// Type 6: a keep-alive, sent when there is nothing else to send, so the peer's timeout
    /// does not fire on an idle connection.
    Ping,
    /// Type 7. `allow_reconnect` tells the client's automatic-reconnect policy to run.
    Close {
        /// Why the connection closed, shown to the client; `None` for a clean close.
        error: Option<String>,
        /// Whether the client should reconnect (a shutdown: yes; a protocol error: no).
        allow_reconnect: bool,
    },
    /// Type 8: everything up to `sequence_id` was received (stateful reconnect).
    Ack {
        /// The last message received, which the sender may drop from its replay buffer.
        sequence_id: u64,
    },
    /// Type 9: the next message carries `sequence_id` (stateful reconnect).
    Sequence {
        /// The number of the next message, from which a resumed connection replays.
        sequence_id: u64,
    },
}

impl HubMessage {
    /// The wire type number.
    pub fn type_id(&self) -> u8 {
        match self {
            HubMessage::Invocation { .. } => 1,
            HubMessage::StreamItem { .. } => 2,
            HubMessage::Completion { .. } => 3,
            HubMessage::StreamInvocation { .. } => 4,
            HubMessage::CancelInvocation { .. } => 5,
            HubMessage::Ping => 6,
            HubMessage::Close { .. } => 7,
            HubMessage::Ack { .. } => 8,
            HubMessage::Sequence { .. } => 9,
        }
    }
}
