//! The hub's sections: `[hubs.NAME]` (each hub's auth mode, presence, transports and the
//! built-in action behind each client-invocable method) and `[connections]` (what a client
//! connection may do and how long it may take: timeouts, message and queue sizes, flow
//! control, group limits).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::invalid::Invalid;

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

/// The transports a hub may serve, by the names negotiate uses.
const TRANSPORTS: [&str; 3] = ["WebSockets", "ServerSentEvents", "LongPolling"];

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
            transports: TRANSPORTS.map(String::from).to_vec(),
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

/// Whether `name` is a valid hub name: a letter, then letters, digits or `_`.
pub fn is_hub_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Checks the hub list as a whole (at least one hub, names unique regardless of case) and
/// each hub in it.
pub fn validate_hubs(hubs: &BTreeMap<String, HubConfig>) -> Result<(), Invalid> {
    if hubs.is_empty() {
        return Err(Invalid::new("hubs", "declare at least one hub"));
    }
    let mut seen = HashSet::new();
    for (name, hub) in hubs {
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(Invalid::new(
                format!("hubs.{name}"),
                "hub names are case-insensitive; this one is declared twice",
            ));
        }
        hub.validate(name)?;
    }
    Ok(())
}

impl HubConfig {
    /// Checks the hub declared as `[hubs.NAME]`; errors name keys under `hubs.NAME`.
    pub fn validate(&self, name: &str) -> Result<(), Invalid> {
        let key = format!("hubs.{name}");
        if !is_hub_name(name) {
            return Err(Invalid::new(
                key,
                "a hub name starts with a letter and holds only letters, digits and `_`",
            ));
        }
        if self.presence == PresenceMode::Events
            && (self.joined_method.is_empty() || self.left_method.is_empty())
        {
            return Err(Invalid::new(
                format!("{key}.joined_method"),
                "presence = \"events\" needs both joined_method and left_method",
            ));
        }
        if matches!(self.presence, PresenceMode::Batched | PresenceMode::Count) {
            if self.presence_method.is_empty() {
                return Err(Invalid::new(
                    format!("{key}.presence_method"),
                    "batched and count presence need the client method they invoke",
                ));
            }
            if !(10..=3_600_000).contains(&self.presence_interval_ms) {
                return Err(Invalid::new(
                    format!("{key}.presence_interval_ms"),
                    "between 10 ms and one hour",
                ));
            }
            if self.presence_max_ids == 0 {
                return Err(Invalid::new(
                    format!("{key}.presence_max_ids"),
                    "at least 1",
                ));
            }
        }
        if self.transports.is_empty() {
            return Err(Invalid::new(
                format!("{key}.transports"),
                "enable at least one transport",
            ));
        }
        for t in &self.transports {
            if !TRANSPORTS.contains(&t.as_str()) {
                return Err(Invalid::new(
                    format!("{key}.transports"),
                    format!("`{t}` is not one of {}", TRANSPORTS.join(", ")),
                ));
            }
        }
        let mut methods = HashSet::new();
        for (method, def) in &self.methods {
            let mkey = format!("{key}.methods.{method}");
            if method.is_empty() || method.len() > 256 {
                return Err(Invalid::new(mkey, "method names are 1 to 256 characters"));
            }
            if !methods.insert(method.to_lowercase()) {
                return Err(Invalid::new(
                    mkey,
                    "method names are case-insensitive; declared twice",
                ));
            }
            if def.action.sends() && def.client_method.is_empty() {
                return Err(Invalid::new(
                    format!("{mkey}.client_method"),
                    format!(
                        "action `{:?}` needs the client method it invokes",
                        def.action
                    ),
                ));
            }
        }
        Ok(())
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

/// One day, the longest any connection timeout may be.
const DAY_MS: u64 = 24 * 3600 * 1000;

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

    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in [
            (
                "connections.keep_alive_interval_ms",
                self.keep_alive_interval_ms,
            ),
            ("connections.client_timeout_ms", self.client_timeout_ms),
            (
                "connections.handshake_timeout_ms",
                self.handshake_timeout_ms,
            ),
            (
                "connections.disconnect_timeout_ms",
                self.disconnect_timeout_ms,
            ),
            ("connections.send_timeout_ms", self.send_timeout_ms),
        ] {
            if value < 10 {
                return Err(Invalid::new(key, "at least 10 ms"));
            }
            if value > DAY_MS && key != "connections.keep_alive_interval_ms" {
                return Err(Invalid::new(key, "at most one day"));
            }
        }
        if self.keep_alive_interval_ms >= self.client_timeout_ms {
            return Err(Invalid::new(
                "connections.keep_alive_interval_ms",
                "must be below connections.client_timeout_ms (clients time out after the same interval)",
            ));
        }
        if self.max_message_bytes < 256 {
            return Err(Invalid::new(
                "connections.max_message_bytes",
                "at least 256",
            ));
        }
        if self.outbound_queue_bytes < 4096 {
            return Err(Invalid::new(
                "connections.outbound_queue_bytes",
                "at least 4096",
            ));
        }
        if self.low_watermark() >= self.high_watermark() {
            return Err(Invalid::new(
                "connections.outbound_low_watermark_bytes",
                "must be below connections.outbound_high_watermark_bytes",
            ));
        }
        if self.high_watermark() > self.outbound_queue_bytes {
            return Err(Invalid::new(
                "connections.outbound_high_watermark_bytes",
                "at most connections.outbound_queue_bytes (the queue is cut at that size)",
            ));
        }
        if self.recipient_wait_ms > 60_000 {
            return Err(Invalid::new(
                "connections.recipient_wait_ms",
                "at most 60,000 ms (0 lets publishers go on at once)",
            ));
        }
        if self.input_budget_bytes < self.max_message_bytes {
            return Err(Invalid::new(
                "connections.input_budget_bytes",
                "at least connections.max_message_bytes",
            ));
        }
        if self.max_groups_per_connection == 0 {
            return Err(Invalid::new(
                "connections.max_groups_per_connection",
                "at least 1",
            ));
        }
        if self.max_groups_per_user == 0
            || self.max_groups_per_user > self.max_user_group_memberships
        {
            return Err(Invalid::new(
                "connections.max_groups_per_user",
                "at least 1 and at most connections.max_user_group_memberships",
            ));
        }
        if !(10..100_000).contains(&self.long_poll_timeout_ms) {
            return Err(Invalid::new(
                "connections.long_poll_timeout_ms",
                "between 10 ms and 99,999 ms (the SignalR clients give up on a poll after 100 s)",
            ));
        }
        if self.stateful_reconnect_buffer_bytes < 1024 {
            return Err(Invalid::new(
                "connections.stateful_reconnect_buffer_bytes",
                "at least 1024",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_and_methods_are_checked() {
        let mut hubs = BTreeMap::new();
        assert_eq!(validate_hubs(&hubs).unwrap_err().key, "hubs");
        hubs.insert("Chat".to_string(), HubConfig::default());
        hubs.insert("chat".to_string(), HubConfig::default());
        let err = validate_hubs(&hubs).unwrap_err();
        assert!(err.reason.contains("declared twice"), "{err}");
        let err = HubConfig::default().validate("9lives").unwrap_err();
        assert_eq!(err.key, "hubs.9lives");
        let hub = HubConfig {
            transports: vec!["Carrier pigeon".into()],
            ..HubConfig::default()
        };
        let err = hub.validate("chat").unwrap_err();
        assert_eq!(err.key, "hubs.chat.transports");
        assert!(err.reason.contains("Carrier pigeon"), "{err}");
    }

    #[test]
    fn timeouts_are_bounded() {
        let err = ConnectionsConfig {
            send_timeout_ms: DAY_MS + 1,
            ..ConnectionsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.key, "connections.send_timeout_ms");
        let err = ConnectionsConfig {
            keep_alive_interval_ms: 5,
            ..ConnectionsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.key, "connections.keep_alive_interval_ms");
    }
}
