//! Who a verified token speaks for, and minting the tokens `herald token` prints.

use serde_json::{Map, Value, json};

use super::jwt::{self, Claims};

/// The claim Herald puts in the tokens it mints, so that a client token can never pass as a
/// server token. Tokens minted elsewhere (Azure SDKs) carry no role and are judged by `aud`.
pub const ROLE_CLAIM: &str = "herald.role";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Minted by `herald token --user`: may connect to hubs, never call the REST API.
    Client,
    /// Minted by `herald token --server`: may call the REST API.
    Server,
    /// Minted by someone else; the audience decides what it is good for.
    Unspecified,
}

/// The verified identity behind a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    pub user_id: Option<String>,
    pub audiences: Vec<String>,
}

impl Principal {
    pub fn from_claims(claims: &Claims) -> Principal {
        let role = match claims.get_str(ROLE_CLAIM) {
            Some("client") => Role::Client,
            Some("server") => Role::Server,
            _ => Role::Unspecified,
        };
        Principal {
            role,
            user_id: claims.user_id().map(str::to_string),
            audiences: claims.audiences().into_iter().map(str::to_string).collect(),
        }
    }
}

fn base_claims(role: &str, ttl_secs: u64, audience: Option<&str>) -> Map<String, Value> {
    let now = jwt::unix_now();
    let mut claims = Map::new();
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl_secs));
    claims.insert(ROLE_CLAIM.into(), json!(role));
    if let Some(aud) = audience {
        claims.insert("aud".into(), json!(aud));
    }
    claims
}

/// A client access token for `user` (anonymous when `None`).
pub fn mint_client(
    key: &[u8],
    user: Option<&str>,
    ttl_secs: u64,
    audience: Option<&str>,
) -> String {
    let mut claims = base_claims("client", ttl_secs, audience);
    if let Some(user) = user {
        claims.insert("nameid".into(), json!(user));
    }
    jwt::sign(&claims, key)
}

/// A server token for the REST API.
pub fn mint_server(key: &[u8], ttl_secs: u64, audience: Option<&str>) -> String {
    jwt::sign(&base_claims("server", ttl_secs, audience), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_carry_their_role() {
        let key = b"0123456789abcdef";
        let t = mint_client(key, Some("alice"), 60, None);
        let p = Principal::from_claims(&jwt::verify(&t, key, jwt::unix_now(), 0).unwrap());
        assert_eq!(p.role, Role::Client);
        assert_eq!(p.user_id.as_deref(), Some("alice"));
        let t = mint_server(key, 60, Some("http://h/api/"));
        let p = Principal::from_claims(&jwt::verify(&t, key, jwt::unix_now(), 0).unwrap());
        assert_eq!(p.role, Role::Server);
        assert_eq!(p.audiences, vec!["http://h/api/".to_string()]);
    }
}
