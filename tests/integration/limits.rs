//! Limits and timers: slow consumers, keep-alive, client and handshake timeouts.

use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::support::{Client, Connect, RS, Server, eventually, metric, rest};

/// A client that stops reading is closed once its queue passes the cap; the publisher and the
/// other clients go on. When the stalled client reads again it finds the Close message.
async fn slow_consumer_is_cut(io: &'static str) {
    let server = Server::builder(io)
        .config("[connections]\noutbound_queue_bytes = 65536\nsend_timeout_ms = 60000\n")
        .start();
    let mut slow = Client::connect(&server).await;
    let mut other = Client::connect(&server).await;
    slow.expect_invocation("joined").await;
    let chunk = "x".repeat(16 * 1024);
    let mut rounds = 0;
    while metric(&server, "herald_slow_consumer_closes_total").await < 1.0 {
        rounds += 1;
        assert!(rounds < 4000, "the stalled client was never cut");
        for _ in 0..2 {
            let res = rest(
                &server,
                "POST",
                "/api/hubs/chat/:send",
                Some(json!({"target": "bulk", "arguments": [chunk]})),
            )
            .await;
            assert_eq!(res.status, 202);
        }
        // The other client keeps up.
        for _ in 0..2 {
            other.expect_invocation("bulk").await;
        }
    }
    assert_eq!(other.invoke("Echo", json!(["ok"])).await["result"], "ok");
    let close = slow
        .expect_close()
        .await
        .expect("a Close message after the queued data");
    assert!(
        close["error"]
            .as_str()
            .unwrap()
            .contains("did not read fast enough"),
        "{close}"
    );
    assert_eq!(close["allowReconnect"], true);
    let left = other.expect_invocation("left").await;
    assert_eq!(left[0], slow.connection_id.as_str());
}
both_backends!(slow_consumer_is_cut);

async fn keep_alive_and_timeouts(io: &'static str) {
    let server = Server::builder(io)
        .config("[connections]\nkeep_alive_interval_ms = 200\nclient_timeout_ms = 1000\nhandshake_timeout_ms = 500\n")
        .start();
    // Keep-alive: an idle client receives pings.
    let mut idle = Client::connect(&server).await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    while pings < 2 {
        let text = idle.next_text().await.expect("open");
        pings += text.matches("{\"type\":6}").count();
        // Answer so the client timeout does not fire.
        idle.send_text(&format!("{{\"type\":6}}{RS}")).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Client timeout: a client that sends nothing is closed with a reason.
    let mut silent = Client::connect(&server).await;
    let close = silent.expect_close().await.expect("Close message");
    assert!(
        close["error"].as_str().unwrap().contains("client timeout"),
        "{close}"
    );
    // Handshake timeout: the socket is closed with the handshake error.
    let mut mute = Client::open(
        &server,
        &Connect {
            hub: "chat",
            token: None,
            skip_negotiate: false,
        },
    )
    .await
    .unwrap();
    let answer = mute.next_text().await.expect("handshake error");
    assert!(answer.contains("Handshake was canceled."), "{answer}");
    assert!(mute.next_text().await.is_none());
    eventually("timeouts counted", || async {
        metric(
            &server,
            "herald_connections_closed_total{reason=\"client_timeout\"}",
        )
        .await
            >= 1.0
    })
    .await;
}
both_backends!(keep_alive_and_timeouts);

/// A message bigger than the outbound cap still reaches a client whose queue is empty (it is
/// not a slow client); the group limit answers with an error instead of growing without end.
async fn large_messages_and_group_limit(io: &'static str) {
    let server = Server::builder(io)
        .config("[connections]\noutbound_queue_bytes = 65536\nmax_groups_per_connection = 3\n")
        .start();
    let mut a = Client::connect(&server).await;
    let big = "y".repeat(100_000);
    let res = rest(
        &server,
        "POST",
        "/api/hubs/chat/:send",
        Some(json!({"target": "big", "arguments": [big]})),
    )
    .await;
    assert_eq!(res.status, 202);
    assert_eq!(
        a.expect_invocation("big").await[0].as_str().unwrap().len(),
        100_000
    );
    assert_eq!(
        metric(&server, "herald_slow_consumer_closes_total").await,
        0.0
    );
    for g in ["g1", "g2", "g3"] {
        assert_eq!(
            a.invoke("JoinGroup", json!([g])).await["error"],
            serde_json::Value::Null
        );
    }
    let err = a.invoke("JoinGroup", json!(["g4"])).await;
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("already in 3 groups"),
        "{err}"
    );
    // Joining a group it is in already is fine.
    assert_eq!(
        a.invoke("JoinGroup", json!(["g1"])).await["error"],
        serde_json::Value::Null
    );
}
both_backends!(large_messages_and_group_limit);

/// One counter per fact: connections opened = closed + open, and one that never finished its
/// handshake is a failure, not a close.
async fn opened_closed_and_failed_add_up(io: &'static str) {
    let server = Server::builder(io).shards(1).start();
    let sum = |prefix: &'static str| {
        let server = &server;
        async move {
            let res = crate::support::http(server.addr, "GET", "/metrics", &[], b"").await;
            res.text()
                .lines()
                .filter(|l| l.starts_with(prefix))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum::<f64>()
        }
    };
    let a = Client::connect(&server).await;
    let b = Client::connect(&server).await;
    let mut bad = Client::open(
        &server,
        &Connect {
            hub: "chat",
            token: None,
            skip_negotiate: false,
        },
    )
    .await
    .unwrap();
    bad.send_text(&format!("{{\"protocol\":\"nope\",\"version\":1}}{RS}"))
        .await;
    assert!(bad.next_text().await.unwrap().contains("error"));
    drop(a);
    eventually(
        "the handshake failure and the close are counted",
        || async {
            metric(
                &server,
                "herald_connections_failed_total{reason=\"handshake_failed\"}",
            )
            .await
                == 1.0
                && sum("herald_connections_closed_total{").await == 1.0
        },
    )
    .await;
    let opened = metric(&server, "herald_connections_opened_total").await;
    let open = sum("herald_connections{").await;
    assert_eq!(opened, 2.0);
    assert_eq!(opened, sum("herald_connections_closed_total{").await + open);
    assert_eq!(
        metric(&server, "herald_protocol_errors_total{kind=\"handshake\"}").await,
        1.0
    );
    drop(b);
}
both_backends!(opened_closed_and_failed_add_up);
