//! The WebSocket frame decoder never panics, in either role, however the input is split.
#![no_main]
use herald::protocol::frame::{Decoder, Event, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for role in [Role::Server, Role::Client] {
        let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
        let mut whole = Decoder::with_role(role);
        let mut parts = Decoder::with_role(role);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let r1 = whole.feed(data, &mut a);
        let r2 = parts
            .feed(&data[..split], &mut b)
            .and_then(|()| parts.feed(&data[split..], &mut b));
        // Split or not, the same bytes come out, with the same control frames around them
        // (up to the first error): data pieces differ only in where they are cut.
        if r1.is_ok() && r2.is_ok() {
            assert_eq!(merged(a), merged(b));
        }
    }
});

/// Joins consecutive data pieces of one message, so that events can be compared whatever the
/// input's split.
fn merged(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (
                Some(Event::Data { payload, last }),
                Event::Data {
                    payload: more,
                    last: more_last,
                },
            ) if !*last => {
                let mut joined = payload.to_vec();
                joined.extend_from_slice(&more);
                *payload = joined.into();
                *last = more_last;
            }
            (_, e) => out.push(e),
        }
    }
    out
}
