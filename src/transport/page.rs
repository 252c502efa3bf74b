//! The chat page at `GET /`: a small page, embedded in the binary, that connects to the
//! `chat` hub with the official SignalR browser client, so a new user sees Herald work before
//! writing a line (two tabs talk; who is here; a transport picker).
//!
//! Every file is compiled in (`include_bytes!`): nothing is read from disk and nothing comes
//! from a CDN. The SignalR client is vendored with its license under `page/`, named with its
//! version, and cached by browsers for a year; the page's own files carry an `ETag` (a hash
//! of their bytes, computed at compile time) and are revalidated on every load, so an
//! upgraded Herald is seen at once. `server.page = false` turns it all off (404).

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::fault::HttpFault;
use crate::hub::Shard;
use crate::web::{Body, full, read_only, status};

/// One embedded file.
struct Asset {
    /// Its name under `/page/` (the page itself: `index.html`, served at `/`).
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// Named with its version: browsers may keep it for a year without asking again.
    immutable: bool,
    /// FNV-1a of `bytes`, for `ETag`.
    hash: u64,
}

impl Asset {
    const fn new(
        name: &'static str,
        content_type: &'static str,
        bytes: &'static [u8],
        immutable: bool,
    ) -> Asset {
        Asset {
            name,
            content_type,
            bytes,
            immutable,
            hash: fnv1a(bytes),
        }
    }
}

/// 64-bit FNV-1a, in a `const fn` so that every `ETag` is fixed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const INDEX: &str = "index.html";

static ASSETS: [Asset; 5] = [
    Asset::new(
        INDEX,
        "text/html; charset=utf-8",
        include_bytes!("page/index.html"),
        false,
    ),
    Asset::new(
        "chat.css",
        "text/css; charset=utf-8",
        include_bytes!("page/chat.css"),
        false,
    ),
    Asset::new(
        "chat.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/chat.js"),
        false,
    ),
    Asset::new(
        "signalr-10.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/signalr-10.0.11.min.js"),
        true,
    ),
    Asset::new(
        "signalr-10.0.11.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("page/signalr-10.0.11.LICENSE.txt"),
        true,
    ),
];

/// What the page may load: its own files, and connections back to Herald.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `GET /`: the page.
pub fn index(shard: &Shard, req: &Request<impl Sized>) -> Result<Response<Body>, HttpFault> {
    serve(shard, req, INDEX)
}

/// `GET /page/{name}`: one of the page's files.
pub fn asset(
    shard: &Shard,
    req: &Request<impl Sized>,
    name: &str,
) -> Result<Response<Body>, HttpFault> {
    if name == INDEX {
        return Err(HttpFault::NotFound);
    }
    serve(shard, req, name)
}

fn serve(
    shard: &Shard,
    req: &Request<impl Sized>,
    name: &str,
) -> Result<Response<Body>, HttpFault> {
    if !shard.node.config.server.page {
        return Err(HttpFault::NotFound);
    }
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or(HttpFault::NotFound)?;
    read_only(req.method())?;
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        status(StatusCode::NOT_MODIFIED)
    } else {
        let mut response = Response::new(full(asset.bytes));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name == INDEX {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    /// The version of `@microsoft/signalr` vendored under `page/` (its files are named with it).
    const SIGNALR_VERSION: &str = "10.0.11";

    use super::*;

    fn text(name: &str) -> &'static str {
        let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
        std::str::from_utf8(asset.bytes).unwrap()
    }

    #[test]
    fn the_page_loads_what_is_embedded() {
        let index = text(INDEX);
        for asset in ASSETS.iter().filter(|a| {
            let ext = std::path::Path::new(a.name).extension();
            ext.is_some_and(|e| e == "js" || e == "css")
        }) {
            assert!(
                index.contains(&format!("\"page/{}\"", asset.name)),
                "index.html does not load page/{}",
                asset.name
            );
        }
        // The vendored client is the version its name and license say.
        let client = format!("signalr-{SIGNALR_VERSION}.min.js");
        assert!(ASSETS.iter().any(|a| a.name == client && a.immutable));
        assert!(text(&format!("signalr-{SIGNALR_VERSION}.LICENSE.txt")).contains(SIGNALR_VERSION));
        // No CDN, no inline script or style (the Content-Security-Policy forbids them).
        assert!(!index.contains("https://") && !index.contains("http://"));
        assert!(!index.contains("<script>") && !index.contains("style="));
    }

    #[test]
    fn etags_follow_the_bytes() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let hashes: std::collections::HashSet<u64> = ASSETS.iter().map(|a| a.hash).collect();
        assert_eq!(hashes.len(), ASSETS.len());
    }
}
