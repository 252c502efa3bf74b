//! The MessagePack hub protocol: each message is a MessagePack array preceded by its length as
//! a varint (7 bits per byte, least significant first, at most 5 bytes), and one transport
//! message may carry several.
//!
//! Only what the hub protocol needs of MessagePack is here, written out so that the codec stays
//! pure, small and fuzzable: every type is read (extensions are carried as they are), and
//! values are written in their shortest form.

use super::ProtocolError;
use super::message::{Completion, HubMessage};
use super::value::Value;

/// The most bytes a length prefix may take.
const MAX_VARINT: usize = 5;

/// Nesting deeper than this is refused, so a hostile message cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Reads a length prefix: `Ok(None)` while incomplete, otherwise the length and the prefix's
/// size.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut len: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(MAX_VARINT) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if len > i32::MAX as u64 {
                return Err(invalid("the length prefix exceeds 2 GB"));
            }
            return Ok(Some((len as usize, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT {
        return Err(invalid("the length prefix is longer than 5 bytes"));
    }
    Ok(None)
}

pub(crate) fn write_varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn invalid(why: &str) -> ProtocolError {
    ProtocolError::MessagePack(why.to_string())
}

/// Decodes the first message in `buf`: `Ok(None)` until all its bytes have arrived, otherwise
/// the message and the bytes it used. A message longer than `limit` is an error as soon as
/// its prefix says so.
pub fn decode(buf: &[u8], limit: usize) -> Result<Option<(HubMessage, usize)>, ProtocolError> {
    let Some((len, prefix)) = read_varint(buf)? else {
        return Ok(None);
    };
    if len > limit {
        return Err(ProtocolError::TooLarge { limit });
    }
    if buf.len() < prefix + len {
        return Ok(None);
    }
    let body = &buf[prefix..prefix + len];
    let mut reader = Reader { buf: body, pos: 0 };
    let message = reader.message()?;
    if reader.pos != body.len() {
        return Err(invalid("bytes left over after the message"));
    }
    Ok(Some((message, prefix + len)))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        let Some(end) = end else {
            return Err(invalid("the message is shorter than its contents say"));
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, ProtocolError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn value(&mut self, depth: usize) -> Result<Value, ProtocolError> {
        if depth > MAX_DEPTH {
            return Err(invalid("values nest too deeply"));
        }
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Value::Int(i64::from(marker)),
            0x80..=0x8f => self.map((marker & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((marker & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.str((marker & 0x1f) as usize)?,
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (marker - 0xc4))? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (marker - 0xc7))? as usize;
                let kind = self.byte()? as i8;
                Value::Ext(kind, self.take(n)?.to_vec())
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xcc => Value::Int(self.be(1)? as i64),
            0xcd => Value::Int(self.be(2)? as i64),
            0xce => Value::Int(self.be(4)? as i64),
            0xcf => {
                let n = self.be(8)?;
                i64::try_from(n).map_or(Value::UInt(n), Value::Int)
            }
            0xd0 => Value::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xd4..=0xd8 => {
                let n = 1usize << (marker - 0xd4);
                let kind = self.byte()? as i8;
                Value::Ext(kind, self.take(n)?.to_vec())
            }
            0xd9 => {
                let n = self.be(1)? as usize;
                self.str(n)?
            }
            0xda => {
                let n = self.be(2)? as usize;
                self.str(n)?
            }
            0xdb => {
                let n = self.be(4)? as usize;
                self.str(n)?
            }
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.be(2)? as usize;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(marker as i8)),
            0xc1 => return Err(invalid("0xc1 is not a MessagePack type")),
        })
    }

    fn str(&mut self, n: usize) -> Result<Value, ProtocolError> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.to_string()))
            .map_err(|_| invalid("a string is not UTF-8"))
    }

    /// Sizes come from the input: never reserve more than the bytes left could hold.
    fn capacity(&self, n: usize) -> usize {
        n.min(self.buf.len() - self.pos)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, ProtocolError> {
        let mut items = Vec::with_capacity(self.capacity(n));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, ProtocolError> {
        let mut entries = Vec::with_capacity(self.capacity(n));
        for _ in 0..n {
            // JSON, the other protocol, has only string keys: numbers and other scalars become
            // their text; containers are refused (their text, nested, would grow without
            // bound).
            let key = match self.value(depth + 1)? {
                Value::Str(s) => s,
                scalar @ (Value::Int(_)
                | Value::UInt(_)
                | Value::Float(_)
                | Value::Number(_)
                | Value::Bool(_)
                | Value::Null) => serde_json::to_string(&scalar).unwrap_or_default(),
                _ => return Err(invalid("a map key must be a string or a number")),
            };
            entries.push((key, self.value(depth + 1)?));
        }
        Ok(Value::Map(entries))
    }

    fn message(&mut self) -> Result<HubMessage, ProtocolError> {
        let Value::Array(items) = self.value(0)? else {
            return Err(invalid("a message must be an array"));
        };
        parse(items)
    }
}

fn int(v: &Value, what: &'static str) -> Result<i64, ProtocolError> {
    match v {
        Value::Int(n) => Ok(*n),
        _ => Err(ProtocolError::WrongType(what, "integer")),
    }
}

fn string(v: Option<&Value>, what: &'static str) -> Result<String, ProtocolError> {
    match v {
        Some(Value::Str(s)) => Ok(s.clone()),
        Some(_) => Err(ProtocolError::WrongType(what, "string")),
        None => Err(ProtocolError::Missing(what)),
    }
}

fn optional_string(v: Option<&Value>, what: &'static str) -> Result<Option<String>, ProtocolError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        other => string(other, what).map(Some),
    }
}

