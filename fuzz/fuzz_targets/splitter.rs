//! Splitting a byte stream into hub messages never panics, never holds more than one
//! message's worth, and yields the same messages (or the same error) however the stream is
//! cut into pieces.
#![no_main]
use herald::protocol::stream::{Framing, Splitter};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 256;

/// Every message `pieces` yield, then the error if one came.
fn split(framing: Framing, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut splitter = Splitter::new(framing, LIMIT);
    let mut out = Vec::new();
    for piece in pieces {
        let mut input = *piece;
        loop {
            match splitter.next(&mut input) {
                Ok(Some(message)) => out.push(message.into_owned()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
            assert!(splitter.pending() <= LIMIT + 5);
        }
        assert!(input.is_empty());
        assert!(splitter.pending() <= LIMIT + 5);
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    for framing in [Framing::Separated, Framing::LengthPrefixed] {
        let whole = split(framing, &[data]);
        let at = cut as usize % (data.len() + 1);
        let halves = split(framing, &[&data[..at], &data[at..]]);
        let bytes: Vec<&[u8]> = data.chunks(1 + cut as usize % 7).collect();
        let small = split(framing, &bytes);
        assert_eq!(whole, halves);
        assert_eq!(whole, small);
    }
});
