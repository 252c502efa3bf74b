//! HS256 JSON Web Tokens, the format Azure SignalR Service and its SDKs use.
//!
//! Only HS256 is accepted: the key is shared between Herald and the application servers that
//! mint tokens, exactly as an Azure SignalR connection string's `AccessKey` is. The codec is pure:
//! the caller passes the current time, so expiry is tested without clocks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The largest token accepted; real tokens are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not signed with HS256")]
    UnsupportedAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no expiry (exp)")]
    MissingExpiry,
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// The audiences (`aud` may be a string or an array of strings).
    pub fn audiences(&self) -> Vec<&str> {
        match self.0.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The user id, from the claims the SignalR ecosystem uses for it, in order of preference:
    /// `nameid` (Azure docs), `asrs.s.uid` (Azure SDKs), the long ClaimTypes.NameIdentifier
    /// URI (ASP.NET), then `sub`.
    pub fn user_id(&self) -> Option<&str> {
        [
            "nameid",
            "asrs.s.uid",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
            "sub",
        ]
        .iter()
        .find_map(|name| self.get_str(name))
        .filter(|id| !id.is_empty())
    }
}

/// Signs `claims` with `key`.
pub fn sign(claims: &Map<String, Value>, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{body}");
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies signature, `exp` (required) and `nbf` (optional), allowing `skew_secs` of clock
/// difference, at time `now` (seconds since the Unix epoch).
pub fn verify(token: &str, key: &[u8], now: u64, skew_secs: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&token.as_bytes()[..header_body_len(token)]);
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::BadSignature)?;
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let exp = numeric(&claims, "exp").ok_or(JwtError::MissingExpiry)?;
    if now > exp.saturating_add(skew_secs) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = numeric(&claims, "nbf")
        && now.saturating_add(skew_secs) < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(Claims(claims))
}

fn header_body_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(v: Value) -> Map<String, Value> {
        let Value::Object(claims) = v else {
            panic!("claims are a JSON object")
        };
        claims
    }

    #[test]
    fn round_trip_and_user_id_preference() {
        let token = sign(
            &claims(json!({"exp": 2000, "sub": "s", "asrs.s.uid": "a"})),
            KEY,
        );
        let c = verify(&token, KEY, 1000, 0).unwrap();
        assert_eq!(c.user_id(), Some("a"));
        let token = sign(
            &claims(json!({"exp": 2000, "sub": "s", "nameid": "n"})),
            KEY,
        );
        assert_eq!(verify(&token, KEY, 1000, 0).unwrap().user_id(), Some("n"));
    }

    #[test]
    fn known_vector_from_another_implementation() {
        // Produced with Python's hmac/hashlib/base64 over the compact JSON of
        // {"alg":"HS256","typ":"JWT"} and {"exp":4102444800,"nameid":"alice"}.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjQxMDI0NDQ4MDAsIm5hbWVpZCI6ImFsaWNlIn0.9ZOHffrFWyi_lxaBYYXJDC228oyHbDslAUuHpRidjDM";
        let c = verify(token, KEY, 1000, 0).unwrap();
        assert_eq!(c.user_id(), Some("alice"));
    }

    #[test]
    fn rejects_what_it_must() {
        let token = sign(&claims(json!({"exp": 2000})), KEY);
        assert_eq!(
            verify(&token, b"another key, also long enough", 1000, 0),
            Err(JwtError::BadSignature)
        );
        assert_eq!(verify(&token, KEY, 2001, 0), Err(JwtError::Expired));
        assert!(verify(&token, KEY, 2001, 5).is_ok());
        let token = sign(&claims(json!({"exp": 2000, "nbf": 1500})), KEY);
        assert_eq!(verify(&token, KEY, 1000, 0), Err(JwtError::NotYetValid));
        let token = sign(&claims(json!({"sub": "x"})), KEY);
        assert_eq!(verify(&token, KEY, 1000, 0), Err(JwtError::MissingExpiry));
        assert_eq!(verify("a.b", KEY, 0, 0), Err(JwtError::Malformed));
        assert_eq!(verify("", KEY, 0, 0), Err(JwtError::Malformed));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"exp":2000}"#)
        );
        assert_eq!(
            verify(&none, KEY, 0, 0),
            Err(JwtError::UnsupportedAlgorithm)
        );
        // A tampered body fails the signature.
        let token = sign(&claims(json!({"exp": 2000, "nameid": "bob"})), KEY);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"exp":2000,"nameid":"eve"}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), KEY, 0, 0),
            Err(JwtError::BadSignature)
        );
    }
}
