//! Bad input: each gets its documented answer, is counted, and harms no other client.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::both_backends;
use crate::support::{Client, Connect, RS, Server, connection_token, http, metric, post};

/// Opens a handshaken client, sends `text`, and returns the Close message and the WebSocket
/// close code the server answered with.
async fn send_bad(server: &Server, text: &str) -> (Option<serde_json::Value>, Option<u16>) {
    let mut c = Client::connect(server).await;
    c.send_text(text).await;
    let mut close = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.ws.next())
            .await
            .expect("server answers")
        {
            Some(Ok(Message::Text(t))) => {
                for r in t.split(RS).filter(|r| !r.is_empty()) {
                    let v: serde_json::Value = serde_json::from_str(r).unwrap();
                    if v["type"] == 7 {
                        close = Some(v);
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => return (close, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (close, None),
        }
    }
}

async fn hub_protocol_errors(io: &'static str) {
    let server = Server::builder(io)
        .config("[connections]\nmax_message_bytes = 1024\n")
        .start();
    let mut bystander = Client::connect(&server).await;

    let (close, code) = send_bad(&server, &format!("{{not json{RS}")).await;
    let error = close.expect("Close message")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("Connection closed with an error. Error reading JSON"),
        "{error}"
    );
    assert_eq!(code, Some(1000));

    let (close, _) = send_bad(&server, &format!("{{\"type\":42}}{RS}")).await;
    assert_eq!(
        close.unwrap()["error"],
        "Connection closed with an error. Unknown message type '42'."
    );
    let (close, _) = send_bad(&server, &format!("{{\"target\":\"Send\"}}{RS}")).await;
    assert_eq!(
        close.unwrap()["error"],
        "Connection closed with an error. Missing required property 'type'."
    );
    let (close, _) = send_bad(&server, &format!("{{\"type\":1,\"target\":\"Send\"}}{RS}")).await;
    assert_eq!(
        close.unwrap()["error"],
        "Connection closed with an error. Missing required property 'arguments'."
    );

    // Over the size limit, with or without a separator.
    let big = format!(
        "{{\"type\":1,\"target\":\"Send\",\"arguments\":[\"{}\"]}}{RS}",
        "x".repeat(2000)
    );
    let (close, code) = send_bad(&server, &big).await;
    assert_eq!(
        close.unwrap()["error"],
        "Connection closed with an error. The maximum message size of 1024B was exceeded."
    );
    assert_eq!(code, Some(1009));

    // An unknown method is an error completion, not a close.
    let mut c = Client::connect(&server).await;
    assert_eq!(
        c.invoke("Missing", json!([])).await["error"],
        "Method 'Missing' does not exist."
    );
    let error = c.invoke("Echo", json!([1, 2])).await["error"].clone();
    assert!(error.as_str().unwrap().contains("expects 1"), "{error}");

    // The bystander saw nothing but presence and still works.
    assert_eq!(
        bystander.invoke("Echo", json!(["still here"])).await["result"],
        "still here"
    );
    assert!(metric(&server, "herald_protocol_errors_total{kind=\"hub\"}").await >= 5.0);
}
both_backends!(hub_protocol_errors);

async fn handshake_errors(io: &'static str) {
    let server = Server::start(io);
    for (request, expected) in [
        (
            r#"{"protocol":"xml","version":1}"#,
            "The protocol 'xml' is not supported.",
        ),
        (
            r#"{"protocol":"json","version":3}"#,
            "The server does not support version 3 of the 'json' protocol.",
        ),
        (
            r#"{"protocol":"json"}"#,
            "Missing required property 'version'.",
        ),
    ] {
        let mut c = Client::open(
            &server,
            &Connect {
                hub: "chat",
                token: None,
                skip_negotiate: false,
            },
        )
        .await
        .unwrap();
        c.send_text(&format!("{request}{RS}")).await;
        let answer = c.next_text().await.expect("handshake answer");
        let v: serde_json::Value = serde_json::from_str(answer.trim_end_matches(RS)).unwrap();
        assert_eq!(v["error"], expected);
        assert!(
            c.next_text().await.is_none(),
            "the connection closes after a failed handshake"
        );
    }
    // Version 2 (stateful reconnect clients) is accepted.
    let mut c = Client::open(
        &server,
        &Connect {
            hub: "chat",
            token: None,
            skip_negotiate: false,
        },
    )
    .await
    .unwrap();
    c.send_text(&format!("{{\"protocol\":\"json\",\"version\":2}}{RS}"))
        .await;
    assert!(
        c.next_text()
            .await
            .unwrap()
            .starts_with(&format!("{{}}{RS}"))
    );
    assert!(metric(&server, "herald_protocol_errors_total{kind=\"handshake\"}").await >= 3.0);
}
both_backends!(handshake_errors);

async fn connection_ids(io: &'static str) {
    let server = Server::start(io);
    // Unknown hub at negotiate.
    let res = post(server.addr, "/hubs/nohub/negotiate?negotiateVersion=1", &[]).await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (404, json!("hub_not_found"))
    );
    // Unknown id.
    let err = tokio_tungstenite::connect_async(server.ws_url("/hubs/chat?id=doesnotexist"))
        .await
        .unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 404));
    // An id in use: 409. After the connection ends: 404.
    let token = connection_token(&server).await;
    let url = server.ws_url(&format!("/hubs/chat?id={token}"));
    let (first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let err = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 409));
    drop(first);
    crate::support::eventually("the first connection to end", || async {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status() == 404,
            _ => false,
        }
    })
    .await;
    // POST without id, POST on a WebSocket connection, GET without upgrade.
    assert_eq!(post(server.addr, "/hubs/chat", &[]).await.status, 400);
    let token = connection_token(&server).await;
    let (_live, _) =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/hubs/chat?id={token}")))
            .await
            .unwrap();
    assert_eq!(
        post(server.addr, &format!("/hubs/chat?id={token}"), &[])
            .await
            .status,
        405
    );
    let res = http(
        server.addr,
        "GET",
        &format!("/hubs/chat?id={token}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (400, json!("transport_changed"))
    );
    // A wrong WebSocket version: 426 naming the supported one.
    let res = http(
        server.addr,
        "GET",
        "/hubs/chat",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "8"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    assert_eq!(
        (res.status, res.header("sec-websocket-version")),
        (426, Some("13"))
    );
    assert!(
        metric(
            &server,
            "herald_http_errors_total{code=\"connection_active\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &server,
            "herald_http_errors_total{code=\"connection_not_found\"}"
        )
        .await
            >= 2.0
    );
}
both_backends!(connection_ids);

/// WebSocket-level violations close with the RFC 6455 code.
async fn websocket_violations(io: &'static str) {
    let server = Server::start(io);
    let mut bystander = Client::connect(&server).await;
    let (mut s, head) = raw_upgrade(&server, "HTTP/1.1").await.unwrap();
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // An unmasked client frame.
    s.write_all(b"\x81\x05hello").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let close_at = rest.iter().position(|b| *b == 0x88).expect("a close frame");
    assert_eq!(&rest[close_at + 2..close_at + 4], &1002u16.to_be_bytes());
    assert_eq!(bystander.invoke("Echo", json!([1])).await["result"], 1);
    assert!(metric(&server, "herald_protocol_errors_total{kind=\"websocket\"}").await >= 1.0);
    let _ = CloseCode::Protocol;
}
both_backends!(websocket_violations);

/// Upgrades a raw socket to a WebSocket on hub chat (`version` is the request's HTTP
/// version); the socket and the 101 answer's head, or the refusal.
async fn raw_upgrade(server: &Server, version: &str) -> Result<(TcpStream, String), String> {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /hubs/chat {version}\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    if head.starts_with("HTTP/1.1 101") {
        Ok((s, head))
    } else {
        Err(head)
    }
}

/// A client frame, masked with a zero mask (allowed, and it leaves the payload as it is).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    out
}

