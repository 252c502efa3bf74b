//! The MessagePack hub protocol over WebSockets: binary frames, every value type carried
//! faithfully, and publishes reaching JSON and MessagePack clients alike.

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use herald::protocol::{Completion, HubMessage, Value, msgpack};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::support::{Client, RS, Server, post};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A MessagePack client: negotiate, WebSocket, JSON handshake, then binary frames.
struct MsgPack {
    ws: Ws,
    inbox: VecDeque<HubMessage>,
    pending: Vec<u8>,
}

impl MsgPack {
    async fn connect(server: &Server) -> MsgPack {
        let res = post(server.addr, "/hubs/chat/negotiate?negotiateVersion=1", &[]).await;
        let formats = res.json()["availableTransports"][0]["transferFormats"].clone();
        assert_eq!(formats, json!(["Text", "Binary"]));
        let token = res.json()["connectionToken"].as_str().unwrap().to_string();
        let (mut ws, _) =
            tokio_tungstenite::connect_async(server.ws_url(&format!("/hubs/chat?id={token}")))
                .await
                .unwrap();
        ws.send(Message::text(format!(
            "{{\"protocol\":\"messagepack\",\"version\":1}}{RS}"
        )))
        .await
        .unwrap();
        let mut client = MsgPack {
            ws,
            inbox: VecDeque::default(),
            pending: Vec::new(),
        };
        let first = client.frame().await.expect("handshake answer");
        assert!(first.starts_with(b"{}\x1e"), "{first:?}");
        client.feed(&first[3..]);
        client
    }

    async fn frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
            {
                Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
                Some(Ok(Message::Text(t))) => {
                    panic!("a MessagePack connection got a text frame: {t}")
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some((m, used)) = msgpack::decode(&self.pending, 1 << 20).unwrap() {
            self.pending.drain(..used);
            if m != HubMessage::Ping {
                self.inbox.push_back(m);
            }
        }
    }

    async fn recv(&mut self) -> Option<HubMessage> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Some(m);
            }
            let frame = self.frame().await?;
            self.feed(&frame);
        }
    }

    async fn send(&mut self, message: &HubMessage) {
        let mut out = Vec::new();
        msgpack::encode(message, &mut out);
        self.ws.send(Message::binary(out)).await.unwrap();
    }

    async fn invocation(&mut self, target: &str) -> Vec<Value> {
        loop {
            match self.recv().await.expect("open") {
                HubMessage::Invocation {
                    target: t,
                    arguments,
                    ..
                } if t == target => return arguments,
                _ => {}
            }
        }
    }
}

fn invoke(id: Option<&str>, target: &str, arguments: Vec<Value>) -> HubMessage {
    HubMessage::Invocation {
        invocation_id: id.map(str::to_string),
        target: target.into(),
        arguments,
        stream_ids: vec![],
    }
}

