//! The nine hub message types, independent of their encoding.

use super::value::Value;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// A method with no return value.
    Void,
    Result(Value),
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1. Without an `invocation_id` the caller expects no answer.
    Invocation {
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
    },
    /// Type 2.
    StreamItem { invocation_id: String, item: Value },
    /// Type 3.
    Completion {
        invocation_id: String,
        completion: Completion,
    },
    /// Type 4.
    StreamInvocation {
        invocation_id: String,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
    },
    /// Type 5.
    CancelInvocation { invocation_id: String },
    /// Type 6.
    Ping,
    /// Type 7. `allow_reconnect` tells the client's automatic-reconnect policy to run.
    Close {
        error: Option<String>,
        allow_reconnect: bool,
    },
    /// Type 8: everything up to `sequence_id` was received (stateful reconnect).
    Ack { sequence_id: u64 },
    /// Type 9: the next message carries `sequence_id` (stateful reconnect).
    Sequence { sequence_id: u64 },
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
