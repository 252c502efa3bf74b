//! Transports: how a client's bytes reach the hub and back. HTTP routing and negotiate live
//! here; transports only move bytes between sockets and a connection's session and queue.

pub mod websocket;
