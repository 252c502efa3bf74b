//! The JSON hub protocol: decoding never panics, and whatever decodes re-encodes to bytes that
//! decode to the same message.
#![no_main]
use herald::protocol::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((message, used))) = json::decode(rest, 64 * 1024) {
        let mut again = Vec::new();
        json::encode(&message, &mut again);
        let (back, n) = json::decode(&again, usize::MAX).unwrap().unwrap();
        assert_eq!(n, again.len());
        // Floats may print differently; compare the re-encodings instead.
        let mut twice = Vec::new();
        json::encode(&back, &mut twice);
        assert_eq!(again, twice);
        rest = &rest[used..];
    }
    let _ = json::decode_shallow(data, 64 * 1024);
});
