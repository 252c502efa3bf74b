//! The WebSocket frame codec (RFC 6455).
//!
//! Decoding streams: a data frame's payload is handed out as its bytes arrive, unmasked, in
//! as many pieces as it was read in, so a message of any size costs no more memory than one
//! read — the hub protocol above splits messages out of the bytes, as ASP.NET Core's pipes
//! do. Only a frame header (at most 14 bytes) or a whole control frame (at most 139) is kept
//! between calls. [`Reassembler`] puts pieces back together for peers that want whole
//! messages (the load generator). A server decodes client frames, which must be masked; a
//! client decodes server frames, which must not be. Server frames are never masked, so the
//! same frame bytes can be written to every recipient, which is what makes encode-once
//! fan-out possible.

use bytes::{Bytes, BytesMut};

/// The longest server frame header: 2 bytes plus an 8-byte length.
pub const MAX_HEADER: usize = 10;

/// The longest control frame: a masked header (6 bytes) and 125 bytes of payload.
const MAX_CONTROL_FRAME: usize = 6 + 125;

/// A frame's opcode (RFC 6455 §5.2); the values are the wire's, so encoding is a cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A later piece of a message whose first frame named its type.
    Continuation = 0x0,
    /// A UTF-8 message: JSON hub messages.
    Text = 0x1,
    /// A binary message: MessagePack hub messages.
    Binary = 0x2,
    /// The closing handshake, with an optional code and reason.
    Close = 0x8,
    /// A keep-alive the peer must answer with a pong.
    Ping = 0x9,
    /// The answer to a ping (or an unsolicited heartbeat, which is ignored).
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

/// What a peer sent, in order. A data message arrives as one or more `Data` pieces, the last
/// of them with `last` set; control frames arrive whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A piece of a data message, handed on as soon as it arrives so a large message is never
    /// buffered whole here.
    Data {
        /// The unmasked bytes of this piece.
        payload: Bytes,
        /// Whether this piece ends its message.
        last: bool,
    },
    /// A ping, with the payload the pong must echo.
    Ping(Bytes),
    /// A pong; its payload carries nothing Herald needs.
    Pong,
    /// The peer's close frame, which the closing handshake answers.
    Close {
        /// The status code, if the peer gave one (RFC 6455 §7.4).
        code: Option<u16>,
        /// The peer's reason, checked to be UTF-8.
        reason: String,
    },
}

/// Why bytes from a peer are not valid WebSocket frames. Each one fails the connection with
/// the close code of [`FrameError::close_code`], as RFC 6455 §7.1.7 requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A client sent an unmasked frame (§5.1): proxies could mistake it for other traffic.
    #[error("client frames must be masked")]
    Unmasked,
    /// A server sent a masked frame (§5.1), read by Herald's own client code.
    #[error("server frames must not be masked")]
    Masked,
    /// RSV bits are set, but no extension that would give them a meaning was negotiated.
    #[error("reserved bits are set")]
    ReservedBits,
    /// An opcode RFC 6455 reserves (the value sent).
    #[error("unknown opcode {0:#x}")]
    UnknownOpCode(u8),
    /// A control frame was fragmented or longer than 125 bytes (§5.5).
    #[error("control frames must be final and at most 125 bytes")]
    BadControlFrame,
    /// A continuation frame with no message to continue.
    #[error("a continuation frame arrived outside a fragmented message")]
    UnexpectedContinuation,
    /// A text or binary frame arrived while a fragmented message was still open.
    #[error("a new message started before the previous one ended")]
    Interleaved,
    /// A message outgrew the configured limit (the limit in bytes); answered 1009.
    #[error("the message exceeds {0} bytes")]
    TooLarge(usize),
    /// A close payload of one byte, or with a reason that is not UTF-8; answered 1007.
    #[error("the close frame payload is malformed")]
    BadClose,
    /// A close code that is reserved or unassigned (§7.4.1), such as 999 or 1005.
    #[error("close code {0} is not one a peer may send")]
    BadCloseCode(u16),
    /// A text message that is not UTF-8; answered 1007 (§8.1).
    #[error("a text message is not valid UTF-8")]
    InvalidUtf8,
}

