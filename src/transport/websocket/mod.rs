//! The WebSocket transport.

pub mod frame;
