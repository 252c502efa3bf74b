//! The envelope: what one node tells the others, as one Redis stream entry.
//!
//! An entry is a version byte followed by the rkyv archive of an [`Envelope`]. The version
//! byte lets a newer node refuse (and count) what it cannot read instead of misreading it, so
//! a cluster can be upgraded node by node. Hub arguments travel as MessagePack, which carries
//! every value a client can send (binary included) without loss.
//!
//! Pure: bytes in, values out; no I/O.

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// The format this build writes and reads.
pub const VERSION: u8 = 1;

/// One cluster message with its provenance.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Envelope {
    /// The sending node's incarnation (random at every start).
    pub origin: u64,
    /// The partition stream the message was written to.
    pub partition: u32,
    /// Per (origin, partition) sequence number, from 1 without gaps: receivers drop what they
    /// have already seen, so a message written twice is delivered once.
    pub seq: u64,
    /// Wall-clock send time, microseconds since the Unix epoch (for the lag metric and the
    /// publish→deliver latency of cross-node messages).
    pub sent_us: u64,
    pub body: Body,
}

/// Who a cluster publish or close is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Target {
    All,
    Group(String),
    User(String),
    Connection(u128),
}

/// A question every node answers about its own connections.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Question {
    GroupExists { group: String },
    UserExists { user: String },
    UserInGroup { user: String, group: String },
}

/// A connection in a node's roster.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Member {
    pub conn: u128,
    pub hub: String,
    pub user: Option<String>,
    /// Past its handshake (counted, announced).
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Body {
    /// An invocation of `method(arguments…)` on the clients `target` reaches.
    Publish {
        hub: String,
        target: Target,
        excluded: Vec<u128>,
        method: String,
        /// A MessagePack array.
        arguments: Vec<u8>,
    },
    Join {
        hub: String,
        conn: u128,
        group: String,
    },
    Leave {
        hub: String,
        conn: u128,
        group: String,
    },
    LeaveAll {
        hub: String,
        conn: u128,
    },
    AddUserToGroup {
        hub: String,
        user: String,
        group: String,
        /// Until when the membership also applies to the user's future connections,
        /// milliseconds since the Unix epoch (none: present connections only).
        until_ms: Option<u64>,
    },
    RemoveUserFromGroup {
        hub: String,
        user: String,
        group: String,
    },
    RemoveUserFromAllGroups {
        hub: String,
        user: String,
    },
    Close {
        hub: String,
        target: Target,
        excluded: Vec<u128>,
        reason: Option<String>,
    },
    /// A connection served over HTTP requests (Server-Sent Events, long polling) started on
    /// the origin node: its POSTs may reach any node, which forwards them.
    Claimed(Member),
    /// A connection completed its handshake on the origin node.
    Opened(Member),
    /// Data a client POSTed to another node, for the node that holds its connection.
    Inbound {
        conn: u128,
        payload: Vec<u8>,
    },
    /// A connection of the origin node left its hub.
    Closed {
        conn: u128,
    },
    /// The origin node is alive.
    Heartbeat {
        node: String,
    },
    /// Asks node `to` (0: every node) to send its roster.
    RosterRequest {
        to: u64,
    },
    /// The origin's open connections; `reset` on the first part replaces what was known.
    Roster {
        reset: bool,
        members: Vec<Member>,
    },
    /// Asks every node; each answers with [`Body::Answer`].
    Query {
        id: u64,
        hub: String,
        question: Question,
    },
    Answer {
        to: u64,
        id: u64,
        yes: bool,
    },
    /// The origin is shutting down: its connections are gone.
    Goodbye,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty entry")]
    Empty,
    #[error("envelope version {0} is not supported (this node reads version {VERSION})")]
    Version(u8),
    #[error("malformed envelope")]
    Malformed,
}

