//! Redis for the tests: real `redis-server` processes on free ports (never the machine's own
//! Redis; `tests/run` installs the server), plain or TLS-only, started, killed and restarted
//! at will; one-line commands to them; and a TCP forwarder that stands for a managed Redis's
//! address across a failover.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::TempDir;

/// A `redis-server` without persistence, on its own port, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    pub dir: TempDir,
    /// TLS only (no plain port), requiring client certificates, with files in `dir`.
    pub tls: bool,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            port,
            child: None,
            dir: TempDir::new(),
            tls: false,
        };
        redis.spawn();
        redis
    }

    /// A server that speaks only TLS, with a certificate from a private CA, and requires
    /// clients to present a certificate from that CA. The CA and a client certificate are
    /// written to `dir` as ca.pem, client.pem and client.key.
    pub fn start_tls() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = TempDir::new();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Herald test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let leaf = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![name.into()]).unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let write = |file: &str, text: &str| std::fs::write(dir.0.join(file), text).unwrap();
        let (server, server_key) = leaf("127.0.0.1");
        let (client, client_key) = leaf("herald-node");
        write("ca.pem", &ca.pem());
        write("server.pem", &server);
        write("server.key", &server_key);
        write("client.pem", &client);
        write("client.key", &client_key);
        let mut redis = Redis {
            port,
            child: None,
            dir,
            tls: true,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.0.join(name).to_string_lossy().into_owned()
    }

    pub fn args(&self) -> Vec<String> {
        let port = self.port.to_string();
        if !self.tls {
            return vec!["--port".into(), port];
        }
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port,
            "--tls-cert-file".into(),
            self.file("server.pem"),
            "--tls-key-file".into(),
            self.file("server.key"),
            "--tls-ca-cert-file".into(),
            self.file("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    }

    /// Whether the server answers: PING on a plain port; on a TLS port, that it accepts
    /// connections (Redis listens once it is ready to serve).
    pub fn answers(&self) -> bool {
        if self.tls {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        } else {
            ping(self.port)
        }
    }

    /// Starts (or restarts, on the same port and empty) the server and waits for it to answer.
    pub fn spawn(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new("redis-server")
                .args(self.args())
                .args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (tests/run installs it)");
            for _ in 0..100 {
                if self.answers() {
                    self.child = Some(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// Sends one command, its words split on spaces, to the plain Redis on `port`; its first
/// reply line.
pub fn redis_command(port: u16, command: &str) -> String {
    let args: Vec<&[u8]> = command.split_whitespace().map(str::as_bytes).collect();
    redis_args(port, &args)
}

/// A section of `INFO` from the plain Redis on `port`.
pub fn redis_info(port: u16, section: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.write_all(format!("INFO {section}\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP forwarder standing for the address a managed Redis gives its clients: `switch`
/// points it at another server and cuts the connections it carries, as a DNS failover does.
pub struct Forwarder {
    pub port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Forwarder {
    pub async fn start(target: u16) -> Forwarder {
        use std::sync::atomic::{AtomicU16, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(AtomicU16::new(target));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (to, cuts) = (target.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = to.load(Ordering::SeqCst);
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Forwarder { port, target, cut }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn switch(&self, target: u16) {
        self.target
            .store(target, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}

/// Sends one command, its arguments binary-safe, to the plain Redis on `port`; its first
/// reply line.
pub fn redis_args(port: u16, args: &[&[u8]]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&request).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}
