//! The MessagePack hub protocol: decoding never panics (lying lengths, truncations, deep
//! nesting), and whatever decodes round-trips.
#![no_main]
use herald::protocol::msgpack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((message, used))) = msgpack::decode(rest, 64 * 1024) {
        let mut again = Vec::new();
        msgpack::encode(&message, &mut again);
        let (back, n) = msgpack::decode(&again, usize::MAX).unwrap().unwrap();
        assert_eq!(n, again.len());
        let mut twice = Vec::new();
        msgpack::encode(&back, &mut twice);
        assert_eq!(again, twice);
        rest = &rest[used..];
    }
});
