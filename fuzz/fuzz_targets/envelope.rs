//! The backplane's envelope decoder never panics on what it reads from a Redis stream, and
//! whatever it accepts encodes back to an envelope that decodes the same.
#![no_main]
use herald::backplane::envelope::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&envelope.encode()).as_ref(), Ok(&envelope));
    }
});