fn array(v: Option<Value>, what: &'static str) -> Result<Vec<Value>, ProtocolError> {
    match v {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ProtocolError::WrongType(what, "array")),
        None => Err(ProtocolError::Missing(what)),
    }
}

fn strings(v: Option<Value>, what: &'static str) -> Result<Vec<String>, ProtocolError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        other => array(other, what)?
            .into_iter()
            .map(|s| string(Some(&s), what))
            .collect(),
    }
}

/// Reads a message from its array form (see the table in specs: `[type, headers, …]`).
fn parse(items: Vec<Value>) -> Result<HubMessage, ProtocolError> {
    let kind = int(items.first().ok_or(ProtocolError::Missing("type"))?, "type")?;
    let mut it = items.into_iter().skip(1);
    let mut next = || it.next();
    Ok(match kind {
        1 | 4 => {
            let _headers = next();
            let id = next();
            let target = string(next().as_ref(), "target")?;
            let arguments = array(next(), "arguments")?;
            let stream_ids = strings(next(), "streamIds")?;
            if kind == 1 {
                HubMessage::Invocation {
                    invocation_id: optional_string(id.as_ref(), "invocationId")?,
                    target,
                    arguments,
                    stream_ids,
                }
            } else {
                HubMessage::StreamInvocation {
                    invocation_id: string(id.as_ref(), "invocationId")?,
                    target,
                    arguments,
                    stream_ids,
                }
            }
        }
        2 => {
            let _headers = next();
            let invocation_id = string(next().as_ref(), "invocationId")?;
            let item = next().ok_or(ProtocolError::Missing("item"))?;
            HubMessage::StreamItem {
                invocation_id,
                item,
            }
        }
        3 => {
            let _headers = next();
            let invocation_id = string(next().as_ref(), "invocationId")?;
            let result_kind = int(
                &next().ok_or(ProtocolError::Missing("resultKind"))?,
                "resultKind",
            )?;
            let completion = match result_kind {
                1 => Completion::Error(string(next().as_ref(), "error")?),
                2 => Completion::Void,
                3 => Completion::Result(next().ok_or(ProtocolError::Missing("result"))?),
                _ => return Err(invalid("the result kind must be 1, 2 or 3")),
            };
            HubMessage::Completion {
                invocation_id,
                completion,
            }
        }
        5 => {
            let _headers = next();
            HubMessage::CancelInvocation {
                invocation_id: string(next().as_ref(), "invocationId")?,
            }
        }
        6 => HubMessage::Ping,
        7 => {
            let error = optional_string(next().as_ref(), "error")?;
            let allow_reconnect = matches!(next(), Some(Value::Bool(true)));
            HubMessage::Close {
                error,
                allow_reconnect,
            }
        }
        8 | 9 => {
            let n = int(
                &next().ok_or(ProtocolError::Missing("sequenceId"))?,
                "sequenceId",
            )?;
            let sequence_id = u64::try_from(n).map_err(|_| invalid("a sequence id is negative"))?;
            if kind == 8 {
                HubMessage::Ack { sequence_id }
            } else {
                HubMessage::Sequence { sequence_id }
            }
        }
        other => return Err(ProtocolError::UnknownType(other)),
    })
}

