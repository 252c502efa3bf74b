//! The `[hubs.NAME]` sections: each hub's auth mode, presence, transports and the built-in
//! action behind each client-invocable method.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::Invalid;

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
}