impl FrameError {
    /// The close code the server answers with.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooLarge(_) => 1009,
            FrameError::BadClose | FrameError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// Which end of the connection decodes: a server reads masked frames, a client unmasked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Herald's side: frames must arrive masked.
    Server,
    /// The load generator's side: frames must arrive unmasked.
    Client,
}

/// Where a text message's UTF-8 validation stands between pieces: the bytes of a character
/// that a piece boundary cut.
#[derive(Debug, Default)]
struct Utf8 {
    carry: [u8; 4],
    len: usize,
}

impl Utf8 {
    /// Checks the next piece of a text message (`last` if it ends the message).
    fn check(&mut self, piece: &[u8], last: bool) -> Result<(), FrameError> {
        let mut rest = piece;
        while self.len > 0 && !rest.is_empty() {
            self.carry[self.len] = rest[0];
            self.len += 1;
            rest = &rest[1..];
            match std::str::from_utf8(&self.carry[..self.len]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() || self.len == 4 => {
                    return Err(FrameError::InvalidUtf8);
                }
                Err(_) => {}
            }
        }
        if let Err(e) = std::str::from_utf8(rest) {
            if e.error_len().is_some() {
                return Err(FrameError::InvalidUtf8);
            }
            let tail = &rest[e.valid_up_to()..];
            self.carry[..tail.len()].copy_from_slice(tail);
            self.len = tail.len();
        }
        if last && self.len > 0 {
            return Err(FrameError::InvalidUtf8);
        }
        Ok(())
    }
}

/// The data frame whose payload is being read.
#[derive(Debug)]
struct Payload {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes already unmasked, for the mask's phase.
    done: usize,
    fin: bool,
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    /// An unfinished frame header or control frame; empty (and unallocated) otherwise.
    partial: BytesMut,
    /// The data frame being read, once its header is.
    payload: Option<Payload>,
    /// A data message's first frame was not final: continuations follow.
    fragmented: bool,
    /// The message being read is text, checked as UTF-8 (RFC 6455 §8.1; server role only:
    /// Herald's own frames need no checking).
    text: Option<Utf8>,
}

impl Decoder {
    /// A server's decoder of client frames.
    pub fn new() -> Decoder {
        Decoder::with_role(Role::Server)
    }

    /// A decoder for `role`, so the load generator reads server frames with the same codec
    /// the server uses.
    pub fn with_role(role: Role) -> Decoder {
        Decoder {
            role,
            partial: BytesMut::new(),
            payload: None,
            fragmented: false,
            text: None,
        }
    }

