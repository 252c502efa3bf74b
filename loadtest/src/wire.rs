//! What goes on the wire for each kind of server: the SignalR hub protocols, JSON and
//! MessagePack (Herald), plain WebSocket text frames (servers that broadcast every frame they
//! receive), and Socket.IO. Test messages carry their publisher, sequence number and send
//! time.

use herald::protocol::{HubMessage, Protocol, Value, json};

/// How the load generator talks to the server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Mode {
    /// SignalR, JSON hub protocol.
    SignalrJson,
    /// SignalR, MessagePack hub protocol.
    SignalrMsgpack,
    /// Plain WebSocket text frames; the server broadcasts each one it receives.
    Raw,
    /// Socket.IO (Engine.IO 4) over WebSockets; the server re-emits `msg` events to everyone.
    Socketio,
}

impl Mode {
    /// The hub protocol of a SignalR mode.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Mode::SignalrJson => Some(Protocol::Json),
            Mode::SignalrMsgpack => Some(Protocol::MessagePack),
            Mode::Raw | Mode::Socketio => None,
        }
    }
}

/// How a SignalR client reaches the hub.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Transport {
    #[default]
    #[value(name = "websockets")]
    WebSockets,
    /// An event stream (`GET`) on one socket, `POST` sends on another. JSON only.
    #[value(name = "serversentevents")]
    ServerSentEvents,
    /// `GET` polls on one socket, `POST` sends on another.
    #[value(name = "longpolling")]
    LongPolling,
}

/// Takes the whole events out of `text`, an event stream already freed of its HTTP chunking,
/// and calls `each` with each event's data (its `data:` lines joined by `\n`). Comments and
/// events without data yield nothing; an unfinished event stays in `text`.
pub fn sse_events(
    text: &mut Vec<u8>,
    each: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut start = 0;
    let mut data = Vec::new();
    while let Some(len) = text[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        data.clear();
        let mut any = false;
        for line in text[start..start + len].split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(value) = line.strip_prefix(b"data:") else {
                continue;
            };
            if any {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            any = true;
        }
        start += len + 4;
        if any {
            each(&data)?;
        }
    }
    text.drain(..start);
    Ok(())
}

/// Undoes HTTP/1.1 chunked transfer coding incrementally: moves chunk data from `raw` to
/// `out`, keeping a partial chunk header in `raw`. `left` is the data still due in the
/// current chunk. Returns `false` once the last (empty) chunk arrives.
pub fn dechunk(raw: &mut Vec<u8>, left: &mut usize, out: &mut Vec<u8>) -> Result<bool, String> {
    let mut at = 0;
    let more = loop {
        if *left > 0 {
            let take = (*left).min(raw.len() - at);
            out.extend_from_slice(&raw[at..at + take]);
            at += take;
            *left -= take;
            if *left > 0 {
                break true;
            }
        }
        let Some(end) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            break true;
        };
        let line = &raw[at..at + end];
        at += end + 2;
        if line.is_empty() {
            // The CRLF that ends a chunk's data.
            continue;
        }
        let size = std::str::from_utf8(line)
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .ok_or_else(|| format!("bad chunk header {:?}", String::from_utf8_lossy(line)))?;
        if size == 0 {
            break false;
        }
        *left = size;
    };
    raw.drain(..at);
    Ok(more)
}

/// A test message's identity, as carried in its text: `publisher:seq:sent_ns:padding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at send (the clock every process on the machine shares).
    pub sent_ns: u64,
}

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
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
    /// A presence message: `joined`/`left` (events) or `presence` (batched, count), with the
    /// hub's count it carries.
    Presence {
        count: Option<i64>,
    },
    Other,
}

/// Whether an invocation of `target` is a presence message.
fn is_presence(target: &str) -> bool {
    matches!(target, "joined" | "left" | "presence")
}

/// The count a presence invocation carries: `joined`/`left(id, user, count)` or
/// `presence({…, count})`. `None` if it carries none, or is not presence at all.
fn presence_count(target: &str, args: &[Value]) -> Option<i64> {
    let count = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    match target {
        "joined" | "left" => args.get(2).and_then(count),
        "presence" => match args.first() {
            Some(Value::Map(fields)) => fields
                .iter()
                .find(|(k, _)| k == "count")
                .and_then(|(_, v)| count(v)),
            _ => None,
        },
        _ => None,
    }
}

