//! Scale-out: several real Herald nodes on a Redis Streams backplane, with real `redis-server`
//! processes started here on free ports (never the machine's own Redis).
//!
//! The nodes alternate I/O backends (epoll, io_uring, epoll), so every cluster test runs both.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::polling::{read_until, send};
use crate::presence::{Heard, hear_until};
use crate::redis::{Forwarder, Redis, redis_args, redis_command, redis_info};
use crate::support::{Client, RS, Server, connection_token, http, metric, post, rest};

const V: &str = "api-version=2022-06-01";

/// Starts `n` nodes on the Redis servers given, with fast heartbeats.
fn cluster(redis: &[&Redis], n: usize) -> Vec<Server> {
    cluster_with(redis, n, 2000)
}

/// Starts `n` nodes that declare a silent node dead after `node_timeout_ms`.
fn cluster_with(redis: &[&Redis], n: usize, node_timeout_ms: u64) -> Vec<Server> {
    let urls: Vec<String> = redis.iter().map(|r| r.url()).collect();
    cluster_on(&urls, n, node_timeout_ms)
}

/// Starts `n` nodes on the Redis URLs given.
fn cluster_on(urls: &[String], n: usize, node_timeout_ms: u64) -> Vec<Server> {
    cluster_env(urls, n, node_timeout_ms, &[])
}

/// Starts `n` nodes on the Redis URLs given, with extra environment settings.
fn cluster_env(
    urls: &[String],
    n: usize,
    node_timeout_ms: u64,
    extra: &[(&str, &str)],
) -> Vec<Server> {
    (0..n)
        .map(|i| {
            extra
                .iter()
                .fold(
                    Server::builder(if i % 2 == 1 { "uring" } else { "epoll" }),
                    |b, (k, v)| b.env(k, v),
                )
                .env("HERALD_CLUSTER_BACKPLANE", "redis")
                .env("HERALD_CLUSTER_REDIS_URLS", &urls.join(","))
                .env("HERALD_CLUSTER_NODE_ID", &format!("node-{i}"))
                .env("HERALD_CLUSTER_PARTITIONS", "8")
                .env("HERALD_CLUSTER_HEARTBEAT_INTERVAL_MS", "200")
                .env(
                    "HERALD_CLUSTER_NODE_TIMEOUT_MS",
                    &node_timeout_ms.to_string(),
                )
                .env("HERALD_CLUSTER_RECONNECT_MAX_MS", "200")
                .start()
        })
        .collect()
}

/// Waits until every node counts `n` connections on hub `chat`.
async fn counts(nodes: &[Server], clients: &mut [&mut Client], n: i64) {
    for client in clients.iter_mut() {
        let mut last = Value::Null;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            last = client.invoke("GetCount", json!([])).await["result"].clone();
            if last == json!(n) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(last, json!(n), "cluster count on {} nodes", nodes.len());
    }
}

