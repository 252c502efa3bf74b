//! The WebSocket frame decoder never panics, in either role, however the input is split.
#![no_main]
use herald::transport::websocket::frame::{Decoder, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for role in [Role::Server, Role::Client] {
        let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
        let mut whole = Decoder::with_role(role, 1 << 16);
        let mut parts = Decoder::with_role(role, 1 << 16);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let r1 = whole.feed(data, &mut a);
        let r2 = parts
            .feed(&data[..split], &mut b)
            .and_then(|_| parts.feed(&data[split..], &mut b));
        // Split or not, the same events come out (up to the first error).
        if r1.is_ok() && r2.is_ok() {
            assert_eq!(a, b);
        }
    }
});
