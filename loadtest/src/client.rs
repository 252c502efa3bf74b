//! One client connection: TCP (from a chosen source address), negotiate (SignalR), then
//! either a WebSocket upgrade or long polling, the protocol handshake, then records in and
//! out.
//!
//! A connection is used as two halves that run concurrently: a [`Reader`] that yields parsed
//! records and a [`Writer`] that sends payloads. Over WebSockets both halves share one
//! socket; otherwise the reader receives on one socket (an event stream, or `GET` polls on a
//! keep-alive connection) and the writer posts on another (`POST`), as the official clients
//! do.

use std::net::{IpAddr, SocketAddr};

use herald::protocol::Protocol;
use herald::protocol::frame::{self, Decoder, Event, OpCode, Reassembler, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::wire::{self, Incoming, Mode, Transport};

/// Largest frame or poll body the client accepts.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Every server to spread connections over (the nodes of a cluster); `addr` is the first.
    pub addrs: Vec<SocketAddr>,
    pub hub: String,
    /// Path of the WebSocket endpoint for raw mode.
    pub path: String,
    pub mode: Mode,
    /// How SignalR modes reach the hub (raw and Socket.IO always use WebSockets).
    pub transport: Transport,
    /// Access token for SignalR hubs that need one.
    pub token: Option<String>,
}

impl Target {
    /// The target of connection `i`: the servers take connections in turn, so connection 0
    /// (the first publisher) is on the first server.
    pub fn for_connection(&self, i: usize) -> Target {
        let mut target = self.clone();
        target.addr = self.addrs[i % self.addrs.len()];
        target
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("closed by the server")]
    Closed,
}

/// Reads bytes into `buf` until it holds a full HTTP response head; returns its length.
async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<usize, ClientError> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() > 64 * 1024 {
            return Err(ClientError::Protocol("response head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one whole response (head and `Content-Length` body) into `buf`; returns its status
/// and the body's range in `buf`.
async fn read_response(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<(u16, std::ops::Range<usize>), ClientError> {
    let head = read_head(stream, buf).await?;
    let status = status_of(&buf[..head])?;
    let len = content_length(&buf[..head]);
    if len > MAX_FRAME {
        return Err(ClientError::Protocol(format!("{len}-byte body")));
    }
    let end = head + len;
    if buf.len() < end {
        let have = buf.len();
        buf.resize(end, 0);
        stream.read_exact(&mut buf[have..]).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ClientError::Closed
            } else {
                ClientError::Io(e)
            }
        })?;
    }
    Ok((status, head..end))
}

fn status_of(head: &[u8]) -> Result<u16, ClientError> {
    std::str::from_utf8(head)
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol("bad status line".into()))
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Opens a TCP connection to `addr`, from `source` if given.
async fn dial(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ClientError> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(ClientError::Connect)?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ClientError::Connect)?;
    }
    let stream = socket.connect(addr).await.map_err(ClientError::Connect)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Request lines every HTTP request of one connection shares.
struct Http {
    host: String,
    /// An `Authorization` header line, or nothing.
    auth: String,
}

impl Http {
    fn new(target: &Target) -> Http {
        Http {
            host: target.addr.to_string(),
            auth: target
                .token
                .as_ref()
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default(),
        }
    }

    fn request(&self, method: &str, path: &str, extra: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}{extra}\r\n",
            self.host, self.auth
        )
    }
}

/// A connected, handshaken client.
pub struct Conn {
    reader: Reader,
    writer: Writer,
}

