//! The chat scenario over WebSockets + JSON: presence, broadcast, groups, users, Echo, counts.

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Client, Connect, Server};

/// Asserts the next message `client` receives (presence aside) is the marker broadcast, i.e.
/// no group or user message came before it.
async fn nothing_before_marker(client: &mut Client, marker: &str) {
    let next = loop {
        let m = client.recv().await;
        if m["target"] != "joined" && m["target"] != "left" {
            break m;
        }
    };
    assert_eq!(
        next["target"], "broadcastMessage",
        "unexpected message: {next}"
    );
    assert_eq!(next["arguments"][1], marker);
}

async fn chat_scenario(io: &'static str) {
    let server = Server::start(io);
    let mut alice = Client::connect_as(&server, "alice").await;
    assert_eq!(
        alice.expect_invocation("joined").await,
        json!([alice.connection_id, "alice", 1])
            .as_array()
            .unwrap()
            .clone()
    );

    let mut bob = Client::connect(&server).await;
    let joined_bob = json!([bob.connection_id, Value::Null, 2]);
    assert_eq!(
        Value::from(bob.expect_invocation("joined").await),
        joined_bob
    );
    assert_eq!(
        Value::from(alice.expect_invocation("joined").await),
        joined_bob
    );

    let mut carol = Client::connect_as(&server, "carol").await;
    let joined_carol = json!([carol.connection_id, "carol", 3]);
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(
            Value::from(c.expect_invocation("joined").await),
            joined_carol
        );
    }

    // Broadcast reaches everyone, the caller included; a blocking call completes void.
    let done = bob.invoke("Send", json!(["bob", "hello"])).await;
    assert_eq!(done, json!({"type": 3, "invocationId": "1"}));
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(
            Value::from(c.expect_invocation("broadcastMessage").await),
            json!(["bob", "hello"])
        );
    }
    // Method names are case-insensitive; a non-blocking send gets no answer.
    bob.send("send", json!(["bob", "again"])).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(
            Value::from(c.expect_invocation("broadcastMessage").await),
            json!(["bob", "again"])
        );
    }

    // Groups.
    assert_eq!(
        alice.invoke("JoinGroup", json!(["room"])).await["error"],
        Value::Null
    );
    assert_eq!(
        carol.invoke("JoinGroup", json!(["room"])).await["error"],
        Value::Null
    );
    bob.invoke("SendToGroup", json!(["room", "bob", "to the room"]))
        .await;
    for c in [&mut alice, &mut carol] {
        assert_eq!(
            Value::from(c.expect_invocation("groupMessage").await),
            json!(["room", "bob", "to the room"])
        );
    }
    bob.invoke("Send", json!(["marker", "m1"])).await;
    nothing_before_marker(&mut bob, "m1").await;
    for c in [&mut alice, &mut carol] {
        nothing_before_marker(c, "m1").await;
    }
    carol.invoke("LeaveGroup", json!(["room"])).await;
    alice
        .invoke("SendToGroup", json!(["room", "alice", "again"]))
        .await;
    assert_eq!(
        Value::from(alice.expect_invocation("groupMessage").await),
        json!(["room", "alice", "again"])
    );
    bob.invoke("Send", json!(["marker", "m2"])).await;
    nothing_before_marker(&mut carol, "m2").await;

    // Users: every connection of the user, with the sender's user id (null when anonymous).
    let mut alice2 = Client::connect_as(&server, "alice").await;
    bob.invoke("SendToUser", json!(["alice", "psst"])).await;
    for c in [&mut alice, &mut alice2] {
        assert_eq!(
            Value::from(c.expect_invocation("userMessage").await),
            json!([Value::Null, "psst"])
        );
    }
    carol.invoke("SendToUser", json!(["alice", "hi"])).await;
    assert_eq!(
        Value::from(alice.expect_invocation("userMessage").await),
        json!(["carol", "hi"])
    );
    bob.invoke("Send", json!(["marker", "m3"])).await;
    nothing_before_marker(&mut carol, "m3").await;

    // Echo and GetCount.
    let echo = alice
        .invoke("Echo", json!([{"nested": [1, 2.5, true, null, "é"]}]))
        .await;
    assert_eq!(echo["result"], json!({"nested": [1, 2.5, true, null, "é"]}));
    assert_eq!(alice.invoke("GetCount", json!([])).await["result"], 4);

    // An undeclared method.
    let err = bob.invoke("Nope", json!([1])).await;
    assert_eq!(err["error"], "Method 'Nope' does not exist.");

    // Leaving: the others hear it, with the new count.
    let carol_id = carol.connection_id.clone();
    drop(carol);
    for c in [&mut alice, &mut bob] {
        assert_eq!(
            Value::from(c.expect_invocation("left").await),
            json!([carol_id, "carol", 3])
        );
    }
    assert_eq!(bob.invoke("GetCount", json!([])).await["result"], 3);
}
both_backends!(chat_scenario);

/// Many clients over both shards: every broadcast reaches every client once, in order.
async fn fan_out_in_order(io: &'static str) {
    let server = Server::start(io);
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(Client::connect(&server).await);
    }
    let mut publisher = Client::connect(&server).await;
    for i in 0..50 {
        publisher.send("Send", json!(["p", i])).await;
    }
    for c in clients.iter_mut().chain(std::iter::once(&mut publisher)) {
        for i in 0..50 {
            assert_eq!(
                Value::from(c.expect_invocation("broadcastMessage").await),
                json!(["p", i])
            );
        }
    }
}
both_backends!(fan_out_in_order);

/// skipNegotiation: a WebSocket without `id` creates its connection directly; the Azure-style
/// `/client/?hub=` endpoint works the same; several hub messages in one frame are all handled.
async fn skip_negotiation_and_client_endpoint(io: &'static str) {
    let server = Server::start(io);
    let mut direct = Client::connect_with(
        &server,
        Connect {
            hub: "chat",
            token: None,
            skip_negotiate: true,
        },
    )
    .await;
    let joined = direct.expect_invocation("joined").await;
    assert_eq!(joined[0].as_str().unwrap().len(), 22);

    let res = crate::support::post(
        server.addr,
        "/client/negotiate?hub=chat&negotiateVersion=1",
        &[],
    )
    .await;
    assert_eq!(res.status, 200);
    let token = res.json()["connectionToken"].as_str().unwrap().to_string();
    let (ws, _) =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/client/?hub=chat&id={token}")))
            .await
            .unwrap();
    let mut client = Client::from_ws(ws, String::new());
    client.handshake().await;
    client
        .send_text(&format!(
            "{}\u{1e}{}\u{1e}",
            json!({"type": 1, "invocationId": "a", "target": "Echo", "arguments": [1]}),
            json!({"type": 1, "invocationId": "b", "target": "Echo", "arguments": [2], "headers": {"k": "v"}})
        ))
        .await;
    let mut results = Vec::new();
    while results.len() < 2 {
        let m = client.recv().await;
        if m["type"] == 3 {
            results.push(m["result"].clone());
        }
    }
    assert_eq!(results, vec![json!(1), json!(2)]);
}
both_backends!(skip_negotiation_and_client_endpoint);
