//! Server-Sent Events and long polling over raw HTTP: the statuses, framing and lifecycle the
//! SignalR clients depend on.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::support::{Client, RS, Server, eventually, http, metric, post};

async fn negotiate(server: &Server) -> String {
    let res = post(server.addr, "/hubs/chat/negotiate?negotiateVersion=1", &[]).await;
    let transports: Vec<String> = res.json()["availableTransports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["transport"].as_str().unwrap(),
                t["transferFormats"]
            )
        })
        .collect();
    assert_eq!(
        transports,
        vec![
            "WebSockets:[\"Text\",\"Binary\"]",
            "ServerSentEvents:[\"Text\"]",
            "LongPolling:[\"Text\",\"Binary\"]"
        ]
    );
    res.json()["connectionToken"].as_str().unwrap().to_string()
}

pub async fn send(server: &Server, token: &str, body: &str) -> u16 {
    http(
        server.addr,
        "POST",
        &format!("/hubs/chat?id={token}"),
        &[("Content-Type", "text/plain")],
        body.as_bytes(),
    )
    .await
    .status
}

async fn long_polling(io: &'static str) {
    let server = Server::builder(io)
        .config("[connections]\nlong_poll_timeout_ms = 500\ndisconnect_timeout_ms = 3000\n")
        .start();
    let mut watcher = Client::connect(&server).await;
    watcher.expect_invocation("joined").await;
    let token = negotiate(&server).await;
    let path = format!("/hubs/chat?id={token}");
    // Data posted before the first poll is kept (signalrcore does this).
    assert_eq!(
        send(
            &server,
            &token,
            &format!("{{\"protocol\":\"json\",\"version\":1}}{RS}")
        )
        .await,
        200
    );
    // The first poll answers at once, empty.
    let first = http(server.addr, "GET", &path, &[], b"").await;
    assert_eq!((first.status, first.body.len()), (200, 0));
    assert_eq!(first.header("cache-control"), Some("no-cache, no-store"));
    // Then the handshake answer and the joined event, in one body.
    let next = http(server.addr, "GET", &path, &[], b"").await;
    assert_eq!(next.status, 200);
    assert_eq!(
        next.header("content-type"),
        Some("application/octet-stream")
    );
    let text = next.text();
    assert!(text.starts_with(&format!("{{}}{RS}")), "{text}");
    assert!(text.contains("\"target\":\"joined\""), "{text}");
    let id = watcher.expect_invocation("joined").await[0]
        .as_str()
        .unwrap()
        .to_string();
    // Nothing to say: 200 empty after the poll timeout.
    let idle = http(server.addr, "GET", &path, &[], b"").await;
    assert_eq!((idle.status, idle.body.len()), (200, 0));
    // A poll waiting for data gets it when it arrives.
    let waited = "herald_long_polls_waited_total";
    let before = metric(&server, waited).await;
    let waiting = tokio::spawn({
        let addr = server.addr;
        let path = path.clone();
        async move { http(addr, "GET", &path, &[], b"").await }
    });
    eventually("the poll to wait", || async {
        metric(&server, waited).await > before
    })
    .await;
    watcher.send("Send", json!(["w", "hello lp"])).await;
    let got = waiting.await.unwrap();
    assert!(got.text().contains("hello lp"), "{}", got.text());
    // A newer poll ends the waiting one with 204.
    let before = metric(&server, waited).await;
    let older = tokio::spawn({
        let addr = server.addr;
        let path = path.clone();
        async move { http(addr, "GET", &path, &[], b"").await }
    });
    eventually("the older poll to wait", || async {
        metric(&server, waited).await > before
    })
    .await;
    let newer = tokio::spawn({
        let addr = server.addr;
        let path = path.clone();
        async move { http(addr, "GET", &path, &[], b"").await }
    });
    assert_eq!(older.await.unwrap().status, 204);
    assert_eq!(newer.await.unwrap().status, 200);
    // DELETE ends it: 202, the others hear it left, later polls get 204, POSTs 404.
    assert_eq!(
        http(server.addr, "DELETE", &path, &[], b"").await.status,
        202
    );
    assert_eq!(watcher.expect_invocation("left").await[0], id.as_str());
    assert_eq!(http(server.addr, "GET", &path, &[], b"").await.status, 204);
    assert_eq!(send(&server, &token, "{\"type\":6}\u{1e}").await, 404);

    // A client that stops polling is closed after the disconnect timeout.
    let token = negotiate(&server).await;
    let path = format!("/hubs/chat?id={token}");
    assert_eq!(http(server.addr, "GET", &path, &[], b"").await.status, 200);
    assert_eq!(
        send(
            &server,
            &token,
            &format!("{{\"protocol\":\"json\",\"version\":1}}{RS}")
        )
        .await,
        200
    );
    let joined = watcher.expect_invocation("joined").await[0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(watcher.expect_invocation("left").await[0], joined.as_str());
    assert!(
        metric(
            &server,
            "herald_connections_closed_total{reason=\"client_gone\"}"
        )
        .await
            >= 1.0
    );
}
both_backends!(long_polling);

async fn long_polling_bad_input(io: &'static str) {
    let server = Server::start(io);
    let mut ws = Client::connect(&server).await;
    // No id: 400. A forged id: 404.
    assert_eq!(
        http(server.addr, "GET", "/hubs/chat", &[], b"")
            .await
            .status,
        400
    );
    assert_eq!(
        http(server.addr, "GET", "/hubs/chat?id=forged", &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(send(&server, "forged", "x").await, 404);
    assert_eq!(
        http(server.addr, "DELETE", "/hubs/chat?id=forged", &[], b"")
            .await
            .status,
        404
    );
    // A transport switch mid-connection: 400.
    let token = negotiate(&server).await;
    assert_eq!(
        http(
            server.addr,
            "GET",
            &format!("/hubs/chat?id={token}"),
            &[],
            b""
        )
        .await
        .status,
        200
    );
    let res = http(
        server.addr,
        "GET",
        &format!("/hubs/chat?id={token}"),
        &[("Accept", "text/event-stream")],
        b"",
    )
    .await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (400, json!("transport_changed"))
    );
    let err = tokio_tungstenite::connect_async(server.ws_url(&format!("/hubs/chat?id={token}")))
        .await
        .unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 400));
    // Malformed hub messages by POST: still 200 (consumed), and the connection closes with a reason.
    assert_eq!(
        send(
            &server,
            &token,
            &format!("{{\"protocol\":\"json\",\"version\":1}}{RS}")
        )
        .await,
        200
    );
    assert_eq!(send(&server, &token, &format!("{{nope{RS}")).await, 200);
    let mut close = None;
    for _ in 0..5 {
        let res = http(
            server.addr,
            "GET",
            &format!("/hubs/chat?id={token}"),
            &[],
            b"",
        )
        .await;
        if res.status == 204 {
            break;
        }
        if let Some(record) = res.text().split(RS).find(|r| r.contains("\"type\":7")) {
            close = Some(record.to_string());
        }
    }
    assert!(
        close
            .expect("a Close message")
            .contains("Error reading JSON")
    );
    assert_eq!(ws.invoke("Echo", json!(["ok"])).await["result"], "ok");
}
both_backends!(long_polling_bad_input);

