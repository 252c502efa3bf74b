//! The fan-out limit: the least work a server can do to broadcast over WebSockets on this
//! machine, as a reference for the others. One thread per core, each with its own listener;
//! every text frame a client sends is framed once and the same bytes are written straight to
//! every socket (all frames waiting for a socket go out in one write). No protocol, no
//! queues beyond what the kernel refuses. Usage: fanout-limit PORT [THREADS]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::Arc;

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

type Frame = Arc<[u8]>;

struct Socket {
    stream: TcpStream,
    /// Bytes the kernel did not take yet.
    pending: RefCell<VecDeque<u8>>,
}

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8084);
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::unbounded_channel::<Frame>()).unzip();
    let senders = Arc::new(senders);
    let handles: Vec<_> = receivers
        .into_iter()
        .map(|rx| {
            let senders = senders.clone();
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_reuse_port(true).unwrap();
            socket.set_nonblocking(true).unwrap();
            socket.bind(&addr.into()).unwrap();
            socket.listen(4096).unwrap();
            let listener: std::net::TcpListener = socket.into();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, serve(listener, senders, rx));
            })
        })
        .collect();
    println!("limit listening on {port} ({threads} threads)");
    for h in handles {
        h.join().unwrap();
    }
}

async fn serve(listener: std::net::TcpListener, senders: Arc<Vec<mpsc::UnboundedSender<Frame>>>, mut rx: mpsc::UnboundedReceiver<Frame>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let sockets: Rc<RefCell<Vec<Rc<Socket>>>> = Rc::default();
    let fan = sockets.clone();
    tokio::task::spawn_local(async move {
        let mut batch = Vec::new();
        while let Some(frame) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&frame);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
            }
            let targets = fan.borrow().clone();
            for socket in targets {
                write(&socket, &batch);
            }
        }
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let sockets = sockets.clone();
        let senders = senders.clone();
        tokio::task::spawn_local(async move {
            let Some((stream, leftover)) = upgrade(stream).await else { return };
            let socket = Rc::new(Socket { stream, pending: RefCell::default() });
            sockets.borrow_mut().push(socket.clone());
            read_frames(&socket, leftover, &senders).await;
            sockets.borrow_mut().retain(|s| !Rc::ptr_eq(s, &socket));
        });
    }
}

/// Writes `bytes` now if the kernel takes them, else keeps them for a flusher task.
fn write(socket: &Rc<Socket>, bytes: &[u8]) {
    let mut pending = socket.pending.borrow_mut();
    if !pending.is_empty() {
        pending.extend(bytes);
        return;
    }
    let n = match socket.stream.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(_) => return,
    };
    if n < bytes.len() {
        pending.extend(&bytes[n..]);
        let socket = socket.clone();
        tokio::task::spawn_local(async move {
            while !socket.pending.borrow().is_empty() {
                if socket.stream.writable().await.is_err() {
                    return;
                }
                let mut pending = socket.pending.borrow_mut();
                let (front, _) = pending.as_slices();
                match socket.stream.try_write(front) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// Answers the WebSocket upgrade; returns the stream and any bytes read past the request.
async fn upgrade(mut stream: TcpStream) -> Option<(TcpStream, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let key = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key")))
        .map(|(_, v)| v.trim().to_string())?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.writable().await.ok()?;
    stream.try_write(response.as_bytes()).ok()?;
    Some((stream, buf[end..].to_vec()))
}

/// Reads masked client frames; each text frame is framed once for the server direction and
/// handed to every thread.
async fn read_frames(socket: &Socket, mut buf: Vec<u8>, senders: &[mpsc::UnboundedSender<Frame>]) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some((used, frame)) = parse(&buf) {
            buf.drain(..used);
            if let Some(frame) = frame {
                for tx in senders {
                    let _ = tx.send(frame.clone());
                }
            }
        }
        socket.stream.readable().await.ok();
        match socket.stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Parses one client frame: `(bytes used, Some(server frame))` for a text or binary frame.
fn parse(buf: &[u8]) -> Option<(usize, Option<Frame>)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut pos) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
    pos += 4;
    let payload = buf.get(pos..pos + len)?;
    if opcode != 1 && opcode != 2 {
        return Some((pos + len, None));
    }
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(0x80 | opcode);
    if len < 126 {
        frame.push(len as u8);
    } else if len <= 65535 {
        frame.push(126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    Some((pos + len, Some(frame.into())))
}
