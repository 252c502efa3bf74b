//! Herald's configuration: one TOML file, typed, defaulted and validated.
//!
//! Precedence is file < environment (`HERALD_…`) < command-line flags. The embedded default is
//! `config/herald.toml` itself, so the documented file and the behaviour without a file can never
//! drift apart. Every section rejects unknown keys, naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The shipped, fully commented configuration; also what Herald runs on without a file.
pub const DEFAULT_TOML: &str = include_str!("../config/herald.toml");

/// The public development access key shipped in `config/herald.toml`.
///
/// Anyone can mint tokens with it, so Herald refuses to listen on a non-loopback address while
/// it is in use.
pub const DEVELOPMENT_ACCESS_KEY: &str = "herald-development-key-change-me-0123456789";

/// Environment variables that belong to command-line flags rather than to config keys.
const FLAG_ENV_VARS: &[&str] = &["HERALD_CONFIG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration. `Default` gives every section's defaults and no hubs; the embedded
/// file ([`Config::embedded`]) adds the `chat` hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub connections: ConnectionsConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub hubs: BTreeMap<String, HubConfig>,
    /// What loading noticed without refusing: `HERALD_` variables that name no key (a
    /// platform may set some — Kubernetes gives a Service named `herald` `HERALD_PORT` and
    /// more), to be logged once logging is up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

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
    /// A second, private address for the operational endpoints (`/metrics`, `/readyz`,
    /// `/healthz`); empty = none.
    pub internal_listen: String,
    /// Whether the public address still serves `/metrics` once `internal_listen` is set.
    pub public_metrics: bool,
    pub cors: CorsConfig,
    pub tls: TlsConfig,
}

impl ServerConfig {
    /// Whether the public address serves `/metrics`: always without an internal listener
    /// (where else could it be scraped?), else only if `public_metrics` says so.
    pub fn public_metrics(&self) -> bool {
        self.internal_listen.is_empty() || self.public_metrics
    }
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
            internal_listen: String::new(),
            public_metrics: false,
            cors: CorsConfig::default(),
            tls: TlsConfig::default(),
        }
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub access_key: String,
    pub server_audience: String,
    pub clock_skew_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_key: DEVELOPMENT_ACCESS_KEY.into(),
            server_audience: String::new(),
            clock_skew_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsConfig {
    pub keep_alive_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub disconnect_timeout_ms: u64,
    pub send_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub outbound_queue_bytes: usize,
    /// Reading from a client pauses while its own queue holds more than this (0: a quarter
    /// of `outbound_queue_bytes`) …
    pub outbound_high_watermark_bytes: usize,
    /// … and resumes once it holds at most this (0: an eighth of `outbound_queue_bytes`).
    pub outbound_low_watermark_bytes: usize,
    /// Longest a publisher is held back while recipients in its hub are backed up.
    pub recipient_wait_ms: u64,
    /// Bytes of unfinished hub messages the node holds for all its clients together.
    pub input_budget_bytes: usize,
    pub max_groups_per_connection: usize,
    /// Groups one user may be put in through the REST API (records that outlive its
    /// connections).
    pub max_groups_per_user: usize,
    /// Such user-group records in all.
    pub max_user_group_memberships: usize,
    pub long_poll_timeout_ms: u64,
    pub stateful_reconnect: bool,
    pub stateful_reconnect_buffer_bytes: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            keep_alive_interval_ms: 15_000,
            client_timeout_ms: 30_000,
            handshake_timeout_ms: 15_000,
            disconnect_timeout_ms: 15_000,
            send_timeout_ms: 10_000,
            max_message_bytes: 32 * 1024,
            outbound_queue_bytes: 1024 * 1024,
            outbound_high_watermark_bytes: 0,
            outbound_low_watermark_bytes: 0,
            recipient_wait_ms: 5000,
            input_budget_bytes: 64 * 1024 * 1024,
            max_groups_per_connection: 1000,
            max_groups_per_user: 1000,
            max_user_group_memberships: 100_000,
            long_poll_timeout_ms: 90_000,
            stateful_reconnect: true,
            stateful_reconnect_buffer_bytes: 100_000,
        }
    }
}

impl ConnectionsConfig {
    /// The queue size above which reading from a client pauses.
    pub fn high_watermark(&self) -> usize {
        match self.outbound_high_watermark_bytes {
            0 => self.outbound_queue_bytes / 4,
            n => n,
        }
    }

