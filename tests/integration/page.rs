//! The chat page at `GET /`: its files and headers over raw HTTP, and the page itself in
//! headless Chromium (driven by puppeteer-core from tests/compat): two tabs see each other and
//! talk on every transport.
//!
//! Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and puppeteer-core are installed by
//! `tests/run`; without them the browser tests fail and say so.

use crate::both_backends;
use crate::compat::{compat_dir, run};
use crate::support::{Server, http};

const CLIENT: &str = "/page/signalr-10.0.11.min.js";

async fn files_and_headers(io: &'static str) {
    let server = Server::start(io);
    let page = http(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = page.text();
    assert!(html.contains(&format!("\"{}\"", &CLIENT[1..])), "{html}");
    // The vendored client: named with its version, cached for a year, its license beside it.
    let client = http(server.addr, "GET", CLIENT, &[], b"").await;
    assert_eq!(client.status, 200);
    assert_eq!(
        client.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        client.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(client.text().contains("HubConnectionBuilder"));
    let license = http(
        server.addr,
        "GET",
        "/page/signalr-10.0.11.LICENSE.txt",
        &[],
        b"",
    )
    .await;
    assert!(license.text().contains("MIT"), "{}", license.text());
    // The page's own files are revalidated: the same ETag gets 304, without a body.
    let script = http(server.addr, "GET", "/page/chat.js", &[], b"").await;
    let etag = script.header("etag").unwrap().to_string();
    let again = http(
        server.addr,
        "GET",
        "/page/chat.js",
        &[("If-None-Match", &etag)],
        b"",
    )
    .await;
    assert_eq!((again.status, again.body.len()), (304, 0));
    let head = http(server.addr, "HEAD", "/", &[], b"").await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    // Only read: a POST gets 405 with Allow; no other file is there.
    let post = http(server.addr, "POST", "/", &[], b"").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(post.json()["code"], "method_not_allowed");
    for missing in [
        "/page/nothing.js",
        "/page/index.html",
        "/page/../Cargo.toml",
    ] {
        let res = http(server.addr, "GET", missing, &[], b"").await;
        assert_eq!(res.status, 404, "{missing}");
        assert_eq!(res.json()["code"], "not_found");
    }
}
both_backends!(files_and_headers);

/// `server.page = false`: no page, no files.
async fn switched_off(io: &'static str) {
    let server = Server::builder(io)
        .env("HERALD_SERVER_PAGE", "false")
        .start();
    for path in ["/", CLIENT, "/page/chat.js"] {
        let res = http(server.addr, "GET", path, &[], b"").await;
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.json()["code"], "not_found");
    }
    let health = http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);
}
both_backends!(switched_off);

/// Runs tests/compat/page.mjs: two tabs of the page on `transport`.
async fn browser(io: &'static str, transport: &'static str) {
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/puppeteer-core").exists(),
        "puppeteer-core is not installed: run tests/run, or `npm ci` in tests/compat"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run tests/run, or install Debian's chromium"
    );
    // A closed long-polling tab is gone once it has not polled for the disconnect timeout.
    let server = Server::builder(io)
        .env("HERALD_CONNECTIONS_DISCONNECT_TIMEOUT_MS", "3000")
        .start();
    let mut cmd = std::process::Command::new("node");
    cmd.arg(dir.join("page.mjs"))
        .arg(server.url(""))
        .arg(transport)
        .env("CHROMIUM", chromium);
    tokio::task::spawn_blocking(move || run(cmd, "the chat page in Chromium"))
        .await
        .unwrap();
    drop(server);
}

macro_rules! browser {
    ($name:ident, $transport:literal) => {
        async fn $name(io: &'static str) {
            browser(io, $transport).await
        }
        both_backends!($name);
    };
}

browser!(two_tabs_websockets, "WebSockets");
browser!(two_tabs_server_sent_events, "ServerSentEvents");
browser!(two_tabs_long_polling, "LongPolling");
