//! Stateful reconnect over a raw WebSocket client that numbers messages as the SignalR
//! clients do: a dropped socket that comes back with the same id resumes with nothing lost and
//! nothing duplicated, and without presence events for the blip.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::support::{Client, RS, Server, eventually, metric, post};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client keeping stateful reconnect's books: the id of the next trackable message
/// (types 1 to 5) it expects, and what it processed.
struct Stateful {
    ws: Ws,
    url: String,
    next: u64,
    processed: u64,
    /// Test messages (broadcast texts) in the order processed.
    texts: Vec<String>,
    /// After a reconnect, everything before the server's Sequence is ignored.
    awaiting_sequence: bool,
    /// The id of the server's last Sequence message: where it resumed.
    resumed_at: Option<u64>,
    /// Invocation ids of the completions processed.
    completions: Vec<String>,
    /// Trackable messages (types 1 to 5) this client sent.
    sent: u64,
}

impl Stateful {
    async fn connect(server: &Server) -> Stateful {
        let res = post(
            server.addr,
            "/hubs/chat/negotiate?negotiateVersion=1&useStatefulReconnect=true",
            &[],
        )
        .await;
        assert_eq!(res.json()["useStatefulReconnect"], true, "{}", res.text());
        let token = res.json()["connectionToken"].as_str().unwrap().to_string();
        let url = server.ws_url(&format!("/hubs/chat?id={token}"));
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::text(format!(
            "{{\"protocol\":\"json\",\"version\":2}}{RS}"
        )))
        .await
        .unwrap();
        let mut client = Stateful {
            ws,
            url,
            next: 1,
            processed: 0,
            texts: Vec::new(),
            awaiting_sequence: false,
            resumed_at: None,
            completions: Vec::new(),
            sent: 0,
        };
        let first = client.frame().await.unwrap();
        assert!(first.starts_with(&format!("{{}}{RS}")));
        client.records(&first[3..]);
        client
    }

    async fn frame(&mut self) -> Option<String> {
        match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
            .await
            .expect("a frame within 10 s")
        {
            Some(Ok(Message::Text(t))) => Some(t.to_string()),
            _ => None,
        }
    }

    fn records(&mut self, text: &str) {
        for record in text.split(RS).filter(|r| !r.is_empty()) {
            let m: Value = serde_json::from_str(record).unwrap();
            let kind = m["type"].as_u64().unwrap();
            if kind == 9 {
                self.awaiting_sequence = false;
                self.next = m["sequenceId"].as_u64().unwrap();
                self.resumed_at = Some(self.next);
                continue;
            }
            if self.awaiting_sequence || !(1..=5).contains(&kind) {
                continue;
            }
            let seq = self.next;
            self.next += 1;
            if seq <= self.processed {
                continue; // replayed, already had it
            }
            self.processed = seq;
            if kind == 3 {
                self.completions
                    .push(m["invocationId"].as_str().unwrap().to_string());
            }
            if m["target"] == "broadcastMessage" {
                self.texts
                    .push(m["arguments"][1].as_str().unwrap().to_string());
            }
        }
    }

    /// Reads until `text` has been processed.
    async fn until(&mut self, text: &str) {
        while !self.texts.iter().any(|t| t == text) {
            let frame = self.frame().await.expect("open");
            self.records(&frame);
        }
    }

    /// Invokes `Echo` and reads until its completion: everything sent before it on this
    /// socket has been processed by then.
    async fn echo(&mut self, id: &str) {
        let invocation =
            json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [id]});
        self.ws
            .send(Message::text(format!("{invocation}{RS}")))
            .await
            .unwrap();
        self.sent += 1;
        while !self.completions.iter().any(|c| c == id) {
            let frame = self.frame().await.expect("open");
            self.records(&frame);
        }
    }

    async fn ack(&mut self) {
        let ack = json!({"type": 8, "sequenceId": self.processed});
        self.ws
            .send(Message::text(format!("{ack}{RS}")))
            .await
            .unwrap();
    }

    /// Drops the TCP connection without a close, as a network failure would.
    fn cut(self) -> Cut {
        let Stateful {
            ws,
            url,
            next,
            processed,
            texts,
            sent,
            ..
        } = self;
        drop(ws);
        Cut {
            url,
            next,
            processed,
            texts,
            sent,
        }
    }

    async fn reconnect(cut: Cut) -> Stateful {
        let (mut ws, _) = tokio_tungstenite::connect_async(&cut.url).await.unwrap();
        // The client announces its own next message.
        ws.send(Message::text(format!(
            "{}{RS}",
            json!({"type": 9, "sequenceId": cut.sent + 1})
        )))
        .await
        .unwrap();
        Stateful {
            ws,
            url: cut.url,
            next: cut.next,
            processed: cut.processed,
            texts: cut.texts,
            awaiting_sequence: true,
            resumed_at: None,
            completions: Vec::new(),
            sent: cut.sent,
        }
    }
}

/// A client's books while its socket is gone.
struct Cut {
    url: String,
    next: u64,
    processed: u64,
    texts: Vec<String>,
    /// Trackable messages it sent.
    sent: u64,
}

