//! The outbound half every transport shares: a connection's queue written to its socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWrite;

use crate::hub::shard::micros;
use crate::hub::{Connection, Shard};
use crate::metrics::Latency;

/// Writes the connection's queue until it is empty (`Ready(Ok)`) or the socket is full
/// (`Pending`, with the socket's waker registered). Each call hands everything queued to one
/// vectored write, so a backlog of small messages costs one system call, not one each.
/// Adds the number of messages fully written to `written`, and records the publish→write
/// latency of a sample of them.
pub fn poll_write_queue<S: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    shard: &Shard,
    conn: &Connection,
    io: &mut S,
    written: &mut usize,
) -> Poll<io::Result<()>> {
    let mut wrote = false;
    // Stateful reconnect: with the replay buffer full, nothing more is sent until the client
    // acknowledges (an Ack wakes the connection).
    while conn.has_queued() && !conn.replay_full() {
        match conn.with_queued(|slices| Pin::new(&mut *io).poll_write_vectored(cx, slices)) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                wrote = true;
                let now = shard.coarse_now();
                let mut precise = None;
                let drained = conn.consume(n, now, |published| {
                    if let Some(at) = published
                        && shard.sample_latency()
                    {
                        let now = *precise.get_or_insert_with(Instant::now);
                        shard
                            .metrics
                            .record(Latency::PublishToWrite, micros(now - at));
                    }
                });
                *written += drained.messages;
                shard.metrics.bytes_out(n);
                conn.set_stalled(false, now);
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                conn.set_stalled(true, shard.coarse_now());
                return Poll::Pending;
            }
        }
    }
    if wrote {
        return Pin::new(&mut *io).poll_flush(cx);
    }
    Poll::Ready(Ok(()))
}

/// Takes everything queued for a transport that sends whole messages rather than a byte
/// stream (Server-Sent Events, long polling): the messages, oldest first, counted as written.
pub fn take_queued(shard: &Shard, conn: &Connection) -> Vec<crate::hub::connection::Wire> {
    let mut items = Vec::new();
    let now = shard.coarse_now();
    let mut precise = None;
    while conn.has_queued() {
        let n = conn.with_queued(|slices| {
            // Each slice is one whole message: these transports never write part of one.
            slices.iter().map(|s| s.len()).sum::<usize>()
        });
        let wires = conn.peek_wires();
        conn.consume(n, now, |published| {
            if let Some(at) = published
                && shard.sample_latency()
            {
                let now = *precise.get_or_insert_with(Instant::now);
                shard
                    .metrics
                    .record(Latency::PublishToWrite, micros(now - at));
            }
        });
        shard.metrics.bytes_out(n);
        items.extend(wires);
    }
    items
}
