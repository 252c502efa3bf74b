//! Herald's configuration: one TOML file, typed, defaulted and validated.
//!
//! Precedence is file < environment (`HERALD_…`) < command-line flags. The embedded default is
//! `config/herald.toml` itself, so the documented file and the behaviour without a file can never
//! drift apart. Every section rejects unknown keys, naming the key.
//!
//! Each section lives beside the code it configures, as a `#[serde(default,
//! deny_unknown_fields)]` struct with `Default` and its own `validate()`: `[server]` in
//! [`crate::transport::config`], `[auth]` in [`crate::identity::config`], `[cluster]` in
//! [`crate::backplane::config`], `[hubs.NAME]` and `[connections]` in [`crate::hub::config`],
//! `[log]` in `config::log`. This module gathers them into [`Config`], loads it, and checks what
//! spans sections. A new module adds its section as one field of [`Config`] and one line of
//! [`Config::validate`]. The sections depend on this module only for [`Invalid`], which lives alone in
//! `config::invalid` so that nothing loops back here.

mod env;
pub mod invalid;
mod log;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use self::invalid::Invalid;
pub use self::log::{LogConfig, LogFormat};
pub use crate::backplane::config::{BackplaneKind, ClusterConfig};
pub use crate::hub::config::{
    Action, ConnectionsConfig, HubAuth, HubConfig, MethodConfig, PresenceMode, validate_hubs,
};
pub use crate::identity::config::{AuthConfig, DEVELOPMENT_ACCESS_KEY, fresh_access_key};
pub use crate::transport::config::{CorsConfig, IoMode, ServerConfig, TlsConfig, resolve_listen};

/// The shipped, fully commented configuration; also what Herald runs on without a file.
pub const DEFAULT_TOML: &str = include_str!("../../config/herald.toml");

/// Environment variables that belong to command-line flags rather than to config keys.
const FLAG_ENV_VARS: &[&str] = &["HERALD_CONFIG"];

