//! Transports: how a client's bytes reach the hub and back. HTTP routing, negotiate, the
//! connection token and TLS live here; a transport only moves bytes between a socket and a
//! connection's session (inbound) and queue (outbound). WebSockets hold their socket; Server-
//! Sent Events and long polling serve a connection over several requests, whose state
//! (`http_conn`) hangs on the connection, and take what clients send in POSTs (`post`).

pub(crate) mod admission;
pub mod config;
pub mod connection_token;
pub(crate) mod endpoint;
pub(crate) mod http;
pub(crate) mod http_conn;
pub(crate) mod inflow;
pub(crate) mod longpoll;
pub(crate) mod negotiate;
pub(crate) mod page;
pub(crate) mod post;
pub(crate) mod session;
pub(crate) mod sse;
pub(crate) mod tls;
pub(crate) mod websocket;
pub mod writer;
