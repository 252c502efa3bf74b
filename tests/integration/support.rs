//! Test support: a running `herald` process, a raw HTTP client and a SignalR JSON client over
//! WebSockets, all speaking to the real binary over loopback sockets.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const RS: char = '\u{1e}';

/// Generates one test per I/O backend from `async fn name(io: &'static str)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn epoll() {
                super::$name("epoll").await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uring() {
                super::$name("uring").await
            }
        }
    };
}

pub fn herald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

/// A running Herald, killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// The line Herald printed once listening.
    pub banner: String,
    child: Option<Child>,
    _dir: Option<TempDir>,
    token: std::sync::OnceLock<String>,
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "herald-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    );
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

pub struct ServerBuilder {
    io: &'static str,
    config: Option<String>,
    env: Vec<(String, String)>,
    shards: usize,
}

impl Server {
    pub fn builder(io: &'static str) -> ServerBuilder {
        ServerBuilder {
            io,
            config: None,
            env: Vec::new(),
            shards: 2,
        }
    }

    /// The default configuration on `io`, two shards.
    pub fn start(io: &'static str) -> Server {
        Server::builder(io).start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc_kill(self.child.as_ref().unwrap().id() as i32, sig);
        }
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(15);
        self.wait_exit(within)
    }

    /// Waits (up to `within`) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().unwrap();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// A server token for the REST API, minted by `herald token --server`.
    pub fn server_token(&self) -> String {
        self.token.get_or_init(|| token(&["--server"])).clone()
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Runs `herald token ARGS` with the default configuration and returns the token.
pub fn token(args: &[&str]) -> String {
    let out = Command::new(herald_bin())
        .arg("token")
        .args(args)
        .output()
        .expect("herald token runs");
    assert!(out.status.success(), "herald token failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl ServerBuilder {
    /// A TOML configuration file for the server.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    pub fn start(self) -> Server {
        let dir = self.config.as_ref().map(|toml| {
            let dir = TempDir::new();
            std::fs::write(dir.0.join("herald.toml"), toml).unwrap();
            dir
        });
        let mut cmd = Command::new(herald_bin());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--io", self.io])
            .args(["--shards", &self.shards.to_string()])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(dir) = &dir {
            cmd.arg("--config").arg(dir.0.join("herald.toml"));
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("herald starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let prefix = if line.starts_with("herald listening on https://") {
            "herald listening on https://"
        } else {
            "herald listening on http://"
        };
        assert!(line.starts_with(prefix), "unexpected first line: {line:?}");
        let addr = line[prefix.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(line.contains(&format!("io={}", self.io)), "{line}");
        Server {
            addr,
            banner: line,
            child: Some(child),
            _dir: dir,
            token: std::sync::OnceLock::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request over a fresh connection (`Connection: close`) and reads the response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        write!(req, "{k}: {v}\r\n").unwrap();
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        write!(req, "Content-Length: {}\r\n", body.len()).unwrap();
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head: bool) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if head {
        body.clear();
    } else if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..pos]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http(addr, "POST", path, headers, b"").await
}

/// Negotiates an anonymous connection on hub `chat`; its connection token.
pub async fn connection_token(server: &Server) -> String {
    let res = post(server.addr, "/hubs/chat/negotiate?negotiateVersion=1", &[]).await;
    res.json()["connectionToken"].as_str().unwrap().to_string()
}

/// A REST call with a server token and a JSON body.
pub async fn rest(server: &Server, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    let token = server.server_token();
    let auth = format!("Bearer {token}");
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    http(
        server.addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;
type TlsWs = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A WebSocket over plain TCP or over TLS.
#[allow(clippy::large_enum_variant)]
pub enum AnyWs {
    Plain(Ws),
    Tls(TlsWs),
}

impl AnyWs {
    pub async fn send(&mut self, m: Message) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        match self {
            AnyWs::Plain(ws) => ws.send(m).await,
            AnyWs::Tls(ws) => ws.send(m).await,
        }
    }

    pub async fn next(&mut self) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        match self {
            AnyWs::Plain(ws) => ws.next().await,
            AnyWs::Tls(ws) => ws.next().await,
        }
    }
}

/// A SignalR client speaking JSON over a WebSocket.
pub struct Client {
    pub ws: AnyWs,
    pub connection_id: String,
    /// Messages received but not yet taken.
    pub inbox: VecDeque<Value>,
    next_id: u64,
}

pub struct Connect<'a> {
    pub hub: &'a str,
    pub token: Option<String>,
    pub skip_negotiate: bool,
}

impl Client {
    /// Negotiates, connects and completes the handshake on hub `chat`, anonymously.
    pub async fn connect(server: &Server) -> Client {
        Client::connect_with(
            server,
            Connect {
                hub: "chat",
                token: None,
                skip_negotiate: false,
            },
        )
        .await
    }

    /// Connects as a signed-in user (token from `herald token --user`).
    pub async fn connect_as(server: &Server, user: &str) -> Client {
        Client::connect_with(
            server,
            Connect {
                hub: "chat",
                token: Some(token(&["--user", user])),
                skip_negotiate: false,
            },
        )
        .await
    }

    pub async fn connect_with(server: &Server, opts: Connect<'_>) -> Client {
        let mut client = Client::open(server, &opts).await.expect("connect");
        client.handshake().await;
        client
    }

    /// Negotiates and opens the WebSocket, without the SignalR handshake.
    pub async fn open(server: &Server, opts: &Connect<'_>) -> Result<Client, u16> {
        let auth = opts.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (path, connection_id) = if opts.skip_negotiate {
            (format!("/hubs/{}", opts.hub), String::new())
        } else {
            let res = post(
                server.addr,
                &format!("/hubs/{}/negotiate?negotiateVersion=1", opts.hub),
                &headers,
            )
            .await;
            if res.status != 200 {
                return Err(res.status);
            }
            let body = res.json();
            let token = body["connectionToken"].as_str().unwrap().to_string();
            (
                format!("/hubs/{}?id={}", opts.hub, token),
                body["connectionId"].as_str().unwrap().to_string(),
            )
        };
        let mut request = server.ws_url(&path).into_client_request().unwrap();
        if let Some(a) = &auth {
            request
                .headers_mut()
                .insert("Authorization", a.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Client {
                ws: AnyWs::Plain(ws),
                connection_id,
                inbox: VecDeque::default(),
                next_id: 0,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    pub fn from_tls(ws: TlsWs) -> Client {
        Client {
            ws: AnyWs::Tls(ws),
            connection_id: String::new(),
            inbox: VecDeque::default(),
            next_id: 0,
        }
    }

    pub fn from_ws(ws: Ws, connection_id: String) -> Client {
        Client {
            ws: AnyWs::Plain(ws),
            connection_id,
            inbox: VecDeque::default(),
            next_id: 0,
        }
    }

    /// Sends the JSON handshake and expects `{}`; presence events may follow in the frame.
    pub async fn handshake(&mut self) {
        self.send_text(&format!("{{\"protocol\":\"json\",\"version\":1}}{RS}"))
            .await;
        let first = self.next_text().await.expect("handshake answer");
        let (answer, rest) = first.split_once(RS).expect("handshake answer ends with RS");
        assert_eq!(answer, "{}", "handshake refused: {answer}");
        self.buffer(rest);
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    fn buffer(&mut self, text: &str) {
        for record in text.split(RS).filter(|r| !r.is_empty()) {
            let value: Value =
                serde_json::from_str(record).unwrap_or_else(|e| panic!("bad JSON {record:?}: {e}"));
            if value["type"] != 6 {
                self.inbox.push_back(value);
            }
        }
    }

    /// The next text frame, or `None` if the connection closed.
    pub async fn next_text(&mut self) -> Option<String> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("nothing received within 10 s");
            match next {
                None | Some(Err(_) | Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next hub message other than a Ping.
    pub async fn recv(&mut self) -> Value {
        self.try_recv()
            .await
            .expect("connection closed while waiting for a message")
    }

    pub async fn try_recv(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = self.inbox.pop_front() {
                return Some(v);
            }
            let text = self.next_text().await?;
            self.buffer(&text);
        }
    }

    /// The next invocation of client method `target`, skipping other invocations.
    pub async fn expect_invocation(&mut self, target: &str) -> Vec<Value> {
        loop {
            let m = self.recv().await;
            if m["type"] == 1 && m["target"] == target {
                return m["arguments"].as_array().unwrap().clone();
            }
        }
    }

    /// Invokes `target` and waits for its completion (other messages stay queued).
    pub async fn invoke(&mut self, target: &str, args: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let msg = json!({"type": 1, "invocationId": id, "target": target, "arguments": args});
        self.send_text(&format!("{msg}{RS}")).await;
        let mut held = Vec::new();
        let completion = loop {
            let m = self.recv().await;
            if m["type"] == 3 && m["invocationId"] == id.as_str() {
                break m;
            }
            held.push(m);
        };
        for m in held.into_iter().rev() {
            self.inbox.push_front(m);
        }
        completion
    }

    /// A non-blocking invocation (no answer expected).
    pub async fn send(&mut self, target: &str, args: Value) {
        let msg = json!({"type": 1, "target": target, "arguments": args});
        self.send_text(&format!("{msg}{RS}")).await;
    }

    /// Reads until the server closes; returns the SignalR Close message if one came.
    pub async fn expect_close(&mut self) -> Option<Value> {
        let mut close = None;
        while let Some(m) = self.try_recv().await {
            if m["type"] == 7 {
                close = Some(m);
            }
        }
        close
    }
}

/// Fetches /metrics and returns the value of the first sample whose line starts with `prefix`.
pub async fn metric(server: &Server, prefix: &str) -> f64 {
    let res = http(server.addr, "GET", "/metrics", &[], b"").await;
    let text = res.text();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Polls `check` every 20 ms for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
