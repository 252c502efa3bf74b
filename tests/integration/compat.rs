//! Compatibility with the official clients: `@microsoft/signalr` (npm) and `signalrcore`
//! (PyPI) run the chat scenario against the real binary on both I/O backends.
//!
//! The clients are installed by `tests/run` (npm ci in tests/compat, a virtualenv at
//! tests/compat/.venv); without them these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::both_backends;
use crate::support::{Server, token};

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn server(io: &'static str) -> Server {
    // signalrcore's stop() waits for the next server ping: keep pings frequent.
    Server::builder(io)
        .env("HERALD_CONNECTIONS_KEEP_ALIVE_INTERVAL_MS", "500")
        .start()
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all steps passed"),
        "{what}:\n{stdout}\n{stderr}"
    );
}

/// Declares one compatibility test per backend for a client, protocol and transport.
macro_rules! compat {
    ($name:ident, $runner:ident, $protocol:literal, $transport:literal) => {
        async fn $name(io: &'static str) {
            $runner(io, $protocol, $transport).await
        }
        both_backends!($name);
    };
}

compat!(javascript_websockets_json, javascript, "json", "ws");
compat!(
    javascript_websockets_messagepack,
    javascript,
    "msgpack",
    "ws"
);
compat!(
    javascript_server_sent_events_json,
    javascript,
    "json",
    "sse"
);
compat!(javascript_long_polling_json, javascript, "json", "lp");
compat!(
    javascript_long_polling_messagepack,
    javascript,
    "msgpack",
    "lp"
);
compat!(python_websockets_json, python, "json", "ws");
compat!(python_websockets_messagepack, python, "msgpack", "ws");
compat!(python_long_polling_json, python, "json", "lp");

async fn javascript(io: &'static str, protocol: &'static str, transport: &'static str) {
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/@microsoft/signalr").exists(),
        "@microsoft/signalr is not installed: run tests/run, or `npm ci` in tests/compat"
    );
    let server = server(io);
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("chat.mjs"))
        .arg(server.url(""))
        .arg(token(&["--user", "alice"]))
        .arg(token(&["--user", "carol"]))
        .arg(protocol)
        .arg(transport);
    tokio::task::spawn_blocking(move || run(cmd, "@microsoft/signalr chat scenario"))
        .await
        .unwrap();
    drop(server);
}

async fn python(io: &'static str, protocol: &'static str, transport: &'static str) {
    let dir = compat_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "signalrcore is not installed: run tests/run, or create tests/compat/.venv with signalrcore==1.0.2"
    );
    let server = server(io);
    let mut cmd = Command::new(python);
    cmd.arg(dir.join("chat_signalrcore.py"))
        .arg(server.url(""))
        .arg(token(&["--user", "alice"]))
        .arg(transport)
        .arg(protocol);
    tokio::task::spawn_blocking(move || run(cmd, "signalrcore chat scenario"))
        .await
        .unwrap();
    drop(server);
}
