//! Splitting the bytes a client sends into hub messages, as they arrive.
//!
//! A transport hands over whatever it has read — part of a message, one message, or hundreds
//! concatenated in one WebSocket message or POST body, as the official clients send a burst —
//! and the [`Splitter`] yields each complete message in turn. Only the unfinished message at
//! the end of a chunk is kept, and it may never grow past the limit on one message, so what a
//! connection holds between reads is bounded by that limit whatever the size of the transport
//! message. Pure: no I/O, no clock.

use std::borrow::Cow;

use super::{Protocol, RECORD_SEPARATOR, msgpack};

/// How messages are delimited in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each message ends with the record separator (the handshake, the JSON protocol).
    Separated,
    /// Each message starts with its length as a varint (the MessagePack protocol).
    LengthPrefixed,
}

impl Framing {
    /// The framing of a hub protocol's messages.
    pub fn of(protocol: Protocol) -> Framing {
        match protocol {
            Protocol::Json => Framing::Separated,
            Protocol::MessagePack => Framing::LengthPrefixed,
        }
    }
}

/// One message in the stream would pass the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message exceeds {limit} bytes")]
pub struct Oversized {
    /// The limit in bytes, for the error the connection closes with.
    pub limit: usize,
}

/// What the first bytes of a buffer say about the message they start.
enum Extent {
    /// The message is this many bytes long (separator or prefix included).
    Whole(usize),
    /// Not known yet: more bytes are needed.
    Unknown,
}

/// Splits a byte stream into messages of at most `limit` bytes each (for the separated
/// framing the separator is not counted; for the length-prefixed one the prefix is not).
#[derive(Debug)]
pub struct Splitter {
    framing: Framing,
    limit: usize,
    /// The unfinished message; unallocated between whole messages.
    pending: Vec<u8>,
}

impl Splitter {
    /// A splitter for one connection's stream; `limit` bounds what it buffers for a message
    /// that has not ended.
    pub fn new(framing: Framing, limit: usize) -> Splitter {
        Splitter {
            framing,
            limit,
            pending: Vec::new(),
        }
    }

