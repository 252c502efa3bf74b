//! Integration tests: each starts the real `herald` binary on a free port and talks to it over
//! real sockets. Every socket-level test runs on both I/O backends (io_uring and epoll).

#[path = "integration/redis.rs"]
mod redis;
#[path = "integration/support.rs"]
mod support;

#[path = "integration/auth.rs"]
mod auth;
#[path = "integration/backpressure.rs"]
mod backpressure;
#[path = "integration/bad_input.rs"]
mod bad_input;
#[path = "integration/chat.rs"]
mod chat;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/cluster.rs"]
mod cluster;
#[path = "integration/compat.rs"]
mod compat;
#[path = "integration/limits.rs"]
mod limits;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/msgpack.rs"]
mod msgpack;
#[path = "integration/openapi.rs"]
mod openapi;
#[path = "integration/page.rs"]
mod page;
#[path = "integration/polling.rs"]
mod polling;
#[path = "integration/presence.rs"]
mod presence;
#[path = "integration/reconnect.rs"]
mod reconnect;
#[path = "integration/rest.rs"]
mod rest;
#[path = "integration/shutdown.rs"]
mod shutdown;
#[path = "integration/systemd.rs"]
mod systemd;
#[path = "integration/tls.rs"]
mod tls;