/// Reads an event stream until `needle` has arrived (or 10 s passed).
pub async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(seen).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(seen)))
            .unwrap();
        assert!(
            n > 0,
            "stream ended before {needle:?}: {:?}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

async fn server_sent_events(io: &'static str) {
    let server = Server::start(io);
    let mut watcher = Client::connect(&server).await;
    watcher.expect_invocation("joined").await;
    let token = negotiate(&server).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /hubs/chat?id={token} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, ":\r\n").await;
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    // A second stream for the same connection: 409.
    let res = http(
        server.addr,
        "GET",
        &format!("/hubs/chat?id={token}"),
        &[("Accept", "text/event-stream")],
        b"",
    )
    .await;
    assert_eq!(res.status, 409);
    // MessagePack cannot travel over Server-Sent Events.
    assert_eq!(
        send(
            &server,
            &token,
            &format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RS}")
        )
        .await,
        200
    );
    read_until(
        &mut stream,
        &mut seen,
        "does not support 'Binary' transfer format",
    )
    .await;

    // A JSON client: events carry each message as `data:` lines.
    let token = negotiate(&server).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /hubs/chat?id={token} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, ":\r\n").await;
    assert_eq!(
        send(
            &server,
            &token,
            &format!("{{\"protocol\":\"json\",\"version\":1}}{RS}")
        )
        .await,
        200
    );
    read_until(&mut stream, &mut seen, &format!("data: {{}}{RS}\r\n\r\n")).await;
    let id = watcher.expect_invocation("joined").await[0]
        .as_str()
        .unwrap()
        .to_string();
    watcher.send("Send", json!(["w", "hello sse"])).await;
    read_until(
        &mut stream,
        &mut seen,
        "data: {\"type\":1,\"target\":\"broadcastMessage\",\"arguments\":[\"w\",\"hello sse\"]}",
    )
    .await;
    // POSTing on a Server-Sent Events connection works; invocations are answered on the stream.
    assert_eq!(
        send(
            &server,
            &token,
            &format!(
                "{{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[5]}}{RS}"
            )
        )
        .await,
        200
    );
    read_until(
        &mut stream,
        &mut seen,
        "\"invocationId\":\"1\",\"result\":5",
    )
    .await;
    // The client goes away: the connection ends and the others hear it.
    drop(stream);
    assert_eq!(watcher.expect_invocation("left").await[0], id.as_str());
    eventually("the connection to be gone", || async {
        send(&server, &token, "{\"type\":6}\u{1e}").await == 404
    })
    .await;
}
both_backends!(server_sent_events);

