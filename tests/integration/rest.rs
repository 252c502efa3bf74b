//! The REST API: publishing to every target, membership, closing, existence checks, health,
//! on the 2022-06-01 paths and the v1 paths.

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Client, Server, http, rest};

const V: &str = "api-version=2022-06-01";

async fn publish_to_every_target(io: &'static str) {
    let server = Server::start(io);
    let mut alice = Client::connect_as(&server, "alice").await;
    let mut bob = Client::connect(&server).await;
    alice.invoke("GetCount", json!([])).await;

    let msg = |text: &str| json!({"target": "notify", "arguments": [text, 1]});
    // Hub, with one connection excluded.
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/:send?{V}&excluded={}", bob.connection_id),
        Some(msg("all")),
    )
    .await;
    assert_eq!(res.status, 202, "{}", res.text());
    assert_eq!(
        Value::from(alice.expect_invocation("notify").await),
        json!(["all", 1])
    );
    // User.
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/users/alice/:send?{V}"),
        Some(msg("user")),
    )
    .await;
    assert_eq!(res.status, 202);
    assert_eq!(
        Value::from(alice.expect_invocation("notify").await),
        json!(["user", 1])
    );
    // Connection.
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/connections/{}/:send?{V}", bob.connection_id),
        Some(msg("conn")),
    )
    .await;
    assert_eq!(res.status, 202);
    assert_eq!(
        Value::from(bob.expect_invocation("notify").await),
        json!(["conn", 1])
    );
    // Group: add bob by connection, alice by user.
    let res = rest(
        &server,
        "PUT",
        &format!(
            "/api/hubs/chat/groups/g1/connections/{}?{V}",
            bob.connection_id
        ),
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    let res = rest(
        &server,
        "PUT",
        &format!("/api/hubs/chat/users/alice/groups/g1?{V}"),
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/groups/g1?{V}"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/users/alice/groups/g1?{V}"),
            None
        )
        .await
        .status,
        200
    );
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/groups/g1/:send?{V}"),
        Some(msg("group")),
    )
    .await;
    assert_eq!(res.status, 202);
    assert_eq!(
        Value::from(alice.expect_invocation("notify").await),
        json!(["group", 1])
    );
    assert_eq!(
        Value::from(bob.expect_invocation("notify").await),
        json!(["group", 1])
    );
    // The user's membership holds for the user's next connection too.
    let mut alice2 = Client::connect_as(&server, "alice").await;
    rest(
        &server,
        "POST",
        &format!(
            "/api/hubs/chat/groups/g1/:send?{V}&excluded={}",
            alice.connection_id
        ),
        Some(msg("g2")),
    )
    .await;
    assert_eq!(
        Value::from(alice2.expect_invocation("notify").await),
        json!(["g2", 1])
    );
    // Removal.
    assert_eq!(
        rest(
            &server,
            "DELETE",
            &format!(
                "/api/hubs/chat/groups/g1/connections/{}?{V}",
                bob.connection_id
            ),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "DELETE",
            &format!("/api/hubs/chat/users/alice/groups/g1?{V}"),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/groups/g1?{V}"),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/users/alice/groups/g1?{V}"),
            None
        )
        .await
        .status,
        404
    );

    // Existence checks.
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/connections/{}?{V}", bob.connection_id),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/users/alice?{V}"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/users/nobody?{V}"),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        http(server.addr, "HEAD", &format!("/api/health?{V}"), &[], b"")
            .await
            .status,
        200
    );

    // Closing a connection: it gets a Close message with the reason, the others a `left`.
    let res = rest(
        &server,
        "DELETE",
        &format!(
            "/api/hubs/chat/connections/{}?{V}&reason=bye",
            bob.connection_id
        ),
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    let close = bob.expect_close().await.expect("a Close message");
    assert_eq!(close["error"], "bye");
    assert_eq!(
        alice.expect_invocation("left").await[0],
        bob.connection_id.as_str()
    );
    assert_eq!(
        rest(
            &server,
            "HEAD",
            &format!("/api/hubs/chat/connections/{}?{V}", bob.connection_id),
            None
        )
        .await
        .status,
        404
    );
    // Closing by user.
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/users/alice/:closeConnections?{V}"),
        None,
    )
    .await;
    assert_eq!(res.status, 204);
    assert!(alice.expect_close().await.is_some());
    assert!(alice2.expect_close().await.is_some());
}
both_backends!(publish_to_every_target);

