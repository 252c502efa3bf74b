//! The `[cluster]` section: which backplane carries cluster state between nodes, and how the
//! Redis one reaches its servers.

use serde::{Deserialize, Serialize};

use crate::config::invalid::Invalid;

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

impl ClusterConfig {
    /// Checks every value; with the Redis backplane, builds a client for every URL (which
    /// reads the TLS files), so a bad URL or a missing file stops start-up rather than
    /// leaving a link that never comes up.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.backplane == BackplaneKind::Redis {
            if self.redis_urls.is_empty() {
                return Err(Invalid::new("cluster.redis_urls", "at least one URL"));
            }
            if self.redis_cert_file.is_empty() != self.redis_key_file.is_empty() {
                return Err(Invalid::new(
                    "cluster",
                    "set both redis_cert_file and redis_key_file, or neither",
                ));
            }
            for url in &self.redis_urls {
                if let Err(e) = super::client::redis_client(self, url) {
                    return Err(Invalid::new(e.key(), e.to_string()));
                }
            }
        }
        if self.partitions == 0 || self.partitions > 4096 {
            return Err(Invalid::new("cluster.partitions", "1 to 4096"));
        }
        if self.partitions < self.redis_urls.len() {
            return Err(Invalid::new(
                "cluster.partitions",
                "at least one partition per Redis URL",
            ));
        }
        if self.stream_prefix.is_empty() {
            return Err(Invalid::new("cluster.stream_prefix", "must not be empty"));
        }
        if self.node_id.len() > 128 {
            return Err(Invalid::new("cluster.node_id", "at most 128 characters"));
        }
        for (key, value) in [
            ("cluster.stream_max_len", self.stream_max_len),
            ("cluster.batch_max_messages", self.batch_max_messages),
            ("cluster.buffer_max_messages", self.buffer_max_messages),
        ] {
            if value == 0 {
                return Err(Invalid::new(key, "must be positive"));
            }
        }
        for (key, value) in [
            ("cluster.heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("cluster.query_timeout_ms", self.query_timeout_ms),
            ("cluster.reconnect_max_ms", self.reconnect_max_ms),
        ] {
            if value < 10 {
                return Err(Invalid::new(key, "at least 10 ms"));
            }
        }
        if self.node_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(Invalid::new(
                "cluster.node_timeout_ms",
                "at least twice cluster.heartbeat_interval_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_settings_are_checked_by_the_section() {
        let redis = |urls: &[&str]| ClusterConfig {
            backplane: BackplaneKind::Redis,
            redis_urls: urls.iter().map(|&u| u.to_owned()).collect(),
            ..ClusterConfig::default()
        };
        redis(&["redis://10.0.0.5:6379/2"]).validate().unwrap();
        let err = redis(&["http://x"]).validate().unwrap_err();
        assert_eq!(err.key, "cluster.redis_urls", "{err}");
        let err = ClusterConfig {
            redis_ca_file: "/nonexistent/ca.pem".into(),
            ..redis(&["rediss://127.0.0.1:6380"])
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.key, "cluster.redis_ca_file", "{err}");
        // A local backplane does not look at the Redis settings it does not use.
        ClusterConfig {
            redis_urls: vec!["http://x".into()],
            ..ClusterConfig::default()
        }
        .validate()
        .unwrap();
    }
}
