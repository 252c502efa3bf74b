//! Transports: how a client's bytes reach the hub and back. HTTP routing, negotiate and the
//! connection token live here; a transport only moves bytes between a socket and a
//! connection's session (inbound) and queue (outbound).

pub mod connection_token;
pub(crate) mod endpoint;
pub(crate) mod http;
pub(crate) mod http_conn;
pub(crate) mod inflow;
pub(crate) mod longpoll;
pub(crate) mod negotiate;
pub(crate) mod post;
pub(crate) mod session;
pub(crate) mod sse;
pub(crate) mod tls;
pub(crate) mod websocket;
pub mod writer;