async fn legacy_v1_paths(io: &'static str) {
    let server = Server::start(io);
    let mut alice = Client::connect_as(&server, "alice").await;
    let id = alice.connection_id.clone();
    let msg = json!({"Target": "notify", "Arguments": ["v1"]});
    assert_eq!(
        rest(&server, "POST", "/api/v1/hubs/chat", Some(msg.clone()))
            .await
            .status,
        202
    );
    assert_eq!(
        Value::from(alice.expect_invocation("notify").await),
        json!(["v1"])
    );
    assert_eq!(
        rest(
            &server,
            "POST",
            "/api/v1/hubs/chat/users/alice",
            Some(msg.clone())
        )
        .await
        .status,
        202
    );
    alice.expect_invocation("notify").await;
    assert_eq!(
        rest(
            &server,
            "POST",
            &format!("/api/v1/hubs/chat/connections/{id}"),
            Some(msg.clone())
        )
        .await
        .status,
        202
    );
    alice.expect_invocation("notify").await;
    assert_eq!(
        rest(
            &server,
            "PUT",
            &format!("/api/v1/hubs/chat/groups/g/connections/{id}"),
            None
        )
        .await
        .status,
        202
    );
    assert_eq!(
        rest(&server, "GET", "/api/v1/hubs/chat/groups/g", None)
            .await
            .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "POST",
            "/api/v1/hubs/chat/groups/g",
            Some(msg.clone())
        )
        .await
        .status,
        202
    );
    alice.expect_invocation("notify").await;
    assert_eq!(
        rest(
            &server,
            "PUT",
            "/api/v1/hubs/chat/groups/h/users/alice",
            None
        )
        .await
        .status,
        202
    );
    assert_eq!(
        rest(
            &server,
            "GET",
            "/api/v1/hubs/chat/groups/h/users/alice",
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "DELETE",
            "/api/v1/hubs/chat/users/alice/groups",
            None
        )
        .await
        .status,
        202
    );
    assert_eq!(
        rest(
            &server,
            "GET",
            "/api/v1/hubs/chat/groups/h/users/alice",
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        http(server.addr, "GET", "/api/v1/health", &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        rest(
            &server,
            "DELETE",
            &format!("/api/v1/hubs/chat/connections/{id}"),
            None
        )
        .await
        .status,
        202
    );
    assert!(alice.expect_close().await.is_some());
}
both_backends!(legacy_v1_paths);

/// REST bodies and names that are not the documented shape get 400 with a stable code; unknown
/// hubs and connections get 404.
async fn rest_bad_input(io: &'static str) {
    let server = Server::start(io);
    let mut alice = Client::connect(&server).await;
    let token = server.server_token();
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    for body in [
        &b"not json"[..],
        b"[1]",
        br#"{"arguments":[]}"#,
        br#"{"target":"x","arguments":{}}"#,
    ] {
        let res = http(
            server.addr,
            "POST",
            &format!("/api/hubs/chat/:send?{V}"),
            &h,
            body,
        )
        .await;
        assert_eq!(res.status, 400, "{}", res.text());
        assert_eq!(res.json()["code"], "invalid_body");
    }
    let big = vec![b' '; 2 * 1024 * 1024];
    let res = http(
        server.addr,
        "POST",
        &format!("/api/hubs/chat/:send?{V}"),
        &h,
        &big,
    )
    .await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["code"], "body_too_large");
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/nohub/:send?{V}"),
        Some(json!({"target": "x"})),
    )
    .await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (404, json!("hub_not_found"))
    );
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/connections/AAAAAAAAAAAAAAAAAAAAAA/:send?{V}"),
        Some(json!({"target": "x"})),
    )
    .await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (404, json!("connection_not_found"))
    );
    let res = rest(
        &server,
        "PUT",
        &format!("/api/hubs/chat/groups/g/connections/garbage?{V}"),
        None,
    )
    .await;
    assert_eq!(res.status, 404);
    let long = "x".repeat(1025);
    let res = rest(
        &server,
        "POST",
        &format!("/api/hubs/chat/groups/{long}/:send?{V}"),
        Some(json!({"target": "x"})),
    )
    .await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (400, json!("invalid_parameter"))
    );
    let res = rest(&server, "GET", &format!("/api/hubs/chat/:send?{V}"), None).await;
    assert_eq!(res.status, 405);
    // Nothing of this disturbed the hub.
    assert_eq!(
        alice.invoke("Echo", json!(["fine"])).await["result"],
        "fine"
    );
    assert!(
        crate::support::metric(&server, "herald_http_errors_total{code=\"invalid_body\"}").await
            >= 4.0
    );
}
both_backends!(rest_bad_input);

/// Browsers: the preflight is answered, and allowed origins are echoed with credentials (the
/// SignalR browser client sends credentials), on negotiate and on the REST API alike.
async fn cors_for_browsers(io: &'static str) {
    let server = Server::start(io);
    let origin = "https://app.example.com";
    let res = http(
        server.addr,
        "OPTIONS",
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "x-requested-with, x-signalr-user-agent, authorization, x-custom",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some(origin));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    let allowed = res
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-requested-with",
        "x-signalr-user-agent",
        "authorization",
        "x-custom",
    ] {
        assert!(allowed.contains(h), "{allowed}");
    }
    let res = http(
        server.addr,
        "POST",
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[("Origin", origin)],
        b"",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some(origin));
    assert_eq!(res.header("vary"), Some("Origin"));

    let restricted = Server::builder(io)
        .env("HERALD_SERVER_CORS_ALLOWED_ORIGINS", "https://good.example")
        .start();
    let res = http(
        restricted.addr,
        "POST",
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(res.header("access-control-allow-origin"), None);
    let res = http(
        restricted.addr,
        "POST",
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[("Origin", "https://good.example")],
        b"",
    )
    .await;
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://good.example")
    );
}
both_backends!(cors_for_browsers);
