//! The wire formats: the SignalR handshake, hub messages in JSON and MessagePack, the stream
//! of hub messages a transport carries, and WebSocket frames.
//!
//! Everything here is pure: bytes in, messages out (an incomplete message is a normal result,
//! not an error), and messages in, bytes out. Transports and the hub never see JSON; the hub
//! frames its fan-out messages once with the WebSocket codec, and transports read frames
//! with it, so neither imports the other.

// The codecs are the pieces other crates (the load generator, the fuzz targets) build on.
#![warn(missing_docs)]

pub mod frame;
pub mod handshake;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod stream;
pub mod transport;
pub mod value;

pub use message::{Completion, HubMessage};
pub use transport::TransportKind;
pub use value::{JsonNumber, Value};

/// Ends every JSON hub message and the handshake.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A hub protocol a connection may speak, chosen in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `json`: text records ended by [`RECORD_SEPARATOR`]; every client speaks it, and it is
    /// the only one Server-Sent Events can carry.
    Json,
    /// `messagepack`: length-prefixed binary, smaller and faster to parse, for clients that
    /// opt in over a binary transport.
    MessagePack,
}

impl Protocol {
    /// How many protocols there are, for per-protocol tables.
    pub const COUNT: usize = 2;

    /// Every protocol in [`Protocol::index`] order, so per-protocol tables (a shard's
    /// pre-encoded pings) can be filled and walked without missing one.
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// This protocol's slot in per-protocol tables.
    pub fn index(self) -> usize {
        match self {
            Protocol::Json => 0,
            Protocol::MessagePack => 1,
        }
    }

    /// The name a client asks for in its handshake.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// Whether the protocol needs a transport that carries binary.
    pub fn is_binary(self) -> bool {
        self == Protocol::MessagePack
    }

    /// Decodes the first message in `buf` (see [`json::decode`], [`msgpack::decode`]).
    pub fn decode(
        self,
        buf: &[u8],
        limit: usize,
    ) -> Result<Option<(HubMessage, usize)>, ProtocolError> {
        match self {
            Protocol::Json => json::decode(buf, limit),
            Protocol::MessagePack => msgpack::decode(buf, limit),
        }
    }

    /// Appends `message` in this protocol's framing.
    pub fn encode(self, message: &HubMessage, out: &mut Vec<u8>) {
        match self {
            Protocol::Json => json::encode(message, out),
            Protocol::MessagePack => msgpack::encode(message, out),
        }
    }

    /// Appends a non-blocking invocation of `target(arguments…)`.
    pub fn encode_send(self, target: &str, arguments: &[Value], out: &mut Vec<u8>) {
        match self {
            Protocol::Json => json::encode_send(target, arguments, out),
            Protocol::MessagePack => msgpack::encode_send(target, arguments, out),
        }
    }

    /// The highest handshake version Herald speaks; version 2 adds stateful reconnect.
    pub fn max_version(self) -> u32 {
        2
    }
}

/// Why bytes from a client could not be read as hub messages. Each one closes the connection
/// with a Close message carrying its text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// A message grew past the configured limit before it ended: the bound that keeps one
    /// client from making a shard buffer without end.
    #[error("The maximum message size of {limit}B was exceeded.")]
    TooLarge {
        /// The limit in bytes, named in the text so the client's developer can see it.
        limit: usize,
    },
    /// A record was not JSON; the parser's own words say where.
    #[error("Error reading JSON: {0}")]
    Json(String),
    /// A property the message type requires is absent (its name).
    #[error("Missing required property '{0}'.")]
    Missing(&'static str),
    /// A property has the wrong JSON type (its name, the type expected).
    #[error("Expected '{0}' to be of type {1}.")]
    WrongType(&'static str, &'static str),
    /// Bytes that are not a MessagePack hub message (what was wrong).
    #[error("Invalid MessagePack: {0}.")]
    MessagePack(String),
    /// A stateful-reconnect Sequence message claims more messages than were ever sent, which
    /// would make the server skip messages the client never saw.
    #[error("Sequence ID {0} is greater than the amount of messages received.")]
    Sequence(u64),
    /// A `type` no SignalR version defines; ASP.NET closes the connection for it too.
    #[error("Unknown message type '{0}'.")]
    UnknownType(i64),
    /// Two properties that exclude each other appear together (e.g. `result` and `error`).
    #[error("The '{0}' property must not appear with '{1}'.")]
    Conflict(&'static str, &'static str),
}
