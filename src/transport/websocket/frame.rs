//! The WebSocket frame codec (RFC 6455).
//!
//! Decoding reassembles fragmented messages and hands out control frames; it keeps only the
//! bytes of an unfinished frame between calls. A server decodes client frames, which must be
//! masked; a client (the load generator) decodes server frames, which must not be. Server
//! frames are never masked, so the same frame bytes can be written to every recipient, which
//! is what makes encode-once fan-out possible.

use bytes::{Bytes, BytesMut};

/// The longest server frame header: 2 bytes plus an 8-byte length.
pub const MAX_HEADER: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// What a client sent, frame by frame, with data messages already reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message { text: bool, payload: Bytes },
    Ping(Bytes),
    Pong,
    Close { code: Option<u16>, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("client frames must be masked")]
    Unmasked,
    #[error("server frames must not be masked")]
    Masked,
    #[error("reserved bits are set")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpCode(u8),
    #[error("control frames must be final and at most 125 bytes")]
    BadControlFrame,
    #[error("a continuation frame arrived outside a fragmented message")]
    UnexpectedContinuation,
    #[error("a new message started before the previous one ended")]
    Interleaved,
    #[error("the message exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the close frame payload is malformed")]
    BadClose,
}

impl FrameError {
    /// The close code the server answers with.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooLarge(_) => 1009,
            FrameError::BadClose => 1007,
            _ => 1002,
        }
    }
}

/// Which end of the connection decodes: a server reads masked frames, a client unmasked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    /// Bytes of an unfinished frame; empty (and unallocated) between whole frames.
    partial: BytesMut,
    /// The data message being reassembled from fragments.
    fragments: Option<(bool, BytesMut)>,
    max_message: usize,
}

impl Decoder {
    /// A server's decoder of client frames.
    pub fn new(max_message: usize) -> Decoder {
        Decoder::with_role(Role::Server, max_message)
    }

    pub fn with_role(role: Role, max_message: usize) -> Decoder {
        Decoder {
            role,
            partial: BytesMut::new(),
            fragments: None,
            max_message,
        }
    }

    /// Decodes every complete frame in `partial ++ input`, appending events to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<(), FrameError> {
        if self.partial.is_empty() {
            let used = self.decode_all(input, out)?;
            if used < input.len() {
                self.partial.extend_from_slice(&input[used..]);
            }
        } else {
            self.partial.extend_from_slice(input);
            let buf = std::mem::take(&mut self.partial);
            let used = self.decode_all(&buf, out)?;
            if used < buf.len() {
                self.partial = buf;
                let _ = self.partial.split_to(used);
            }
        }
        Ok(())
    }

    /// Bytes held for an unfinished frame.
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.fragments.as_ref().map_or(0, |(_, b)| b.len())
    }

    fn decode_all(&mut self, mut buf: &[u8], out: &mut Vec<Event>) -> Result<usize, FrameError> {
        let total = buf.len();
        while let Some(used) = self.decode_one(buf, out)? {
            buf = &buf[used..];
        }
        Ok(total - buf.len())
    }

    /// Decodes one frame from the start of `buf`, or returns `None` if it is incomplete.
    fn decode_one(
        &mut self,
        buf: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<Option<usize>, FrameError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode =
            OpCode::from_u8(buf[0] & 0x0f).ok_or(FrameError::UnknownOpCode(buf[0] & 0x0f))?;
        let masked = buf[1] & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(FrameError::Unmasked),
            (Role::Client, true) => return Err(FrameError::Masked),
            _ => {}
        }
        let (len, mut pos) = match buf[1] & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                (
                    u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
                    10,
                )
            }
            n => (n as u64, 2),
        };
        if opcode.is_control() && (!fin || len > 125) {
            return Err(FrameError::BadControlFrame);
        }
        let already = self.fragments.as_ref().map_or(0, |(_, b)| b.len()) as u64;
        if len.saturating_add(already) > self.max_message as u64 {
            return Err(FrameError::TooLarge(self.max_message));
        }
        let len = len as usize;
        let mask_len = if masked { 4 } else { 0 };
        if buf.len() < pos + mask_len + len {
            return Ok(None);
        }
        let mut payload;
        if masked {
            let mask: [u8; 4] = buf[pos..pos + 4].try_into().expect("4 bytes");
            pos += 4;
            payload = BytesMut::from(&buf[pos..pos + len]);
            fastwebsockets::unmask(&mut payload, mask);
        } else {
            payload = BytesMut::from(&buf[pos..pos + len]);
        }
        let used = pos + len;

        match opcode {
            OpCode::Text | OpCode::Binary => {
                if self.fragments.is_some() {
                    return Err(FrameError::Interleaved);
                }
                let text = opcode == OpCode::Text;
                if fin {
                    out.push(Event::Message {
                        text,
                        payload: payload.freeze(),
                    });
                } else {
                    self.fragments = Some((text, payload));
                }
            }
            OpCode::Continuation => {
                let Some((_, acc)) = self.fragments.as_mut() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                acc.extend_from_slice(&payload);
                if fin {
                    let (text, acc) = self.fragments.take().expect("checked above");
                    out.push(Event::Message {
                        text,
                        payload: acc.freeze(),
                    });
                }
            }
            OpCode::Ping => out.push(Event::Ping(payload.freeze())),
            OpCode::Pong => out.push(Event::Pong),
            OpCode::Close => {
                let (code, reason) = match payload.len() {
                    0 => (None, String::new()),
                    1 => return Err(FrameError::BadClose),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        let reason = std::str::from_utf8(&payload[2..])
                            .map_err(|_| FrameError::BadClose)?
                            .to_string();
                        (Some(code), reason)
                    }
                };
                out.push(Event::Close { code, reason });
            }
        }
        Ok(Some(used))
    }
}