    /// Switches the framing (after the handshake, which is always separated).
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    /// Bytes held of an unfinished message.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes the next complete message from what is pending followed by `input`, and moves
    /// `input` past the bytes it used. At `Ok(None)` every byte of `input` has been taken in
    /// as part of an unfinished message. A message over the limit is an error as soon as that
    /// is known: from a length prefix at once, from a separated message once its bytes pass
    /// the limit without a separator.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Cow<'a, [u8]>>, Oversized> {
        if self.pending.is_empty() {
            return match self.extent(input)? {
                Extent::Whole(len) if len <= input.len() => {
                    let (message, rest) = input.split_at(len);
                    *input = rest;
                    Ok(Some(Cow::Borrowed(message)))
                }
                Extent::Whole(_) | Extent::Unknown => {
                    self.hold(input)?;
                    Ok(None)
                }
            };
        }
        // Complete the pending message with as few bytes of `input` as it needs, without
        // looking again at what was already seen.
        loop {
            let extent = match self.framing {
                Framing::Separated => match memchr(RECORD_SEPARATOR, input) {
                    Some(at) => Extent::Whole(self.pending.len() + at + 1),
                    None => Extent::Unknown,
                },
                Framing::LengthPrefixed => self.extent_of_pending()?,
            };
            match extent {
                Extent::Whole(len) => {
                    let needed = len - self.pending.len();
                    if needed > input.len() {
                        self.hold(input)?;
                        return Ok(None);
                    }
                    let (tail, rest) = input.split_at(needed);
                    self.pending.extend_from_slice(tail);
                    *input = rest;
                    if self.framing == Framing::Separated && len - 1 > self.limit {
                        return Err(Oversized { limit: self.limit });
                    }
                    return Ok(Some(Cow::Owned(std::mem::take(&mut self.pending))));
                }
                Extent::Unknown if input.is_empty() => return Ok(None),
                Extent::Unknown if self.framing == Framing::LengthPrefixed => {
                    // The length prefix itself is unfinished: take one more byte of it.
                    self.pending.push(input[0]);
                    *input = &input[1..];
                }
                Extent::Unknown => {
                    self.hold(input)?;
                    return Ok(None);
                }
            }
        }
    }

    /// Keeps all of `input` as part of the unfinished message.
    fn hold(&mut self, input: &mut &[u8]) -> Result<(), Oversized> {
        let over = match self.framing {
            Framing::Separated => self.pending.len() + input.len() > self.limit,
            // The prefix has already been checked against the limit once it is complete.
            Framing::LengthPrefixed => false,
        };
        if over {
            return Err(Oversized { limit: self.limit });
        }
        self.pending.extend_from_slice(input);
        *input = &[];
        Ok(())
    }

    /// How long the message starting `buf` is, if that is known yet.
    fn extent(&self, buf: &[u8]) -> Result<Extent, Oversized> {
        match self.framing {
            Framing::Separated => match memchr(RECORD_SEPARATOR, buf) {
                Some(at) if at > self.limit => Err(Oversized { limit: self.limit }),
                Some(at) => Ok(Extent::Whole(at + 1)),
                None => Ok(Extent::Unknown),
            },
            Framing::LengthPrefixed => match msgpack::read_varint(buf) {
                Ok(Some((len, _))) if len > self.limit => Err(Oversized { limit: self.limit }),
                Ok(Some((len, prefix))) => Ok(Extent::Whole(prefix + len)),
                Ok(None) => Ok(Extent::Unknown),
                // Not a length MessagePack writes: handed on as it is, for the decoder to
                // report.
                Err(_) => Ok(Extent::Whole(buf.len().min(5))),
            },
        }
    }

    fn extent_of_pending(&self) -> Result<Extent, Oversized> {
        self.extent(&self.pending)
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HubMessage, Value};

    fn invocation(text: &str) -> HubMessage {
        HubMessage::Invocation {
            invocation_id: None,
            target: "Send".into(),
            arguments: vec![Value::from("me"), Value::from(text)],
            stream_ids: vec![],
        }
    }

    /// A stream of hub messages of several sizes in `protocol`, and the messages.
    fn stream(protocol: Protocol) -> (Vec<u8>, Vec<HubMessage>) {
        let messages: Vec<HubMessage> = [0usize, 1, 130, 300, 20_000, 5]
            .iter()
            .map(|n| invocation(&"é".repeat(*n)))
            .chain([HubMessage::Ping])
            .collect();
        let mut bytes = Vec::new();
        for m in &messages {
            protocol.encode(m, &mut bytes);
        }
        (bytes, messages)
    }

    /// Feeds `chunks` in turn and decodes every message the splitter yields.
    fn split(protocol: Protocol, chunks: &[&[u8]], limit: usize) -> Vec<HubMessage> {
        let mut splitter = Splitter::new(Framing::of(protocol), limit);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(record) = splitter.next(&mut input).unwrap() {
                let (m, used) = protocol.decode(&record, limit).unwrap().unwrap();
                assert_eq!(used, record.len());
                out.push(m);
            }
            assert!(input.is_empty());
        }
        assert_eq!(splitter.pending(), 0);
        out
    }

    #[test]
    fn every_split_point_yields_the_same_messages_in_both_protocols() {
        for protocol in Protocol::ALL {
            let (bytes, expected) = stream(protocol);
            assert_eq!(split(protocol, &[&bytes], 64 * 1024), expected);
            for at in 0..=bytes.len() {
                let got = split(protocol, &[&bytes[..at], &bytes[at..]], 64 * 1024);
                assert_eq!(got, expected, "{protocol:?} split at {at}");
            }
        }
    }

    #[test]
    fn one_message_across_many_chunks_and_many_messages_per_chunk() {
        for protocol in Protocol::ALL {
            let (bytes, expected) = stream(protocol);
            for size in [1, 2, 3, 7, 64, 1000, 4096] {
                let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
                assert_eq!(
                    split(protocol, &chunks, 64 * 1024),
                    expected,
                    "{protocol:?} chunks of {size}"
                );
            }
            // A burst as the official clients send it: hundreds of messages in one chunk.
            let one = {
                let mut b = Vec::new();
                protocol.encode(&invocation(&"x".repeat(20_000)), &mut b);
                b
            };
            let burst = one.repeat(400);
            assert_eq!(split(protocol, &[&burst], 32 * 1024).len(), 400);
            let chunks: Vec<&[u8]> = burst.chunks(65_536).collect();
            assert_eq!(split(protocol, &chunks, 32 * 1024).len(), 400);
        }
    }

    #[test]
    fn a_message_over_the_limit_fails_after_the_ones_before_it() {
        for protocol in Protocol::ALL {
            let mut bytes = Vec::new();
            protocol.encode(&invocation("small"), &mut bytes);
            protocol.encode(&invocation("also small"), &mut bytes);
            protocol.encode(&invocation(&"x".repeat(2000)), &mut bytes);
            protocol.encode(&invocation("never reached"), &mut bytes);
            for size in [bytes.len(), 100, 7, 1] {
                let mut splitter = Splitter::new(Framing::of(protocol), 1024);
                let mut good = 0;
                let mut failed = None;
                'feed: for chunk in bytes.chunks(size) {
                    let mut input = chunk;
                    loop {
                        match splitter.next(&mut input) {
                            Ok(Some(_)) => good += 1,
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break 'feed;
                            }
                        }
                    }
                }
                assert_eq!(good, 2, "{protocol:?} in chunks of {size}");
                assert_eq!(failed, Some(Oversized { limit: 1024 }));
                // Held bytes never pass the limit.
                assert!(splitter.pending() <= 1024 + 5);
            }
        }
    }

    #[test]
    fn a_separated_message_over_the_limit_is_refused_before_it_ends() {
        let mut splitter = Splitter::new(Framing::Separated, 100);
        let mut input: &[u8] = &[b'x'; 60];
        assert_eq!(splitter.next(&mut input), Ok(None));
        let mut input: &[u8] = &[b'x'; 60];
        assert_eq!(splitter.next(&mut input), Err(Oversized { limit: 100 }));
        // Exactly at the limit is fine, with its separator in the next chunk.
        let mut splitter = Splitter::new(Framing::Separated, 100);
        let mut input: &[u8] = &[b'x'; 100];
        assert_eq!(splitter.next(&mut input), Ok(None));
        let mut input: &[u8] = b"\x1e";
        assert_eq!(splitter.next(&mut input).unwrap().unwrap().len(), 101);
    }

    #[test]
    fn a_length_prefix_over_the_limit_is_refused_at_once() {
        let mut out = Vec::new();
        msgpack::write_varint(5000, &mut out);
        for split in 0..=out.len() {
            let mut splitter = Splitter::new(Framing::LengthPrefixed, 1024);
            let mut first = &out[..split];
            let mut second = &out[split..];
            let result = splitter
                .next(&mut first)
                .and_then(|_| splitter.next(&mut second));
            assert_eq!(result, Err(Oversized { limit: 1024 }), "split {split}");
        }
    }

    #[test]
    fn the_handshake_then_the_hub_protocol() {
        let mut bytes = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
        msgpack::encode(&HubMessage::Ping, &mut bytes);
        let mut splitter = Splitter::new(Framing::Separated, 1024);
        let mut input = &bytes[..];
        let handshake = splitter.next(&mut input).unwrap().unwrap();
        assert!(handshake.ends_with(b"\x1e"));
        splitter.set_framing(Framing::LengthPrefixed);
        let ping = splitter.next(&mut input).unwrap().unwrap();
        assert_eq!(
            msgpack::decode(&ping, 1024).unwrap().unwrap().0,
            HubMessage::Ping
        );
        assert!(input.is_empty());
    }
}