    /// Decodes everything in `input` (after what earlier calls left unfinished), appending
    /// events to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), FrameError> {
        loop {
            if let Some(payload) = &mut self.payload {
                let take = payload.remaining.min(input.len() as u64) as usize;
                let finished = take as u64 == payload.remaining;
                if take > 0 || finished {
                    let mut piece = BytesMut::from(&input[..take]);
                    if let Some(mask) = payload.mask {
                        unmask_at(&mut piece, mask, payload.done);
                    }
                    payload.done += take;
                    payload.remaining -= take as u64;
                    input = &input[take..];
                    let last = finished && payload.fin;
                    if let Some(text) = &mut self.text {
                        text.check(&piece, last)?;
                    }
                    out.push(Event::Data {
                        payload: piece.freeze(),
                        last,
                    });
                }
                if !finished {
                    return Ok(());
                }
                self.payload = None;
            }
            if input.is_empty() {
                return Ok(());
            }
            if !self.header(&mut input, out)? {
                return Ok(());
            }
        }
    }

    /// Bytes held for an unfinished frame header or control frame.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Takes the next frame header (a whole frame for control frames) from `partial ++
    /// input`; false if `input` ran out first (what it had is kept).
    fn header(&mut self, input: &mut &[u8], out: &mut Vec<Event>) -> Result<bool, FrameError> {
        if self.partial.is_empty() {
            let need = needed(input);
            if input.len() >= need {
                let (head, rest) = input.split_at(need);
                *input = rest;
                self.begin(head, out)?;
                return Ok(true);
            }
            self.partial.extend_from_slice(input);
            *input = &[];
            return Ok(false);
        }
        loop {
            let need = needed(&self.partial);
            if self.partial.len() >= need {
                let head = std::mem::take(&mut self.partial);
                self.begin(&head, out)?;
                return Ok(true);
            }
            if input.is_empty() {
                return Ok(false);
            }
            let n = (need - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..n]);
            *input = &input[n..];
        }
    }

    /// Starts a frame from its header (`head` is exactly what [`needed`] asked for).
    fn begin(&mut self, head: &[u8], out: &mut Vec<Event>) -> Result<(), FrameError> {
        let fin = head[0] & 0x80 != 0;
        if head[0] & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode =
            OpCode::from_u8(head[0] & 0x0f).ok_or(FrameError::UnknownOpCode(head[0] & 0x0f))?;
        let masked = head[1] & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(FrameError::Unmasked),
            (Role::Client, true) => return Err(FrameError::Masked),
            _ => {}
        }
        let (len, mut pos) = match head[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([head[2], head[3]])), 4),
            127 => (
                u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (u64::from(n), 2),
        };
        let mask = masked.then(|| {
            let mask: [u8; 4] = head[pos..pos + 4].try_into().expect("4 bytes");
            pos += 4;
            mask
        });
        if opcode.is_control() {
            if !fin || len > 125 {
                return Err(FrameError::BadControlFrame);
            }
            let mut payload = BytesMut::from(&head[pos..]);
            if let Some(mask) = mask {
                fastwebsockets::unmask(&mut payload, mask);
            }
            out.push(control(opcode, payload)?);
            return Ok(());
        }
        match (opcode, self.fragmented) {
            (OpCode::Continuation, false) => return Err(FrameError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => return Err(FrameError::Interleaved),
            _ => {}
        }
        self.fragmented = !fin;
        match opcode {
            OpCode::Text if self.role == Role::Server => self.text = Some(Utf8::default()),
            OpCode::Text | OpCode::Binary => self.text = None,
            _ => {}
        }
        self.payload = Some(Payload {
            remaining: len,
            mask,
            done: 0,
            fin,
        });
        Ok(())
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// How many bytes the frame starting `buf` needs before [`Decoder::begin`] can take it: its
/// header, and for a control frame its payload too. Grows as more of the header is known.
fn needed(buf: &[u8]) -> usize {
    if buf.len() < 2 {
        return 2;
    }
    let mask = if buf[1] & 0x80 != 0 { 4 } else { 0 };
    let code = buf[1] & 0x7f;
    let header = match code {
        126 => 4,
        127 => 10,
        _ => 2,
    } + mask;
    let control = buf[0] & 0x08 != 0;
    if control && code <= 125 {
        // Within MAX_CONTROL_FRAME: a bad control frame (long, or unfinished) is refused by
        // `begin` from its header alone.
        (header + usize::from(code)).min(MAX_CONTROL_FRAME)
    } else {
        header
    }
}

fn control(opcode: OpCode, payload: BytesMut) -> Result<Event, FrameError> {
    Ok(match opcode {
        OpCode::Ping => Event::Ping(payload.freeze()),
        OpCode::Pong => Event::Pong,
        _ => {
            let (code, reason) = match payload.len() {
                0 => (None, String::new()),
                1 => return Err(FrameError::BadClose),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    // RFC 6455 §7.4: the codes a peer may send (1012–1014 were registered
                    // later, and 3000–4999 are for libraries and applications).
                    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                        return Err(FrameError::BadCloseCode(code));
                    }
                    let reason = std::str::from_utf8(&payload[2..])
                        .map_err(|_| FrameError::BadClose)?
                        .to_string();
                    (Some(code), reason)
                }
            };
            Event::Close { code, reason }
        }
    })
}

/// Unmasks `buf`, which starts `offset` bytes into a masked payload.
fn unmask_at(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let phase = offset % 4;
    let rotated = [
        mask[phase],
        mask[(phase + 1) % 4],
        mask[(phase + 2) % 4],
        mask[(phase + 3) % 4],
    ];
    fastwebsockets::unmask(buf, rotated);
}

