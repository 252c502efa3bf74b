//! Compatibility with the official clients (filled in below).
