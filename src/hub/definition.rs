//! Hubs as declared in the configuration, resolved once at start-up into lookup tables.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::{Action, HubAuth};
use crate::config::Config;

/// Index of a hub in [`Hubs::list`]; cheap to copy into every connection and publish.
pub type HubId = u16;

#[derive(Debug, Clone)]
pub struct MethodDef {
    pub action: Action,
    pub client_method: Arc<str>,
    pub include_caller: bool,
}

#[derive(Debug, Clone)]
pub struct HubDef {
    pub id: HubId,
    /// The name as configured, used in logs and metrics labels.
    pub name: Arc<str>,
    pub auth: HubAuth,
    pub presence: super::presence::PresenceDef,
    /// Transports this hub serves, in the order negotiate offers them.
    pub transports: Vec<crate::protocol::TransportKind>,
    /// Keyed by lower-cased method name: hub method names are case-insensitive.
    methods: HashMap<String, MethodDef>,
}

impl HubDef {
    pub fn method(&self, name: &str) -> Option<&MethodDef> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.methods.get(&name.to_lowercase())
        } else {
            self.methods.get(name)
        }
    }
}

/// Every hub of the node.
#[derive(Debug, Clone)]
pub struct Hubs {
    pub list: Vec<HubDef>,
    by_name: HashMap<String, HubId>,
}

impl Hubs {
    /// The hub names, in id order.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|h| &*h.name).collect()
    }

    pub fn from_config(config: &Config) -> Hubs {
        let list: Vec<HubDef> = config
            .hubs
            .iter()
            .enumerate()
            .map(|(i, (name, hub))| HubDef {
                id: i as HubId,
                name: name.as_str().into(),
                auth: hub.auth,
                transports: hub
                    .transports
                    .iter()
                    .filter_map(|t| crate::protocol::TransportKind::from_signalr_name(t))
                    .collect(),
                presence: super::presence::PresenceDef::from_config(hub),
                methods: hub
                    .methods
                    .iter()
                    .map(|(method, def)| {
                        (
                            method.to_lowercase(),
                            MethodDef {
                                action: def.action,
                                client_method: def.client_method.as_str().into(),
                                include_caller: def.include_caller,
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        let by_name = list
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.id))
            .collect();
        Hubs { list, by_name }
    }

    /// Finds a hub by name, case-insensitively.
    pub fn find(&self, name: &str) -> Option<&HubDef> {
        let id = self.by_name.get(&name.to_ascii_lowercase())?;
        Some(&self.list[*id as usize])
    }

    pub fn get(&self, id: HubId) -> &HubDef {
        &self.list[id as usize]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