impl Conn {
    /// Opens a connection: TCP from `source`, negotiate (SignalR), upgrade or first poll,
    /// handshake.
    pub async fn open(target: &Target, source: Option<IpAddr>) -> Result<Conn, ClientError> {
        let http = Http::new(target);
        let mut stream = dial(target.addr, source).await?;
        let mut buf = Vec::new();
        let path = match target.mode.protocol() {
            Some(_) => {
                let req = http.request(
                    "POST",
                    &format!("/hubs/{}/negotiate?negotiateVersion=1", target.hub),
                    "Content-Length: 0\r\n",
                );
                stream.write_all(req.as_bytes()).await?;
                let (status, body) = read_response(&mut stream, &mut buf).await?;
                if status != 200 {
                    return Err(ClientError::Status(status));
                }
                let answer: serde_json::Value = serde_json::from_slice(&buf[body.clone()])
                    .map_err(|e| ClientError::Protocol(format!("negotiate: {e}")))?;
                buf.drain(..body.end);
                let token = answer["connectionToken"]
                    .as_str()
                    .ok_or_else(|| ClientError::Protocol("negotiate: no connectionToken".into()))?;
                format!("/hubs/{}?id={token}", target.hub)
            }
            None if target.mode == Mode::Socketio => "/socket.io/?EIO=4&transport=websocket".into(),
            None => target.path.clone(),
        };
        let transport = match target.mode.protocol() {
            Some(_) => target.transport,
            None => Transport::WebSockets,
        };
        let mut conn = if transport == Transport::WebSockets {
            let req = http.request(
                "GET",
                &path,
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            );
            stream.write_all(req.as_bytes()).await?;
            let head = read_head(&mut stream, &mut buf).await?;
            let status = status_of(&buf[..head])?;
            if status != 101 {
                return Err(ClientError::Status(status));
            }
            buf.drain(..head);
            let (read, write) = stream.into_split();
            Conn {
                reader: Reader::new(
                    target.mode,
                    ReadSide::WebSocket {
                        read,
                        decoder: Decoder::with_role(Role::Client),
                        messages: Reassembler::new(MAX_FRAME),
                        leftover: buf,
                        buf: vec![0u8; 64 * 1024],
                        events: Vec::new(),
                    },
                ),
                writer: Writer {
                    mode: target.mode,
                    long_polling: false,
                    side: WriteSide::WebSocket {
                        write,
                        mask: rand::random(),
                    },
                },
            }
        } else {
            // Receiving uses the socket negotiate used; sends go over a second one.
            let post = dial(target.addr, source).await?;
            let side = if transport == Transport::LongPolling {
                ReadSide::Poll {
                    request: http.request("GET", &path, "").into_bytes(),
                    stream,
                    buf,
                }
            } else {
                let req = http.request("GET", &path, "Accept: text/event-stream\r\n");
                stream.write_all(req.as_bytes()).await?;
                let head = read_head(&mut stream, &mut buf).await?;
                let status = status_of(&buf[..head])?;
                if status != 200 {
                    return Err(ClientError::Status(status));
                }
                if !String::from_utf8_lossy(&buf[..head])
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
                {
                    return Err(ClientError::Protocol("event stream is not chunked".into()));
                }
                buf.drain(..head);
                ReadSide::EventStream {
                    stream,
                    raw: buf,
                    left: 0,
                    text: Vec::new(),
                    buf: vec![0u8; 64 * 1024],
                }
            };
            Conn {
                reader: Reader::new(target.mode, side),
                writer: Writer {
                    mode: target.mode,
                    long_polling: transport == Transport::LongPolling,
                    side: WriteSide::Post {
                        stream: post,
                        head: http.request("POST", &path, ""),
                        buf: Vec::new(),
                    },
                },
            }
        };
        conn.handshake().await?;
        Ok(conn)
    }

    async fn handshake(&mut self) -> Result<(), ClientError> {
        let mode = self.reader.mode;
        if let Some(protocol) = mode.protocol() {
            // Long polling: the first poll answers at once and starts the connection.
            if matches!(self.reader.side, ReadSide::Poll { .. }) {
                self.reader.side.read_once(&mut |_| Ok(())).await?;
            }
            self.writer.send(&wire::signalr_handshake(protocol)).await?;
            let mut payloads = Vec::new();
            let first = loop {
                self.reader.raw_payloads(&mut payloads).await?;
                if let Some(first) = payloads.first() {
                    break first.clone();
                }
            };
            let Some(used) =
                wire::signalr_handshake_answer(&first).map_err(ClientError::Protocol)?
            else {
                return Err(ClientError::Protocol(
                    "handshake answer split across payloads".into(),
                ));
            };
            // Records that came with the answer are kept for the first read.
            let reader = &mut self.reader;
            wire::signalr_records(protocol, &first[used..], &mut reader.backlog)
                .map_err(ClientError::Protocol)?;
            for p in &payloads[1..] {
                wire::signalr_records(protocol, p, &mut reader.backlog)
                    .map_err(ClientError::Protocol)?;
            }
            return Ok(());
        }
        if mode == Mode::Socketio {
            // The Engine.IO open packet, then the namespace connect answer.
            let mut payloads = Vec::new();
            self.reader.raw_payloads(&mut payloads).await?;
            if !payloads[0].starts_with(b"0") {
                return Err(ClientError::Protocol("no Engine.IO open packet".into()));
            }
            self.writer.send(b"40").await?;
            payloads.clear();
            while !payloads.iter().any(|p| p.starts_with(b"40")) {
                self.reader.raw_payloads(&mut payloads).await?;
            }
        }
        Ok(())
    }

