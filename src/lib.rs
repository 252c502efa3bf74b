//! Herald: a self-hosted realtime backend whose heart is a SignalR-compatible hub.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML schema, defaults, validation, environment and flag overrides |
//! | [`runtime`] | shard threads, the io_uring and epoll backends, shutdown |
//! | [`protocol`] | the SignalR handshake and hub messages, JSON encoding (pure) |
//! | [`transport`] | HTTP routing, negotiate, the WebSocket transport |
//! | [`hub`] | hub definitions, connections, indexes, dispatcher, fan-out |
//! | [`api`] | the server REST API (Azure SignalR data-plane compatible) |
//! | [`backplane`] | scale-out: the Redis Streams backplane, the cluster directory |
//! | [`identity`] | access keys and tokens |
//! | [`metrics`] | counters, latency histograms, Prometheus exposition |
//! | [`fault`] | every error a client can see, with its stable code |
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