impl Envelope {
    /// The stream entry for this envelope.
    pub fn encode(&self) -> Vec<u8> {
        let archive = rkyv::to_bytes::<rancor::Error>(self).expect("envelopes always serialise");
        let mut out = Vec::with_capacity(archive.len() + 1);
        out.push(VERSION);
        out.extend_from_slice(&archive);
        out
    }

    /// Reads a stream entry, validating the archive before trusting it.
    pub fn decode(entry: &[u8]) -> Result<Envelope, EnvelopeError> {
        let (&version, archive) = entry.split_first().ok_or(EnvelopeError::Empty)?;
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        // Archives need their natural alignment; a stream entry arrives at any address.
        let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
        aligned.extend_from_slice(archive);
        rkyv::from_bytes::<Envelope, rancor::Error>(&aligned).map_err(|_| EnvelopeError::Malformed)
    }
}

/// FNV-1a: a hash every build and platform agrees on, so all nodes pick the same partition.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a message to `target` in `hub`: one target, one partition, so messages
/// to it keep their order.
pub fn partition_of_target(hub: &str, target: &Target, partitions: usize) -> usize {
    let h = match target {
        Target::All => fnv(&[hub.as_bytes(), b"*"]),
        Target::Group(g) => fnv(&[hub.as_bytes(), b"g", g.as_bytes()]),
        Target::User(u) => fnv(&[hub.as_bytes(), b"u", u.as_bytes()]),
        Target::Connection(c) => fnv(&[b"c", &c.to_be_bytes()]),
    };
    (h % partitions as u64) as usize
}

/// The partition a node's own messages (presence, heartbeats, answers) go to, so that the
/// others see them in the order the node sent them.
pub fn partition_of_node(origin: u64, partitions: usize) -> usize {
    (fnv(&[b"n", &origin.to_be_bytes()]) % partitions as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            origin: 7,
            partition: 3,
            seq: 42,
            sent_us: 1_700_000_000_000_000,
            body: Body::Publish {
                hub: "chat".into(),
                target: Target::Group("room".into()),
                excluded: vec![u128::MAX, 1],
                method: "groupMessage".into(),
                arguments: vec![0x92, 0x01, 0xa1, b'x'],
            },
        }
    }

    #[test]
    fn round_trips_at_any_alignment() {
        let env = sample();
        let bytes = env.encode();
        assert_eq!(bytes[0], VERSION);
        for offset in 0..16 {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(&bytes);
            assert_eq!(Envelope::decode(&shifted[offset..]).unwrap(), env);
        }
        for body in [
            Body::Opened(Member {
                conn: 9,
                hub: "chat".into(),
                user: Some("ann".into()),
                open: true,
            }),
            Body::Roster {
                reset: true,
                members: vec![],
            },
            Body::Query {
                id: 1,
                hub: "chat".into(),
                question: Question::UserInGroup {
                    user: "u".into(),
                    group: "g".into(),
                },
            },
            Body::Goodbye,
        ] {
            let env = Envelope { body, ..sample() };
            assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let mut bytes = sample().encode();
        assert_eq!(Envelope::decode(&[]), Err(EnvelopeError::Empty));
        bytes[0] = 2;
        assert_eq!(Envelope::decode(&bytes), Err(EnvelopeError::Version(2)));
        bytes[0] = VERSION;
        let truncated = &bytes[..bytes.len() / 2];
        assert_eq!(Envelope::decode(truncated), Err(EnvelopeError::Malformed));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // A corrupted archive is refused or decodes to something; it never panics.
        let _ = Envelope::decode(&flipped);
    }

    #[test]
    fn one_target_one_partition() {
        let t = Target::Group("room".into());
        let p = partition_of_target("chat", &t, 16);
        assert_eq!(p, partition_of_target("chat", &t.clone(), 16));
        assert!(p < 16);
        // Different targets spread out.
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| partition_of_target("chat", &Target::User(format!("u{i}")), 16))
            .collect();
        assert!(spread.len() > 8, "{spread:?}");
        assert_eq!(partition_of_node(5, 1), 0);
    }
}
