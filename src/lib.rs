//! Herald: a self-hosted realtime backend whose heart is a SignalR-compatible hub.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the root of the TOML schema, loading, environment and flag overrides, checks across sections (each section, with its defaults and checks, is a `config` module beside the code it configures) |
//! | [`runtime`] | the composition root (TLS, backplane, node, listeners, in that order), shard threads, the io_uring and epoll backends, shutdown |
//! | [`protocol`] | pure codecs: the SignalR handshake, JSON and MessagePack hub messages, the message stream, WebSocket frames, transport names |
//! | [`transport`] | HTTP routing, negotiate, the WebSocket, Server-Sent Events and long-polling transports, TLS |
//! | `web` | HTTP plumbing the router, the transports and the REST API share: bodies, responses, query strings, bearer tokens |
//! | [`hub`] | hub definitions, connections, indexes, dispatcher, fan-out, presence; the node and its shards; the `Backplane` interface and the `local` backplane |
//! | `api` | the server REST API (Azure SignalR data-plane compatible), as calls on the hub |
//! | [`backplane`] | the `redis` backplane: envelopes over Redis Streams, the cluster directory |
//! | [`identity`] | access keys and tokens |
//! | `metrics` | counters, latency histograms, their label tables, Prometheus exposition |
//! | `fault` | every error a client can see, with its stable code |
//!
//! Imports run one way: `runtime` → `transport` → `api` → `hub` → `protocol`, with `backplane`
//! beside `transport` (it implements the hub's `Backplane`); `hub` never imports `transport`
//! or `backplane`, `metrics` and `web` import no hub types, and `protocol` imports nothing of
//! Herald's.
//!
//! A connection belongs to one shard (one thread, one runtime); a publish is encoded once and
//! reaches the other shards through their lock-free inboxes.

pub(crate) mod api;
pub mod backplane;
pub mod config;
pub(crate) mod fault;
pub mod hub;
pub mod identity;
pub(crate) mod metrics;
pub mod protocol;
pub mod runtime;
pub mod transport;
pub(crate) mod web;

/// The git revision Herald was built from: a short commit hash, `-dirty` when the sources
/// differed from it, or `unknown` outside a git checkout (see build.rs).
pub const REVISION: &str = env!("HERALD_GIT_REVISION");