/// The SignalR handshake request (always JSON, whatever the protocol it asks for).
pub fn signalr_handshake(protocol: Protocol) -> Vec<u8> {
    let mut out = format!(r#"{{"protocol":"{}","version":1}}"#, protocol.name()).into_bytes();
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
pub fn signalr_send(protocol: Protocol, target: &str, args: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    protocol.encode(
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
pub fn signalr_invoke(protocol: Protocol, id: &str, target: &str, args: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    protocol.encode(
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

/// Parses every SignalR record in a frame payload or poll body. JSON invocations (the test
/// messages) are read shallowly, without materialising their arguments, so the load
/// generator spends as little as it can per message; everything else is decoded in full.
pub fn signalr_records(
    protocol: Protocol,
    payload: &[u8],
    out: &mut Vec<Incoming>,
) -> Result<(), String> {
    if protocol == Protocol::MessagePack {
        let mut rest = payload;
        while let Some((message, used)) =
            herald::protocol::msgpack::decode(rest, usize::MAX).map_err(|e| e.to_string())?
        {
            rest = &rest[used..];
            out.push(incoming(message));
        }
        return Ok(());
    }
    let mut rest = payload;
    while let Some((shallow, used)) =
        json::decode_shallow(rest, usize::MAX).map_err(|e| e.to_string())?
    {
        if shallow.kind == Some(1)
            && let Some(target @ ("joined" | "left" | "presence")) = shallow.target.as_deref()
        {
            // Only the count matters here, and a batch may list a thousand ids: read it off
            // the raw argument instead of building the whole value.
            let args = shallow.arguments.as_deref().unwrap_or(&[]);
            let count = match target {
                "presence" => args.first().and_then(|raw| {
                    let text = raw.get();
                    let at = text.rfind("\"count\":")? + 8;
                    let digits: &str = &text[at..];
                    let end = digits
                        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                        .unwrap_or(digits.len());
                    digits[..end].parse().ok()
                }),
                _ => args.get(2).and_then(|raw| raw.get().parse().ok()),
            };
            out.push(Incoming::Presence { count });
            rest = &rest[used..];
            continue;
        }
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
        out.push(incoming(message));
    }
    Ok(())
}

/// What a decoded hub message means to the load generator.
fn incoming(message: HubMessage) -> Incoming {
    match message {
        HubMessage::Invocation {
            target, arguments, ..
        } if is_presence(&target) => Incoming::Presence {
            count: presence_count(&target, &arguments),
        },
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
    }
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
            sent_ns: 123_456_789,
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
        signalr_records(Protocol::Json, &payload, &mut out).unwrap();
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
    fn signalr_msgpack_records_carry_stamps_and_closes() {
        let s = Stamp {
            publisher: 4,
            seq: 5,
            sent_ns: 6,
        };
        let mut payload = signalr_send(
            Protocol::MessagePack,
            "groupMessage",
            vec!["g".into(), "lt".into(), Value::Str(s.text(40))],
        );
        Protocol::MessagePack.encode(
            &HubMessage::Close {
                error: Some("bye".into()),
                allow_reconnect: false,
            },
            &mut payload,
        );
        let mut out = Vec::new();
        signalr_records(Protocol::MessagePack, &payload, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Incoming::Data(s), Incoming::Closed(Some("bye".into()))]
        );
        assert!(
            signalr_records(Protocol::MessagePack, &[0x05, 0xc1, 0, 0, 0, 0], &mut out).is_err()
        );
        assert!(
            signalr_handshake(Protocol::MessagePack).starts_with(br#"{"protocol":"messagepack""#)
        );
    }

    #[test]
    fn event_streams_dechunk_and_split_at_any_boundary() {
        let events = b": open\r\n\r\ndata: {\"a\":1}\x1e\r\n\r\ndata: x\r\ndata: y\r\n\r\n";
        let mut chunked = Vec::new();
        for part in events.chunks(7) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        // Fed one byte at a time, the result is the same as fed whole.
        let (mut raw, mut left, mut text, mut got) = (Vec::new(), 0, Vec::new(), Vec::new());
        let mut open = true;
        for (i, b) in chunked.iter().enumerate() {
            if !open {
                // Only the empty trailer follows the last chunk.
                assert_eq!(&chunked[i..], b"\r\n");
                break;
            }
            raw.push(*b);
            open = dechunk(&mut raw, &mut left, &mut text).unwrap();
            sse_events(&mut text, &mut |d| {
                got.push(d.to_vec());
                Ok(())
            })
            .unwrap();
        }
        assert!(!open);
        assert_eq!(got, vec![b"{\"a\":1}\x1e".to_vec(), b"x\ny".to_vec()]);
        assert!(dechunk(&mut b"zz\r\n".to_vec(), &mut 0, &mut Vec::new()).is_err());
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
