//! The sections of the network edge: `[server]` (where and how Herald listens, with
//! `[server.cors]` and `[server.tls]`). What a client connection may do once it is in,
//! `[connections]`, is the hub's section (`hub::config`).

use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

use crate::config::invalid::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    Auto,
    Uring,
    Epoll,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            other => Err(format!("`{other}` is not one of auto, uring, epoll")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `IP:PORT`, or `HOST:PORT` with a host name resolved at start-up.
    pub listen: String,
    pub shards: usize,
    pub io: IoMode,
    pub listen_backlog: u32,
    pub shutdown_drain_ms: u64,
    pub max_request_body_bytes: usize,
    /// How long a client has, in all, to send a request body (time Herald itself spends not
    /// reading it, under backpressure, does not count).
    pub body_timeout_ms: u64,
    pub inbox_capacity: usize,
    /// Whether `GET /` serves the chat page (transport/page.rs).
    pub page: bool,
    /// A second, private address for the operational endpoints (`/metrics`, `/readyz`,
    /// `/healthz`); empty = none.
    pub internal_listen: String,
    /// Whether the public address still serves `/metrics` once `internal_listen` is set.
    pub public_metrics: bool,
    pub cors: CorsConfig,
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5000".into(),
            shards: 0,
            io: IoMode::Auto,
            listen_backlog: 4096,
            shutdown_drain_ms: 5000,
            max_request_body_bytes: 1024 * 1024,
            body_timeout_ms: 30_000,
            inbox_capacity: 65536,
            page: true,
            internal_listen: String::new(),
            public_metrics: false,
            cors: CorsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let listen =
            resolve_listen(&self.listen).map_err(|reason| Invalid::new("server.listen", reason))?;
        if !self.internal_listen.is_empty() {
            let internal = resolve_listen(&self.internal_listen)
                .map_err(|reason| Invalid::new("server.internal_listen", reason))?;
            if internal == listen && listen.port() != 0 {
                return Err(Invalid::new(
                    "server.internal_listen",
                    "must differ from server.listen",
                ));
            }
        }
        if self.shards > 1024 {
            return Err(Invalid::new("server.shards", "at most 1024"));
        }
        if self.listen_backlog == 0 {
            return Err(Invalid::new("server.listen_backlog", "must be positive"));
        }
        if self.max_request_body_bytes < 1024 {
            return Err(Invalid::new(
                "server.max_request_body_bytes",
                "at least 1024",
            ));
        }
        if self.inbox_capacity < 16 {
            return Err(Invalid::new("server.inbox_capacity", "at least 16"));
        }
        if !(1_000..=3_600_000).contains(&self.body_timeout_ms) {
            return Err(Invalid::new(
                "server.body_timeout_ms",
                "between 1,000 ms and one hour",
            ));
        }
        self.tls.validate()?;
        self.cors.validate()
    }

    /// The address to listen on, resolved (see [`resolve_listen`]). Validation has checked
    /// that it resolves, but a host name is resolved again here and may have stopped
    /// resolving since: that is an error, not a panic.
    pub fn listen_addr(&self) -> Result<SocketAddr, Invalid> {
        resolve_listen(&self.listen).map_err(|reason| Invalid::new("server.listen", reason))
    }

    /// The internal listener's address, if one is set (resolved like `listen`).
    pub fn internal_addr(&self) -> Result<Option<SocketAddr>, Invalid> {
        if self.internal_listen.is_empty() {
            return Ok(None);
        }
        resolve_listen(&self.internal_listen)
            .map(Some)
            .map_err(|reason| Invalid::new("server.internal_listen", reason))
    }

    /// Whether the public address serves `/metrics`: always without an internal listener
    /// (where else could it be scraped?), else only if `public_metrics` says so.
    pub fn public_metrics(&self) -> bool {
        self.internal_listen.is_empty() || self.public_metrics
    }
}

/// `IP:PORT` as it is, or `HOST:PORT` resolved to the host's first IPv4 address (its first
/// address if it has none): `localhost:5000` listens on 127.0.0.1 even where `localhost`
/// resolves to `::1` first, as IPv6 may be off in a container. The error says what is wrong,
/// for `server.listen` or `--listen`.
pub fn resolve_listen(listen: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(format!(
            "`{listen}` has no port; expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:5000 or localhost:5000"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "`{listen}` has no host; expected IP:PORT or HOST:PORT (0.0.0.0:{port} for every interface)"
        ));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{listen}` is not a port number (0 to 65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host `{host}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("host `{host}` resolves to no address"))
}

/// TLS termination: with both files set, every connection is HTTPS/WSS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: String,
    pub key_file: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(Invalid::new(
                "server.tls",
                "set both cert_file and key_file, or neither",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: vec!["*".into()],
            max_age_secs: 86400,
        }
    }
}

impl CorsConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for origin in &self.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(Invalid::new(
                    "server.cors.allowed_origins",
                    format!("`{origin}` is neither \"*\" nor an http(s) origin"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_addresses_and_host_names() {
        assert_eq!(
            resolve_listen("127.0.0.1:5001").unwrap(),
            "127.0.0.1:5001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            resolve_listen("[::1]:5001").unwrap(),
            "[::1]:5001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            resolve_listen("localhost:5001").unwrap(),
            "127.0.0.1:5001".parse::<SocketAddr>().unwrap()
        );
        for (bad, says) in [
            ("localhost", "has no port"),
            (":5000", "has no host"),
            ("localhost:http", "not a port number"),
            ("localhost:70000", "not a port number"),
            (
                "no-such-host.invalid:5000",
                "cannot resolve host `no-such-host.invalid`",
            ),
        ] {
            let err = resolve_listen(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
