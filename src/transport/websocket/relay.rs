//! Resumed WebSockets (stateful reconnect): the client's new socket may reach any shard,
//! while its connection — queue, replay buffer, groups — stays on the shard that has it.
//! The socket's shard relays frames both ways: payload pieces the client sends go to the
//! connection's session through a small bounded channel (so a client that sends faster than
//! its session takes is not read, as on a direct socket); what the connection sends comes
//! back a batch at a time (one batch in flight, so a slow socket slows the connection's
//! queue, whose cap still holds). The connection first announces the oldest unacknowledged
//! message (Sequence) and replays everything unacknowledged; the client drops what it already
//! had.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::fault::{CloseReason, HttpFault};
use crate::hub::connection::Replay;
use crate::hub::node::IdState;
use crate::hub::{Connection, ConnectionId, Encoded, Shard, TransportKind};
use crate::protocol::HubMessage;
use crate::protocol::frame::{self, Decoder, Event, OpCode};
use crate::transport::inflow;
use crate::transport::session::Session;
use crate::transport::writer::take_queued;

/// Payload pieces in flight from the socket's shard to the connection's.
const FEED_DEPTH: usize = 4;

/// What the connection's shard sends the socket's shard.
enum Out {
    /// Bytes to write.
    Data(Bytes),
    /// Last bytes to write, then close the socket.
    Close(Bytes),
    /// Drop the socket without a word (a newer reconnect took over).
    Drop,
}

/// Checks that `id` is a stateful connection that may resume, and asks a transport it still
/// has to let go. Returns the shard that holds it.
pub async fn claim(shard: &Rc<Shard>, id: ConnectionId) -> Result<usize, HttpFault> {
    let owner = match shard.node.registry.state(id) {
        IdState::Active {
            shard: owner,
            transport: TransportKind::WebSockets,
        } => owner,
        IdState::Active { .. } => return Err(HttpFault::TransportChanged),
        _ => return Err(HttpFault::ConnectionNotFound),
    };
    let (tx, rx) = oneshot::channel();
    shard
        .run_on(owner, move |owner| {
            let ok = match owner.connection(id) {
                Some(conn) if conn.is_stateful() && !conn.is_closing() => {
                    if conn.disconnected_since().is_none() {
                        conn.supersede();
                    }
                    true
                }
                _ => false,
            };
            let _ = tx.send(ok);
        })
        .await;
    match rx.await {
        Ok(true) => Ok(owner),
        _ => Err(HttpFault::ConnectionActive),
    }
}

/// The socket's side: WebSocket frames in and out, everything else on `owner`.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    mut io: S,
    leftover: Bytes,
    owner: usize,
    id: ConnectionId,
) {
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(1);
    let (feed_tx, feed_rx) = mpsc::channel::<Bytes>(FEED_DEPTH);
    shard
        .run_on(owner, move |owner| attach(owner, id, out_tx, feed_rx))
        .await;
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut incoming = leftover.to_vec();
    drop(leftover);
    'socket: loop {
        if !incoming.is_empty() {
            if decoder.feed(&incoming, &mut events).is_err() {
                break;
            }
            incoming.clear();
            for event in events.drain(..) {
                match event {
                    Event::Data { payload, .. } => {
                        // Waits while the connection's session is behind: the socket is
                        // not read meanwhile.
                        if feed_tx.send(payload).await.is_err() {
                            break 'socket;
                        }
                    }
                    Event::Ping(p) => {
                        if io
                            .write_all(&frame::encode(OpCode::Pong, &p))
                            .await
                            .is_err()
                        {
                            break 'socket;
                        }
                    }
                    Event::Pong => {}
                    Event::Close { .. } => {
                        shard
                            .run_on(owner, move |owner| {
                                if let Some(conn) = owner.connection(id) {
                                    conn.request_close(CloseReason::ClientClosed);
                                }
                            })
                            .await;
                    }
                }
            }
        }
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Out::Data(bytes)) => {
                    if io.write_all(&bytes).await.is_err() || io.flush().await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(bytes)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        io.write_all(&bytes).await?;
                        io.flush().await?;
                        io.shutdown().await
                    })
                    .await;
                    return;
                }
                Some(Out::Drop) | None => break,
            },
            read = io.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => incoming.extend_from_slice(&buf[..n]),
            },
        }
    }
    // Dropping the feed tells the connection's side that the socket went away.
    drop(feed_tx);
    let _ = tokio::time::timeout(Duration::from_millis(100), io.shutdown()).await;
}