async fn resumes_exactly_once(io: &'static str) {
    let server = Server::start(io);
    let mut watcher = Client::connect(&server).await;
    watcher.expect_invocation("joined").await;
    let mut client = Stateful::connect(&server).await;
    let joined = watcher.expect_invocation("joined").await;
    for i in 0..5 {
        watcher.send("Send", json!(["w", format!("m{i}")])).await;
    }
    client.until("m4").await;
    client.ack().await;
    let acked = client.processed;
    // The server has taken the ack once it answers what was sent after it.
    client.echo("after-ack").await;
    let cut = client.cut();
    // Sent while the client is away, some while the server may not know it yet ...
    for i in 5..10 {
        watcher.send("Send", json!(["w", format!("m{i}")])).await;
    }
    eventually(
        "the server to hold the connection for a reconnect",
        || async { metric(&server, "herald_connections_awaiting_reconnect").await == 1.0 },
    )
    .await;
    // ... and some once it does.
    for i in 10..15 {
        watcher.send("Send", json!(["w", format!("m{i}")])).await;
    }
    let mut client = Stateful::reconnect(cut).await;
    client.until("m14").await;
    // It resumed from the first message not acknowledged: nothing acknowledged came again.
    assert_eq!(client.resumed_at, Some(acked + 1));
    let expected: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
    assert_eq!(
        client.texts, expected,
        "every message exactly once, in order"
    );
    // The resumed connection works both ways.
    client
        .ws
        .send(Message::text(format!(
            "{}{RS}",
            json!({"type": 1, "target": "Send", "arguments": ["c", "back"]})
        )))
        .await
        .unwrap();
    while watcher.expect_invocation("broadcastMessage").await != vec![json!("c"), json!("back")] {}
    // No presence events for the blip: the watcher's next presence event is a new join.
    let mut other = Client::connect(&server).await;
    let next_presence = loop {
        let m = watcher.recv().await;
        if m["target"] == "joined" || m["target"] == "left" {
            break m;
        }
    };
    assert_eq!(next_presence["target"], "joined");
    assert_ne!(next_presence["arguments"][0], joined[0]);
    assert_eq!(other.invoke("GetCount", json!([])).await["result"], 3);
}
both_backends!(resumes_exactly_once);

async fn gives_up_after_the_disconnect_timeout(io: &'static str) {
    let server = Server::builder(io)
        .env("HERALD_CONNECTIONS_DISCONNECT_TIMEOUT_MS", "500")
        .start();
    let mut watcher = Client::connect(&server).await;
    watcher.expect_invocation("joined").await;
    let client = Stateful::connect(&server).await;
    let joined = watcher.expect_invocation("joined").await;
    let url = client.cut().url;
    assert_eq!(watcher.expect_invocation("left").await[0], joined[0]);
    let err = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 404));
}
both_backends!(gives_up_after_the_disconnect_timeout);

async fn a_sequence_beyond_what_was_sent_is_fatal(io: &'static str) {
    let server = Server::start(io);
    let client = Stateful::connect(&server).await;
    let url = client.cut().url;
    eventually(
        "the server to hold the connection for a reconnect",
        || async { metric(&server, "herald_connections_awaiting_reconnect").await == 1.0 },
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(format!(
        "{}{RS}",
        json!({"type": 9, "sequenceId": 50})
    )))
    .await
    .unwrap();
    let mut close = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Message::Text(t) = m
            && let Some(r) = t.split(RS).find(|r| r.contains("\"type\":7"))
        {
            close = Some(r.to_string());
        }
    }
    assert!(close.expect("a Close message").contains("Sequence ID 50"));
}
both_backends!(a_sequence_beyond_what_was_sent_is_fatal);

/// A client that never acknowledges fills the replay buffer: Herald stops sending to it
/// (backpressure), its queue fills, and it is closed with a reason.
async fn unacknowledged_messages_are_backpressure_then_a_close(io: &'static str) {
    let server = Server::builder(io)
        .config(
            "[connections]\nstateful_reconnect_buffer_bytes = 2048\noutbound_queue_bytes = 8192\n",
        )
        .start();
    let mut watcher = Client::connect(&server).await;
    let mut client = Stateful::connect(&server).await;
    let text = "z".repeat(500);
    let mut close = None;
    // The watcher's publishes wait for the backed-up client a while
    // (connections.recipient_wait_ms), then go on until it is cut.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        watcher.send("Send", json!(["w", text])).await;
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(20), client.frame()).await
        {
            if let Some(r) = frame.split(RS).find(|r| r.contains("\"type\":7")) {
                close = Some(r.to_string());
            }
            client.records(&frame);
        }
        if close.is_some() {
            break;
        }
    }
    let close = close.expect("a Close message");
    assert!(close.contains("did not read fast enough"), "{close}");
    // Backpressure first: it received about the replay buffer's worth, not everything.
    assert!(
        client.texts.len() < 10,
        "{} messages arrived",
        client.texts.len()
    );
}
both_backends!(unacknowledged_messages_are_backpressure_then_a_close);
