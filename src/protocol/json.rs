//! The JSON hub protocol: each message is one JSON object followed by the record separator
//! `0x1E`, and one transport message may carry several.
//!
//! Decoding tolerates what real clients send beyond the spec (`headers`, unknown properties);
//! encoding writes exactly the fields the clients expect, in a fixed order.

use serde::Deserialize;

use super::message::{Completion, HubMessage};
use super::value::{Value, present};
use super::{ProtocolError, RECORD_SEPARATOR};

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Option<i64>,
    #[serde(rename = "invocationId")]
    invocation_id: Option<String>,
    target: Option<String>,
    arguments: Option<Vec<Value>>,
    #[serde(rename = "streamIds")]
    stream_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    item: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    error: Option<String>,
    #[serde(rename = "allowReconnect")]
    allow_reconnect: Option<bool>,
    #[serde(rename = "sequenceId")]
    sequence_id: Option<u64>,
}

/// Decodes the first message in `buf`.
///
/// Returns `Ok(None)` when `buf` holds no complete message yet, and otherwise the message with
/// the number of bytes it used (separator included). A message, or pending bytes without a
/// separator, longer than `limit` is an error.
pub fn decode(buf: &[u8], limit: usize) -> Result<Option<(HubMessage, usize)>, ProtocolError> {
    let Some(end) = memchr(RECORD_SEPARATOR, buf) else {
        return if buf.len() > limit {
            Err(ProtocolError::TooLarge { limit })
        } else {
            Ok(None)
        };
    };
    if end > limit {
        return Err(ProtocolError::TooLarge { limit });
    }
    let message = parse(&buf[..end])?;
    Ok(Some((message, end + 1)))
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Parses one record (without its separator).
pub fn parse(record: &[u8]) -> Result<HubMessage, ProtocolError> {
    let wire: Wire =
        serde_json::from_slice(record).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let kind = wire.kind.ok_or(ProtocolError::Missing("type"))?;
    let id = |w: &Wire| {
        w.invocation_id
            .clone()
            .ok_or(ProtocolError::Missing("invocationId"))
    };
    Ok(match kind {
        1 => HubMessage::Invocation {
            invocation_id: wire.invocation_id,
            target: wire.target.ok_or(ProtocolError::Missing("target"))?,
            arguments: wire.arguments.ok_or(ProtocolError::Missing("arguments"))?,
            stream_ids: wire.stream_ids.unwrap_or_default(),
        },
        2 => HubMessage::StreamItem {
            invocation_id: id(&wire)?,
            item: wire.item.ok_or(ProtocolError::Missing("item"))?,
        },
        3 => {
            let invocation_id = id(&wire)?;
            let completion = match (wire.result, wire.error) {
                (Some(_), Some(_)) => return Err(ProtocolError::Conflict("result", "error")),
                (Some(result), None) => Completion::Result(result),
                (None, Some(error)) => Completion::Error(error),
                (None, None) => Completion::Void,
            };
            HubMessage::Completion {
                invocation_id,
                completion,
            }
        }
        4 => HubMessage::StreamInvocation {
            invocation_id: id(&wire)?,
            target: wire.target.ok_or(ProtocolError::Missing("target"))?,
            arguments: wire.arguments.ok_or(ProtocolError::Missing("arguments"))?,
            stream_ids: wire.stream_ids.unwrap_or_default(),
        },
        5 => HubMessage::CancelInvocation {
            invocation_id: id(&wire)?,
        },
        6 => HubMessage::Ping,
        7 => HubMessage::Close {
            error: wire.error,
            allow_reconnect: wire.allow_reconnect.unwrap_or(false),
        },
        8 => HubMessage::Ack {
            sequence_id: wire
                .sequence_id
                .ok_or(ProtocolError::Missing("sequenceId"))?,
        },
        9 => HubMessage::Sequence {
            sequence_id: wire
                .sequence_id
                .ok_or(ProtocolError::Missing("sequenceId"))?,
        },
        other => return Err(ProtocolError::UnknownType(other)),
    })
}

/// A message read only as far as routing needs: its type, invocation id and target, and its
/// arguments as unparsed JSON. For readers that look at a few fields of many messages (the
/// load generator reads every broadcast it receives this way).
#[derive(Debug, Deserialize)]
pub struct Shallow<'a> {
    /// The message type number (`type`), absent only in malformed messages.
    #[serde(rename = "type")]
    pub kind: Option<i64>,
    /// `invocationId`, borrowed from the input unless it holds escapes.
    #[serde(rename = "invocationId", borrow)]
    pub invocation_id: Option<std::borrow::Cow<'a, str>>,
    /// The method an invocation calls, borrowed from the input unless it holds escapes.
    #[serde(borrow)]
    pub target: Option<std::borrow::Cow<'a, str>>,
    /// Each argument's JSON text, for the reader to parse only the ones it needs.
    #[serde(borrow)]
    pub arguments: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// Like [`decode`], but reads the first message shallowly (see [`Shallow`]).
pub fn decode_shallow(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(Shallow<'_>, usize)>, ProtocolError> {
    let Some(end) = memchr(RECORD_SEPARATOR, buf) else {
        return if buf.len() > limit {
            Err(ProtocolError::TooLarge { limit })
        } else {
            Ok(None)
        };
    };
    if end > limit {
        return Err(ProtocolError::TooLarge { limit });
    }
    let shallow: Shallow =
        serde_json::from_slice(&buf[..end]).map_err(|e| ProtocolError::Json(e.to_string()))?;
    Ok(Some((shallow, end + 1)))
}

/// Appends `message`, with its separator, to `out`.
pub fn encode(message: &HubMessage, out: &mut Vec<u8>) {
    match message {
        HubMessage::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            out.extend_from_slice(b"{\"type\":1");
            if let Some(id) = invocation_id {
                field_str(out, "invocationId", id);
            }
            field_str(out, "target", target);
            field_value(out, "arguments", arguments);
            if !stream_ids.is_empty() {
                field_value(out, "streamIds", stream_ids);
            }
        }
        HubMessage::StreamItem {
            invocation_id,
            item,
        } => {
            out.extend_from_slice(b"{\"type\":2");
            field_str(out, "invocationId", invocation_id);
            field_value(out, "item", item);
        }
        HubMessage::Completion {
            invocation_id,
            completion,
        } => {
            out.extend_from_slice(b"{\"type\":3");
            field_str(out, "invocationId", invocation_id);
            match completion {
                Completion::Void => {}
                Completion::Result(v) => field_value(out, "result", v),
                Completion::Error(e) => field_str(out, "error", e),
            }
        }
        HubMessage::StreamInvocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            out.extend_from_slice(b"{\"type\":4");
            field_str(out, "invocationId", invocation_id);
            field_str(out, "target", target);
            field_value(out, "arguments", arguments);
            if !stream_ids.is_empty() {
                field_value(out, "streamIds", stream_ids);
            }
        }
        HubMessage::CancelInvocation { invocation_id } => {
            out.extend_from_slice(b"{\"type\":5");
            field_str(out, "invocationId", invocation_id);
        }
        HubMessage::Ping => out.extend_from_slice(b"{\"type\":6"),
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            out.extend_from_slice(b"{\"type\":7");
            if let Some(e) = error {
                field_str(out, "error", e);
            }
            if *allow_reconnect {
                out.extend_from_slice(b",\"allowReconnect\":true");
            }
        }
        HubMessage::Ack { sequence_id } => {
            out.extend_from_slice(b"{\"type\":8");
            field_value(out, "sequenceId", sequence_id);
        }
        HubMessage::Sequence { sequence_id } => {
            out.extend_from_slice(b"{\"type\":9");
            field_value(out, "sequenceId", sequence_id);
        }
    }
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Appends an Invocation of `target(arguments…)` without an invocation id: the form every
/// fan-out message takes, written without building a [`HubMessage`].
pub fn encode_send(target: &str, arguments: &[Value], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":1");
    field_str(out, "target", target);
    field_value(out, "arguments", arguments);
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    field_value(out, name, value);
}

