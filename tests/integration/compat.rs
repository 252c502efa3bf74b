//! Compatibility with the official clients: `@microsoft/signalr` (npm) and `signalrcore`
//! (PyPI) run the chat scenario against the real binary on both I/O backends.
//!
//! The clients are installed by `tests/run` (npm ci in tests/compat, a virtualenv at
//! tests/compat/.venv); without them these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::both_backends;
use crate::support::{Server, token};

pub fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn server(io: &'static str) -> Server {
    // signalrcore's stop() waits for the next server ping: keep pings frequent.
    Server::builder(io)
        .env("HERALD_CONNECTIONS_KEEP_ALIVE_INTERVAL_MS", "500")
        .start()
}

/// Runs a compatibility script; it must exit 0 and print `all steps passed`.
pub fn run(mut cmd: Command, what: &str) {
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

/// Declares one burst test per backend: the official JavaScript client's 400 sends of 20 KB,
/// which it packs into one transport message.
macro_rules! burst {
    ($name:ident, $protocol:literal, $transport:literal) => {
        async fn $name(io: &'static str) {
            javascript_burst(io, $protocol, $transport).await
        }
        both_backends!($name);
    };
}

burst!(javascript_burst_websockets_json, "json", "ws");
burst!(javascript_burst_websockets_messagepack, "msgpack", "ws");
burst!(javascript_burst_long_polling_json, "json", "lp");
burst!(javascript_burst_server_sent_events_json, "json", "sse");

async fn javascript_burst(io: &'static str, protocol: &'static str, transport: &'static str) {
    node_script(
        io,
        "burst.mjs",
        &[transport, protocol],
        "@microsoft/signalr burst",
    )
    .await;
}

async fn javascript(io: &'static str, protocol: &'static str, transport: &'static str) {
    let (alice, carol) = (token(&["--user", "alice"]), token(&["--user", "carol"]));
    let args = [alice.as_str(), carol.as_str(), protocol, transport];
    node_script(io, "chat.mjs", &args, "@microsoft/signalr chat scenario").await;
}

/// Runs `node tests/compat/SCRIPT BASE_URL ARGS…` against a fresh server on `io`.
async fn node_script(io: &'static str, script: &str, args: &[&str], what: &'static str) {
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/@microsoft/signalr").exists(),
        "@microsoft/signalr is not installed: run tests/run, or `npm ci` in tests/compat"
    );
    let server = server(io);
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).arg(server.url("")).args(args);
    tokio::task::spawn_blocking(move || run(cmd, what))
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

/// A TCP proxy the test can cut: every connection through it is dropped at once.
struct Proxy {
    addr: std::net::SocketAddr,
    pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            std::sync::Arc::default();
        let list = pipes.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, pipes }
    }

    /// Drops every connection through the proxy, as a network failure would.
    fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

/// Stateful reconnect with the official client: the TCP connection is cut under it (twice:
/// the client's first replay is off by one when a message shares a read with the handshake
/// answer, so the test lets one reconnect happen first), and every message sent meanwhile
/// arrives exactly once, in order.
async fn javascript_stateful_reconnect(io: &'static str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/@microsoft/signalr").exists(),
        "@microsoft/signalr is not installed: run tests/run, or `npm ci` in tests/compat"
    );
    let server = server(io);
    let proxy = Proxy::start(server.addr).await;
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("reconnect.mjs"))
        .arg(format!("http://{}", proxy.addr))
        .arg(server.url(""))
        .arg("200")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let result = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push(line.clone());
            match line.as_str() {
                "ready" | "mid" => {
                    proxy.cut();
                    tokio::time::sleep(std::time::Duration::from_millis(if line == "ready" {
                        500
                    } else {
                        0
                    }))
                    .await;
                    stdin.write_all(b"go\n").await.unwrap();
                }
                "all steps passed" => return true,
                l if l.starts_with("not ok") => return false,
                _ => {}
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    assert_eq!(result, Ok(true), "reconnect.mjs:\n{}", output.join("\n"));
    drop(server);
}
both_backends!(javascript_stateful_reconnect);
