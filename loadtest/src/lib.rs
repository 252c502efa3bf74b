//! The Herald load generator, as a library so its statistics are unit-tested.

pub mod client;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod wire;