fn field_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value).expect("writing JSON to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(m: &HubMessage) -> String {
        let mut out = Vec::new();
        encode(m, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_byte_for_byte() {
        assert_eq!(enc(&HubMessage::Ping), "{\"type\":6}\x1e");
        assert_eq!(
            enc(&HubMessage::Close {
                error: Some("bye \"now\"".into()),
                allow_reconnect: true
            }),
            "{\"type\":7,\"error\":\"bye \\\"now\\\"\",\"allowReconnect\":true}\x1e"
        );
        assert_eq!(
            enc(&HubMessage::Completion {
                invocation_id: "1".into(),
                completion: Completion::Result(Value::Int(3))
            }),
            "{\"type\":3,\"invocationId\":\"1\",\"result\":3}\x1e"
        );
        assert_eq!(
            enc(&HubMessage::Completion {
                invocation_id: "2".into(),
                completion: Completion::Void
            }),
            "{\"type\":3,\"invocationId\":\"2\"}\x1e"
        );
        let mut out = Vec::new();
        encode_send("broadcastMessage", &["a".into(), Value::Null], &mut out);
        assert_eq!(
            out,
            b"{\"type\":1,\"target\":\"broadcastMessage\",\"arguments\":[\"a\",null]}\x1e"
        );
    }

    #[test]
    fn decodes_every_type_and_ignores_headers() {
        let input = concat!(
            r#"{"type":1,"target":"Send","arguments":["a",1],"headers":{"k":"v"},"x":1}"#, "\x1e",
            r#"{"type":1,"invocationId":"7","target":"Echo","arguments":[{"a":[true]}],"streamIds":["s"]}"#, "\x1e",
            r#"{"type":2,"invocationId":"s","item":null}"#, "\x1e",
            r#"{"type":3,"invocationId":"s","result":null}"#, "\x1e",
            r#"{"type":3,"invocationId":"s","error":"boom"}"#, "\x1e",
            r#"{"type":3,"invocationId":"s"}"#, "\x1e",
            r#"{"type":4,"invocationId":"9","target":"Stream","arguments":[]}"#, "\x1e",
            r#"{"type":5,"invocationId":"9"}"#, "\x1e",
            r#"{"type":6}"#, "\x1e",
            r#"{"type":7,"error":"e","allowReconnect":true}"#, "\x1e",
            r#"{"type":8,"sequenceId":4}"#, "\x1e",
            r#"{"type":9,"sequenceId":5}"#, "\x1e",
        )
        .as_bytes();
        let mut messages = Vec::new();
        let mut rest = input;
        while let Some((m, used)) = decode(rest, 1024).unwrap() {
            messages.push(m);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        let types: Vec<u8> = messages.iter().map(HubMessage::type_id).collect();
        assert_eq!(types, vec![1, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(
            messages[0],
            HubMessage::Invocation {
                invocation_id: None,
                target: "Send".into(),
                arguments: vec!["a".into(), Value::Int(1)],
                stream_ids: vec![]
            }
        );
        assert_eq!(
            messages[3],
            HubMessage::Completion {
                invocation_id: "s".into(),
                completion: Completion::Result(Value::Null)
            }
        );
        assert_eq!(
            messages[5],
            HubMessage::Completion {
                invocation_id: "s".into(),
                completion: Completion::Void
            }
        );
    }

    #[test]
    fn every_split_point_gives_the_same_messages() {
        let input = "{\"type\":1,\"target\":\"Send\",\"arguments\":[\"é\",2]}\x1e{\"type\":6}\x1e"
            .as_bytes();
        for split in 0..=input.len() {
            let mut buf = Vec::new();
            let mut out = Vec::new();
            for chunk in [&input[..split], &input[split..]] {
                buf.extend_from_slice(chunk);
                while let Some((m, used)) = decode(&buf, 1024).unwrap() {
                    out.push(m);
                    buf.drain(..used);
                }
            }
            assert_eq!(out.len(), 2, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn shallow_reads_route_fields_and_leave_arguments_raw() {
        let input = b"{\"type\":1,\"target\":\"m\",\"arguments\":[\"a\\\"b\",{\"x\":[1]}]}\x1e{\"type\":6}\x1e";
        let (m, used) = decode_shallow(input, 1024).unwrap().unwrap();
        assert_eq!((m.kind, m.target.as_deref()), (Some(1), Some("m")));
        let args = m.arguments.unwrap();
        assert_eq!(args[0].get(), "\"a\\\"b\"");
        assert_eq!(args[1].get(), "{\"x\":[1]}");
        let (ping, _) = decode_shallow(&input[used..], 1024).unwrap().unwrap();
        assert_eq!(ping.kind, Some(6));
        assert!(decode_shallow(b"{\"type\":1", 1024).unwrap().is_none());
    }

    #[test]
    fn bad_input_has_clear_errors() {
        let err = |s: &str| decode(s.as_bytes(), 64).unwrap_err().to_string();
        assert!(err("{nope}\x1e").starts_with("Error reading JSON"));
        assert_eq!(
            err("{\"target\":\"x\"}\x1e"),
            "Missing required property 'type'."
        );
        assert_eq!(
            err("{\"type\":1,\"arguments\":[]}\x1e"),
            "Missing required property 'target'."
        );
        assert_eq!(
            err("{\"type\":1,\"target\":\"x\"}\x1e"),
            "Missing required property 'arguments'."
        );
        assert_eq!(err("{\"type\":42}\x1e"), "Unknown message type '42'.");
        assert_eq!(
            err("{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"e\"}\x1e"),
            "The 'result' property must not appear with 'error'."
        );
        let long = format!("{{\"type\":1,\"target\":\"{}\"", "x".repeat(100));
        assert_eq!(err(&long), "The maximum message size of 64B was exceeded.");
        assert_eq!(
            err(&format!("{long}}}\x1e")),
            "The maximum message size of 64B was exceeded."
        );
        assert!(decode(b"{\"type\":6", 64).unwrap().is_none());
    }
}
