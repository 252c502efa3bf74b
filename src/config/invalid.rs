//! The one thing every configuration section needs of this module: the error a section's
//! `validate()` returns. It lives alone, so a section beside its module depends on it and on
//! nothing else here, and the root that gathers the sections imports them without a cycle.

/// A value that a section refuses, with the key at fault (`section.key`, as in the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {reason}")]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
