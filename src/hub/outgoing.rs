//! Messages on their way to clients, encoded once per wire protocol.
//!
//! An [`Encoded`] message is a complete WebSocket frame whose payload can also be sliced out
//! (for transports without WebSocket framing), so one allocation serves every recipient.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::protocol::frame::{self, OpCode};
use crate::protocol::{HubMessage, Protocol, Value};

/// One message in wire form: a server WebSocket frame; the payload follows `header_len` bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    frame: Bytes,
    header_len: u8,
    /// Whether stateful reconnect numbers it (hub message types 1 to 5).
    trackable: bool,
}

impl Encoded {
    fn from_payload_buffer(buf: Vec<u8>, protocol: Protocol) -> Encoded {
        let opcode = if protocol.is_binary() {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        let (frame, header_len) = frame::finish(buf, opcode);
        Encoded {
            frame,
            header_len: header_len as u8,
            trackable: false,
        }
    }

    /// Encodes any hub message.
    pub fn message(message: &HubMessage, protocol: Protocol) -> Encoded {
        let mut buf = frame::payload_buffer(64);
        protocol.encode(message, &mut buf);
        let mut encoded = Encoded::from_payload_buffer(buf, protocol);
        encoded.trackable = (1..=5).contains(&message.type_id());
        encoded
    }

    /// Raw protocol bytes (a handshake answer) framed for a connection speaking `protocol`.
    pub fn raw(bytes: &[u8], protocol: Protocol) -> Encoded {
        let mut buf = frame::payload_buffer(bytes.len());
        buf.extend_from_slice(bytes);
        Encoded::from_payload_buffer(buf, protocol)
    }

    /// Whether stateful reconnect numbers and replays it.
    pub fn trackable(&self) -> bool {
        self.trackable
    }

    /// The whole WebSocket frame.
    pub fn frame(&self) -> Bytes {
        self.frame.clone()
    }

    /// The protocol bytes alone.
    pub fn payload(&self) -> Bytes {
        self.frame.slice(self.header_len as usize..)
    }
}

/// A published invocation of `target(arguments…)`, encoded lazily at most once per protocol:
/// shards on other threads share it, and the first recipient speaking a protocol pays for it.
#[derive(Debug)]
pub struct Outgoing {
    target: std::sync::Arc<str>,
    arguments: Vec<Value>,
    encoded: [OnceLock<Encoded>; Protocol::COUNT],
}

impl Outgoing {
    pub fn new(target: std::sync::Arc<str>, arguments: Vec<Value>) -> Outgoing {
        Outgoing {
            target,
            arguments,
            encoded: Default::default(),
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn arguments(&self) -> &[Value] {
        &self.arguments
    }

    pub fn encoded(&self, protocol: Protocol) -> &Encoded {
        self.encoded[protocol.index()].get_or_init(|| {
            let mut buf = frame::payload_buffer(64 + self.target.len());
            protocol.encode_send(&self.target, &self.arguments, &mut buf);
            let mut encoded = Encoded::from_payload_buffer(buf, protocol);
            encoded.trackable = true;
            encoded
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_is_encoded_once_in_its_own_frame() {
        let out = Outgoing::new("m".into(), vec![Value::Bin(vec![1, 2])]);
        let json = out.encoded(Protocol::Json);
        let mp = out.encoded(Protocol::MessagePack);
        assert_eq!(json.frame()[0], 0x81, "text frame");
        assert_eq!(mp.frame()[0], 0x82, "binary frame");
        assert_eq!(
            &json.payload()[..],
            b"{\"type\":1,\"target\":\"m\",\"arguments\":[\"AQI=\"]}\x1e"
        );
        let (back, _) = crate::protocol::msgpack::decode(&mp.payload(), 1024)
            .unwrap()
            .unwrap();
        assert!(
            matches!(back, HubMessage::Invocation { arguments, .. } if arguments == vec![Value::Bin(vec![1, 2])])
        );
        assert_eq!(
            mp.frame().as_ptr(),
            out.encoded(Protocol::MessagePack).frame().as_ptr()
        );
    }

    #[test]
    fn one_encoding_serves_frame_and_payload() {
        let out = Outgoing::new("m".into(), vec![Value::Int(1)]);
        let e = out.encoded(Protocol::Json);
        let payload = b"{\"type\":1,\"target\":\"m\",\"arguments\":[1]}\x1e";
        assert_eq!(&e.payload()[..], payload);
        assert_eq!(e.frame()[0], 0x81);
        assert_eq!(e.frame()[1] as usize, payload.len());
        assert_eq!(&e.frame()[2..], payload);
        // The same allocation is shared.
        assert_eq!(
            e.frame().as_ptr(),
            out.encoded(Protocol::Json).frame().as_ptr()
        );
    }
}
