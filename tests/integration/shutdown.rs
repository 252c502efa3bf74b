//! Graceful shutdown: SIGTERM stops accepting, sends every connection a Close message with
//! allowReconnect, and the process exits 0.

use std::time::Duration;

use crate::both_backends;
use crate::support::{Client, Server};

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
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
both_backends!(sigterm_closes_with_allow_reconnect);
