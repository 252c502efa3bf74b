//! The `[auth]` section: the access key every token is signed with, and how tokens are
//! checked.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::config::invalid::Invalid;

/// The public development access key shipped in `config/herald.toml`.
///
/// Anyone can mint tokens with it, so Herald refuses to listen on a non-loopback address while
/// it is in use.
pub const DEVELOPMENT_ACCESS_KEY: &str = "herald-development-key-change-me-0123456789";

/// Random bytes in a generated access key: 256 bits, the size of the HMAC-SHA256 key.
const FRESH_KEY_BYTES: usize = 32;

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

impl AuthConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.access_key.len() < 16 {
            return Err(Invalid::new(
                "auth.access_key",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }
}

/// A new access key: 32 bytes from `rand`'s thread generator (a CSPRNG seeded by the
/// operating system), base64url without padding (43 characters, safe in TOML strings, environment variables and connection
/// strings), so a new deployment never starts on the development key.
pub fn fresh_access_key() -> String {
    let mut bytes = [0u8; FRESH_KEY_BYTES];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_are_long_url_safe_and_differ() {
        let (a, b) = (fresh_access_key(), fresh_access_key());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        AuthConfig {
            access_key: a,
            ..AuthConfig::default()
        }
        .validate()
        .unwrap();
    }
}