async fn values_cross_protocols(io: &'static str) {
    let server = Server::start(io);
    let mut mp = MsgPack::connect(&server).await;
    let mut js = Client::connect(&server).await;
    let rich = Value::Map(vec![
        ("int".into(), Value::Int(-70_000)),
        ("big".into(), Value::UInt(u64::MAX)),
        ("float".into(), Value::Float(2.5)),
        ("text".into(), Value::Str("é ✓".into())),
        ("bool".into(), Value::Bool(true)),
        ("none".into(), Value::Null),
        (
            "list".into(),
            Value::Array(vec![Value::Int(1), Value::Str("two".into())]),
        ),
        ("bytes".into(), Value::Bin(vec![0, 1, 2, 255])),
    ]);
    mp.send(&invoke(
        None,
        "Send",
        vec![Value::Str("mp".into()), rich.clone()],
    ))
    .await;
    // The MessagePack sender gets its own message back unchanged, binary included.
    assert_eq!(
        mp.invocation("broadcastMessage").await,
        vec![Value::Str("mp".into()), rich]
    );
    // The JSON client gets the same values, binary as base64.
    let got = js.expect_invocation("broadcastMessage").await;
    assert_eq!(
        serde_json::Value::from(got),
        json!(["mp", {"int": -70000, "big": u64::MAX, "float": 2.5, "text": "é ✓",
                      "bool": true, "none": null, "list": [1, "two"], "bytes": "AAEC/w=="}])
    );
    // And the other way (the test's JSON encoder writes keys in alphabetical order; Herald
    // keeps the order it received).
    js.send("Send", json!(["js", {"a": [true, null], "n": 1.25}]))
        .await;
    let args = mp.invocation("broadcastMessage").await;
    assert_eq!(
        args[1],
        Value::Map(vec![
            (
                "a".into(),
                Value::Array(vec![Value::Bool(true), Value::Null])
            ),
            ("n".into(), Value::Float(1.25))
        ])
    );
    // Blocking invocations and errors.
    mp.send(&invoke(Some("1"), "Echo", vec![Value::Bin(vec![9, 8])]))
        .await;
    mp.send(&invoke(Some("2"), "Nope", vec![])).await;
    let mut completions = Vec::new();
    while completions.len() < 2 {
        if let HubMessage::Completion {
            invocation_id,
            completion,
        } = mp.recv().await.unwrap()
        {
            completions.push((invocation_id, completion));
        }
    }
    assert_eq!(
        completions[0],
        ("1".into(), Completion::Result(Value::Bin(vec![9, 8])))
    );
    assert_eq!(
        completions[1],
        (
            "2".into(),
            Completion::Error("Method 'Nope' does not exist.".into())
        )
    );
}
both_backends!(values_cross_protocols);

async fn lying_length_prefix_closes_with_a_reason(io: &'static str) {
    let server = Server::start(io);
    let mut bystander = Client::connect(&server).await;
    let mut mp = MsgPack::connect(&server).await;
    // Says 3 bytes, holds an array that claims 5 elements.
    mp.ws
        .send(Message::binary(vec![0x03, 0x95, 0x01, 0x80]))
        .await
        .unwrap();
    let mut close = None;
    while let Some(m) = mp.recv().await {
        if let HubMessage::Close { error, .. } = m {
            close = error;
        }
    }
    let close = close.expect("a Close message");
    assert!(close.contains("Invalid MessagePack"), "{close}");
    assert_eq!(
        bystander.invoke("Echo", json!(["ok"])).await["result"],
        "ok"
    );
}
both_backends!(lying_length_prefix_closes_with_a_reason);

/// JSON numbers beyond what i64, u64 and f64 hold exactly reach JSON clients as they were
/// sent, as through ASP.NET Core; MessagePack clients get the nearest float64.
async fn json_numbers_pass_through_unchanged(io: &'static str) {
    let server = Server::start(io);
    let mut mp = MsgPack::connect(&server).await;
    let mut sender = Client::connect(&server).await;
    let mut receiver = Client::connect(&server).await;
    let numbers =
        "[123456789012345678901234567890,-9223372036854775809,1.10,0.30000000000000000001,1.5,7]";
    // The test's serde_json keeps a number's text too (`arbitrary_precision` is on for the
    // whole build), so `to_string` shows exactly what Herald sent.
    let args: serde_json::Value = serde_json::from_str(&format!("[{numbers}]")).unwrap();
    let echoed = sender.invoke("Echo", args.clone()).await;
    assert_eq!(echoed["result"].to_string(), numbers);
    sender.send("Send", args).await;
    let got = receiver.expect_invocation("broadcastMessage").await;
    assert_eq!(got[0].to_string(), numbers);
    assert_eq!(
        mp.invocation("broadcastMessage").await,
        vec![Value::Array(vec![
            Value::Float(1.234_567_890_123_456_8e29),
            Value::Float(-9_223_372_036_854_775_809.0),
            Value::Float(1.1),
            Value::Float(0.3),
            Value::Float(1.5),
            Value::Int(7),
        ])]
    );
}
both_backends!(json_numbers_pass_through_unchanged);
