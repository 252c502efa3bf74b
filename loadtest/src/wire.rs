//! What goes on the wire for each kind of server: the SignalR JSON hub protocol (Herald),
//! plain WebSocket text frames (servers that broadcast every frame they receive), and
//! Socket.IO. Test messages carry their publisher, sequence number and send time.

use herald::protocol::{HubMessage, Value, json};

/// How the load generator talks to the server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Mode {
    /// SignalR, JSON hub protocol, over WebSockets.
    SignalrJson,
    /// Plain WebSocket text frames; the server broadcasts each one it receives.
    Raw,
    /// Socket.IO (Engine.IO 4) over WebSockets; the server re-emits `msg` events to everyone.
    Socketio,
}

/// A test message's identity, as carried in its text: `publisher:seq:sent_ns:padding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds at send (the clock every process on the machine shares).
    pub sent_ns: u64,
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Stamp {
    /// The message text, padded with `x` to `size` bytes (never shorter than the stamp).
    pub fn text(&self, size: usize) -> String {
        let mut s = format!("{}:{}:{}:", self.publisher, self.seq, self.sent_ns);
        if s.len() < size {
            s.extend(std::iter::repeat_n('x', size - s.len()));
        }
        s
    }

    pub fn parse(text: &str) -> Option<Stamp> {
        let mut parts = text.splitn(4, ':');
        Some(Stamp {
            publisher: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            sent_ns: parts.next()?.parse().ok()?,
        })
    }
}

/// One parsed record from the server, as far as the load generator cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A test message (broadcast or group message).
    Data(Stamp),
    /// A completion of an invocation: id and echoed text.
    Completion {
        id: String,
        text: Option<String>,
    },
    /// Something to answer right away (Socket.IO ping).
    Reply(String),
    /// The server closed the session (SignalR Close).
    Closed(Option<String>),
    Other,
}

/// The SignalR handshake request.
pub fn signalr_handshake() -> Vec<u8> {
    let mut out = br#"{"protocol":"json","version":1}"#.to_vec();
    out.push(herald::protocol::RECORD_SEPARATOR);
    out
}

/// Splits the handshake answer off the first bytes the server sends; returns the rest.
pub fn signalr_handshake_answer(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = buf
        .iter()
        .position(|b| *b == herald::protocol::RECORD_SEPARATOR)
    else {
        return Ok(None);
    };
    let answer: serde_json::Value =
        serde_json::from_slice(&buf[..end]).map_err(|e| format!("bad handshake answer: {e}"))?;
    if let Some(error) = answer.get("error") {
        return Err(format!("handshake refused: {error}"));
    }
    Ok(Some(end + 1))
}

/// A non-blocking SignalR invocation of `target(args…)`.
pub fn signalr_send(target: &str, args: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    json::encode(
        &HubMessage::Invocation {
            invocation_id: None,
            target: target.into(),
            arguments: args,
            stream_ids: vec![],
        },
        &mut out,
    );
    out
}

/// A blocking SignalR invocation.
pub fn signalr_invoke(id: &str, target: &str, args: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    json::encode(
        &HubMessage::Invocation {
            invocation_id: Some(id.into()),
            target: target.into(),
            arguments: args,
            stream_ids: vec![],
        },
        &mut out,
    );
    out
}

/// Parses every SignalR record in a frame payload. Invocations (the test messages) are read
/// shallowly, without materialising their arguments, so the load generator spends as little
/// as it can per message; everything else is decoded in full.
pub fn signalr_records(payload: &[u8], out: &mut Vec<Incoming>) -> Result<(), String> {
    let mut rest = payload;
    while let Some((shallow, used)) =
        json::decode_shallow(rest, usize::MAX).map_err(|e| e.to_string())?
    {
        if shallow.kind == Some(1) {
            // broadcastMessage(name, text) or groupMessage(group, name, text): the stamp is
            // the last argument, a JSON string without escapes.
            let stamp = shallow
                .arguments
                .as_ref()
                .and_then(|a| a.last())
                .and_then(|raw| raw.get().strip_prefix('"')?.strip_suffix('"'))
                .and_then(Stamp::parse);
            out.push(stamp.map_or(Incoming::Other, Incoming::Data));
            rest = &rest[used..];
            continue;
        }
        let Some((message, used)) = json::decode(rest, usize::MAX).map_err(|e| e.to_string())?
        else {
            break;
        };
        rest = &rest[used..];
        out.push(match message {
            HubMessage::Invocation { arguments, .. } => {
                // broadcastMessage(name, text) or groupMessage(group, name, text): the stamp is
                // the last argument.
                match arguments
                    .last()
                    .and_then(Value::as_str)
                    .and_then(Stamp::parse)
                {
                    Some(stamp) => Incoming::Data(stamp),
                    None => Incoming::Other,
                }
            }
            HubMessage::Completion {
                invocation_id,
                completion,
            } => Incoming::Completion {
                id: invocation_id,
                text: match completion {
                    herald::protocol::Completion::Result(v) => v.as_str().map(str::to_string),
                    _ => None,
                },
            },
            HubMessage::Close { error, .. } => Incoming::Closed(error),
            _ => Incoming::Other,
        });
    }
    Ok(())
}

/// Parses a Socket.IO (Engine.IO 4) text frame.
pub fn socketio_record(payload: &[u8]) -> Incoming {
    match payload {
        b"2" => Incoming::Reply("3".into()),
        [b'4', b'2', rest @ ..] => serde_json::from_slice::<(String, String)>(rest)
            .ok()
            .and_then(|(_, text)| Stamp::parse(&text))
            .map_or(Incoming::Other, Incoming::Data),
        _ => Incoming::Other,
    }
}

/// A Socket.IO `msg` event carrying `text`.
pub fn socketio_emit(text: &str) -> String {
    format!("42{}", serde_json::json!(["msg", text]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let s = Stamp {
            publisher: 3,
            seq: 42,
            sent_ns: 123456789,
        };
        let text = s.text(64);
        assert_eq!(text.len(), 64);
        assert_eq!(Stamp::parse(&text), Some(s));
        assert_eq!(Stamp::parse(&s.text(0)), Some(s));
        assert_eq!(Stamp::parse("nope"), None);
    }

    #[test]
    fn signalr_records_carry_stamps_and_completions() {
        let s = Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        };
        let mut payload = Vec::new();
        json::encode_send(
            "broadcastMessage",
            &["lt".into(), s.text(32).into()],
            &mut payload,
        );
        json::encode(
            &HubMessage::Completion {
                invocation_id: "7".into(),
                completion: herald::protocol::Completion::Result("hi".into()),
            },
            &mut payload,
        );
        payload.extend_from_slice(b"{\"type\":6}\x1e");
        let mut out = Vec::new();
        signalr_records(&payload, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Incoming::Data(s),
                Incoming::Completion {
                    id: "7".into(),
                    text: Some("hi".into())
                },
                Incoming::Other
            ]
        );
        assert_eq!(signalr_handshake_answer(b"{}\x1erest").unwrap(), Some(3));
        assert!(signalr_handshake_answer(b"{\"error\":\"no\"}\x1e").is_err());
    }

    #[test]
    fn socketio_frames() {
        let s = Stamp {
            publisher: 0,
            seq: 9,
            sent_ns: 1,
        };
        assert_eq!(
            socketio_record(socketio_emit(&s.text(20)).as_bytes()),
            Incoming::Data(s)
        );
        assert_eq!(socketio_record(b"2"), Incoming::Reply("3".into()));
    }
}