async fn deliveries_cross_nodes(redis: &[&Redis]) {
    let nodes = cluster(redis, 3);
    let mut alice = Client::connect_as(&nodes[0], "alice").await;
    let mut bob = Client::connect_as(&nodes[1], "bob").await;
    let mut carol = Client::connect(&nodes[2]).await;
    counts(&nodes, &mut [&mut alice, &mut bob, &mut carol], 3).await;

    // Presence from another node reaches everyone, with the cluster's count.
    let mut dave = Client::connect(&nodes[1]).await;
    let joined = json!([dave.connection_id, Value::Null, 4]);
    for c in [&mut alice, &mut carol] {
        loop {
            let args = Value::from(c.expect_invocation("joined").await);
            if args[0] == joined[0] {
                assert_eq!(args, joined);
                break;
            }
        }
    }

    // Broadcast from a hub method on C reaches A and B.
    carol.send("Send", json!(["carol", "hello"])).await;
    for c in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(
            Value::from(c.expect_invocation("broadcastMessage").await),
            json!(["carol", "hello"])
        );
    }

    // Groups: bob joins on B; REST on A adds carol's connection (held by C).
    bob.invoke("JoinGroup", json!(["room"])).await;
    let res = rest(
        &nodes[0],
        "PUT",
        &format!(
            "/api/hubs/chat/groups/room/connections/{}?{V}",
            carol.connection_id
        ),
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    // The join travels through Redis: probe until it has landed on node C.
    until_member(&nodes[0], "room", &mut carol).await;
    assert_eq!(
        rest(
            &nodes[0],
            "HEAD",
            &format!("/api/hubs/chat/groups/room?{V}"),
            None
        )
        .await
        .status,
        200
    );
    alice
        .invoke("SendToGroup", json!(["room", "alice", "to the room"]))
        .await;
    for c in [&mut bob, &mut carol] {
        assert_eq!(
            Value::from(c.expect_invocation("groupMessage").await),
            json!(["room", "alice", "to the room"])
        );
    }

    // User and connection sends through REST on a node that holds neither.
    let res = rest(
        &nodes[2],
        "POST",
        &format!("/api/hubs/chat/users/alice/:send?{V}"),
        Some(json!({"target": "notify", "arguments": ["for alice"]})),
    )
    .await;
    assert_eq!(res.status, 202);
    assert_eq!(
        Value::from(alice.expect_invocation("notify").await),
        json!(["for alice"])
    );
    let res = rest(
        &nodes[1],
        "POST",
        &format!(
            "/api/hubs/chat/connections/{}/:send?{V}",
            carol.connection_id
        ),
        Some(json!({"target": "notify", "arguments": ["for carol"]})),
    )
    .await;
    assert_eq!(res.status, 202, "{}", res.text());
    assert_eq!(
        Value::from(carol.expect_invocation("notify").await),
        json!(["for carol"])
    );

    // A broadcast with an excluded connection on another node.
    let res = rest(
        &nodes[0],
        "POST",
        &format!("/api/hubs/chat/:send?{V}&excluded={}", bob.connection_id),
        Some(json!({"target": "notify", "arguments": ["not bob"]})),
    )
    .await;
    assert_eq!(res.status, 202);
    for c in [&mut alice, &mut carol, &mut dave] {
        assert_eq!(
            Value::from(c.expect_invocation("notify").await),
            json!(["not bob"])
        );
    }

    // Existence checks see the whole cluster.
    for (node, path, status) in [
        (0, format!("/api/hubs/chat/users/carol?{V}"), 404),
        (0, format!("/api/hubs/chat/users/bob?{V}"), 200),
        (
            2,
            format!("/api/hubs/chat/connections/{}?{V}", alice.connection_id),
            200,
        ),
        (1, format!("/api/hubs/chat/groups/nobody?{V}"), 404),
    ] {
        assert_eq!(
            rest(&nodes[node], "HEAD", &path, None).await.status,
            status,
            "{path}"
        );
    }

    // A user's group membership follows the user to another node.
    let res = rest(
        &nodes[2],
        "PUT",
        &format!("/api/hubs/chat/users/erin/groups/vip?{V}"),
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    let mut erin = Client::connect_as(&nodes[0], "erin").await;
    until_member(&nodes[1], "vip", &mut erin).await;
    // ... and again when the user comes back on another node.
    drop(erin);
    let mut erin = Client::connect_as(&nodes[1], "erin").await;
    until_member(&nodes[2], "vip", &mut erin).await;

    // Negotiate on A, connect on B: no sticky sessions.
    let res = post(
        nodes[0].addr,
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[],
    )
    .await;
    let token = res.json()["connectionToken"].as_str().unwrap().to_string();
    let (ws, _) =
        tokio_tungstenite::connect_async(nodes[1].ws_url(&format!("/hubs/chat?id={token}")))
            .await
            .expect("node B accepts a connection negotiated on node A");
    let mut frank = Client::from_ws(ws, res.json()["connectionId"].as_str().unwrap().into());
    frank.handshake().await;
    counts(&nodes, &mut [&mut alice, &mut frank], 6).await;

    // Server-Sent Events without affinity: negotiate on A, the stream from B, the POSTs to
    // C and A (each forwarded to B).
    let token = connection_token(&nodes[0]).await;
    let mut stream = TcpStream::connect(nodes[1].addr).await.unwrap();
    let req = format!(
        "GET /hubs/chat?id={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, ":\r\n").await;
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(send(&nodes[2], &token, &handshake).await, 200);
    read_until(&mut stream, &mut seen, "data: {}").await;
    let echo = json!({"type": 1, "invocationId": "7", "target": "Echo", "arguments": ["far"]});
    assert_eq!(send(&nodes[0], &token, &format!("{echo}{RS}")).await, 200);
    read_until(&mut stream, &mut seen, r#""result":"far""#).await;
    counts(&nodes, &mut [&mut alice], 7).await;

    // Closing a connection held by node C from node A.
    let res = rest(
        &nodes[0],
        "DELETE",
        &format!(
            "/api/hubs/chat/connections/{}?{V}&reason=bye",
            carol.connection_id
        ),
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let close = carol.expect_close().await.expect("a Close message");
    assert_eq!(close["error"], "bye");
    loop {
        let args = Value::from(alice.expect_invocation("left").await);
        if args[0] == json!(carol.connection_id) {
            assert_eq!(args[2], json!(6));
            break;
        }
    }
    assert_eq!(metric(&nodes[0], "herald_backplane_redis_up ").await, 1.0);
    assert_eq!(
        metric(&nodes[0], "herald_backplane_redis_connected_servers").await,
        redis.len() as f64
    );
    let ready = http(nodes[0].addr, "GET", "/readyz", &[], b"").await.json();
    assert_eq!(ready["backplane"]["state"], "up");
    assert_eq!(ready["backplane"]["peers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_publishes_membership_presence_and_counts() {
    let redis = Redis::start();
    deliveries_cross_nodes(&[&redis]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_servers_as_partitions() {
    let (a, b) = (Redis::start(), Redis::start());
    deliveries_cross_nodes(&[&a, &b]).await;
}

/// Publishes probes to `group` through `node` until `client` receives one: the membership,
/// made on another node, has arrived where the client is.
async fn until_member(node: &Server, group: &str, client: &mut Client) {
    for _ in 0..50 {
        let res = rest(
            node,
            "POST",
            &format!("/api/hubs/chat/groups/{group}/:send?{V}"),
            Some(json!({"target": "probe", "arguments": []})),
        )
        .await;
        assert_eq!(res.status, 202);
        if tokio::time::timeout(
            Duration::from_millis(200),
            client.expect_invocation("probe"),
        )
        .await
        .is_ok()
        {
            return;
        }
    }
    panic!("the client never joined {group}");
}

/// Publishes `notify(0, i)` for i in 0..n through `node`'s REST API, and checks that `local`,
/// a client of that node, gets them at once and in order.
async fn publish_numbered(node: &Server, local: &mut Client, n: i64) {
    for i in 0..n {
        let res = rest(
            node,
            "POST",
            &format!("/api/hubs/chat/:send?{V}"),
            Some(json!({"target": "notify", "arguments": [0, i]})),
        )
        .await;
        assert_eq!(res.status, 202);
    }
    for i in 0..n {
        assert_eq!(
            Value::from(local.expect_invocation("notify").await),
            json!([0, i])
        );
    }
}

/// Collects `notify(node, i)` messages until `total` arrived, then a little longer to catch
/// duplicates.
async fn collect(client: &mut Client, total: usize) -> Vec<(i64, i64)> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < total && std::time::Instant::now() < deadline {
        if let Ok(args) = tokio::time::timeout(
            Duration::from_millis(500),
            client.expect_invocation("notify"),
        )
        .await
        {
            got.push((args[0].as_i64().unwrap(), args[1].as_i64().unwrap()));
        }
    }
    while let Ok(args) = tokio::time::timeout(
        Duration::from_millis(700),
        client.expect_invocation("notify"),
    )
    .await
    {
        got.push((args[0].as_i64().unwrap(), args[1].as_i64().unwrap()));
    }
    got
}

/// Every node publishes `notify(k, i)` (k its index) for i in 0..n through its REST API, a
/// round every 30 ms, with `fault(i)` called before each round; then checks that a client on
/// every node received every message exactly once, in order per publisher.
async fn numbered_rounds(nodes: &[Server], n: i64, mut fault: impl FnMut(i64)) {
    let mut clients = Vec::new();
    for node in nodes {
        clients.push(Client::connect(node).await);
    }
    {
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        counts(nodes, &mut refs, nodes.len() as i64).await;
    }
    let publishers = nodes
        .iter()
        .enumerate()
        .map(|(k, node)| (k as i64, node.addr))
        .collect::<Vec<_>>();
    let token = nodes[0].server_token();
    let send = |addr, k: i64, i: i64| {
        let token = token.clone();
        async move {
            let body =
                serde_json::to_vec(&json!({"target": "notify", "arguments": [k, i]})).unwrap();
            let auth = format!("Bearer {token}");
            let res = http(
                addr,
                "POST",
                &format!("/api/hubs/chat/:send?{V}"),
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                &body,
            )
            .await;
            assert_eq!(res.status, 202);
        }
    };
    let total = nodes.len() * n as usize;
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { collect(&mut c, total).await }))
        .collect();
    for i in 0..n {
        fault(i);
        for (k, addr) in &publishers {
            send(*addr, *k, i).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for (r, reader) in readers.into_iter().enumerate() {
        let got = reader.await.unwrap();
        let mut per: HashMap<i64, Vec<i64>> = HashMap::new();
        for (k, i) in &got {
            per.entry(*k).or_default().push(*i);
        }
        for k in 0..nodes.len() as i64 {
            assert_eq!(
                per.get(&k).cloned().unwrap_or_default(),
                (0..n).collect::<Vec<_>>(),
                "client on node {r}: messages from node {k} (every one, once, in order)"
            );
        }
        assert_eq!(got.len(), total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_and_duplicates_nothing() {
    let mut redis = Redis::start();
    let nodes = cluster(&[&redis], 3);
    numbered_rounds(&nodes, 60, |i| {
        if i == 20 {
            redis.kill();
        }
        if i == 40 {
            // Back on the same port, empty: the streams and everything unread are gone.
            redis.spawn();
        }
    })
    .await;
    assert!(metric(&nodes[0], "herald_backplane_epoch_changes_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_loses_and_duplicates_nothing() {
    let mut primary = Redis::start();
    let replica = Redis::start();
    assert_eq!(
        redis_command(
            replica.port,
            &format!("REPLICAOF 127.0.0.1 {}", primary.port)
        ),
        "+OK"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !redis_info(replica.port, "replication").contains("master_link_status:up") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let address = Forwarder::start(primary.port).await;
    let nodes = cluster_on(&[address.url()], 2, 10_000);
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    // The replica stops following (a broken link, a lagging replica) and node B stops
    // reading (SIGSTOP): what A publishes now reaches only the primary, unread by B ...
    assert_eq!(redis_command(replica.port, "REPLICAOF NO ONE"), "+OK");
    nodes[1].signal(19);
    publish_numbered(&nodes[0], &mut alice, 20).await;
    // ... and the primary dies with it; the address moves to the replica.
    primary.kill();
    address.switch(replica.port);
    // A finds the stream went back and writes those messages again; then B reads on.
    crate::support::eventually("node 0 to write its lost messages again", || async {
        metric(&nodes[0], "herald_backplane_replayed_total").await >= 1.0
    })
    .await;
    nodes[1].signal(18);
    let got = collect(&mut bob, 20).await;
    assert_eq!(got, (0..20).map(|i| (0, i)).collect::<Vec<_>>());
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_unread_when_redis_comes_back_empty_are_written_again() {
    let mut redis = Redis::start();
    let nodes = cluster_with(&[&redis], 2, 10_000);
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    // Node B stops reading (SIGSTOP): what A publishes now sits in Redis, unread by B ...
    nodes[1].signal(19);
    publish_numbered(&nodes[0], &mut alice, 20).await;
    // ... until Redis restarts without it.
    let written = metric(&nodes[0], "herald_backplane_written_total").await;
    assert!(written >= 20.0, "{written}");
    redis.kill();
    redis.spawn();
    // A finds Redis came back empty and writes those messages again; then B reads on.
    crate::support::eventually("node 0 to write its lost messages again", || async {
        metric(&nodes[0], "herald_backplane_replayed_total").await >= 20.0
    })
    .await;
    nodes[1].signal(18);
    let got = collect(&mut bob, 20).await;
    assert_eq!(got, (0..20).map(|i| (0, i)).collect::<Vec<_>>());
    assert!(metric(&nodes[1], "herald_backplane_epoch_changes_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_mourned() {
    let redis = Redis::start();
    let mut nodes = cluster(&[&redis], 3);
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    let mut carol = Client::connect_as(&nodes[2], "carol").await;
    let mut carol2 = Client::connect(&nodes[2]).await;
    counts(
        &nodes,
        &mut [&mut alice, &mut bob, &mut carol, &mut carol2],
        4,
    )
    .await;
    let victim = nodes.pop().unwrap();
    victim.signal(9);
    let mut gone = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while gone.len() < 2 {
        let args = tokio::time::timeout_at(deadline, alice.expect_invocation("left"))
            .await
            .expect("left events for the killed node's connections");
        gone.push(args);
    }
    let mut ids: Vec<&str> = gone.iter().map(|a| a[0].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![carol.connection_id.as_str(), carol2.connection_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let mut counts_seen: Vec<i64> = gone.iter().map(|a| a[2].as_i64().unwrap()).collect();
    counts_seen.sort_unstable();
    assert_eq!(counts_seen, vec![2, 3]);
    let user = gone
        .iter()
        .find(|a| a[0] == json!(carol.connection_id))
        .unwrap();
    assert_eq!(user[1], "carol");
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    assert_eq!(
        metric(&nodes[0], "herald_backplane_nodes_expired_total").await,
        1.0
    );
    drop(victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_says_goodbye() {
    let redis = Redis::start();
    // Heartbeats could not explain what follows: a silent node would be dead only after 30 s.
    let mut nodes = cluster_with(&[&redis], 2, 30_000);
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect_as(&nodes[1], "bob").await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    let started = std::time::Instant::now();
    let status = nodes[1].terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let args = tokio::time::timeout(Duration::from_secs(10), alice.expect_invocation("left"))
        .await
        .expect("a left event well before the node timeout");
    assert_eq!(Value::from(args), json!([bob.connection_id, "bob", 1]));
    assert!(started.elapsed() < Duration::from_secs(20));
    counts(&nodes[..1], &mut [&mut alice], 1).await;
}

/// `batched` presence over two nodes: each node tells its own members of joins and leaves
/// anywhere in the cluster, with the cluster's count, and nothing but the directory crosses
/// Redis for it; a node that stops takes its members with it in the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_presence_is_cluster_wide() {
    let redis = Redis::start();
    let mut nodes = cluster_env(
        &[redis.url()],
        2,
        30_000,
        &[
            ("HERALD_HUBS_CHAT_PRESENCE", "batched"),
            ("HERALD_HUBS_CHAT_PRESENCE_INTERVAL_MS", "200"),
        ],
    );
    let mut a = Client::connect(&nodes[0]).await;
    let mut heard_a = Heard::default();
    hear_until(&mut a, &mut heard_a, |h| h.count == 1).await;
    let mut b1 = Client::connect(&nodes[1]).await;
    let b2 = Client::connect(&nodes[1]).await;
    let ids = HashSet::from([b1.connection_id.clone(), b2.connection_id.clone()]);
    hear_until(&mut a, &mut heard_a, |h| {
        h.count == 3 && ids.is_subset(&h.joined)
    })
    .await;
    let mut heard_b = Heard::default();
    hear_until(&mut b1, &mut heard_b, |h| h.count == 3).await;
    // A leave on node 1 reaches node 0's member.
    let gone = b2.connection_id.clone();
    drop(b2);
    hear_until(&mut a, &mut heard_a, |h| h.count == 2).await;
    assert!(heard_a.left.contains(&gone));
    // Node 1 stops: its remaining member leaves in a's next batch.
    let status = nodes[1].terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    hear_until(&mut a, &mut heard_a, |h| h.count == 1).await;
    assert!(heard_a.left.contains(&b1.connection_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_client_certificates() {
    let redis = Redis::start_tls();
    let node = |i: usize, io: &'static str, client_cert: bool| {
        let mut builder = Server::builder(io)
            .env("HERALD_CLUSTER_BACKPLANE", "redis")
            .env("HERALD_CLUSTER_REDIS_URLS", &redis.url())
            .env("HERALD_CLUSTER_REDIS_CA_FILE", &redis.file("ca.pem"))
            .env("HERALD_CLUSTER_NODE_ID", &format!("node-{i}"))
            .env("HERALD_CLUSTER_HEARTBEAT_INTERVAL_MS", "200")
            .env("HERALD_CLUSTER_RECONNECT_MAX_MS", "200");
        if client_cert {
            builder = builder
                .env("HERALD_CLUSTER_REDIS_CERT_FILE", &redis.file("client.pem"))
                .env("HERALD_CLUSTER_REDIS_KEY_FILE", &redis.file("client.key"));
        }
        builder.start()
    };
    let nodes = [node(0, "epoll", true), node(1, "uring", true)];
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    alice.send("Send", json!(["alice", "over TLS"])).await;
    assert_eq!(
        Value::from(bob.expect_invocation("broadcastMessage").await),
        json!(["alice", "over TLS"])
    );
    let ready = http(nodes[1].addr, "GET", "/readyz", &[], b"").await.json();
    assert_eq!(ready["backplane"]["state"], "up", "{ready}");

    // A node without a client certificate is refused by this Redis: it serves its own clients,
    // stays ready, and reports the backplane down.
    let lone = node(2, "epoll", false);
    let mut carol = Client::connect(&lone).await;
    carol.send("Send", json!(["carol", "local"])).await;
    assert_eq!(
        Value::from(carol.expect_invocation("broadcastMessage").await),
        json!(["carol", "local"])
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&lone, "herald_backplane_link_failures_total ").await < 2.0 {
        assert!(std::time::Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = http(lone.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(res.status, 200);
    let backplane = &res.json()["backplane"];
    assert_eq!(backplane["state"], "down", "{}", res.text());
    assert!(
        backplane["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&redis.url())),
        "{}",
        res.text()
    );
    assert_eq!(metric(&lone, "herald_backplane_redis_up ").await, 0.0);
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_token_starts_one_connection_in_the_cluster() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::{connect_async, tungstenite::Error};
    let redis = Redis::start();
    let nodes = cluster(&[&redis], 2);
    let token = connection_token(&nodes[0]).await;
    let path = format!("/hubs/chat?id={token}");
    let (mut first, _) = connect_async(nodes[0].ws_url(&path)).await.unwrap();
    // Connections are announced to the cluster once their handshake is done.
    first
        .send(tokio_tungstenite::tungstenite::Message::text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}",
        ))
        .await
        .unwrap();
    assert!(
        first
            .next()
            .await
            .unwrap()
            .unwrap()
            .to_text()
            .unwrap()
            .starts_with("{}")
    );
    crate::support::eventually("node 1 to learn of the connection", || async {
        metric(&nodes[1], "herald_backplane_remote_connections ").await >= 1.0
    })
    .await;
    // The same token on the other node: the connection is active there.
    let err = connect_async(nodes[1].ws_url(&path)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http(r) if r.status() == 409),
        "{err:?}"
    );
    // Once it has ended, the token is spent everywhere, while it would still be valid.
    drop(first);
    crate::support::eventually("the connection to end on node 1's books", || async {
        match connect_async(nodes[1].ws_url(&path)).await {
            Err(Error::Http(r)) => {
                assert!([404, 409].contains(&r.status().as_u16()), "{r:?}");
                r.status() == 404
            }
            other => panic!("a spent token started a connection: {other:?}"),
        }
    })
    .await;
    let err = connect_async(nodes[0].ws_url(&path)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http(r) if r.status() == 404),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_holds_cluster_messages_back_and_loses_none() {
    let redis = Redis::start();
    let nodes = cluster(&[&redis], 2);
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    // Redis at its memory limit with no eviction: every write is refused with an OOM error,
    // reads still work.
    assert_eq!(
        redis_command(redis.port, "CONFIG SET maxmemory-policy noeviction"),
        "+OK"
    );
    assert_eq!(redis_command(redis.port, "CONFIG SET maxmemory 1"), "+OK");
    // Local delivery does not wait for Redis.
    publish_numbered(&nodes[0], &mut alice, 20).await;
    crate::support::eventually("node 0 to report Redis refusing writes", || async {
        let ready = http(nodes[0].addr, "GET", "/readyz", &[], b"").await.json();
        ready["backplane"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("OOM"))
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bob.expect_invocation("notify"))
            .await
            .is_err(),
        "nothing can cross while Redis refuses writes"
    );
    assert_eq!(redis_command(redis.port, "CONFIG SET maxmemory 0"), "+OK");
    let got = collect(&mut bob, 20).await;
    assert_eq!(got, (0..20).map(|i| (0, i)).collect::<Vec<_>>());
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    assert_eq!(
        metric(&nodes[0], "herald_backplane_dropped_total").await,
        0.0
    );
    // The connection stayed up all along (a refusal is not a broken link): no reconnects.
    assert_eq!(
        metric(&nodes[0], "herald_backplane_reconnects_total").await,
        0.0
    );
    let ready = http(nodes[0].addr, "GET", "/readyz", &[], b"").await.json();
    assert_eq!(ready["backplane"]["state"], "up", "{ready}");
    assert_eq!(ready["backplane"]["error"], Value::Null, "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_only_the_backplane_commands_suffices() {
    let redis = Redis::start();
    // The commands and keys README documents for a dedicated Redis user.
    assert_eq!(
        redis_command(
            redis.port,
            "ACL SETUSER herald on >s3cret resetkeys ~herald:* resetchannels -@all \
             +xadd +xread +xrevrange +xtrim +get +set"
        ),
        "+OK"
    );
    let url = format!("redis://herald:s3cret@127.0.0.1:{}", redis.port);
    let nodes: Vec<Server> = ["epoll", "uring"]
        .into_iter()
        .enumerate()
        .map(|(i, io)| {
            Server::builder(io)
                .env("HERALD_CLUSTER_BACKPLANE", "redis")
                .env("HERALD_CLUSTER_REDIS_URLS", &url)
                .env("HERALD_CLUSTER_NODE_ID", &format!("node-{i}"))
                .env("HERALD_CLUSTER_HEARTBEAT_INTERVAL_MS", "200")
                // Age trimming every second, so XTRIM runs within the test.
                .env("HERALD_CLUSTER_STREAM_MAX_AGE_MS", "10000")
                .start()
        })
        .collect();
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    // Every node has trimmed its streams at least once; Redis refused none of it.
    for node in &nodes {
        crate::support::eventually("an age-trimming pass", || async {
            metric(node, "herald_backplane_trims_total").await >= 1.0
                || metric(node, "herald_backplane_trim_refused_total").await >= 1.0
        })
        .await;
        assert_eq!(
            metric(node, "herald_backplane_trim_refused_total").await,
            0.0,
            "Redis refused XTRIM"
        );
    }
    bob.send("Send", json!(["bob", "least privilege"])).await;
    assert_eq!(
        Value::from(alice.expect_invocation("broadcastMessage").await),
        json!(["bob", "least privilege"])
    );
    for node in &nodes {
        let ready = http(node.addr, "GET", "/readyz", &[], b"").await.json();
        assert_eq!(ready["backplane"]["state"], "up", "{ready}");
        assert_eq!(
            metric(node, "herald_backplane_link_failures_total").await,
            0.0
        );
    }
}

/// A Redis-backed node's exposition, backplane metrics included, passes `promtool check
/// metrics`, and `herald_backplane_redis_up` is 1 while Redis is there and 0 once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_exposition_passes_promtool() {
    let mut redis = Redis::start();
    let nodes = cluster(&[&redis], 1);
    let _client = Client::connect(&nodes[0]).await;
    crate::support::eventually("the node connected to Redis", || async {
        metric(&nodes[0], "herald_backplane_redis_up ").await == 1.0
    })
    .await;
    let text = crate::metrics::checked_exposition(&nodes[0]).await;
    assert!(
        text.contains("# TYPE herald_backplane_redis_up gauge\n"),
        "{text}"
    );
    redis.kill();
    crate::support::eventually("the node noticed Redis went away", || async {
        metric(&nodes[0], "herald_backplane_redis_up ").await == 0.0
    })
    .await;
    crate::metrics::checked_exposition(&nodes[0]).await;
}

/// A node of a later release, out of step, writes an envelope version this node does not
/// read: every node skips it, counts it, and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_newer_envelope_version_are_counted_and_skipped() {
    let redis = Redis::start();
    let nodes = cluster(&[&redis], 2);
    let mut alice = Client::connect(&nodes[0]).await;
    let mut bob = Client::connect(&nodes[1]).await;
    counts(&nodes, &mut [&mut alice, &mut bob], 2).await;
    for partition in 0..8 {
        let key = format!("herald:{partition}");
        let reply = redis_args(
            redis.port,
            &[
                b"XADD",
                key.as_bytes(),
                b"*",
                b"e",
                b"\xffnot for this release",
            ],
        );
        assert!(reply.starts_with('$'), "{reply}");
    }
    for node in &nodes {
        crate::support::eventually("the newer entries to be counted", || async {
            metric(node, "herald_backplane_newer_version_total").await >= 8.0
        })
        .await;
        assert_eq!(
            metric(node, "herald_backplane_undecodable_total").await,
            0.0
        );
    }
    bob.send("Send", json!(["bob", "still here"])).await;
    assert_eq!(
        Value::from(alice.expect_invocation("broadcastMessage").await),
        json!(["bob", "still here"])
    );
}