    /// The queue size at or below which reading resumes.
    pub fn low_watermark(&self) -> usize {
        match self.outbound_low_watermark_bytes {
            0 => self.high_watermark().min(self.outbound_queue_bytes / 8),
            n => n,
        }
    }
}

/// How nodes share cluster state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackplaneKind {
    /// One node: nothing leaves the process.
    Local,
    /// Redis Streams: every node reads every partition stream.
    Redis,
}

/// Scale-out: the backplane that carries publishes, membership changes, closes and presence
/// between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub backplane: BackplaneKind,
    pub node_id: String,
    pub redis_urls: Vec<String>,
    /// PEM certificates to trust for `rediss://` servers; empty: the system's roots.
    pub redis_ca_file: String,
    /// Client certificate chain and key (PEM) for servers that ask for one
    /// (`tls-auth-clients`); both or neither.
    pub redis_cert_file: String,
    pub redis_key_file: String,
    pub stream_prefix: String,
    pub partitions: usize,
    pub stream_max_len: usize,
    pub stream_max_age_ms: u64,
    pub batch_max_messages: usize,
    pub buffer_max_messages: usize,
    pub replay_window_ms: u64,
    pub replay_window_messages: usize,
    pub heartbeat_interval_ms: u64,
    pub node_timeout_ms: u64,
    pub query_timeout_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backplane: BackplaneKind::Local,
            node_id: String::new(),
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            redis_ca_file: String::new(),
            redis_cert_file: String::new(),
            redis_key_file: String::new(),
            stream_prefix: "herald".into(),
            partitions: 16,
            stream_max_len: 100_000,
            stream_max_age_ms: 300_000,
            batch_max_messages: 512,
            buffer_max_messages: 100_000,
            replay_window_ms: 60_000,
            replay_window_messages: 100_000,
            heartbeat_interval_ms: 1_000,
            node_timeout_ms: 10_000,
            query_timeout_ms: 2_000,
            reconnect_max_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HubAuth {
    Anonymous,
    Token,
}

/// How a hub tells its members who comes and goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceMode {
    /// `joined`/`left` to every member for every connection: n² messages for n joins.
    Events,
    /// One `presence({joined, left, count})` per member per interval, for everything that
    /// happened in it.
    Batched,
    /// One `presence({count})` per member per interval, when the count changed.
    Count,
    /// Nothing.
    Off,
}