/// Writes the header of an unmasked frame carrying `len` bytes into the end of `dst`, and
/// returns how many bytes it took.
fn write_header(opcode: OpCode, len: usize, dst: &mut [u8; MAX_HEADER]) -> usize {
    let first = 0x80 | opcode as u8;
    if len < 126 {
        dst[8] = first;
        dst[9] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        dst[6] = first;
        dst[7] = 126;
        dst[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        dst[0] = first;
        dst[1] = 127;
        dst[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A buffer whose first [`MAX_HEADER`] bytes are reserved, so a payload can be written once
/// and framed in place without copying.
pub fn payload_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MAX_HEADER + capacity);
    buf.resize(MAX_HEADER, 0);
    buf
}

/// Frames a buffer from [`payload_buffer`]: returns the whole frame and the header length.
pub fn finish(mut buf: Vec<u8>, opcode: OpCode) -> (Bytes, usize) {
    let len = buf.len() - MAX_HEADER;
    let mut header = [0u8; MAX_HEADER];
    let header_len = write_header(opcode, len, &mut header);
    buf[MAX_HEADER - header_len..MAX_HEADER].copy_from_slice(&header[MAX_HEADER - header_len..]);
    let frame = Bytes::from(buf).slice(MAX_HEADER - header_len..);
    (frame, header_len)
}

/// One complete unmasked frame.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = payload_buffer(payload.len());
    buf.extend_from_slice(payload);
    finish(buf, opcode).0
}

/// A close frame with `code` and a reason (truncated to fit the 125-byte control limit).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OpCode::Close, &payload)
}

/// A masked client frame (what a client, such as the load generator, sends).
pub fn encode_masked(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    mask_frame(true, opcode as u8, payload, mask)
}

