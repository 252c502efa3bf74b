//! Transports: how a client's bytes reach the hub and back. HTTP routing, negotiate and the
//! connection token live here; a transport only moves bytes between a socket and a
//! connection's session (inbound) and queue (outbound).

pub mod connection_token;
pub mod endpoint;
pub mod http;
pub mod http_conn;
pub mod inflow;
pub mod longpoll;
pub mod negotiate;
pub mod post;
pub mod session;
pub mod sse;
pub mod tls;
pub mod websocket;
pub mod writer;
