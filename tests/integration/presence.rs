//! Presence modes against the real binary: `batched` gathers an interval's joins and leaves
//! into one message per member, `count` sends only the count. (`events` is what the chat
//! tests see; the cluster tests run `batched` over two nodes.)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Client, Connect, Server};

const CONFIG: &str = r#"
[hubs.room]
presence = "batched"
presence_interval_ms = 300
[hubs.room.methods]
Echo = { action = "echo" }

[hubs.tally]
presence = "count"
presence_interval_ms = 300
[hubs.tally.methods]
Echo = { action = "echo" }
"#;

async fn join(server: &Server, hub: &str) -> Client {
    Client::connect_with(
        server,
        Connect {
            hub,
            token: None,
            skip_negotiate: false,
        },
    )
    .await
}

/// What a client has heard from `presence` messages so far.
#[derive(Default)]
pub struct Heard {
    pub messages: usize,
    pub joined: HashSet<String>,
    pub left: HashSet<String>,
    pub count: i64,
}

impl Heard {
    pub fn take(&mut self, update: &Value) {
        self.messages += 1;
        for (key, set) in [("joined", &mut self.joined), ("left", &mut self.left)] {
            for m in update[key].as_array().into_iter().flatten() {
                set.insert(m["connectionId"].as_str().unwrap().to_string());
            }
        }
        self.count = update["count"].as_i64().unwrap();
    }
}

/// Reads `presence` messages until `done` holds of what was heard (within 10 s).
pub async fn hear_until(client: &mut Client, heard: &mut Heard, done: impl Fn(&Heard) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(heard) {
        assert!(Instant::now() < deadline, "presence did not settle");
        let args = client.expect_invocation("presence").await;
        assert_eq!(args.len(), 1, "one argument: {args:?}");
        heard.take(&args[0]);
    }
}

/// Twenty joins cost each member one message per interval, not one per join; every id is
/// told, the count settles, and leaves are told with their ids.
async fn batched_presence(io: &'static str) {
    let server = Server::builder(io).config(CONFIG).start();
    let started = Instant::now();
    let mut first = join(&server, "room").await;
    let mut others = Vec::new();
    for _ in 0..19 {
        others.push(join(&server, "room").await);
    }
    let mut ids: HashSet<String> = others.iter().map(|c| c.connection_id.clone()).collect();
    ids.insert(first.connection_id.clone());
    let mut heard = Heard::default();
    hear_until(&mut first, &mut heard, |h| h.count == 20 && h.joined == ids).await;
    let intervals = started.elapsed().as_millis() as usize / 300 + 2;
    assert!(
        heard.messages <= intervals.min(19),
        "{} messages for 20 joins in {} intervals",
        heard.messages,
        intervals
    );
    assert!(heard.left.is_empty());
    // The shape, as documented.
    let last = others.pop().unwrap();
    let gone = last.connection_id.clone();
    drop(last.ws);
    let mut heard = Heard::default();
    hear_until(&mut first, &mut heard, |h| h.count == 19).await;
    assert_eq!(heard.left, HashSet::from([gone]));
    // A late member hears the count at once, with itself among the joined.
    let mut late = join(&server, "room").await;
    let mut heard_late = Heard::default();
    hear_until(&mut late, &mut heard_late, |h| h.count == 20).await;
    assert!(heard_late.joined.contains(&late.connection_id));
    assert_eq!(first.invoke("Echo", json!([1])).await["result"], 1);
}
both_backends!(batched_presence);

/// `count` presence tells members the count alone, at most once per interval.
async fn count_presence(io: &'static str) {
    let server = Server::builder(io).config(CONFIG).start();
    let started = Instant::now();
    let mut first = join(&server, "tally").await;
    let mut rest = Vec::new();
    for _ in 0..9 {
        rest.push(join(&server, "tally").await);
    }
    let mut messages = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let args = first.expect_invocation("presence").await;
        let update = args[0].as_object().unwrap();
        assert_eq!(
            update.keys().collect::<Vec<_>>(),
            vec!["count"],
            "{update:?}"
        );
        messages += 1;
        if update["count"] == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the count did not reach 10");
    }
    let intervals = started.elapsed().as_millis() as usize / 300 + 2;
    assert!(messages <= intervals.min(9), "{messages} in {intervals}");
    rest.truncate(4);
    loop {
        let args = first.expect_invocation("presence").await;
        if args[0]["count"] == 5 {
            break;
        }
    }
}
both_backends!(count_presence);

/// A join/leave flood on a `batched` hub: a member hears at most one message per interval,
/// not one per join or leave, and the count it ends with is right.
async fn a_join_leave_flood_costs_a_message_per_interval(io: &'static str) {
    let server = Server::builder(io).config(CONFIG).start();
    let mut member = join(&server, "room").await;
    let mut heard = Heard::default();
    hear_until(&mut member, &mut heard, |h| h.count == 1).await;
    let started = Instant::now();
    for _ in 0..10 {
        let mut wave = Vec::new();
        for _ in 0..10 {
            wave.push(join(&server, "room").await);
        }
        drop(wave);
    }
    // 100 joins and 100 leaves; the member's view settles back at itself alone. Everything
    // it hears, from the flood's start until nothing more comes:
    let mut heard = Heard::default();
    while let Ok(args) = tokio::time::timeout(
        Duration::from_millis(1500),
        member.expect_invocation("presence"),
    )
    .await
    {
        heard.take(&args[0]);
    }
    // Waves that joined and left within one interval may never be announced at all.
    assert!(
        heard.messages == 0 || heard.count == 1,
        "ended at {}",
        heard.count
    );
    let intervals = started.elapsed().as_millis() as usize / 300 + 2;
    assert!(
        heard.messages <= intervals,
        "{} messages for 200 joins and leaves in {intervals} intervals",
        heard.messages
    );
    // Whatever was announced as joined was announced as left too.
    assert!(heard.joined.is_subset(&heard.left), "{:?}", heard.joined);
    // And the count is right afterwards.
    let _late = join(&server, "room").await;
    let mut heard = Heard::default();
    hear_until(&mut member, &mut heard, |h| h.count == 2).await;
    assert_eq!(member.invoke("Echo", json!(["ok"])).await["result"], "ok");
}
both_backends!(a_join_leave_flood_costs_a_message_per_interval);
