//! The `[log]` section: how much Herald logs, and in what form.

use serde::{Deserialize, Serialize};

use super::Invalid;

/// The levels `log.level` accepts, as `tracing`'s filter reads them.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

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

impl LogConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !LEVELS.contains(&self.level.as_str()) {
            return Err(Invalid::new(
                "log.level",
                format!("one of {}", LEVELS.join(", ")),
            ));
        }
        Ok(())
    }
}