/// Starts a long-polling connection on `chat` and reads its handshake answer; its URL.
async fn long_polling_connection(server: &Server) -> (String, String) {
    let token = negotiate(server).await;
    let path = format!("/hubs/chat?id={token}");
    assert_eq!(http(server.addr, "GET", &path, &[], b"").await.status, 200);
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(send(server, &token, &handshake).await, 200);
    let answer = http(server.addr, "GET", &path, &[], b"").await;
    assert!(answer.text().starts_with(&format!("{{}}{RS}")));
    (token, path)
}

/// A connection token must be used within `disconnect_timeout_ms` to start a connection; a
/// long-polling connection that started keeps using it, poll after poll, long after that.
async fn long_polling_outlives_its_token(io: &'static str) {
    // The token expires within 2 s (whole seconds); four idle polls take 4 s.
    let server = Server::builder(io)
        .config("[connections]\nlong_poll_timeout_ms = 1000\ndisconnect_timeout_ms = 1000\n")
        .start();
    let (token, path) = long_polling_connection(&server).await;
    for _ in 0..4 {
        let idle = http(server.addr, "GET", &path, &[], b"").await;
        assert_eq!((idle.status, idle.body.len()), (200, 0), "{}", idle.text());
    }
    assert_eq!(
        send(&server, &token, &format!("{{\"type\":6}}{RS}")).await,
        200
    );
    // An unused token of the same age starts nothing.
    let stale = negotiate(&server).await;
    for _ in 0..3 {
        let idle = http(server.addr, "GET", &path, &[], b"").await;
        assert_eq!(idle.status, 200);
    }
    let late = http(
        server.addr,
        "GET",
        &format!("/hubs/chat?id={stale}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(late.status, 404, "{}", late.text());
}
both_backends!(long_polling_outlives_its_token);

/// A client that goes away while its poll waits (a closed browser tab) has stopped polling
/// then: the others hear it left after `disconnect_timeout_ms`, not after the poll's own
/// timeout.
async fn long_polling_abandoned_poll(io: &'static str) {
    let server = Server::builder(io)
        .config("[connections]\nlong_poll_timeout_ms = 90000\ndisconnect_timeout_ms = 1000\n")
        .start();
    let mut watcher = Client::connect(&server).await;
    watcher.expect_invocation("joined").await;
    let (_, path) = long_polling_connection(&server).await;
    let id = watcher.expect_invocation("joined").await[0]
        .as_str()
        .unwrap()
        .to_string();
    let poll = |path: String| {
        let addr = server.addr;
        tokio::spawn(async move { http(addr, "GET", &path, &[], b"").await })
    };
    // Of two polls, the later ends the earlier with 204 and waits in its place.
    let (mut a, mut b) = (poll(path.clone()), poll(path.clone()));
    let waiting = tokio::select! {
        r = &mut a => { assert_eq!(r.unwrap().status, 204); b }
        r = &mut b => { assert_eq!(r.unwrap().status, 204); a }
    };
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(watcher.expect_invocation("left").await[0], id.as_str());
}
both_backends!(long_polling_abandoned_poll);