/// Appends a value in its shortest MessagePack form.
/// Decodes one whole MessagePack value (the backplane carries arguments this way, so values
/// cross nodes exactly as MessagePack clients send them). Trailing bytes are an error.
pub fn read_value(buf: &[u8]) -> Result<Value, ProtocolError> {
    let mut reader = Reader { buf, pos: 0 };
    let value = reader.value(0)?;
    if reader.pos != buf.len() {
        return Err(invalid("trailing bytes after the value"));
    }
    Ok(value)
}

/// Appends `v` in its smallest MessagePack form; public so other binary codecs (the
/// backplane's envelopes, the load generator) write values exactly as clients receive them.
pub fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(n) => write_int(*n, out),
        Value::UInt(n) => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        // MessagePack has no arbitrary-precision number: the nearest float64.
        Value::Number(n) => {
            out.push(0xcb);
            out.extend_from_slice(&n.to_f64().to_bits().to_be_bytes());
        }
        Value::Str(s) => write_str(s, out),
        Value::Bin(b) => {
            write_len(b.len(), [0xc4, 0xc5, 0xc6], None, out);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            write_array_len(items.len(), out);
            for item in items {
                write_value(item, out);
            }
        }
        Value::Map(entries) => {
            write_len(entries.len(), [0xde, 0xde, 0xdf], Some((0x80, 16)), out);
            for (k, v) in entries {
                write_str(k, out);
                write_value(v, out);
            }
        }
        Value::Ext(kind, data) => {
            match data.len() {
                1 => out.push(0xd4),
                2 => out.push(0xd5),
                4 => out.push(0xd6),
                8 => out.push(0xd7),
                16 => out.push(0xd8),
                n => write_len(n, [0xc7, 0xc8, 0xc9], None, out),
            }
            out.push(*kind as u8);
            out.extend_from_slice(data);
        }
    }
}

