//! Bursts, backpressure and bounds: hub messages stream out of transport messages of any
//! size, a client that sends faster than it reads is paused rather than cut, one that does not
//! read at all is still cut, and the node-wide bounds (unfinished messages, request bodies,
//! REST memberships) hold — each with its documented answer.

use std::fmt::Write as _;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::support::{AnyWs, Client, RS, Server, connection_token, eventually, http, metric, rest};

/// Send invocations from `name` of each of `texts`, concatenated into one transport message.
fn sends<S: AsRef<str>>(name: &str, texts: impl IntoIterator<Item = S>) -> String {
    let mut out = String::new();
    for text in texts {
        let msg = json!({"type": 1, "target": "Send", "arguments": [name, text.as_ref()]});
        write!(out, "{msg}{RS}").unwrap();
    }
    out
}

/// `n` Send invocations of `size`-byte texts numbered from 0, concatenated as the official
/// JavaScript client sends a burst: one transport message.
fn burst(n: usize, size: usize) -> String {
    sends(
        "burst",
        (0..n).map(|i| format!("{i:06}:{}", "x".repeat(size - 7))),
    )
}

/// Reads `n` broadcastMessage invocations and checks they are the burst's, in order.
async fn expect_burst(client: &mut Client, n: usize) {
    for i in 0..n {
        let args = client.expect_invocation("broadcastMessage").await;
        let text = args[1].as_str().unwrap();
        assert_eq!(&text[..6], format!("{i:06}"), "message {i} out of order");
    }
}

fn plain(client: Client) -> (AnyWs, String) {
    (client.ws, client.connection_id)
}

