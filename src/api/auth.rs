//! Who may call the REST API: bearer tokens signed with the access key that are server tokens
//! (`herald token --server`), or Azure-style tokens whose audience is the request URL, as the
//! Azure SignalR SDKs mint them. A client token is refused with 403.

use http::{HeaderMap, Uri, header};

use crate::fault::HttpFault;
use crate::hub::Node;
use crate::identity::{Principal, Role, jwt};

/// Checks the request's bearer token.
pub fn authorize(node: &Node, headers: &HeaderMap, uri: &Uri) -> Result<(), HttpFault> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            (v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ")).then(|| v[7..].trim())
        })
        .ok_or_else(|| {
            HttpFault::Unauthorized("an Authorization: Bearer token is required".into())
        })?;
    let skew = node.config.auth.clock_skew_ms / 1000;
    let claims = jwt::verify(token, &node.keys.access, jwt::unix_now(), skew)
        .map_err(|e| HttpFault::Unauthorized(e.to_string()))?;
    let principal = Principal::from_claims(&claims);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let extra = node.config.auth.server_audience.as_str();
    let audience_ok = |p: &Principal| {
        p.audiences
            .iter()
            .any(|aud| (!extra.is_empty() && aud == extra) || audience_matches(aud, host, uri))
    };
    match principal.role {
        Role::Client => Err(HttpFault::Forbidden(
            "a client token cannot call the REST API; use a server token".into(),
        )),
        Role::Server if principal.audiences.is_empty() || audience_ok(&principal) => Ok(()),
        Role::Unspecified if audience_ok(&principal) => Ok(()),
        _ => Err(HttpFault::Forbidden(
            "the token's audience (aud) is not this request's URL".into(),
        )),
    }
}

/// Whether `aud` names the request URL: with or without its query string (or with the query
/// minus `excluded`, which the Azure SDKs leave out when signing), scheme-agnostic (a proxy
/// may terminate TLS) and case-insensitive (the SDKs lower-case hub names).
pub fn audience_matches(aud: &str, host: &str, uri: &Uri) -> bool {
    let Some(rest) = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
    else {
        return false;
    };
    let path = uri.path();
    let mut candidates = vec![format!("{host}{path}")];
    if let Some(query) = uri.query() {
        candidates.push(format!("{host}{path}?{query}"));
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.starts_with("excluded="))
            .collect();
        candidates.push(format!("{host}{path}?{}", kept.join("&")));
    }
    candidates.iter().any(|c| c.eq_ignore_ascii_case(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_forms() {
        let uri: Uri = "/api/hubs/chat/:send?api-version=2022-06-01&excluded=a"
            .parse()
            .unwrap();
        let host = "localhost:5000";
        assert!(audience_matches(
            "http://localhost:5000/api/hubs/chat/:send",
            host,
            &uri
        ));
        assert!(audience_matches(
            "https://LOCALHOST:5000/api/hubs/Chat/:send",
            host,
            &uri
        ));
        assert!(audience_matches(
            "http://localhost:5000/api/hubs/chat/:send?api-version=2022-06-01",
            host,
            &uri
        ));
        assert!(audience_matches(
            "http://localhost:5000/api/hubs/chat/:send?api-version=2022-06-01&excluded=a",
            host,
            &uri
        ));
        assert!(!audience_matches(
            "http://localhost:5000/api/hubs/other/:send",
            host,
            &uri
        ));
        assert!(!audience_matches(
            "localhost:5000/api/hubs/chat/:send",
            host,
            &uri
        ));
    }
}
