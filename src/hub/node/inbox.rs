//! A shard's inbox: how the other shards (and the control runtime) reach it.

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use super::message::ShardMsg;

/// A bounded, lock-free multi-producer inbox. Senders wait (rather than drop) when it is full,
/// so a slow shard slows its publishers instead of losing messages or growing without bound.
pub struct Inbox {
    queue: ArrayQueue<ShardMsg>,
    ready: Notify,
    space: Notify,
}

impl Inbox {
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            queue: ArrayQueue::new(capacity),
            ready: Notify::new(),
            space: Notify::new(),
        }
    }

    pub async fn send(&self, mut msg: ShardMsg) {
        loop {
            match self.queue.push(msg) {
                Ok(()) => {
                    self.ready.notify_one();
                    return;
                }
                Err(back) => msg = back,
            }
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.queue.push(msg) {
                Ok(()) => {
                    self.ready.notify_one();
                    return;
                }
                Err(back) => msg = back,
            }
            space.await;
        }
    }

    /// How many messages are queued now.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Moves the messages already queued (up to `max`) into `out`, without waiting.
    pub fn try_recv(&self, out: &mut Vec<ShardMsg>, max: usize) {
        let before = out.len();
        while out.len() - before < max {
            match self.queue.pop() {
                Some(m) => out.push(m),
                None => break,
            }
        }
        if out.len() > before {
            self.space.notify_waiters();
        }
    }

    /// Waits for messages and moves up to `max` of them into `out`.
    pub async fn recv(&self, out: &mut Vec<ShardMsg>, max: usize) {
        loop {
            while out.len() < max {
                match self.queue.pop() {
                    Some(m) => out.push(m),
                    None => break,
                }
            }
            if !out.is_empty() {
                self.space.notify_waiters();
                return;
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hub::connection::ConnectionId;

    #[tokio::test(flavor = "current_thread")]
    async fn inbox_waits_when_full_and_loses_nothing() {
        let inbox = Arc::new(Inbox::new(2));
        let sender = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                for i in 0..100u64 {
                    inbox
                        .send(ShardMsg::LeaveAll {
                            conn: ConnectionId(u128::from(i)),
                        })
                        .await;
                }
            })
        };
        let mut got = Vec::new();
        let mut batch = Vec::new();
        while got.len() < 100 {
            inbox.recv(&mut batch, 16).await;
            for m in batch.drain(..) {
                let ShardMsg::LeaveAll { conn } = m else {
                    panic!()
                };
                got.push(conn.0 as u64);
            }
        }
        sender.await.unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}