/// Puts streamed data pieces back together into whole messages, for peers that want them (a
/// client reading server frames). Control events pass through.
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    /// The pieces of an unfinished message.
    pieces: BytesMut,
}

impl Reassembler {
    /// A reassembler that refuses messages longer than `max_message` bytes, so a peer cannot
    /// grow the buffer without end.
    pub fn new(max_message: usize) -> Reassembler {
        Reassembler {
            max_message,
            pieces: BytesMut::new(),
        }
    }

    /// Returns `event` as whole: a data piece that ends a message becomes the message; one
    /// that does not is kept and gives `None`.
    pub fn push(&mut self, event: Event) -> Result<Option<Event>, FrameError> {
        let Event::Data { payload, last } = event else {
            return Ok(Some(event));
        };
        if self.pieces.len() + payload.len() > self.max_message {
            return Err(FrameError::TooLarge(self.max_message));
        }
        if last && self.pieces.is_empty() {
            return Ok(Some(Event::Data { payload, last }));
        }
        self.pieces.extend_from_slice(&payload);
        Ok(last.then(|| Event::Data {
            payload: std::mem::take(&mut self.pieces).freeze(),
            last: true,
        }))
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
    } else if u16::try_from(len).is_ok() {
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
    // The 7-bit length, or 126 and 127 for a 16-bit and a 64-bit length that follows.
    let marker = if len < 126 {
        len as u8
    } else if u16::try_from(len).is_ok() {
        126
    } else {
        127
    };
    out.push(0x80 | marker);
    match marker {
        126 => out.extend_from_slice(&(len as u16).to_be_bytes()),
        127 => out.extend_from_slice(&(len as u64).to_be_bytes()),
        _ => {}
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

    /// Feeds `chunks` and returns the events with data pieces put back together.
    fn whole(role: Role, chunks: &[&[u8]]) -> Result<Vec<Event>, FrameError> {
        let mut d = Decoder::with_role(role);
        let mut r = Reassembler::new(1 << 20);
        let mut events = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            d.feed(chunk, &mut events)?;
            for e in events.drain(..) {
                out.extend(r.push(e)?);
            }
        }
        Ok(out)
    }

    fn message(payload: &[u8]) -> Event {
        Event::Data {
            payload: Bytes::copy_from_slice(payload),
            last: true,
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&frame, &mut out).unwrap();
        assert_eq!(out, vec![message(b"Hello")]);
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
        stream.extend(mask_frame(true, 2, b"", M));
        stream.extend(mask_frame(true, 8, b"\x03\xe8bye", M));
        let expected = vec![
            Event::Ping(Bytes::from_static(b"ping")),
            message(b"Hello"),
            message(&[7u8; 200]),
            message(b""),
            Event::Close {
                code: Some(1000),
                reason: "bye".into(),
            },
        ];
        for a in 0..=stream.len() {
            for b in [a, (a + 3).min(stream.len()), stream.len()] {
                let got = whole(Role::Server, &[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(got.unwrap(), expected, "split at {a}/{b}");
            }
        }
    }

    #[test]
    fn payloads_stream_out_as_they_arrive_and_nothing_is_held() {
        // A 1 MiB message in one frame, fed in 1000-byte reads: every read hands its bytes on
        // at once, unmasked, and the decoder keeps nothing of the payload.
        let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let stream = mask_frame(true, 2, &payload, M);
        let mut d = Decoder::new();
        let mut events = Vec::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(1000) {
            d.feed(chunk, &mut events).unwrap();
            assert!(d.buffered() <= 14);
            for e in events.drain(..) {
                let Event::Data { payload, last } = e else {
                    panic!("{e:?}")
                };
                got.extend_from_slice(&payload);
                assert_eq!(last, got.len() == 1 << 20);
            }
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn client_role_reads_server_frames_and_refuses_masked_ones() {
        let mut stream = encode(OpCode::Text, b"Hello").to_vec();
        stream.extend_from_slice(&encode(OpCode::Binary, &[1u8; 300]));
        for split in 0..=stream.len() {
            let got = whole(Role::Client, &[&stream[..split], &stream[split..]]).unwrap();
            assert_eq!(
                got,
                vec![message(b"Hello"), message(&[1u8; 300])],
                "split {split}"
            );
        }
        let masked = encode_masked(OpCode::Text, b"x", M);
        assert_eq!(whole(Role::Client, &[&masked]), Err(FrameError::Masked));
        // And a server reads what a client encodes.
        assert_eq!(
            whole(Role::Server, &[&masked]).unwrap(),
            vec![message(b"x")]
        );
    }

    #[test]
    fn text_is_checked_as_utf8_across_pieces_and_frames() {
        let text = "héllo wörld €𝄞".as_bytes();
        let mut stream = mask_frame(false, 1, &text[..2], M);
        stream.extend(mask_frame(true, 0, &text[2..], M));
        for a in 0..=stream.len() {
            let got = whole(Role::Server, &[&stream[..a], &stream[a..]]).unwrap();
            assert_eq!(got, vec![message(text)], "split at {a}");
        }
        let bad = |payload: &[u8]| whole(Role::Server, &[&mask_frame(true, 1, payload, M)]);
        assert_eq!(bad(b"a\xffb"), Err(FrameError::InvalidUtf8));
        assert_eq!(FrameError::InvalidUtf8.close_code(), 1007);
        // A message that ends inside a character.
        assert_eq!(
            bad("€".as_bytes()[..2].as_ref()),
            Err(FrameError::InvalidUtf8)
        );
        // Binary carries anything.
        let binary = whole(Role::Server, &[&mask_frame(true, 2, b"\xff", M)]).unwrap();
        assert_eq!(binary, vec![message(b"\xff")]);
    }

    #[test]
    fn the_reassembler_bounds_a_message() {
        let mut r = Reassembler::new(64);
        let piece = |n: usize, last| Event::Data {
            payload: Bytes::from(vec![b'a'; n]),
            last,
        };
        assert_eq!(r.push(piece(40, false)), Ok(None));
        assert_eq!(r.push(piece(40, true)), Err(FrameError::TooLarge(64)));
        let mut r = Reassembler::new(64);
        assert_eq!(r.push(piece(30, false)), Ok(None));
        assert_eq!(r.push(Event::Pong), Ok(Some(Event::Pong)));
        assert_eq!(r.push(piece(30, true)), Ok(Some(message(&[b'a'; 60]))));
    }

    #[test]
    fn protocol_violations() {
        let feed = |bytes: &[u8]| whole(Role::Server, &[bytes]);
        assert_eq!(feed(b"\x81\x05Hello"), Err(FrameError::Unmasked));
        assert_eq!(
            feed(&mask_frame(true, 3, b"", M)),
            Err(FrameError::UnknownOpCode(3))
        );
        assert_eq!(
            feed(&mask_frame(true, 0, b"x", M)),
            Err(FrameError::UnexpectedContinuation)
        );
        assert_eq!(
            feed(&mask_frame(false, 9, b"x", M)),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            feed(&mask_frame(true, 9, &[0u8; 126], M)),
            Err(FrameError::BadControlFrame)
        );
        let mut inter = mask_frame(false, 1, b"a", M);
        inter.extend(mask_frame(true, 1, b"b", M));
        assert_eq!(feed(&inter), Err(FrameError::Interleaved));
        let mut rsv = mask_frame(true, 1, b"a", M);
        rsv[0] |= 0x40;
        assert_eq!(feed(&rsv), Err(FrameError::ReservedBits));
        assert_eq!(
            feed(&mask_frame(true, 8, b"\x03", M)),
            Err(FrameError::BadClose)
        );
        assert_eq!(
            feed(&mask_frame(true, 8, &999u16.to_be_bytes(), M)),
            Err(FrameError::BadCloseCode(999))
        );
        assert_eq!(FrameError::BadCloseCode(999).close_code(), 1002);
        assert_eq!(
            feed(&mask_frame(true, 8, &4000u16.to_be_bytes(), M)).unwrap(),
            vec![Event::Close {
                code: Some(4000),
                reason: String::new()
            }]
        );
        // A declared length of any size is no error: its payload streams as it comes.
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4], &mut out)
            .unwrap();
        assert!(out.is_empty());
        d.feed(b"abc", &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }
}