impl<'de> Deserialize<'de> for PresenceMode {
    /// A mode by name; `true` and `false` (the older form of the key) mean `events` and `off`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Flag(bool),
            Name(String),
        }
        match Wire::deserialize(d)? {
            Wire::Flag(true) => Ok(PresenceMode::Events),
            Wire::Flag(false) => Ok(PresenceMode::Off),
            Wire::Name(name) => match name.as_str() {
                "events" => Ok(PresenceMode::Events),
                "batched" => Ok(PresenceMode::Batched),
                "count" => Ok(PresenceMode::Count),
                "off" => Ok(PresenceMode::Off),
                other => Err(serde::de::Error::custom(format!(
                    "unknown presence mode `{other}`, expected one of events, batched, count, off"
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    pub auth: HubAuth,
    pub presence: PresenceMode,
    pub joined_method: String,
    pub left_method: String,
    /// The client method of `batched` and `count` presence.
    pub presence_method: String,
    /// How often `batched` and `count` presence is sent.
    pub presence_interval_ms: u64,
    /// Most connection ids one `batched` message lists, joined and left each; more wait for
    /// the next interval.
    pub presence_max_ids: usize,
    pub transports: Vec<String>,
    pub methods: BTreeMap<String, MethodConfig>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            auth: HubAuth::Anonymous,
            presence: PresenceMode::Events,
            joined_method: "joined".into(),
            left_method: "left".into(),
            presence_method: "presence".into(),
            presence_interval_ms: 1000,
            presence_max_ids: 1000,
            transports: vec![
                "WebSockets".into(),
                "ServerSentEvents".into(),
                "LongPolling".into(),
            ],
            methods: BTreeMap::new(),
        }
    }
}

/// The built-in actions a client-invocable hub method can map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Every connection of the hub receives `client_method(args…)`.
    Broadcast,
    /// `(group, args…)`: every member of `group` receives `client_method(group, args…)`.
    SendToGroup,
    /// `(group)`: the caller joins `group`.
    JoinGroup,
    /// `(group)`: the caller leaves `group`.
    LeaveGroup,
    /// `(user, args…)`: every connection of `user` receives `client_method(callerUser, args…)`.
    SendToUser,
    /// `(value)`: completes with `value`.
    Echo,
    /// Completes with the hub's connection count.
    Count,
}

impl Action {
    /// Whether the action sends to other connections and so needs a client method name.
    pub fn sends(self) -> bool {
        matches!(
            self,
            Action::Broadcast | Action::SendToGroup | Action::SendToUser
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub action: Action,
    #[serde(default)]
    pub client_method: String,
    #[serde(default = "default_true")]
    pub include_caller: bool,
}

fn default_true() -> bool {
    true
}

/// Overrides given on the command line; they win over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub shards: Option<usize>,
    pub io: Option<IoMode>,
}

impl Config {
    /// The embedded default (config/herald.toml).
    pub fn embedded() -> Config {
        toml::from_str(DEFAULT_TOML).expect("the embedded config/herald.toml is valid")
    }

    /// Parses TOML text. Keys that are absent keep their defaults; `hubs` replaces the default
    /// hub list only when the file declares at least one hub.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if config.hubs.is_empty() {
            config.hubs = Config::embedded().hubs;
        }
        Ok(config)
    }

    /// Loads the file (or the embedded default), then the environment, then `overrides`, and
    /// validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => DEFAULT_TOML.to_string(),
        };
        let mut config = Config::from_toml(&text)?;
        config.apply_env(env)?;
        if let Some(listen) = &overrides.listen {
            config.server.listen = listen.clone();
        }
        if let Some(shards) = overrides.shards {
            config.server.shards = shards;
        }
        if let Some(io) = overrides.io {
            config.server.io = io;
        }
        config.validate()?;
        Ok(config)
    }

    /// Applies `HERALD_SECTION_KEY=value` variables. The variable name is matched against the
    /// keys that exist (including hub names from the file), so underscores inside key names
    /// are unambiguous. A variable that names no key is not an error — the platform may have
    /// set it — but a warning (in [`Config::warnings`]) that names the nearest key; a value
    /// that does not fit its key is an error that names the variable.
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut tree =
            toml::Value::try_from(&*self).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut changed = false;
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("HERALD_") else {
                continue;
            };
            if FLAG_ENV_VARS.contains(&var.as_str()) {
                continue;
            }
            let path = rest.to_ascii_lowercase();
            if find_key(&mut tree, &path).is_none() {
                let hint = nearest_key(&tree, &path)
                    .map(|k| format!(" (did you mean HERALD_{}?)", k.to_ascii_uppercase()))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "environment variable {var} names no configuration key and is ignored{hint}"
                ));
                continue;
            }
            let slot = find_key(&mut tree, &path).expect("found above");
            *slot = parse_like(slot, &value).map_err(|reason| ConfigError::Env {
                var: var.clone(),
                reason,
            })?;
            changed = true;
        }
        if changed {
            let warnings = std::mem::take(&mut self.warnings);
            *self = tree
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
            self.warnings = warnings;
        }
        Ok(())
    }

    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listen: SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|e| invalid("server.listen", format!("{e} (expected HOST:PORT)")))?;
        if !self.server.internal_listen.is_empty() {
            let internal: SocketAddr = self.server.internal_listen.parse().map_err(|e| {
                invalid("server.internal_listen", format!("{e} (expected IP:PORT)"))
            })?;
            if internal == listen && listen.port() != 0 {
                return Err(invalid(
                    "server.internal_listen",
                    "must differ from server.listen",
                ));
            }
        }
        if self.server.shards > 1024 {
            return Err(invalid("server.shards", "at most 1024"));
        }
        if self.server.listen_backlog == 0 {
            return Err(invalid("server.listen_backlog", "must be positive"));
        }
        if self.server.max_request_body_bytes < 1024 {
            return Err(invalid("server.max_request_body_bytes", "at least 1024"));
        }
        if self.server.inbox_capacity < 16 {
            return Err(invalid("server.inbox_capacity", "at least 16"));
        }
        let tls = &self.server.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return Err(invalid(
                "server.tls",
                "set both cert_file and key_file, or neither",
            ));
        }
        for origin in &self.server.cors.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "server.cors.allowed_origins",
                    format!("`{origin}` is neither \"*\" nor an http(s) origin"),
                ));
            }
        }
        if self.auth.access_key.len() < 16 {
            return Err(invalid("auth.access_key", "must be at least 16 characters"));
        }
        if self.auth.access_key == DEVELOPMENT_ACCESS_KEY && !listen.ip().is_loopback() {
            return Err(invalid(
                "auth.access_key",
                format!(
                    "the public development key may only be used on a loopback address, \
                     but server.listen is {listen}; set HERALD_AUTH_ACCESS_KEY or auth.access_key"
                ),
            ));
        }
        let c = &self.connections;
        for (key, value) in [
            (
                "connections.keep_alive_interval_ms",
                c.keep_alive_interval_ms,
            ),
            ("connections.client_timeout_ms", c.client_timeout_ms),
            ("connections.handshake_timeout_ms", c.handshake_timeout_ms),
            ("connections.disconnect_timeout_ms", c.disconnect_timeout_ms),
            ("connections.send_timeout_ms", c.send_timeout_ms),
        ] {
            if value < 10 {
                return Err(invalid(key, "at least 10 ms"));
            }
        }
        if c.keep_alive_interval_ms >= c.client_timeout_ms {
            return Err(invalid(
                "connections.keep_alive_interval_ms",
                "must be below connections.client_timeout_ms (clients time out after the same interval)",
            ));
        }
        let k = &self.cluster;
        if k.backplane == BackplaneKind::Redis {
            if k.redis_urls.is_empty() {
                return Err(invalid("cluster.redis_urls", "at least one URL"));
            }
            if k.redis_cert_file.is_empty() != k.redis_key_file.is_empty() {
                return Err(invalid(
                    "cluster",
                    "set both redis_cert_file and redis_key_file, or neither",
                ));
            }
            for url in &k.redis_urls {
                if let Err(e) = crate::backplane::redis_client(k, url) {
                    return Err(invalid(e.key(), e.to_string()));
                }
            }
        }
        if k.partitions == 0 || k.partitions > 4096 {
            return Err(invalid("cluster.partitions", "1 to 4096"));
        }
        if k.partitions < k.redis_urls.len() {
            return Err(invalid(
                "cluster.partitions",
                "at least one partition per Redis URL",
            ));
        }
        if k.stream_prefix.is_empty() {
            return Err(invalid("cluster.stream_prefix", "must not be empty"));
        }
        if k.node_id.len() > 128 {
            return Err(invalid("cluster.node_id", "at most 128 characters"));
        }
        for (key, value) in [
            ("cluster.stream_max_len", k.stream_max_len),
            ("cluster.batch_max_messages", k.batch_max_messages),
            ("cluster.buffer_max_messages", k.buffer_max_messages),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        for (key, value) in [
            ("cluster.heartbeat_interval_ms", k.heartbeat_interval_ms),
            ("cluster.query_timeout_ms", k.query_timeout_ms),
            ("cluster.reconnect_max_ms", k.reconnect_max_ms),
        ] {
            if value < 10 {
                return Err(invalid(key, "at least 10 ms"));
            }
        }
        if k.node_timeout_ms < 2 * k.heartbeat_interval_ms {
            return Err(invalid(
                "cluster.node_timeout_ms",
                "at least twice cluster.heartbeat_interval_ms",
            ));
        }
        if c.max_message_bytes < 256 {
            return Err(invalid("connections.max_message_bytes", "at least 256"));
        }
        if c.low_watermark() >= c.high_watermark() {
            return Err(invalid(
                "connections.outbound_low_watermark_bytes",
                "must be below connections.outbound_high_watermark_bytes",
            ));
        }
        if c.high_watermark() > c.outbound_queue_bytes {
            return Err(invalid(
                "connections.outbound_high_watermark_bytes",
                "at most connections.outbound_queue_bytes (the queue is cut at that size)",
            ));
        }
        if c.recipient_wait_ms > 60_000 {
            return Err(invalid(
                "connections.recipient_wait_ms",
                "at most 60,000 ms (0 lets publishers go on at once)",
            ));
        }
        if c.input_budget_bytes < c.max_message_bytes {
            return Err(invalid(
                "connections.input_budget_bytes",
                "at least connections.max_message_bytes",
            ));
        }
        if c.max_groups_per_user == 0 || c.max_groups_per_user > c.max_user_group_memberships {
            return Err(invalid(
                "connections.max_groups_per_user",
                "at least 1 and at most connections.max_user_group_memberships",
            ));
        }
        if !(1_000..=3_600_000).contains(&self.server.body_timeout_ms) {
            return Err(invalid(
                "server.body_timeout_ms",
                "between 1,000 ms and one hour",
            ));
        }
        if !(10..100_000).contains(&c.long_poll_timeout_ms) {
            return Err(invalid(
                "connections.long_poll_timeout_ms",
                "between 10 ms and 99,999 ms (the SignalR clients give up on a poll after 100 s)",
            ));
        }
        if c.stateful_reconnect_buffer_bytes < 1024 {
            return Err(invalid(
                "connections.stateful_reconnect_buffer_bytes",
                "at least 1024",
            ));
        }
        if c.max_groups_per_connection == 0 {
            return Err(invalid(
                "connections.max_groups_per_connection",
                "at least 1",
            ));
        }
        for (key, value) in [
            ("connections.disconnect_timeout_ms", c.disconnect_timeout_ms),
            ("connections.client_timeout_ms", c.client_timeout_ms),
            ("connections.handshake_timeout_ms", c.handshake_timeout_ms),
            ("connections.send_timeout_ms", c.send_timeout_ms),
        ] {
            if value > 24 * 3600 * 1000 {
                return Err(invalid(key, "at most one day"));
            }
        }
        if c.outbound_queue_bytes < 4096 {
            return Err(invalid("connections.outbound_queue_bytes", "at least 4096"));
        }
        if !["trace", "debug", "info", "warn", "error", "off"].contains(&self.log.level.as_str()) {
            return Err(invalid(
                "log.level",
                "one of trace, debug, info, warn, error, off",
            ));
        }
        if self.hubs.is_empty() {
            return Err(invalid("hubs", "declare at least one hub"));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, hub) in &self.hubs {
            let key = format!("hubs.{name}");
            if !is_hub_name(name) {
                return Err(invalid(
                    key,
                    "a hub name starts with a letter and holds only letters, digits and `_`",
                ));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(invalid(
                    key,
                    "hub names are case-insensitive; this one is declared twice",
                ));
            }
            if hub.presence == PresenceMode::Events
                && (hub.joined_method.is_empty() || hub.left_method.is_empty())
            {
                return Err(invalid(
                    format!("{key}.joined_method"),
                    "presence = \"events\" needs both joined_method and left_method",
                ));
            }
            if matches!(hub.presence, PresenceMode::Batched | PresenceMode::Count) {
                if hub.presence_method.is_empty() {
                    return Err(invalid(
                        format!("{key}.presence_method"),
                        "batched and count presence need the client method they invoke",
                    ));
                }
                if !(10..=3_600_000).contains(&hub.presence_interval_ms) {
                    return Err(invalid(
                        format!("{key}.presence_interval_ms"),
                        "between 10 ms and one hour",
                    ));
                }
                if hub.presence_max_ids == 0 {
                    return Err(invalid(format!("{key}.presence_max_ids"), "at least 1"));
                }
            }
            if hub.transports.is_empty() {
                return Err(invalid(
                    format!("{key}.transports"),
                    "enable at least one transport",
                ));
            }
            for t in &hub.transports {
                if !["WebSockets", "ServerSentEvents", "LongPolling"].contains(&t.as_str()) {
                    return Err(invalid(
                        format!("{key}.transports"),
                        format!("`{t}` is not one of WebSockets, ServerSentEvents, LongPolling"),
                    ));
                }
            }
            let mut methods = std::collections::HashSet::new();
            for (method, def) in &hub.methods {
                let mkey = format!("{key}.methods.{method}");
                if method.is_empty() || method.len() > 256 {
                    return Err(invalid(mkey, "method names are 1 to 256 characters"));
                }
                if !methods.insert(method.to_lowercase()) {
                    return Err(invalid(
                        mkey,
                        "method names are case-insensitive; declared twice",
                    ));
                }
                if def.action.sends() && def.client_method.is_empty() {
                    return Err(invalid(
                        format!("{mkey}.client_method"),
                        format!(
                            "action `{:?}` needs the client method it invokes",
                            def.action
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The internal listener's address, if one is set (validated by [`Config::validate`]).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        (!self.server.internal_listen.is_empty()).then(|| {
            self.server
                .internal_listen
                .parse()
                .expect("validated internal_listen address")
        })
    }

    /// The listen address, parsed (validated by [`Config::validate`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("validated listen address")
    }
}

/// Whether `name` is a valid hub name: a letter, then letters, digits or `_`.
pub fn is_hub_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Finds the leaf addressed by an underscore-joined lowercase path such as
/// `connections_keep_alive_interval_ms`, trying every split against the keys that exist.
fn find_key<'a>(value: &'a mut toml::Value, path: &str) -> Option<&'a mut toml::Value> {
    let table = value.as_table_mut()?;
    // An exact leaf match wins; otherwise descend into the table whose key prefixes the path.
    let exact = table
        .keys()
        .find(|k| k.to_ascii_lowercase() == path && !table[*k].is_table())
        .cloned();
    if let Some(key) = exact {
        return table.get_mut(&key);
    }
    let prefix = table
        .iter()
        .filter(|(k, v)| {
            v.is_table()
                && path.len() > k.len()
                && path.as_bytes()[k.len()] == b'_'
                && path[..k.len()] == k.to_ascii_lowercase()
        })
        .map(|(k, _)| k.clone())
        .max_by_key(|k| k.len())?;
    let rest = path[prefix.len() + 1..].to_string();
    find_key(table.get_mut(&prefix)?, &rest)
}

