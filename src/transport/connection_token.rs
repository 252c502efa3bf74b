//! Connection tokens: what negotiate hands out and every transport request carries as `id`.
//!
//! A token is signed and self-describing (connection id, hub, user, options, expiry), so
//! negotiate keeps no state and any shard can accept the transport request it starts. The
//! registry remembers ids in use or ended until their token expires, so a token starts at most
//! one connection; in a cluster the backplane's directory does the same for the other nodes'
//! ids.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::hub::ConnectionId;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const FLAG_AUTHENTICATED: u8 = 1;
const FLAG_STATEFUL: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionToken {
    pub id: ConnectionId,
    /// The hub name, lower-cased.
    pub hub: String,
    pub user: Option<String>,
    /// Negotiate saw a valid access token (a `token` hub requires one).
    pub authenticated: bool,
    /// Negotiate agreed to stateful reconnect.
    pub stateful: bool,
    /// Seconds since the Unix epoch after which the token cannot start a connection.
    pub expires: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed connection token")]
    Malformed,
    #[error("connection token signature mismatch")]
    BadSignature,
    #[error("connection token expired")]
    Expired,
}

fn mac(key: &[u8; 32], payload: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload);
    mac.finalize().into_bytes()[..MAC_LEN]
        .try_into()
        .expect("16 bytes")
}

impl ConnectionToken {
    pub fn encode(&self, key: &[u8; 32]) -> String {
        let hub = self.hub.as_bytes();
        let mut payload =
            Vec::with_capacity(32 + hub.len() + self.user.as_ref().map_or(0, String::len));
        payload.push(VERSION);
        payload.push(
            if self.authenticated {
                FLAG_AUTHENTICATED
            } else {
                0
            } | if self.stateful { FLAG_STATEFUL } else { 0 },
        );
        payload.extend_from_slice(&self.expires.to_be_bytes());
        payload.extend_from_slice(&self.id.to_bytes());
        payload.push(hub.len().min(255) as u8);
        payload.extend_from_slice(&hub[..hub.len().min(255)]);
        if let Some(user) = &self.user {
            payload.extend_from_slice(user.as_bytes());
        }
        let tag = mac(key, &payload);
        payload.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// Decodes and verifies a token at time `now` (seconds since the Unix epoch).
    pub fn decode(text: &str, key: &[u8; 32], now: u64) -> Result<ConnectionToken, TokenError> {
        if text.len() > 16 * 1024 {
            return Err(TokenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() < 2 + 8 + 16 + 1 + MAC_LEN || raw[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = raw.split_at(raw.len() - MAC_LEN);
        let mut check = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        check.update(payload);
        check
            .verify_truncated_left(tag)
            .map_err(|_| TokenError::BadSignature)?;
        let flags = payload[1];
        let expires = u64::from_be_bytes(payload[2..10].try_into().expect("8 bytes"));
        let id = ConnectionId::from_bytes(payload[10..26].try_into().expect("16 bytes"));
        let hub_len = payload[26] as usize;
        let rest = &payload[27..];
        if rest.len() < hub_len {
            return Err(TokenError::Malformed);
        }
        let hub = std::str::from_utf8(&rest[..hub_len]).map_err(|_| TokenError::Malformed)?;
        let user = std::str::from_utf8(&rest[hub_len..]).map_err(|_| TokenError::Malformed)?;
        if now > expires {
            return Err(TokenError::Expired);
        }
        Ok(ConnectionToken {
            id,
            hub: hub.to_string(),
            user: (!user.is_empty()).then(|| user.to_string()),
            authenticated: flags & FLAG_AUTHENTICATED != 0,
            stateful: flags & FLAG_STATEFUL != 0,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn token() -> ConnectionToken {
        ConnectionToken {
            id: ConnectionId::random(),
            hub: "chat".into(),
            user: Some("alice".into()),
            authenticated: true,
            stateful: true,
            expires: 1000,
        }
    }

    #[test]
    fn round_trip() {
        let t = token();
        let text = t.encode(&KEY);
        assert_eq!(ConnectionToken::decode(&text, &KEY, 999), Ok(t));
        let anon = ConnectionToken {
            user: None,
            authenticated: false,
            stateful: false,
            ..token()
        };
        assert_eq!(
            ConnectionToken::decode(&anon.encode(&KEY), &KEY, 0),
            Ok(anon)
        );
    }

    #[test]
    fn rejects_forgery_expiry_and_garbage() {
        let text = token().encode(&KEY);
        assert_eq!(
            ConnectionToken::decode(&text, &[8; 32], 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            ConnectionToken::decode(&text, &KEY, 1001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            ConnectionToken::decode("abc", &KEY, 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            ConnectionToken::decode("!!", &KEY, 0),
            Err(TokenError::Malformed)
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        raw[12] ^= 1;
        assert_eq!(
            ConnectionToken::decode(&URL_SAFE_NO_PAD.encode(raw), &KEY, 0),
            Err(TokenError::BadSignature)
        );
    }
}
