//! One client connection: TCP (from a chosen source address), the HTTP upgrade (after
//! negotiate, for SignalR), the protocol handshake, then frames in and out.

use std::net::{IpAddr, SocketAddr};

use herald::transport::websocket::frame::{self, Decoder, Event, OpCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::wire::{self, Incoming, Mode};

/// Largest frame the client accepts.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub hub: String,
    /// Path of the WebSocket endpoint for raw mode.
    pub path: String,
    pub mode: Mode,
    /// Access token for SignalR hubs that need one.
    pub token: Option<String>,
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
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, ClientError> {
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

/// A connected, handshaken client.
pub struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes read past the upgrade response, not yet decoded.
    leftover: Vec<u8>,
    mask: [u8; 4],
    mode: Mode,
}

impl Conn {
    /// Opens a connection: TCP from `source`, negotiate (SignalR), upgrade, handshake.
    pub async fn open(target: &Target, source: Option<IpAddr>) -> Result<Conn, ClientError> {
        let socket = match target.addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(ClientError::Connect)?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ClientError::Connect)?;
        }
        let mut stream = socket
            .connect(target.addr)
            .await
            .map_err(ClientError::Connect)?;
        stream.set_nodelay(true)?;
        let host = target.addr.to_string();
        let auth = target
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let mut buf = Vec::new();
        let path = match target.mode {
            Mode::SignalrJson => {
                let req = format!(
                    "POST /hubs/{}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\n\r\n",
                    target.hub
                );
                stream.write_all(req.as_bytes()).await?;
                let head = read_head(&mut stream, &mut buf).await?;
                let status = status_of(&buf[..head])?;
                if status != 200 {
                    return Err(ClientError::Status(status));
                }
                let len = content_length(&buf[..head]);
                while buf.len() < head + len {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body: serde_json::Value = serde_json::from_slice(&buf[head..head + len])
                    .map_err(|e| ClientError::Protocol(format!("negotiate: {e}")))?;
                buf.drain(..head + len);
                let token = body["connectionToken"]
                    .as_str()
                    .ok_or_else(|| ClientError::Protocol("negotiate: no connectionToken".into()))?;
                format!("/hubs/{}?id={token}", target.hub)
            }
            Mode::Raw => target.path.clone(),
            Mode::Socketio => "/socket.io/?EIO=4&transport=websocket".into(),
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let head = read_head(&mut stream, &mut buf).await?;
        let status = status_of(&buf[..head])?;
        if status != 101 {
            return Err(ClientError::Status(status));
        }
        buf.drain(..head);
        let mut conn = Conn {
            stream,
            decoder: Decoder::with_role(Role::Client, MAX_FRAME),
            leftover: buf,
            mask: rand::random(),
            mode: target.mode,
        };
        conn.handshake().await?;
        Ok(conn)
    }

    async fn handshake(&mut self) -> Result<(), ClientError> {
        match self.mode {
            Mode::SignalrJson => {
                self.send_text(&wire::signalr_handshake()).await?;
                let mut payloads = Vec::new();
                let first = loop {
                    self.read_payloads(&mut payloads).await?;
                    if let Some(p) = payloads.first() {
                        break p.clone();
                    }
                };
                match wire::signalr_handshake_answer(&first) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(ClientError::Protocol(
                        "handshake answer split across frames".into(),
                    )),
                    Err(e) => Err(ClientError::Protocol(e)),
                }
            }
            Mode::Raw => Ok(()),
            Mode::Socketio => {
                let mut payloads = Vec::new();
                // The Engine.IO open packet, then the namespace connect answer.
                while payloads.is_empty() {
                    self.read_payloads(&mut payloads).await?;
                }
                if !payloads[0].starts_with(b"0") {
                    return Err(ClientError::Protocol("no Engine.IO open packet".into()));
                }
                self.send_text(b"40").await?;
                payloads.clear();
                while !payloads.iter().any(|p| p.starts_with(b"40")) {
                    self.read_payloads(&mut payloads).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let frame = frame::encode_masked(OpCode::Text, payload, self.mask);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Reads at least one data frame's payload into `out`; answers pings.
    async fn read_payloads(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), ClientError> {
        let mut events = Vec::new();
        loop {
            if !self.leftover.is_empty() {
                let bytes = std::mem::take(&mut self.leftover);
                self.decoder
                    .feed(&bytes, &mut events)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
            } else {
                let mut chunk = vec![0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(ClientError::Closed);
                }
                self.decoder
                    .feed(&chunk[..n], &mut events)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
            }
            for event in events.drain(..) {
                match event {
                    Event::Message { payload, .. } => out.push(payload.to_vec()),
                    Event::Ping(p) => {
                        let pong = frame::encode_masked(OpCode::Pong, &p, self.mask);
                        self.stream.write_all(&pong).await?;
                    }
                    Event::Pong => {}
                    Event::Close { .. } => return Err(ClientError::Closed),
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// Splits into a reader and a writer that run concurrently.
    pub fn split(self) -> (Reader, Writer) {
        let (read, write) = self.stream.into_split();
        (
            Reader {
                read,
                decoder: self.decoder,
                leftover: self.leftover,
                mode: self.mode,
                buf: vec![0u8; 64 * 1024],
            },
            Writer {
                write,
                mask: self.mask,
                mode: self.mode,
            },
        )
    }
}

/// The receiving half.
pub struct Reader {
    read: OwnedReadHalf,
    decoder: Decoder,
    leftover: Vec<u8>,
    mode: Mode,
    buf: Vec<u8>,
}

impl Reader {
    /// Reads until at least one record arrives; records go to `out`. Control frames that
    /// need an answer become `Incoming::Reply` with the frame to send (pongs are answered by
    /// the writer side through the reply).
    pub async fn next(&mut self, out: &mut Vec<Incoming>) -> Result<(), ClientError> {
        let mut events = Vec::new();
        loop {
            if !self.leftover.is_empty() {
                let bytes = std::mem::take(&mut self.leftover);
                self.decoder
                    .feed(&bytes, &mut events)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
            } else {
                let n = self.read.read(&mut self.buf).await?;
                if n == 0 {
                    return Err(ClientError::Closed);
                }
                self.decoder
                    .feed(&self.buf[..n], &mut events)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
            }
            for event in events.drain(..) {
                match event {
                    Event::Message { payload, .. } => match self.mode {
                        Mode::SignalrJson => {
                            wire::signalr_records(&payload, out).map_err(ClientError::Protocol)?
                        }
                        Mode::Raw => out.push(
                            std::str::from_utf8(&payload)
                                .ok()
                                .and_then(wire::Stamp::parse)
                                .map_or(Incoming::Other, Incoming::Data),
                        ),
                        Mode::Socketio => out.push(wire::socketio_record(&payload)),
                    },
                    Event::Close { .. } => return Err(ClientError::Closed),
                    Event::Ping(_) | Event::Pong => {}
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }
}

/// The sending half.
pub struct Writer {
    write: OwnedWriteHalf,
    mask: [u8; 4],
    pub mode: Mode,
}

impl Writer {
    pub async fn send_text(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let frame = frame::encode_masked(OpCode::Text, payload, self.mask);
        self.write.write_all(&frame).await?;
        Ok(())
    }

    /// Appends `payload` as a masked text frame to `out`, to send several in one write.
    pub fn frame_into(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&frame::encode_masked(OpCode::Text, payload, self.mask));
    }

    /// Writes bytes already framed by [`Writer::frame_into`].
    pub async fn write_framed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write.write_all(bytes).await?;
        Ok(())
    }
}