fn write_int(n: i64, out: &mut Vec<u8>) {
    match n {
        0..=0x7f => out.push(n as u8),
        -32..=-1 => out.push(n as i8 as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        -0x80..=-33 => out.extend_from_slice(&[0xd0, n as i8 as u8]),
        -0x8000..=-0x81 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        n if n > 0 => {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        n => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Writes a length with the 8-, 16- and 32-bit markers given, or the fix form when it fits.
fn write_len(n: usize, markers: [u8; 3], fix: Option<(u8, usize)>, out: &mut Vec<u8>) {
    match fix {
        Some((base, limit)) if n < limit => out.push(base | n as u8),
        _ if n <= 0xff && markers[0] != markers[1] => out.extend_from_slice(&[markers[0], n as u8]),
        _ if n <= 0xffff => {
            out.push(markers[1]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(markers[2]);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    write_len(s.len(), [0xd9, 0xda, 0xdb], Some((0xa0, 32)), out);
    out.extend_from_slice(s.as_bytes());
}

/// Appends an array header for `n` items, for writers that stream the items after it rather
/// than building a [`Value::Array`] first.
pub fn write_array_len(n: usize, out: &mut Vec<u8>) {
    write_len(n, [0xdc, 0xdc, 0xdd], Some((0x90, 16)), out);
}

/// Appends `message`, with its length prefix, to `out`.
pub fn encode(message: &HubMessage, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(64);
    let b = &mut body;
    let empty_headers = |b: &mut Vec<u8>| b.push(0x80);
    match message {
        HubMessage::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            // Always six elements, stream ids included even when empty, as ASP.NET Core and
            // the JavaScript client write them (signalrcore reads the sixth unconditionally).
            write_array_len(6, b);
            write_int(1, b);
            empty_headers(b);
            match invocation_id {
                Some(id) => write_str(id, b),
                None => b.push(0xc0),
            }
            write_str(target, b);
            write_values(arguments, b);
            write_strings(stream_ids, b);
        }
        HubMessage::StreamItem {
            invocation_id,
            item,
        } => {
            write_array_len(4, b);
            write_int(2, b);
            empty_headers(b);
            write_str(invocation_id, b);
            write_value(item, b);
        }
        HubMessage::Completion {
            invocation_id,
            completion,
        } => {
            let len = if matches!(completion, Completion::Void) {
                4
            } else {
                5
            };
            write_array_len(len, b);
            write_int(3, b);
            empty_headers(b);
            write_str(invocation_id, b);
            match completion {
                Completion::Error(e) => {
                    write_int(1, b);
                    write_str(e, b);
                }
                Completion::Void => write_int(2, b),
                Completion::Result(v) => {
                    write_int(3, b);
                    write_value(v, b);
                }
            }
        }
        HubMessage::StreamInvocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            write_array_len(6, b);
            write_int(4, b);
            empty_headers(b);
            write_str(invocation_id, b);
            write_str(target, b);
            write_values(arguments, b);
            write_strings(stream_ids, b);
        }
        HubMessage::CancelInvocation { invocation_id } => {
            write_array_len(3, b);
            write_int(5, b);
            empty_headers(b);
            write_str(invocation_id, b);
        }
        HubMessage::Ping => {
            write_array_len(1, b);
            write_int(6, b);
        }
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            write_array_len(3, b);
            write_int(7, b);
            match error {
                Some(e) => write_str(e, b),
                None => b.push(0xc0),
            }
            b.push(if *allow_reconnect { 0xc3 } else { 0xc2 });
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            write_array_len(2, b);
            write_int(i64::from(message.type_id()), b);
            write_value(
                &i64::try_from(*sequence_id).map_or(Value::UInt(*sequence_id), Value::Int),
                b,
            );
        }
    }
    write_varint(body.len(), out);
    out.extend_from_slice(&body);
}

/// Appends an Invocation of `target(arguments…)` without an invocation id, the form every
/// fan-out message takes.
pub fn encode_send(target: &str, arguments: &[Value], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(32 + target.len());
    write_array_len(6, &mut body);
    write_int(1, &mut body);
    body.push(0x80);
    body.push(0xc0);
    write_str(target, &mut body);
    write_values(arguments, &mut body);
    write_array_len(0, &mut body);
    write_varint(body.len(), out);
    out.extend_from_slice(&body);
}

fn write_values(values: &[Value], out: &mut Vec<u8>) {
    write_array_len(values.len(), out);
    for v in values {
        write_value(v, out);
    }
}

fn write_strings(values: &[String], out: &mut Vec<u8>) {
    write_array_len(values.len(), out);
    for v in values {
        write_str(v, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(m: &HubMessage) -> Vec<u8> {
        let mut out = Vec::new();
        encode(m, &mut out);
        out
    }

    #[test]
    fn varints() {
        for n in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            2_097_152,
            i32::MAX as usize,
        ] {
            let mut out = Vec::new();
            write_varint(n, &mut out);
            assert_eq!(read_varint(&out).unwrap(), Some((n, out.len())), "{n}");
            assert!(read_varint(&out[..out.len() - 1]).unwrap().is_none());
        }
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(),
            "over 2 GB"
        );
    }

    #[test]
    fn encodes_byte_for_byte() {
        // The forms the spec gives: a Ping is always 0x91 0x06.
        assert_eq!(enc(&HubMessage::Ping), [0x02, 0x91, 0x06]);
        assert_eq!(
            enc(&HubMessage::Completion {
                invocation_id: "1".into(),
                completion: Completion::Void
            }),
            [0x06, 0x94, 0x03, 0x80, 0xa1, b'1', 0x02]
        );
        assert_eq!(
            enc(&HubMessage::Close {
                error: None,
                allow_reconnect: true
            }),
            [0x04, 0x93, 0x07, 0xc0, 0xc3]
        );
        let mut out = Vec::new();
        encode_send("m", &[Value::Int(-1), Value::Str("é".into())], &mut out);
        assert_eq!(
            out,
            [
                0x0c, 0x96, 0x01, 0x80, 0xc0, 0xa1, b'm', 0x92, 0xff, 0xa2, 0xc3, 0xa9, 0x90
            ]
        );
    }

    #[test]
    fn values_round_trip_in_their_shortest_form() {
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(0),
            Value::Int(127),
            Value::Int(128),
            Value::Int(-33),
            Value::Int(70_000),
            Value::Int(-70_000),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Str("x".repeat(40)),
            Value::Str("y".repeat(300)),
            Value::Bin(vec![1, 2, 3]),
            Value::Array((0..20).map(Value::Int).collect()),
            Value::Map(vec![
                ("a".into(), Value::Null),
                ("b".into(), Value::Array(vec![])),
            ]),
            Value::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec()),
            Value::Ext(5, vec![9; 3]),
        ];
        let message = HubMessage::Invocation {
            invocation_id: Some("7".into()),
            target: "t".into(),
            arguments: values.clone(),
            stream_ids: vec!["s".into()],
        };
        let bytes = enc(&message);
        let (back, used) = decode(&bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, message);
        let mut out = Vec::new();
        write_value(&Value::Int(128), &mut out);
        assert_eq!(out, [0xcc, 0x80]);
    }

    #[test]
    fn every_message_type_round_trips() {
        let messages = vec![
            HubMessage::Invocation {
                invocation_id: None,
                target: "a".into(),
                arguments: vec![],
                stream_ids: vec![],
            },
            HubMessage::StreamItem {
                invocation_id: "1".into(),
                item: Value::Int(3),
            },
            HubMessage::Completion {
                invocation_id: "1".into(),
                completion: Completion::Result(Value::Null),
            },
            HubMessage::Completion {
                invocation_id: "1".into(),
                completion: Completion::Error("e".into()),
            },
            HubMessage::StreamInvocation {
                invocation_id: "2".into(),
                target: "s".into(),
                arguments: vec![Value::Bool(false)],
                stream_ids: vec![],
            },
            HubMessage::CancelInvocation {
                invocation_id: "2".into(),
            },
            HubMessage::Ping,
            HubMessage::Close {
                error: Some("bye".into()),
                allow_reconnect: false,
            },
            HubMessage::Ack { sequence_id: 4 },
            HubMessage::Sequence { sequence_id: 5 },
        ];
        let mut stream = Vec::new();
        for m in &messages {
            encode(m, &mut stream);
        }
        // Split at every boundary: nothing is lost, nothing invented.
        for split in 0..=stream.len() {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                buf.extend_from_slice(chunk);
                while let Some((m, used)) = decode(&buf, 1 << 20).unwrap() {
                    got.push(m);
                    buf.drain(..used);
                }
            }
            assert_eq!(got, messages, "split at {split}");
        }
    }

    #[test]
    fn reads_what_other_encoders_write() {
        // An invocation as the JavaScript client writes it (six elements, an empty stream-ids
        // array), with a float32 argument as .NET may send one.
        let body = [
            0x96, 0x01, 0x80, 0xa1, b'1', 0xa4, b'E', b'c', b'h', b'o', 0x92, 0x2a, 0xca, 0x3f,
            0xc0, 0x00, 0x00, 0x90,
        ];
        let mut bytes = vec![body.len() as u8];
        bytes.extend_from_slice(&body);
        let (m, _) = decode(&bytes, 1024).unwrap().unwrap();
        assert_eq!(
            m,
            HubMessage::Invocation {
                invocation_id: Some("1".into()),
                target: "Echo".into(),
                arguments: vec![Value::Int(42), Value::Float(1.5)],
                stream_ids: vec![]
            }
        );
    }

    #[test]
    fn bad_input() {
        let err = |bytes: &[u8]| decode(bytes, 64).unwrap_err().to_string();
        // A length prefix that lies: the body is shorter than it says, then says more.
        assert!(
            decode(&[0x05, 0x91, 0x06], 64).unwrap().is_none(),
            "incomplete is not an error"
        );
        assert!(err(&[0x03, 0x92, 0x06, 0xa5]).contains("shorter than its contents"));
        assert!(err(&[0x03, 0x91, 0x06, 0x00]).contains("left over"));
        assert_eq!(
            err(&[0x7f]),
            "The maximum message size of 64B was exceeded."
        );
        assert!(err(&[0x01, 0xc1]).contains("0xc1"));
        assert!(err(&[0x01, 0x06]).contains("must be an array"));
        assert_eq!(err(&[0x02, 0x91, 0x2a]), "Unknown message type '42'.");
        assert_eq!(
            err(&[0x03, 0x92, 0x01, 0x80]),
            "Missing required property 'target'."
        );
        // A huge declared array count does not allocate: it runs out of bytes.
        assert!(err(&[0x06, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]).contains("shorter"));
        // Map keys: numbers become text, containers are refused.
        let nested_key = [0x91, 0x81, 0x81, 0x01, 0x02, 0xc0];
        let mut bytes = vec![nested_key.len() as u8];
        bytes.extend_from_slice(&nested_key);
        assert!(err(&bytes).contains("map key"), "{}", err(&bytes));
        // Deep nesting is refused.
        let mut deep = vec![0x91; 100];
        deep.push(0x06);
        let mut bytes = vec![deep.len() as u8];
        bytes.extend_from_slice(&deep);
        assert!(
            decode(&bytes, 1024)
                .unwrap_err()
                .to_string()
                .contains("nest")
        );
    }
}
