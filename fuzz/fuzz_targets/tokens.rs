//! Token decoders (JWT and connection tokens) never panic on hostile input and never accept
//! a token not signed with the key.
#![no_main]
use herald::identity::jwt;
use herald::transport::connection_token::ConnectionToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(jwt::verify(text, b"fuzzing key, long enough to count", 0, 0).is_err());
    let _ = ConnectionToken::decode(text, &[3u8; 32], 0);
});
