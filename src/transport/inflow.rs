//! When Herald reads what a client sends: backpressure instead of buffering or cutting.
//!
//! Every transport asks the same question before it reads more from a client (a WebSocket
//! read, the next piece of a POST body): may it? Not while the client's own outbound queue is
//! above `connections.outbound_high_watermark_bytes` — what it asks for (an echo, a broadcast
//! that includes it) would only grow that queue — until the queue drains below
//! `outbound_low_watermark_bytes`; not while the node holds more than
//! `connections.input_budget_bytes` of unfinished messages and this client holds one of them;
//! and, when it has just published, not while other connections of its hub are backed up —
//! on any shard — as long as their sockets take bytes (recipients that make no progress for
//! `connections.recipient_wait_ms` no longer hold it back), so a burst goes out at the pace
//! its recipients take it (a long-polling recipient can hold only its queue between two
//! polls). Not reading lets TCP push back on the client, which slows down instead of being
//! cut. The slow-consumer cut stays for a client that does not read at all while others
//! publish to it: a publisher waits for it a bounded time, and no delivery ever waits.

use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::hub::{Connection, Shard};
pub use crate::metrics::Pause;

/// Whether Herald may read from `conn` now; `has_partial` says whether its session holds an
/// unfinished message. Records pauses and resumptions (and their duration) in the metrics.
pub fn gate(shard: &Shard, conn: &Connection, has_partial: bool) -> Result<(), Pause> {
    let paused = conn.input_paused();
    let wanted = wanted(shard, conn, has_partial, paused);

    // Pauses are rare: their start and end are timed precisely, not by the shard's tick.
    match (paused, wanted) {
        (None, None) => Ok(()),
        (Some((was, since)), None) => {
            let now = Instant::now();
            shard
                .metrics
                .input_resumed(was, now.saturating_duration_since(since));
            conn.set_input_paused(None);
            if was != Pause::Budget {
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

/// Why reading from `conn` should be paused now, if it should.
fn wanted(
    shard: &Shard,
    conn: &Connection,
    has_partial: bool,
    paused: Option<(Pause, Instant)>,
) -> Option<Pause> {
    // With stateful reconnect's replay buffer full, nothing is written until the client's
    // Acks are read: reading must go on.
    if conn.is_backed_up() && !conn.replay_full() {
        return Some(Pause::Outbound);
    }
    if has_partial && shard.node.input.is_over() {
        return Some(Pause::Budget);
    }
    // A publisher whose recipients are behind waits for them while they make progress: one
    // that does not read at all is cut as a slow consumer, and holds the publisher back at
    // most `recipient_wait_ms`.
    let wait = Duration::from_millis(shard.node.config.connections.recipient_wait_ms);
    let published = conn.take_published();
    if wait.is_zero() {
        return None;
    }
    if conn.others_backed_up() == 0 {
        conn.set_pressure_exempt(None);
        conn.set_recipient_progress(None);
        return None;
    }
    let progress = conn.recipient_progress_count();
    match conn.pressure_exempt() {
        Some(at) if at == progress => return None,
        Some(_) => conn.set_pressure_exempt(None),
        None => {}
    }
    match (paused, conn.recipient_progress()) {
        (Some((Pause::Recipients, _)), Some((since, seen))) => {
            if seen != progress {
                conn.set_recipient_progress(Some((Instant::now(), progress)));
                Some(Pause::Recipients)
            } else if since.elapsed() >= wait {
                conn.set_pressure_exempt(Some(progress));
                conn.set_recipient_progress(None);
                None
            } else {
                Some(Pause::Recipients)
            }
        }
        _ if published => {
            conn.set_recipient_progress(Some((Instant::now(), progress)));
            Some(Pause::Recipients)
        }
        _ => None,
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
            Err(why) => {
                conn.register_input(cx.waker());
                if why == Pause::Recipients {
                    conn.wait_for_recipients(cx.waker());
                }
                Poll::Pending
            }
        }
    })
    .await
}