/// Sends `frame` and returns the code of the close frame the server answers with.
async fn close_code_for(server: &Server, frame: &[u8]) -> u16 {
    let (mut s, _) = raw_upgrade(server, "HTTP/1.1").await.unwrap();
    s.write_all(frame).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let at = rest.iter().position(|b| *b == 0x88).expect("a close frame");
    u16::from_be_bytes([rest[at + 2], rest[at + 3]])
}

/// RFC 6455 conformance: close codes a peer may not send get 1002 (§7.4), a text message
/// that is not UTF-8 gets 1007 (§8.1), an HTTP/1.0 upgrade is refused (§4.1).
async fn websocket_conformance(io: &'static str) {
    let server = Server::start(io);
    assert_eq!(
        close_code_for(&server, &masked(0x8, &999u16.to_be_bytes())).await,
        1002
    );
    assert_eq!(
        close_code_for(&server, &masked(0x8, &1005u16.to_be_bytes())).await,
        1002
    );
    assert_eq!(
        close_code_for(&server, &masked(0x8, &1000u16.to_be_bytes())).await,
        1000
    );
    assert_eq!(
        close_code_for(&server, &masked(0x8, &4001u16.to_be_bytes())).await,
        1000
    );
    assert_eq!(
        close_code_for(&server, &masked(0x1, b"{\"protocol\xff\"")).await,
        1007
    );
    let refused = raw_upgrade(&server, "HTTP/1.0").await.unwrap_err();
    assert!(
        refused.starts_with("HTTP/1.0 400") || refused.starts_with("HTTP/1.1 400"),
        "{refused}"
    );
    assert!(refused.contains("bad_upgrade"), "{refused}");
    assert!(metric(&server, "herald_protocol_errors_total{kind=\"websocket\"}").await >= 3.0);
}
both_backends!(websocket_conformance);

/// A socket that connects and says nothing is closed after the handshake timeout and holds
/// nothing meanwhile; one that sends its request a little later is served normally.
async fn silent_sockets(io: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::builder(io)
        .env("HERALD_CONNECTIONS_HANDSHAKE_TIMEOUT_MS", "400")
        .start();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("a silent socket is closed well before hyper's own 30 s header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    assert_eq!(
        metric(&server, "herald_silent_sockets_closed_total").await,
        1.0
    );
}
both_backends!(silent_sockets);