/// Every leaf key of `value`, underscore-joined as environment variables name them.
fn leaf_keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    let Some(table) = value.as_table() else {
        return;
    };
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.to_ascii_lowercase()
        } else {
            format!("{prefix}_{}", k.to_ascii_lowercase())
        };
        if v.is_table() {
            leaf_keys(v, &path, out);
        } else {
            out.push(path);
        }
    }
}

/// The key nearest to `path` by edit distance, if one is near enough to be a likely typo.
fn nearest_key(tree: &toml::Value, path: &str) -> Option<String> {
    let mut keys = Vec::new();
    leaf_keys(tree, "", &mut keys);
    keys.into_iter()
        .map(|k| (edit_distance(&k, path), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, on bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(x != y));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Parses an environment value as the same TOML type as the value it replaces.
fn parse_like(old: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match old {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_string())),
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{raw}` is not an integer")),
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("`{raw}` is not a number")),
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not a boolean")),
        },
        toml::Value::Array(_) => {
            // A TOML array literal, or a comma-separated list of strings.
            if raw.trim_start().starts_with('[') {
                let doc: toml::Table = toml::from_str(&format!("v = {raw}"))
                    .map_err(|e| format!("`{raw}` is not a TOML array: {e}"))?;
                Ok(doc["v"].clone())
            } else {
                Ok(toml::Value::Array(
                    raw.split(',')
                        .map(|s| s.trim())
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        _ => Err("this key cannot be set from the environment".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_is_valid_and_declares_chat() {
        let config = Config::embedded();
        config.validate().unwrap();
        let chat = &config.hubs["chat"];
        assert_eq!(chat.methods["Send"].action, Action::Broadcast);
        assert_eq!(chat.methods["Send"].client_method, "broadcastMessage");
        assert_eq!(config.connections.max_message_bytes, 32 * 1024);
    }

    #[test]
    fn embedded_default_matches_code_defaults() {
        // The documented file and the struct defaults must agree key by key.
        let file = Config::embedded();
        let code = toml::Value::try_from(ServerConfig::default()).unwrap();
        assert_eq!(toml::Value::try_from(&file.server).unwrap(), code);
        let code = toml::Value::try_from(ConnectionsConfig::default()).unwrap();
        assert_eq!(toml::Value::try_from(&file.connections).unwrap(), code);
        let code = toml::Value::try_from(AuthConfig::default()).unwrap();
        assert_eq!(toml::Value::try_from(&file.auth).unwrap(), code);
        let code = toml::Value::try_from(LogConfig::default()).unwrap();
        assert_eq!(toml::Value::try_from(&file.log).unwrap(), code);
        let code = toml::Value::try_from(ClusterConfig::default()).unwrap();
        assert_eq!(toml::Value::try_from(&file.cluster).unwrap(), code);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("[server]\nlisen = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::from_toml("[nope]\n").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn env_overrides_resolve_underscored_keys() {
        let mut config = Config::embedded();
        config
            .apply_env(env(&[
                ("HERALD_SERVER_LISTEN_BACKLOG", "128"),
                ("HERALD_CONNECTIONS_KEEP_ALIVE_INTERVAL_MS", "1000"),
                ("HERALD_HUBS_CHAT_AUTH", "token"),
                (
                    "HERALD_SERVER_CORS_ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("HERALD_CONFIG", "ignored.toml"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(config.server.listen_backlog, 128);
        assert_eq!(config.connections.keep_alive_interval_ms, 1000);
        assert_eq!(config.hubs["chat"].auth, HubAuth::Token);
        assert_eq!(config.server.cors.allowed_origins.len(), 2);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let mut config = Config::embedded();
        // Unknown variables are warned about, with the nearest key, and ignored.
        config
            .apply_env(env(&[
                ("HERALD_SERVER_LISTN", "0.0.0.0:1"),
                ("HERALD_PORT", "tcp://10.0.0.1:5000"),
                ("HERALD_SERVICE_HOST", "10.0.0.1"),
            ]))
            .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:5000");
        assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
        assert!(
            config.warnings[0].contains("HERALD_SERVER_LISTN")
                && config.warnings[0].contains("did you mean HERALD_SERVER_LISTEN?"),
            "{:?}",
            config.warnings
        );
        assert!(
            !config.warnings[1].contains("did you mean"),
            "{:?}",
            config.warnings
        );
        let err = config
            .apply_env(env(&[("HERALD_SERVER_SHARDS", "many")]))
            .unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
    }

    #[test]
    fn overrides_win_and_validation_names_keys() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            shards: Some(3),
            io: Some(IoMode::Epoll),
        };
        let config = Config::load(None, env(&[("HERALD_SERVER_SHARDS", "1")]), &overrides).unwrap();
        assert_eq!(config.server.shards, 3);
        assert_eq!(config.server.io, IoMode::Epoll);

        let bad = Overrides {
            listen: Some("0.0.0.0:5000".into()),
            ..Default::default()
        };
        let err = Config::load(None, Vec::new(), &bad).unwrap_err();
        assert!(err.to_string().contains("auth.access_key"), "{err}");

        let err = Config::from_toml("[connections]\nkeep_alive_interval_ms = 40000\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("keep_alive_interval_ms"), "{err}");

        let err =
            Config::from_toml("[hubs.room]\n[hubs.room.methods.Say]\naction = \"broadcast\"\n")
                .unwrap()
                .validate()
                .unwrap_err();
        assert!(err.to_string().contains("client_method"), "{err}");
    }

    #[test]
    fn internal_listen_is_an_address_of_its_own() {
        let config = Config::from_toml("[server]\ninternal_listen = \"127.0.0.1:9090\"\n").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.internal_addr(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(!config.server.public_metrics());
        assert!(Config::embedded().server.public_metrics());
        for (toml, why) in [
            ("internal_listen = \"localhost\"", "expected IP:PORT"),
            ("internal_listen = \"127.0.0.1:5000\"", "must differ"),
        ] {
            let err = Config::from_toml(&format!("[server]\n{toml}\n"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("server.internal_listen") && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn cluster_settings_are_checked() {
        let ok = Config::from_toml(
            "[cluster]\nbackplane = \"redis\"\nredis_urls = [\"redis://10.0.0.5:6379/2\"]\n",
        )
        .unwrap();
        ok.validate().unwrap();
        for (toml, key) in [
            (
                "backplane = \"redis\"\nredis_urls = []",
                "cluster.redis_urls",
            ),
            (
                "backplane = \"redis\"\nredis_urls = [\"http://x\"]",
                "cluster.redis_urls",
            ),
            ("partitions = 0", "cluster.partitions"),
            (
                "redis_urls = [\"redis://a\", \"redis://b\"]\npartitions = 1",
                "cluster.partitions",
            ),
            ("node_timeout_ms = 1000", "cluster.node_timeout_ms"),
            ("buffer_max_messages = 0", "cluster.buffer_max_messages"),
        ] {
            let err = Config::from_toml(&format!("[cluster]\n{toml}\n"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let err = Config::from_toml("[cluster]\nbackplane = \"etcd\"\n").unwrap_err();
        assert!(err.to_string().contains("etcd"), "{err}");
    }
}