/// Starts serving a connection of this shard through a relayed socket.
fn attach(
    shard: &Rc<Shard>,
    id: ConnectionId,
    out: mpsc::Sender<Out>,
    feed: mpsc::Receiver<Bytes>,
) {
    let Some(conn) = shard.connection(id) else {
        drop(out);
        return;
    };
    tokio::task::spawn_local(remote(shard.clone(), conn, out, feed));
}

/// The connection's side of a relayed socket.
async fn remote(
    shard: Rc<Shard>,
    conn: Rc<Connection>,
    out: mpsc::Sender<Out>,
    mut feed: mpsc::Receiver<Bytes>,
) {
    // The previous transport lets go first (it was asked to when the reconnect arrived).
    poll_fn(|cx| {
        conn.register(cx.waker());
        if conn.disconnected_since().is_some() || conn.is_closing() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    if conn.is_closing() {
        let _ = out.send(Out::Drop).await;
        return;
    }
    // Announce the oldest unacknowledged message, and replay from it.
    let protocol = conn.protocol();
    let mut first = Vec::new();
    let sequence_id = conn.with_replay(Replay::first).unwrap_or(1);
    first.extend_from_slice(
        &Encoded::message(&HubMessage::Sequence { sequence_id }, protocol).frame(),
    );
    conn.with_replay(|r| r.items().for_each(|item| first.extend_from_slice(item)));
    conn.resume(Instant::now());
    if out.send(Out::Data(Bytes::from(first))).await.is_err() {
        conn.disconnect(Instant::now());
        return;
    }
    let mut session = Session::resumed(shard.clone(), conn.clone());
    loop {
        // As on a direct socket: the client's next piece waits while its own queue is backed
        // up (the branch below drains it) or the node's input budget is spent.
        let readable = inflow::gate(&shard, &conn, session.has_partial()).is_ok();
        tokio::select! {
            payload = feed.recv(), if readable => if let Some(payload) = payload {
                conn.touch_received(shard.coarse_now());
                shard.metrics.bytes_in(payload.len());
                if let Err(reason) = Box::pin(session.receive(&payload)).await {
                    conn.request_close(reason);
                }
            } else {
                // The socket went away: wait for the client again.
                conn.disconnect(Instant::now());
                return;
            },
            () = poll_fn(|cx| {
                conn.register(cx.waker());
                if !readable {
                    conn.wait_for_recipients(cx.waker());
                }
                let wake = conn.is_superseded()
                    || conn.is_closing()
                    || (conn.has_queued() && !conn.replay_full())
                    || (!readable && inflow::gate(&shard, &conn, session.has_partial()).is_ok());
                if wake {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }) => {
                if conn.is_superseded() {
                    conn.disconnect(Instant::now());
                    let _ = out.send(Out::Drop).await;
                    return;
                }
                if conn.is_closing() {
                    let reason = conn.close_reason().unwrap_or(CloseReason::ClientGone);
                    let mut tail = Vec::new();
                    for item in take_queued(&shard, &conn) {
                        tail.extend_from_slice(&item);
                    }
                    if let Some((error, allow_reconnect)) = reason.close_message() {
                        let close = HubMessage::Close { error, allow_reconnect };
                        tail.extend_from_slice(&Encoded::message(&close, protocol).frame());
                    }
                    tail.extend_from_slice(&frame::encode_close(reason.websocket_code(), ""));
                    let _ = out.send(Out::Close(Bytes::from(tail))).await;
                    shard.detach(&conn, &reason, None).await;
                    return;
                }
                if !conn.has_queued() || conn.replay_full() {
                    // Woken to read again, not to write.
                    continue;
                }
                let mut batch = Vec::new();
                for item in take_queued(&shard, &conn) {
                    batch.extend_from_slice(&item);
                }
                if out.send(Out::Data(Bytes::from(batch))).await.is_err() {
                    conn.disconnect(Instant::now());
                    return;
                }
            }
        }
    }
}