    /// Splits into a reader and a writer that run concurrently.
    pub fn split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }
}

/// How the reader receives bytes.
enum ReadSide {
    WebSocket {
        read: OwnedReadHalf,
        decoder: Decoder,
        /// Whole messages out of the decoder's pieces.
        messages: Reassembler,
        /// Bytes read past the upgrade response, not yet decoded.
        leftover: Vec<u8>,
        buf: Vec<u8>,
        events: Vec<Event>,
    },
    Poll {
        stream: TcpStream,
        /// The `GET` request, sent once per poll.
        request: Vec<u8>,
        buf: Vec<u8>,
    },
    EventStream {
        stream: TcpStream,
        /// Bytes read, still chunk-coded.
        raw: Vec<u8>,
        /// Data still due in the current chunk.
        left: usize,
        /// The event stream's text, not yet split into events.
        text: Vec<u8>,
        buf: Vec<u8>,
    },
}

impl ReadSide {
    /// One read: a socket read (WebSockets) or one poll (long polling). Calls `each` for
    /// every whole payload it yields (possibly none).
    async fn read_once(
        &mut self,
        each: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), ClientError> {
        match self {
            ReadSide::WebSocket {
                read,
                decoder,
                messages,
                leftover,
                buf,
                events,
            } => {
                if leftover.is_empty() {
                    let n = read.read(buf).await?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    decoder
                        .feed(&buf[..n], events)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                } else {
                    let bytes = std::mem::take(leftover);
                    decoder
                        .feed(&bytes, events)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                }
                for event in events.drain(..) {
                    let event = messages
                        .push(event)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    match event {
                        Some(Event::Data { payload, .. }) => {
                            each(&payload).map_err(ClientError::Protocol)?;
                        }
                        Some(Event::Close { .. }) => return Err(ClientError::Closed),
                        // The server does not ping WebSocket clients at the frame level.
                        None | Some(Event::Ping(_) | Event::Pong) => {}
                    }
                }
                Ok(())
            }
            ReadSide::Poll {
                stream,
                request,
                buf,
            } => {
                // Not cancel-safe: a poll cut short leaves its answer unread, so a reader
                // whose read was cancelled is dropped (the scenarios do so at the run's end).
                stream.write_all(request).await?;
                buf.clear();
                let (status, body) = read_response(stream, buf).await?;
                match status {
                    200 if body.is_empty() => Ok(()),
                    200 => each(&buf[body]).map_err(ClientError::Protocol),
                    204 => Err(ClientError::Closed),
                    other => Err(ClientError::Status(other)),
                }
            }
            ReadSide::EventStream {
                stream,
                raw,
                left,
                text,
                buf,
            } => {
                if raw.is_empty() {
                    let n = stream.read(buf).await?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                let open = wire::dechunk(raw, left, text).map_err(ClientError::Protocol)?;
                wire::sse_events(text, each).map_err(ClientError::Protocol)?;
                if !open {
                    return Err(ClientError::Closed);
                }
                if !raw.is_empty() {
                    // A partial chunk header: the next read must bring more bytes.
                    let n = stream.read(buf).await?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                Ok(())
            }
        }
    }
}

/// The receiving half.
pub struct Reader {
    side: ReadSide,
    mode: Mode,
    /// Records that arrived with the handshake answer.
    backlog: Vec<Incoming>,
}

impl Reader {
    fn new(mode: Mode, side: ReadSide) -> Reader {
        Reader {
            side,
            mode,
            backlog: Vec::new(),
        }
    }

    /// Reads until at least one payload arrives, copying each into `out`.
    async fn raw_payloads(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), ClientError> {
        loop {
            self.side
                .read_once(&mut |p| {
                    out.push(p.to_vec());
                    Ok(())
                })
                .await?;
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// Reads until at least one record arrives; records go to `out`.
    pub async fn next(&mut self, out: &mut Vec<Incoming>) -> Result<(), ClientError> {
        if !self.backlog.is_empty() {
            out.append(&mut self.backlog);
            return Ok(());
        }
        let mode = self.mode;
        loop {
            self.side
                .read_once(&mut |payload| {
                    match mode.protocol() {
                        Some(protocol) => wire::signalr_records(protocol, payload, out)?,
                        None if mode == Mode::Socketio => out.push(wire::socketio_record(payload)),
                        None => out.push(
                            std::str::from_utf8(payload)
                                .ok()
                                .and_then(wire::Stamp::parse)
                                .map_or(Incoming::Other, Incoming::Data),
                        ),
                    }
                    Ok(())
                })
                .await?;
            if !out.is_empty() {
                return Ok(());
            }
        }
    }
}

/// How the writer sends bytes.
enum WriteSide {
    WebSocket {
        write: OwnedWriteHalf,
        mask: [u8; 4],
    },
    Post {
        stream: TcpStream,
        /// The `POST` request head without its `Content-Length` line and final CRLF.
        head: String,
        buf: Vec<u8>,
    },
}

/// The sending half.
pub struct Writer {
    side: WriteSide,
    pub mode: Mode,
    long_polling: bool,
}

impl Writer {
    /// Sends one payload: a WebSocket frame (binary for MessagePack), or a `POST`.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mut batch = Vec::with_capacity(payload.len() + 14);
        self.frame_into(payload, &mut batch);
        self.write_framed(&batch).await
    }

    /// Appends `payload` to `out` to send several in one write: each in its own WebSocket
    /// frame, or back to back in one `POST` body (hub records carry their own framing).
    pub fn frame_into(&self, payload: &[u8], out: &mut Vec<u8>) {
        match &self.side {
            WriteSide::WebSocket { mask, .. } => {
                let opcode = if self.mode == Mode::SignalrMsgpack {
                    OpCode::Binary
                } else {
                    OpCode::Text
                };
                out.extend_from_slice(&frame::encode_masked(opcode, payload, *mask));
            }
            WriteSide::Post { .. } => out.extend_from_slice(payload),
        }
    }

    /// Sends bytes gathered by [`Writer::frame_into`]; a `POST` waits for its answer.
    pub async fn write_framed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match &mut self.side {
            WriteSide::WebSocket { write, .. } => {
                write.write_all(bytes).await?;
                Ok(())
            }
            WriteSide::Post { stream, head, buf } => {
                buf.clear();
                buf.extend_from_slice(head.as_bytes());
                // `head` ends with the blank line; put the length before it.
                buf.truncate(buf.len() - 2);
                buf.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes(),
                );
                buf.extend_from_slice(bytes);
                stream.write_all(buf).await?;
                buf.clear();
                let (status, _) = read_response(stream, buf).await?;
                match status {
                    200 => Ok(()),
                    404 | 204 => Err(ClientError::Closed),
                    other => Err(ClientError::Status(other)),
                }
            }
        }
    }

    /// What an otherwise silent client sends so the server keeps it: a SignalR ping over
    /// WebSockets or Server-Sent Events. Long polling needs none (polling keeps the
    /// connection), nor do raw and Socket.IO servers.
    pub fn keep_alive_payload(&self) -> Option<Vec<u8>> {
        let protocol = self.mode.protocol()?;
        if self.long_polling {
            return None;
        }
        let mut out = Vec::new();
        protocol.encode(&herald::protocol::HubMessage::Ping, &mut out);
        Some(out)
    }

    /// The hub protocol, for SignalR modes.
    pub fn protocol(&self) -> Option<Protocol> {
        self.mode.protocol()
    }
}
