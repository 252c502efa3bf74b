//! Authentication: client tokens at negotiate and connect, per-hub modes, and server tokens on
//! the REST API (Herald's own and Azure-style audience tokens).

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Client, Connect, Server, http, post, token};
use herald::config::DEVELOPMENT_ACCESS_KEY;
use herald::identity::jwt;

const CONFIG: &str = r#"
[hubs.chat]
[hubs.chat.methods]
Echo = { action = "echo" }
[hubs.secure]
auth = "token"
[hubs.secure.methods]
Echo = { action = "echo" }
"#;

fn sign(claims: Value, key: &str) -> String {
    let Value::Object(map) = claims else {
        panic!("claims are a JSON object")
    };
    jwt::sign(&map, key.as_bytes())
}

fn now() -> u64 {
    jwt::unix_now()
}

async fn client_tokens(io: &'static str) {
    let server = Server::builder(io).config(CONFIG).start();
    let bearer = |t: &str| format!("Bearer {t}");
    let alice = token(&["--user", "alice"]);
    let expired = sign(
        json!({"exp": now() - 3600, "nameid": "x"}),
        DEVELOPMENT_ACCESS_KEY,
    );
    let forged = sign(
        json!({"exp": now() + 3600, "nameid": "x"}),
        "some other key, long enough",
    );

    // A token hub: nothing without a valid token.
    let res = post(
        server.addr,
        "/hubs/secure/negotiate?negotiateVersion=1",
        &[],
    )
    .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    assert_eq!(res.json()["code"], "unauthorized");
    for bad in [&expired, &forged, &"garbage".to_string()] {
        let res = post(
            server.addr,
            "/hubs/secure/negotiate?negotiateVersion=1",
            &[("Authorization", &bearer(bad))],
        )
        .await;
        assert_eq!(res.status, 401, "{}", res.text());
    }
    let direct = Connect {
        hub: "secure",
        token: None,
        skip_negotiate: true,
    };
    assert_eq!(Client::open(&server, &direct).await.err(), Some(401));
    let res = post(
        server.addr,
        &format!("/hubs/secure/negotiate?negotiateVersion=1&access_token={alice}"),
        &[],
    )
    .await;
    assert_eq!(res.status, 200);

    // With a token the user id comes from it: nameid, asrs.s.uid or sub.
    for (claim, user) in [("nameid", "n1"), ("asrs.s.uid", "a1"), ("sub", "s1")] {
        let t = sign(
            json!({"exp": now() + 60, claim: user}),
            DEVELOPMENT_ACCESS_KEY,
        );
        let mut c = Client::connect_with(
            &server,
            Connect {
                hub: "secure",
                token: Some(t),
                skip_negotiate: false,
            },
        )
        .await;
        let joined = c.expect_invocation("joined").await;
        assert_eq!(joined[1], user);
    }

    // An anonymous hub still checks a token that is presented.
    let res = post(
        server.addr,
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[("Authorization", &bearer(&forged))],
    )
    .await;
    assert_eq!(res.status, 401);
    let direct = Connect {
        hub: "chat",
        token: Some(expired.clone()),
        skip_negotiate: true,
    };
    assert_eq!(Client::open(&server, &direct).await.err(), Some(401));

    // A connection token works only for the hub it was negotiated for.
    let res = post(server.addr, "/hubs/chat/negotiate?negotiateVersion=1", &[]).await;
    let ct = res.json()["connectionToken"].as_str().unwrap().to_string();
    let req = format!("/hubs/secure?id={ct}&access_token={alice}");
    let err = tokio_tungstenite::connect_async(server.ws_url(&req))
        .await
        .unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("{err}")
    };
    assert_eq!(response.status(), 404);

    // A token whose audience names another hub (or the REST API) does not open this one.
    for aud in ["http://h/client/?hub=chat", "http://h/api/v1/hubs/secure"] {
        let t = sign(
            json!({"exp": now() + 60, "nameid": "x", "aud": aud}),
            DEVELOPMENT_ACCESS_KEY,
        );
        let res = post(
            server.addr,
            "/hubs/secure/negotiate?negotiateVersion=1",
            &[("Authorization", &bearer(&t))],
        )
        .await;
        assert_eq!(res.status, 401, "{aud}: {}", res.text());
    }
    let t = sign(
        json!({"exp": now() + 60, "nameid": "x", "aud": "http://h/client/?hub=secure"}),
        DEVELOPMENT_ACCESS_KEY,
    );
    let res = post(
        server.addr,
        "/hubs/secure/negotiate?negotiateVersion=1",
        &[("Authorization", &bearer(&t))],
    )
    .await;
    assert_eq!(res.status, 200);

    // A server token is not a client token.
    let res = post(
        server.addr,
        "/hubs/chat/negotiate?negotiateVersion=1",
        &[("Authorization", &bearer(&token(&["--server"])))],
    )
    .await;
    assert_eq!(res.status, 401);
}
both_backends!(client_tokens);

async fn server_tokens(io: &'static str) {
    let server = Server::start(io);
    let path = "/api/hubs/chat/:send?api-version=2022-06-01";
    let body = br#"{"target":"t","arguments":[]}"#;
    let call = |t: Option<String>| {
        let addr = server.addr;
        async move {
            let auth = t.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            http(addr, "POST", path, &headers, body).await
        }
    };
    let res = call(None).await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (401, json!("unauthorized"))
    );
    // A client token: 403.
    let res = call(Some(token(&["--user", "alice"]))).await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (403, json!("forbidden"))
    );
    // Herald's server token.
    assert_eq!(call(Some(token(&["--server"]))).await.status, 202);
    // Azure-style: aud is the request URL, with or without the query; hub case-insensitive.
    let base = format!("http://{}/api/hubs/CHAT/:send", server.addr);
    for aud in [base.clone(), format!("{base}?api-version=2022-06-01")] {
        let t = sign(
            json!({"exp": now() + 60, "aud": aud}),
            DEVELOPMENT_ACCESS_KEY,
        );
        assert_eq!(call(Some(t)).await.status, 202);
    }
    let wrong = sign(
        json!({"exp": now() + 60, "aud": format!("http://{}/api/hubs/other/:send", server.addr)}),
        DEVELOPMENT_ACCESS_KEY,
    );
    assert_eq!(call(Some(wrong)).await.status, 403);
    let expired = sign(
        json!({"exp": now() - 3600, "aud": base}),
        DEVELOPMENT_ACCESS_KEY,
    );
    assert_eq!(call(Some(expired)).await.status, 401);
    let forged = sign(
        json!({"exp": now() + 60, "herald.role": "server"}),
        "some other key, long enough",
    );
    assert_eq!(call(Some(forged)).await.status, 401);
    // A server token restricted to an audience works only there.
    let scoped = token(&[
        "--server",
        "--audience",
        "http://elsewhere/api/hubs/chat/:send",
    ]);
    assert_eq!(call(Some(scoped)).await.status, 403);
    assert!(
        crate::support::metric(&server, "herald_http_errors_total{code=\"forbidden\"}").await
            >= 3.0
    );
}
both_backends!(server_tokens);