/// Where configuration text came from, for errors that point into it.
const EMBEDDED: &str = "the embedded config/herald.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Text that is not TOML, or does not fit the schema: `origin:line:column: message`, as
    /// compilers write it, so editors and people find the spot.
    #[error("{origin}{}: {message}", .at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Parse {
        origin: String,
        /// Line and column (from 1), when the parser points at a spot.
        at: Option<(usize, usize)>,
        message: String,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl ConfigError {
    /// The file the error points into, when it does.
    pub fn file(&self) -> Option<&str> {
        match self {
            ConfigError::Read { path, .. } => Some(path),
            ConfigError::Parse { origin, .. } if origin != EMBEDDED => Some(origin),
            _ => None,
        }
    }

    fn parse(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
        let at = e.span().map(|span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let line = before.split(|&b| b == b'\n').count();
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            (line, column)
        });
        ConfigError::Parse {
            origin: origin.to_string(),
            at,
            message: e.message().trim_end().to_string(),
        }
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
        Config::parse("configuration", text)
    }

    /// [`Config::from_toml`], with errors that name `origin` (the file) and the line.
    fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::parse(origin, text, &e))?;
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
        let mut config = match path {
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: origin.clone(),
                    source,
                })?;
                Config::parse(&origin, &text)?
            }
            None => Config::parse(EMBEDDED, DEFAULT_TOML)?,
        };
        config.apply_env(env)?;
        if let Some(listen) = &overrides.listen {
            config.server.listen.clone_from(listen);
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
        // Only a configuration built in code can fail here (an integer beyond TOML's i64).
        let mut tree = toml::Value::try_from(&*self).map_err(|e| ConfigError::Parse {
            origin: "configuration".into(),
            at: None,
            message: e.to_string(),
        })?;
        let mut applied: Option<Config> = None;
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("HERALD_") else {
                continue;
            };
            if FLAG_ENV_VARS.contains(&var.as_str()) {
                continue;
            }
            let path = rest.to_ascii_lowercase();
            let Some(slot) = env::find_key(&mut tree, &path) else {
                let hint = env::nearest_key(&tree, &path)
                    .map(|k| format!(" (did you mean HERALD_{}?)", k.to_ascii_uppercase()))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "environment variable {var} names no configuration key and is ignored{hint}"
                ));
                continue;
            };
            let env_error = |reason: String| ConfigError::Env {
                var: var.clone(),
                reason,
            };
            *slot = env::parse_like(slot, &value).map_err(env_error)?;
            // Read back at once, so a value of the right type but not one the key takes (an
            // unknown presence mode, say) is blamed on its variable.
            applied = Some(
                tree.clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| env_error(e.message().trim_end().to_string()))?,
            );
        }
        if let Some(mut config) = applied {
            config.warnings = std::mem::take(&mut self.warnings);
            *self = config;
        }
        Ok(())
    }

    /// Checks every section, then what spans sections; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        self.connections.validate()?;
        self.cluster.validate()?;
        self.log.validate()?;
        validate_hubs(&self.hubs)?;
        let listen = self.server.listen_addr()?;
        if self.auth.access_key == DEVELOPMENT_ACCESS_KEY && !listen.ip().is_loopback() {
            return Err(Invalid::new(
                "auth.access_key",
                format!(
                    "the public development key may only be used on a loopback address, \
                     but server.listen is {listen}; set HERALD_AUTH_ACCESS_KEY or auth.access_key \
                     (`herald init` writes a file with a fresh key)"
                ),
            )
            .into());
        }
        Ok(())
    }

    /// The listen address, resolved.
    pub fn listen_addr(&self) -> Result<SocketAddr, Invalid> {
        self.server.listen_addr()
    }

    /// The internal listener's address, if one is set.
    pub fn internal_addr(&self) -> Result<Option<SocketAddr>, Invalid> {
        self.server.internal_addr()
    }

    /// The default configuration as text, with a freshly generated `auth.access_key` in place
    /// of the development key: what `herald init` writes.
    pub fn default_with_fresh_secrets() -> String {
        let line = format!("access_key = \"{DEVELOPMENT_ACCESS_KEY}\"\n");
        assert_eq!(
            DEFAULT_TOML.matches(&line).count(),
            1,
            "config/herald.toml sets the development key once"
        );
        DEFAULT_TOML.replace(&line, &format!("access_key = \"{}\"\n", fresh_access_key()))
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
    fn internal_listen_is_an_address_of_its_own() {
        let config = Config::from_toml("[server]\ninternal_listen = \"127.0.0.1:9090\"\n").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.internal_addr().unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(!config.server.public_metrics());
        assert!(Config::embedded().server.public_metrics());
        for (toml, why) in [
            ("internal_listen = \"localhost\"", "has no port"),
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
    fn parse_errors_name_the_file_line_and_column() {
        let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[server]\nshards = 2\n  shardz = 2\n").unwrap();
        let err = Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:3:3: unknown field `shardz`", file.display())),
            "{text}"
        );
        assert_eq!(err.file(), Some(file.display().to_string().as_str()));
        std::fs::write(&file, "[server]\nlisten = 5\n").unwrap();
        let err = Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("bad.toml:2:10: "), "{err}");
        // Columns count characters, not bytes.
        std::fs::write(&file, "[hubs.chat]\njoined_method = \"été\" x\n").unwrap();
        let err = Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("bad.toml:2:23: "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fresh_secrets_replace_the_development_key() {
        let text = Config::default_with_fresh_secrets();
        let config = Config::from_toml(&text).unwrap();
        assert_ne!(config.auth.access_key, DEVELOPMENT_ACCESS_KEY);
        assert!(config.auth.access_key.len() >= 43);
        assert_ne!(text, Config::default_with_fresh_secrets());
        // Everything else is the shipped file, comments included.
        assert_eq!(text.lines().count(), DEFAULT_TOML.lines().count());
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
        let err = config
            .apply_env(env(&[
                ("HERALD_LOG_LEVEL", "debug"),
                ("HERALD_HUBS_CHAT_PRESENCE", "sometimes"),
            ]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "environment variable HERALD_HUBS_CHAT_PRESENCE: unknown presence mode `sometimes`"
            ),
            "{err}"
        );
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
