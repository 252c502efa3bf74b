//! Graceful shutdown: SIGTERM stops accepting, sends every connection a Close message with
//! allowReconnect, and the process exits 0; a second SIGTERM cuts the drain short.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::both_backends;
use crate::support::{Client, Server, eventually, metric};
use crate::systemd::NotifySocket;

async fn sigterm_closes_with_allow_reconnect(io: &'static str) {
    let mut server = Server::start(io);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Client::connect(&server).await);
    }
    let addr = server.addr;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(15));
        (status, server)
    });
    for c in &mut clients {
        let close = c.expect_close().await.expect("a Close message");
        assert_eq!(close["allowReconnect"], true, "{close}");
    }
    let (status, _server) = status.await.unwrap();
    let status = status.expect("herald exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
both_backends!(sigterm_closes_with_allow_reconnect);

/// A second SIGTERM during the drain ends the process at once, with 128 + SIGTERM: here the
/// drain would otherwise wait ten minutes for a request whose body never finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let notify = NotifySocket::abstract_name();
    let mut server = Server::builder("epoll")
        .config("[server]\nshutdown_drain_ms = 600000\nbody_timeout_ms = 600000\n")
        .env("NOTIFY_SOCKET", notify.name())
        .start();
    tokio::task::block_in_place(|| notify.wait_for("READY=1"));
    // A REST request whose body stops short: the drain waits for it.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/hubs/chat/:send?api-version=2022-06-01 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"target\":",
        server.server_token()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    // Under way once it is counted as started and not as finished. Read in this order, each
    // scrape counts itself started in the first read and finished in the second, so the
    // difference is the requests still open: the stalled one alone.
    eventually("the stalled request to be under way", || async {
        let started = metric(&server, "herald_http_requests_total").await;
        let finished = metric(&server, "herald_http_request_latency_seconds_count").await;
        started - finished >= 1.0
    })
    .await;

    server.signal(15);
    tokio::task::block_in_place(|| notify.wait_for("STOPPING=1"));
    server.signal(15);
    let status = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(60)))
        .expect("herald exits at the second SIGTERM");
    assert_eq!(status.code(), Some(143), "{status:?}");
    drop(stalled);
}