fn mask_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 65535 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    fastwebsockets::unmask(&mut out[start..], mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut d = Decoder::new(1024);
        let mut out = Vec::new();
        d.feed(&frame, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Event::Message {
                text: true,
                payload: Bytes::from_static(b"Hello")
            }]
        );
    }

    #[test]
    fn server_frames_byte_for_byte() {
        assert_eq!(&encode(OpCode::Text, b"Hello")[..], b"\x81\x05Hello");
        let big = vec![b'x'; 300];
        let f = encode(OpCode::Binary, &big);
        assert_eq!(&f[..4], &[0x82, 126, 0x01, 0x2c]);
        assert_eq!(f.len(), 304);
        let huge = vec![0u8; 70_000];
        let f = encode(OpCode::Binary, &huge);
        assert_eq!(&f[..10], &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        assert_eq!(&encode_close(1000, "")[..], &[0x88, 0x02, 0x03, 0xe8]);
        let (frame, header) = finish(payload_buffer(0), OpCode::Text);
        assert_eq!((&frame[..], header), (&b"\x81\x00"[..], 2));
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let mut stream = mask_frame(false, 1, b"Hel", M);
        stream.extend(mask_frame(true, 9, b"ping", M));
        stream.extend(mask_frame(true, 0, b"lo", M));
        stream.extend(mask_frame(true, 2, &[7u8; 200], M));
        stream.extend(mask_frame(true, 8, b"\x03\xe8bye", M));
        let expected = vec![
            Event::Ping(Bytes::from_static(b"ping")),
            Event::Message {
                text: true,
                payload: Bytes::from_static(b"Hello"),
            },
            Event::Message {
                text: false,
                payload: Bytes::from(vec![7u8; 200]),
            },
            Event::Close {
                code: Some(1000),
                reason: "bye".into(),
            },
        ];
        for a in 0..=stream.len() {
            for b in [a, (a + 3).min(stream.len()), stream.len()] {
                let mut d = Decoder::new(1024);
                let mut out = Vec::new();
                d.feed(&stream[..a], &mut out).unwrap();
                d.feed(&stream[a..b], &mut out).unwrap();
                d.feed(&stream[b..], &mut out).unwrap();
                assert_eq!(out, expected, "split at {a}/{b}");
                assert_eq!(d.buffered(), 0);
            }
        }
    }

    #[test]
    fn client_role_reads_server_frames_and_refuses_masked_ones() {
        let mut stream = encode(OpCode::Text, b"Hello").to_vec();
        stream.extend_from_slice(&encode(OpCode::Binary, &[1u8; 300]));
        for split in 0..=stream.len() {
            let mut d = Decoder::with_role(Role::Client, 1024);
            let mut out = Vec::new();
            d.feed(&stream[..split], &mut out).unwrap();
            d.feed(&stream[split..], &mut out).unwrap();
            assert_eq!(out.len(), 2, "split {split}");
        }
        let mut out = Vec::new();
        let masked = encode_masked(OpCode::Text, b"x", M);
        assert_eq!(
            Decoder::with_role(Role::Client, 64).feed(&masked, &mut out),
            Err(FrameError::Masked)
        );
        // And a server reads what a client encodes.
        Decoder::new(64).feed(&masked, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Event::Message {
                text: true,
                payload: Bytes::from_static(b"x")
            }]
        );
    }

    #[test]
    fn protocol_violations() {
        let feed = |bytes: &[u8], max: usize| {
            let mut out = Vec::new();
            Decoder::new(max).feed(bytes, &mut out)
        };
        assert_eq!(feed(b"\x81\x05Hello", 1024), Err(FrameError::Unmasked));
        assert_eq!(
            feed(&mask_frame(true, 3, b"", M), 1024),
            Err(FrameError::UnknownOpCode(3))
        );
        assert_eq!(
            feed(&mask_frame(true, 0, b"x", M), 1024),
            Err(FrameError::UnexpectedContinuation)
        );
        assert_eq!(
            feed(&mask_frame(false, 9, b"x", M), 1024),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            feed(&mask_frame(true, 1, &[b'a'; 100], M), 64),
            Err(FrameError::TooLarge(64))
        );
        let mut two = mask_frame(false, 1, &[b'a'; 40], M);
        two.extend(mask_frame(true, 0, &[b'a'; 40], M));
        assert_eq!(feed(&two, 64), Err(FrameError::TooLarge(64)));
        let mut inter = mask_frame(false, 1, b"a", M);
        inter.extend(mask_frame(true, 1, b"b", M));
        assert_eq!(feed(&inter, 64), Err(FrameError::Interleaved));
        let mut rsv = mask_frame(true, 1, b"a", M);
        rsv[0] |= 0x40;
        assert_eq!(feed(&rsv, 64), Err(FrameError::ReservedBits));
        // A declared length beyond the limit is refused before its payload arrives.
        assert_eq!(
            feed(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0], 1024),
            Err(FrameError::TooLarge(1024))
        );
    }
}
