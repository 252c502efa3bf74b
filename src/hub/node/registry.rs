//! The node's registry of connection ids: which shard owns each, and which ended recently.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::hub::connection::{ConnectionId, IdBuildHasher};
use crate::hub::definition::HubId;
use crate::protocol::TransportKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Active {
        shard: u16,
        hub: HubId,
        transport: TransportKind,
    },
    /// Ended, but its connection token is still valid until then: the id must not start a
    /// new connection.
    Ended { until: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the connection is active")]
    Active,
    #[error("the connection has ended")]
    Ended,
}

/// What is known of a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdState {
    Active {
        shard: usize,
        transport: TransportKind,
    },
    Ended,
    Unknown,
}

const REGISTRY_SEGMENTS: usize = 64;

/// Which shard owns each connection id of this node, and which ids ended recently. Touched on
/// connect and disconnect, and to find the owner of one connection — a message or REST call
/// to it, a poll or POST that reached another shard — never by a broadcast; the segments keep
/// such lookups from contending.
pub struct Registry {
    segments: Box<[Mutex<HashMap<ConnectionId, Slot, IdBuildHasher>>]>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            segments: (0..REGISTRY_SEGMENTS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
}

impl Registry {
    fn segment(
        &self,
        id: ConnectionId,
    ) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Slot, IdBuildHasher>> {
        self.segments[(id.0 as usize) % REGISTRY_SEGMENTS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `shard` now owns `id`, served by `transport`, unless the id is active or
    /// ended.
    pub fn claim(
        &self,
        id: ConnectionId,
        shard: usize,
        hub: HubId,
        transport: TransportKind,
    ) -> Result<(), ClaimError> {
        let mut seg = self.segment(id);
        match seg.get(&id) {
            Some(Slot::Active { .. }) => Err(ClaimError::Active),
            Some(Slot::Ended { until }) if *until > Instant::now() => Err(ClaimError::Ended),
            _ => {
                seg.insert(
                    id,
                    Slot::Active {
                        shard: shard as u16,
                        hub,
                        transport,
                    },
                );
                Ok(())
            }
        }
    }

    /// Marks `id` ended; it stays unusable until `until` (when its token expires).
    pub fn end(&self, id: ConnectionId, until: Option<Instant>) {
        let mut seg = self.segment(id);
        match until {
            Some(until) if until > Instant::now() => {
                seg.insert(id, Slot::Ended { until });
            }
            _ => {
                seg.remove(&id);
            }
        }
    }

    /// The shard and hub of an active connection.
    pub fn locate(&self, id: ConnectionId) -> Option<(usize, HubId)> {
        match self.segment(id).get(&id) {
            Some(Slot::Active { shard, hub, .. }) => Some((*shard as usize, *hub)),
            _ => None,
        }
    }

    /// What the registry knows of `id`: active (on which shard, with which transport), ended
    /// (its token is still valid), or unknown.
    pub fn state(&self, id: ConnectionId) -> IdState {
        match self.segment(id).get(&id) {
            Some(Slot::Active {
                shard, transport, ..
            }) => IdState::Active {
                shard: *shard as usize,
                transport: *transport,
            },
            Some(Slot::Ended { until }) if *until > Instant::now() => IdState::Ended,
            _ => IdState::Unknown,
        }
    }

    /// Forgets ended ids whose tokens have expired, in the segments `part` of `parts` covers.
    pub fn purge(&self, now: Instant, part: usize, parts: usize) {
        for (i, seg) in self.segments.iter().enumerate() {
            if i % parts.max(1) == part {
                seg.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, slot| !matches!(slot, Slot::Ended { until } if *until <= now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn registry_claims_once_and_remembers_ended_ids() {
        let r = Registry::default();
        let id = ConnectionId::random();
        r.claim(id, 1, 0, TransportKind::WebSockets).unwrap();
        assert_eq!(r.locate(id), Some((1, 0)));
        assert_eq!(
            r.state(id),
            IdState::Active {
                shard: 1,
                transport: TransportKind::WebSockets
            }
        );
        assert_eq!(
            r.claim(id, 0, 0, TransportKind::LongPolling),
            Err(ClaimError::Active)
        );
        r.end(id, Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(r.locate(id), None);
        assert_eq!(r.state(id), IdState::Ended);
        assert_eq!(
            r.claim(id, 0, 0, TransportKind::WebSockets),
            Err(ClaimError::Ended)
        );
        r.purge(Instant::now() + Duration::from_secs(61), 0, 1);
        assert!(r.claim(id, 0, 0, TransportKind::WebSockets).is_ok());
    }
}
