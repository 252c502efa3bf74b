//! The envelope: what one node tells the others, as one Redis stream entry.
//!
//! An entry is a version byte followed by the rkyv archive of an [`Envelope`]. Hub arguments
//! travel as MessagePack, which carries every value a client can send (binary included)
//! without loss.
//!
//! # Versions, and upgrading a cluster one node at a time
//!
//! - The version is the entry's first byte; the rest is the archive of that version's types.
//!   An rkyv archive has no schema: any change to [`Envelope`], [`Body`], [`Target`],
//!   [`Question`] or [`Member`] (a field, a variant, a type, their order) changes the bytes,
//!   so it takes a new version. A new version may change anything after the first byte.
//! - A release reads its own version and the one before it: the previous version's types stay
//!   (frozen, in a module of their own) with a conversion to the current ones. The bytes of
//!   every previous-version `Body` are kept as fixtures (`src/backplane/fixtures/v1/`) and a
//!   test decodes each one, so a change that breaks them fails the build's tests.
//! - A release that introduces version N+1 still writes N, which every node of the previous
//!   release reads; the release after it writes N+1. Upgrading one release at a time, every
//!   node always reads what every other one writes.
//! - An entry of a version newer than this node reads (a node of a later release, out of
//!   step) is skipped, counted in `herald_backplane_newer_version_total` and logged once;
//!   an older one this node no longer reads, or bytes that are no archive, are skipped and
//!   counted in `herald_backplane_undecodable_total`. Neither ever stops the reader.
//!
//! Pure: bytes in, values out; no I/O.

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// The format this build writes.
pub const VERSION: u8 = 1;
/// The oldest format this build reads (the one before [`VERSION`], once there is one).
pub const OLDEST_READ: u8 = 1;

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
    /// Written by a node of a later release, out of step with this one.
    #[error(
        "envelope version {0} is newer than this node reads ({OLDEST_READ} to {VERSION}): upgrade it"
    )]
    Newer(u8),
    /// Written by a node too old for this one to read.
    #[error("envelope version {0} is older than this node reads ({OLDEST_READ} to {VERSION})")]
    Older(u8),
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
        if version > VERSION {
            return Err(EnvelopeError::Newer(version));
        }
        if version < OLDEST_READ {
            return Err(EnvelopeError::Older(version));
        }
        // One version today: the archive is of the current types.
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
        bytes[0] = VERSION + 1;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::Newer(VERSION + 1))
        );
        bytes[0] = OLDEST_READ - 1;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::Older(OLDEST_READ - 1))
        );
        bytes[0] = VERSION;
        let truncated = &bytes[..bytes.len() / 2];
        assert_eq!(Envelope::decode(truncated), Err(EnvelopeError::Malformed));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // A corrupted archive is refused or decodes to something; it never panics.
        let _ = Envelope::decode(&flipped);
    }

    /// Version 1's fixtures, one file per entry: every `Body` variant, every `Target` and
    /// `Question` variant, optional fields both present and absent.
    fn v1_fixtures() -> Vec<(&'static str, Envelope)> {
        let member = |conn, user: Option<&str>, open| Member {
            conn,
            hub: "chat".into(),
            user: user.map(Into::into),
            open,
        };
        let bodies = vec![
            (
                "publish_all",
                Body::Publish {
                    hub: "chat".into(),
                    target: Target::All,
                    excluded: vec![],
                    method: "broadcastMessage".into(),
                    arguments: vec![0x92, 0xa1, b'a', 0xc3],
                },
            ),
            (
                "publish_group",
                Body::Publish {
                    hub: "chat".into(),
                    target: Target::Group("room".into()),
                    excluded: vec![u128::MAX, 1],
                    method: "groupMessage".into(),
                    arguments: vec![0x91, 0xcb, 0x45, 0xf8, 0xee, 0x90, 0xff, 0x6c, 0x37, 0x3e],
                },
            ),
            (
                "publish_user",
                Body::Publish {
                    hub: "chat".into(),
                    target: Target::User("ann".into()),
                    excluded: vec![],
                    method: "userMessage".into(),
                    arguments: vec![0x90],
                },
            ),
            (
                "publish_connection",
                Body::Publish {
                    hub: "chat".into(),
                    target: Target::Connection(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                    excluded: vec![],
                    method: "direct".into(),
                    arguments: vec![0x91, 0xc0],
                },
            ),
            (
                "join",
                Body::Join {
                    hub: "chat".into(),
                    conn: 17,
                    group: "room".into(),
                },
            ),
            (
                "leave",
                Body::Leave {
                    hub: "chat".into(),
                    conn: 17,
                    group: "room".into(),
                },
            ),
            (
                "leave_all",
                Body::LeaveAll {
                    hub: "chat".into(),
                    conn: 17,
                },
            ),
            (
                "add_user_to_group",
                Body::AddUserToGroup {
                    hub: "chat".into(),
                    user: "ann".into(),
                    group: "room".into(),
                    until_ms: Some(1_700_000_060_000),
                },
            ),
            (
                "add_user_to_group_now",
                Body::AddUserToGroup {
                    hub: "chat".into(),
                    user: "ann".into(),
                    group: "room".into(),
                    until_ms: None,
                },
            ),
            (
                "remove_user_from_group",
                Body::RemoveUserFromGroup {
                    hub: "chat".into(),
                    user: "ann".into(),
                    group: "room".into(),
                },
            ),
            (
                "remove_user_from_all_groups",
                Body::RemoveUserFromAllGroups {
                    hub: "chat".into(),
                    user: "ann".into(),
                },
            ),
            (
                "close",
                Body::Close {
                    hub: "chat".into(),
                    target: Target::Group("room".into()),
                    excluded: vec![5],
                    reason: Some("maintenance".into()),
                },
            ),
            (
                "close_silently",
                Body::Close {
                    hub: "chat".into(),
                    target: Target::User("bob".into()),
                    excluded: vec![],
                    reason: None,
                },
            ),
            ("claimed", Body::Claimed(member(21, None, false))),
            ("opened", Body::Opened(member(22, Some("ann"), true))),
            (
                "inbound",
                Body::Inbound {
                    conn: 23,
                    payload: b"{\"type\":6}\x1e".to_vec(),
                },
            ),
            ("closed", Body::Closed { conn: 24 }),
            (
                "heartbeat",
                Body::Heartbeat {
                    node: "node-a".into(),
                },
            ),
            ("roster_request", Body::RosterRequest { to: 0 }),
            (
                "roster",
                Body::Roster {
                    reset: true,
                    members: vec![member(22, Some("ann"), true), member(25, None, false)],
                },
            ),
            (
                "query_group_exists",
                Body::Query {
                    id: 3,
                    hub: "chat".into(),
                    question: Question::GroupExists {
                        group: "room".into(),
                    },
                },
            ),
            (
                "query_user_exists",
                Body::Query {
                    id: 4,
                    hub: "chat".into(),
                    question: Question::UserExists { user: "ann".into() },
                },
            ),
            (
                "query_user_in_group",
                Body::Query {
                    id: 5,
                    hub: "chat".into(),
                    question: Question::UserInGroup {
                        user: "ann".into(),
                        group: "room".into(),
                    },
                },
            ),
            (
                "answer",
                Body::Answer {
                    to: 0xfeed,
                    id: 5,
                    yes: true,
                },
            ),
            ("goodbye", Body::Goodbye),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, (name, body))| {
                let env = Envelope {
                    origin: 0x5eed_0000_0000_0001,
                    partition: 7,
                    seq: 100 + i as u64,
                    sent_us: 1_700_000_000_000_000 + i as u64,
                    body,
                };
                (name, env)
            })
            .collect()
    }

    /// The variant's name: an exhaustive match, so a new variant fails to build here until
    /// it has a fixture (and, being a change to the archive, a new version).
    fn variant(body: &Body) -> &'static str {
        match body {
            Body::Publish { .. } => "Publish",
            Body::Join { .. } => "Join",
            Body::Leave { .. } => "Leave",
            Body::LeaveAll { .. } => "LeaveAll",
            Body::AddUserToGroup { .. } => "AddUserToGroup",
            Body::RemoveUserFromGroup { .. } => "RemoveUserFromGroup",
            Body::RemoveUserFromAllGroups { .. } => "RemoveUserFromAllGroups",
            Body::Close { .. } => "Close",
            Body::Claimed(_) => "Claimed",
            Body::Opened(_) => "Opened",
            Body::Inbound { .. } => "Inbound",
            Body::Closed { .. } => "Closed",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::RosterRequest { .. } => "RosterRequest",
            Body::Roster { .. } => "Roster",
            Body::Query { .. } => "Query",
            Body::Answer { .. } => "Answer",
            Body::Goodbye => "Goodbye",
        }
    }
    const VARIANTS: usize = 18;

    fn fixture_dir(version: u8) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/backplane/fixtures")
            .join(format!("v{version}"))
    }

    /// Writes version 1's fixtures. Run by hand, once: `cargo test --lib
    /// write_v1_fixtures -- --ignored`; the files are then committed and never rewritten.
    #[test]
    #[ignore = "writes the frozen fixtures; run by hand once per envelope version"]
    fn write_v1_fixtures() {
        assert_eq!(
            VERSION, 1,
            "version 1's fixtures are written by a version 1 build"
        );
        let dir = fixture_dir(1);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, env) in v1_fixtures() {
            let path = dir.join(format!("{name}.bin"));
            assert!(!path.exists(), "{} is frozen", path.display());
            std::fs::write(path, env.encode()).unwrap();
        }
    }

    /// A node reads what nodes of the previous release wrote: every version 1 fixture
    /// decodes to the value it was written from.
    #[test]
    fn reads_the_frozen_version_1_entries() {
        let fixtures = v1_fixtures();
        let variants: std::collections::HashSet<&str> =
            fixtures.iter().map(|(_, env)| variant(&env.body)).collect();
        assert_eq!(variants.len(), VARIANTS, "a fixture for every Body variant");
        let dir = fixture_dir(1);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = fixtures.iter().map(|(n, _)| format!("{n}.bin")).collect();
        names.sort();
        assert_eq!(files, names, "one file per fixture");
        for (name, expected) in fixtures {
            let bytes = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
            assert_eq!(bytes[0], 1, "{name}");
            assert_eq!(
                Envelope::decode(&bytes).as_ref(),
                Ok(&expected),
                "{name}.bin no longer decodes to what it was written from"
            );
        }
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
