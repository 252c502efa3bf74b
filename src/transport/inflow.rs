//! When Herald reads what a client sends: backpressure instead of buffering or cutting.
//!
//! Every transport asks the same question before it reads more from a client (a WebSocket
//! read, the next piece of a POST body): may it? Not while the client's own outbound queue is
//! above `connections.outbound_high_watermark_bytes` — what it asks for (an echo, a broadcast
//! that includes it) would only grow that queue — until the queue drains below
//! `outbound_low_watermark_bytes`; and not while the node holds more than
//! `connections.input_budget_bytes` of unfinished messages and this client holds one of them.
//! Not reading lets TCP push back on the client, which slows down instead of being cut. The
//! slow-consumer cut stays for a client that does not read at all while others publish to it:
//! a publish never waits for one recipient.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

pub use crate::hub::connection::Pause;
use crate::hub::{Connection, Shard};

/// Whether Herald may read from `conn` now; `has_partial` says whether its session holds an
/// unfinished message. Records pauses and resumptions (and their duration) in the metrics.
pub fn gate(shard: &Shard, conn: &Connection, has_partial: bool) -> Result<(), Pause> {
    let limits = &shard.node.config.connections;
    let queued = conn.queued_bytes();
    let paused = conn.input_paused();
    // With stateful reconnect's replay buffer full, nothing is written until the client's
    // Acks are read: reading must go on.
    let outbound = !conn.replay_full()
        && match paused {
            Some((Pause::Outbound, _)) => queued > limits.low_watermark(),
            _ => queued > limits.high_watermark(),
        };
    let wanted = if outbound {
        Some(Pause::Outbound)
    } else if has_partial && shard.node.input.is_over() {
        Some(Pause::Budget)
    } else {
        None
    };
    // Pauses are rare: their start and end are timed precisely, not by the shard's tick.
    match (paused, wanted) {
        (None, None) => Ok(()),
        (Some((was, since)), None) => {
            let now = Instant::now();
            shard
                .metrics
                .input_resumed(was, now.saturating_duration_since(since));
            conn.set_input_paused(None);
            if was == Pause::Outbound {
                // Herald held the client's bytes back; its silence meanwhile was not its own.
                conn.touch_received(now);
            }
            Ok(())
        }
        (Some((was, _)), Some(why)) if was == why => Err(why),
        (previous, Some(why)) => {
            let now = Instant::now();
            if let Some((was, since)) = previous {
                shard
                    .metrics
                    .input_resumed(was, now.saturating_duration_since(since));
            }
            shard.metrics.input_paused(why);
            conn.set_input_paused(Some((why, now)));
            Err(why)
        }
    }
}

/// Waits until Herald may read from `conn` again (for transports whose reading is a future,
/// such as a POST body); `Err` if the connection closes meanwhile.
pub async fn readable(shard: &Shard, conn: &Connection, has_partial: bool) -> Result<(), ()> {
    poll_fn(|cx| {
        if conn.is_closing() {
            return Poll::Ready(Err(()));
        }
        match gate(shard, conn, has_partial) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => {
                conn.register_input(cx.waker());
                Poll::Pending
            }
        }
    })
    .await
}
