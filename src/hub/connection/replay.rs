//! Stateful reconnect's replay buffer: what was written and not yet acknowledged.

use std::collections::VecDeque;

use super::outbound::Wire;

/// Stateful reconnect's record of what was sent: trackable messages written and not yet
/// acknowledged by the client, oldest first, to replay after a reconnect.
#[derive(Debug, Default)]
pub struct Replay {
    items: VecDeque<Wire>,
    /// The sequence id of `items[0]` (ids start at 1).
    first: u64,
    bytes: usize,
    limit: usize,
}

impl Replay {
    pub fn new(limit: usize) -> Replay {
        Replay {
            items: VecDeque::new(),
            first: 1,
            bytes: 0,
            limit,
        }
    }

    pub(super) fn push(&mut self, item: Wire) {
        self.bytes += item.len();
        self.items.push_back(item);
    }

    /// Drops everything up to and including `sequence_id`.
    pub(super) fn ack(&mut self, sequence_id: u64) {
        while self.first <= sequence_id {
            let Some(item) = self.items.pop_front() else {
                break;
            };
            self.bytes -= item.len();
            self.first += 1;
        }
    }

    /// The id a reconnect's Sequence message announces: the oldest unacknowledged message,
    /// or the next to be sent when all are acknowledged.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The id the next trackable message sent will have.
    pub fn next(&self) -> u64 {
        self.first + self.items.len() as u64
    }

    pub fn items(&self) -> impl Iterator<Item = &Wire> {
        self.items.iter()
    }

    pub fn is_full(&self) -> bool {
        self.bytes >= self.limit
    }
}