/// One WebSocket message carrying 800 invocations of 20 KB (16 MB), from a sender that
/// includes itself in the broadcast and does not read for a while: it is paused — the burst
/// stops being read while its own copies pile up — rather than cut; once it reads, the rest
/// of the burst is read and every message reaches it and a reader, in order. A client that
/// never reads is cut as a slow consumer, and nobody else is.
async fn a_burst_pauses_its_sender_and_cuts_only_the_non_reader(io: &'static str) {
    let server = Server::builder(io)
        .env("HERALD_HUBS_CHAT_PRESENCE", "off")
        .env("HERALD_CONNECTIONS_SEND_TIMEOUT_MS", "60000")
        .start();
    let sender = Client::connect(&server).await;
    let mut reader = Client::connect(&server).await;
    let mut stalled = Client::connect(&server).await;
    let (ws, sender_id) = plain(sender);
    let AnyWs::Plain(ws) = ws else { unreachable!() };
    let (mut sink, stream) = ws.split();
    let payload = burst(800, 20_000);
    let send = tokio::spawn(async move {
        sink.send(Message::text(payload)).await.unwrap();
        sink
    });
    let reading = tokio::spawn(async move {
        expect_burst(&mut reader, 800).await;
        reader
    });
    // The sender reads nothing: Herald stops reading its burst instead of cutting it.
    eventually("the sender is paused", || async {
        metric(
            &server,
            "herald_input_paused_connections{reason=\"outbound\"}",
        )
        .await
            >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually("still paused, not cut", || async {
        metric(
            &server,
            "herald_input_paused_connections{reason=\"outbound\"}",
        )
        .await
            >= 1.0
    })
    .await;
    // Now it reads: the rest of its burst is taken in, and it gets all 800 copies.
    let mut stream = stream;
    let mut seen = 0;
    while seen < 800 {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the sender's copies keep coming")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = frame {
            for record in text.split(RS).filter(|r| r.contains("broadcastMessage")) {
                let v: Value = serde_json::from_str(record).unwrap();
                let text = v["arguments"][1].as_str().unwrap();
                assert_eq!(&text[..6], format!("{seen:06}"));
                seen += 1;
            }
        }
    }
    let sink = send.await.unwrap();
    let mut sender = Client::from_ws(stream.reunite(sink).unwrap(), sender_id);
    let mut reader = reading.await.unwrap();
    assert_eq!(
        sender.invoke("Echo", json!(["still here"])).await["result"],
        "still here"
    );
    assert_eq!(reader.invoke("Echo", json!([2])).await["result"], 2);
    // The client that never reads was cut; nobody else was.
    let close = stalled.expect_close().await.expect("a Close message");
    assert!(
        close["error"]
            .as_str()
            .unwrap()
            .contains("did not read fast enough"),
        "{close}"
    );
    assert_eq!(
        metric(&server, "herald_slow_consumer_closes_total").await,
        1.0
    );
    assert!(metric(&server, "herald_input_pauses_total{reason=\"outbound\"}").await >= 1.0);
    eventually("the pause is over", || async {
        metric(
            &server,
            "herald_input_paused_connections{reason=\"outbound\"}",
        )
        .await
            == 0.0
    })
    .await;
    let paused = metric(
        &server,
        "herald_input_paused_seconds_total{reason=\"outbound\"}",
    )
    .await;
    assert!(paused > 0.0, "paused for {paused} s");
}
both_backends!(a_burst_pauses_its_sender_and_cuts_only_the_non_reader);

/// A hub message over `max_message_bytes` inside a batch ends the connection with the
/// documented error and close code 1009 — after the messages before it were dispatched —
/// and harms nobody else.
async fn an_oversized_message_in_a_batch_ends_only_its_connection(io: &'static str) {
    let server = Server::start(io);
    let mut bad = Client::connect(&server).await;
    let mut other = Client::connect(&server).await;
    bad.expect_invocation("joined").await;
    other.expect_invocation("joined").await;
    let batch = sends(
        "bad",
        [
            "one".to_string(),
            "two".into(),
            "x".repeat(40_000),
            "four".into(),
        ],
    );
    bad.send_text(&batch).await;
    let mut close = None;
    let mut code = None;
    let mut received = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), bad.ws.next())
            .await
            .expect("no close within 10 s");
        match next {
            Some(Ok(Message::Text(t))) => {
                for record in t.split(RS).filter(|r| !r.is_empty()) {
                    let v: Value = serde_json::from_str(record).unwrap();
                    match v["type"].as_i64() {
                        Some(7) => close = Some(v),
                        Some(1) if v["target"] == "broadcastMessage" => {
                            received.push(v["arguments"][1].clone());
                        }
                        _ => {}
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert_eq!(received, vec![json!("one"), json!("two")]);
    let close = close.expect("a Close message");
    assert_eq!(
        close["error"],
        "Connection closed with an error. The maximum message size of 32768B was exceeded."
    );
    assert_eq!(code, Some(1009));
    // The other client got the two messages before it, and nothing after.
    assert_eq!(other.expect_invocation("broadcastMessage").await[1], "one");
    assert_eq!(other.expect_invocation("broadcastMessage").await[1], "two");
    let left = other.expect_invocation("left").await;
    assert_eq!(left[0], bad.connection_id.as_str());
    assert_eq!(other.invoke("Echo", json!([1])).await["result"], 1);
    assert!(
        metric(
            &server,
            "herald_connections_closed_total{reason=\"protocol_error\"}"
        )
        .await
            >= 1.0
    );
}
both_backends!(an_oversized_message_in_a_batch_ends_only_its_connection);

/// A batch whose last message is cut off when the socket closes: the whole messages before it
/// are dispatched, the fragment is dropped with the connection, and the node holds nothing.
async fn a_batch_cut_off_mid_message(io: &'static str) {
    let server = Server::start(io);
    let mut other = Client::connect(&server).await;
    let mut cut = Client::connect(&server).await;
    cut.expect_invocation("joined").await;
    let mut batch = sends("cut", ["a", "b", "c"]);
    batch.push_str(r#"{"type":1,"target":"Send","arguments":["cut","never fin"#);
    cut.send_text(&batch).await;
    for text in ["a", "b", "c"] {
        assert_eq!(other.expect_invocation("broadcastMessage").await[1], text);
    }
    eventually("the fragment is held", || async {
        metric(&server, "herald_input_buffered_bytes").await > 0.0
    })
    .await;
    drop(cut);
    other.expect_invocation("left").await;
    eventually("nothing held once it is gone", || async {
        metric(&server, "herald_input_buffered_bytes").await == 0.0
    })
    .await;
}
both_backends!(a_batch_cut_off_mid_message);

/// Many sockets each holding part of a message: past the node's budget, those holding one are
/// not read (the rest of their messages waits in TCP), clients that send whole messages go
/// on, and the stalled ones are closed by the client timeout, which frees the budget.
async fn the_input_budget_holds(io: &'static str) {
    let server = Server::builder(io)
        .config(
            "[connections]\ninput_budget_bytes = 65536\nclient_timeout_ms = 3000\nkeep_alive_interval_ms = 500\n",
        )
        .env("HERALD_HUBS_CHAT_PRESENCE", "off")
        .start();
    let mut holders = Vec::new();
    for _ in 0..8 {
        let mut c = Client::connect(&server).await;
        // 20 KB of a message that never ends: 160 KB in all, past the 64 KiB budget.
        c.send_text(&format!(
            r#"{{"type":1,"target":"Send","arguments":["hold","{}"#,
            "h".repeat(20_000)
        ))
        .await;
        holders.push(c);
    }
    eventually("over budget, holders paused", || async {
        metric(&server, "herald_input_buffered_bytes").await > 65536.0
    })
    .await;
    // More from a holder is not read now: the rest of its message and another one.
    holders[0]
        .send_text(&format!("\"]}}{RS}{{\"type\":6}}{RS}"))
        .await;
    eventually("holders are paused for the budget", || async {
        metric(
            &server,
            "herald_input_paused_connections{reason=\"input_budget\"}",
        )
        .await
            >= 1.0
    })
    .await;
    let held = metric(&server, "herald_input_buffered_bytes").await;
    assert!(held <= 8.0 * 20_100.0, "held {held}");
    // A client sending whole messages is unaffected.
    let mut fresh = Client::connect(&server).await;
    for i in 0..20 {
        assert_eq!(fresh.invoke("Echo", json!([i])).await["result"], i);
    }
    // The stalled holders hear nothing from themselves within the client timeout and are
    // closed; the budget is free again.
    for mut holder in holders {
        let close = holder.expect_close().await.expect("a Close message");
        assert!(
            close["error"].as_str().unwrap().contains("client timeout"),
            "{close}"
        );
    }
    eventually("the budget is free", || async {
        metric(&server, "herald_input_buffered_bytes").await == 0.0
    })
    .await;
    assert!(
        metric(
            &server,
            "herald_input_pauses_total{reason=\"input_budget\"}"
        )
        .await
            >= 1.0
    );
    let mut later = Client::connect(&server).await;
    assert_eq!(later.invoke("Echo", json!(["ok"])).await["result"], "ok");
}
both_backends!(the_input_budget_holds);

/// Sends a request head announcing `length` bytes of body, then `sent` of them, and returns
/// the response (and how long it took).
async fn trickle(server: &Server, head: &str, length: usize, sent: &[u8]) -> (String, Duration) {
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let req = format!("{head}\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    (
        String::from_utf8_lossy(&raw).into_owned(),
        started.elapsed(),
    )
}

/// A request body that stops is answered 408 after `server.body_timeout_ms` and its socket
/// closed: on the REST API and on a long-polling POST alike.
async fn a_body_that_stops_gets_408(io: &'static str) {
    let server = Server::builder(io)
        .config("[server]\nbody_timeout_ms = 1000\n")
        .start();
    let auth = format!("Authorization: Bearer {}", server.server_token());
    let (answer, took) = trickle(
        &server,
        &format!("POST /api/hubs/chat/:send HTTP/1.1\r\n{auth}"),
        100,
        b"{",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let token = connection_token(&server).await;
    let (answer, _) = trickle(
        &server,
        &format!("POST /hubs/chat?id={token} HTTP/1.1"),
        1000,
        b"{\"protocol\"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        metric(&server, "herald_http_errors_total{code=\"body_timeout\"}").await,
        2.0
    );
    // The server is fine.
    let res = rest(
        &server,
        "POST",
        "/api/hubs/chat/:send",
        Some(json!({"target": "t", "arguments": []})),
    )
    .await;
    assert_eq!(res.status, 202);
}
both_backends!(a_body_that_stops_gets_408);

/// REST user-group memberships are capped per user and in all (409 `membership_limit`, and
/// nothing changes); a renewal is not a new one; and a user's connections get every group the
/// user is in, past their own join limit.
async fn user_group_memberships_are_capped(io: &'static str) {
    let server = Server::builder(io)
        .config(
            "[connections]\nmax_groups_per_user = 3\nmax_user_group_memberships = 5\nmax_groups_per_connection = 2\n",
        )
        .start();
    let put = |user: &'static str, group: &'static str| {
        let server = &server;
        async move {
            rest(
                server,
                "PUT",
                &format!("/api/hubs/chat/users/{user}/groups/{group}?api-version=2022-06-01"),
                None,
            )
            .await
        }
    };
    for g in ["g1", "g2", "g3"] {
        assert_eq!(put("u1", g).await.status, 200);
    }
    let refused = put("u1", "g4").await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["code"], "membership_limit");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_groups_per_user"),
        "{}",
        refused.text()
    );
    assert_eq!(put("u1", "g1").await.status, 200, "a renewal");
    assert_eq!(put("u2", "g1").await.status, 200);
    assert_eq!(put("u2", "g2").await.status, 200);
    let refused = put("u3", "g1").await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_user_group_memberships")
    );
    assert_eq!(
        metric(
            &server,
            "herald_http_errors_total{code=\"membership_limit\"}"
        )
        .await,
        2.0
    );
    // u1 connects: it is in all three of its groups although it may join only two itself.
    let mut u1 = Client::connect_as(&server, "u1").await;
    for g in ["g1", "g2", "g3"] {
        let res = rest(
            &server,
            "POST",
            &format!("/api/hubs/chat/groups/{g}/:send?api-version=2022-06-01"),
            Some(json!({"target": "toGroup", "arguments": [g]})),
        )
        .await;
        assert_eq!(res.status, 202);
        assert_eq!(u1.expect_invocation("toGroup").await[0], g);
    }
    // Its own joins are limited as before.
    let err = u1.invoke("JoinGroup", json!(["mine"])).await;
    assert!(
        err["error"].as_str().unwrap().contains("already in"),
        "{err}"
    );
}
both_backends!(user_group_memberships_are_capped);

/// A long-polling client's burst in one POST body (as the official client sends it) is
/// dispatched piece by piece: far larger than any single limit, it reaches a WebSocket
/// client whole and in order.
async fn a_long_polling_burst_in_one_post(io: &'static str) {
    let server = Server::builder(io)
        .env("HERALD_HUBS_CHAT_PRESENCE", "off")
        .start();
    let mut reader = Client::connect(&server).await;
    let token = connection_token(&server).await;
    let path = format!("/hubs/chat?id={token}");
    let hello = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(
        http(server.addr, "POST", &path, &[], hello.as_bytes())
            .await
            .status,
        200
    );
    // The poller drains the sender's own copies meanwhile, as the client's poll loop does.
    let addr = server.addr;
    let poll_path = path.clone();
    let poller = tokio::spawn(async move {
        let mut got = 0usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while got < 400 && std::time::Instant::now() < deadline {
            let res = http(addr, "GET", &poll_path, &[], b"").await;
            got += res.text().matches("broadcastMessage").count();
        }
        got
    });
    let reading = tokio::spawn(async move { expect_burst(&mut reader, 400).await });
    let body = burst(400, 20_000);
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        http(server.addr, "POST", &path, &[], body.as_bytes()),
    )
    .await
    .expect("the POST is read");
    assert_eq!(res.status, 200);
    reading.await.unwrap();
    assert_eq!(poller.await.unwrap(), 400);
}
both_backends!(a_long_polling_burst_in_one_post);

/// A client that sends as fast as it can and never reads: paused first, then — its socket
/// taking nothing — closed by the send timeout; the others go on unaffected.
async fn a_sender_that_never_reads_is_paused_then_cut(io: &'static str) {
    let server = Server::builder(io)
        .env("HERALD_HUBS_CHAT_PRESENCE", "off")
        .env("HERALD_CONNECTIONS_SEND_TIMEOUT_MS", "1500")
        .start();
    let sender = Client::connect(&server).await;
    let mut reader = Client::connect(&server).await;
    let (ws, _) = plain(sender);
    let AnyWs::Plain(ws) = ws else { unreachable!() };
    let (mut sink, _stream) = ws.split();
    let payload = burst(800, 20_000);
    let send = tokio::spawn(async move { sink.send(Message::text(payload)).await.is_ok() });
    // The reader keeps up with whatever gets through, until told to stop.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reading = tokio::spawn(async move {
        let mut n = 0;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                m = reader.try_recv() => match m {
                    Some(m) if m["target"] == "broadcastMessage" => n += 1,
                    Some(_) => {}
                    None => panic!("the reader was closed after {n} messages"),
                },
            }
        }
        assert!(n > 0);
        reader
    });
    eventually("the sender is paused", || async {
        metric(&server, "herald_input_pauses_total{reason=\"outbound\"}").await >= 1.0
    })
    .await;
    eventually("then cut by the send timeout", || async {
        metric(
            &server,
            "herald_connections_closed_total{reason=\"send_timeout\"}",
        )
        .await
            >= 1.0
    })
    .await;
    let _ = send.await;
    stop.send(()).unwrap();
    let mut reader = reading.await.unwrap();
    assert_eq!(
        reader.invoke("Echo", json!(["fine"])).await["result"],
        "fine"
    );
    assert_eq!(
        metric(
            &server,
            "herald_connections_closed_total{reason=\"send_timeout\"}"
        )
        .await,
        1.0
    );
}
both_backends!(a_sender_that_never_reads_is_paused_then_cut);
