//! A Redis client as the `[cluster]` section describes it: the URL's scheme, and for
//! `rediss://` the CA and client certificate files. Apart from the links that use it, so the
//! section can check its URLs at start-up without reaching into the running backplane.

use redis::{ClientTlsConfig, TlsCertificates};

use super::config::ClusterConfig;

/// Why a Redis server cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("`{0}` is neither a redis:// nor a rediss:// URL")]
    Scheme(String),
    #[error("`{url}`: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("{path}: {source}")]
    File {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl LinkError {
    /// The configuration key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            LinkError::Scheme(_) | LinkError::Url { .. } => "cluster.redis_urls",
            LinkError::File { key, .. } => key,
        }
    }
}

/// A client for `url`. A `rediss://` URL speaks TLS (rustls), trusting `redis_ca_file` when set
/// (a private CA, as self-hosted Redis usually has) or else the system's roots, and presenting
/// `redis_cert_file`/`redis_key_file` to servers that require client certificates. The files
/// are read here, so a missing one is a configuration error at start-up, not a link that
/// silently never comes up.
pub fn redis_client(config: &ClusterConfig, url: &str) -> Result<redis::Client, LinkError> {
    let bad_url = |source| LinkError::Url {
        url: redacted(url),
        source,
    };
    if url.starts_with("redis://") {
        return redis::Client::open(url).map_err(bad_url);
    }
    if !url.starts_with("rediss://") {
        return Err(LinkError::Scheme(redacted(url)));
    }
    let read = |key: &'static str, path: &str| -> Result<Option<Vec<u8>>, LinkError> {
        if path.is_empty() {
            return Ok(None);
        }
        std::fs::read(path)
            .map(Some)
            .map_err(|source| LinkError::File {
                key,
                path: path.to_string(),
                source,
            })
    };
    let root_cert = read("cluster.redis_ca_file", &config.redis_ca_file)?;
    let cert = read("cluster.redis_cert_file", &config.redis_cert_file)?;
    let key = read("cluster.redis_key_file", &config.redis_key_file)?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(bad_url)
}

/// `url` with its password (if any) masked, for logs and errors.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("rediss://app:s3cret@redis.internal:6380/2"),
            "rediss://app:***@redis.internal:6380/2"
        );
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5"),
            "redis://:***@10.0.0.5"
        );
        assert_eq!(redacted("redis://10.0.0.5:6379"), "redis://10.0.0.5:6379");
        assert_eq!(redacted("redis://user@host/0"), "redis://user@host/0");
    }

    #[test]
    fn urls_and_files_are_checked() {
        let config = ClusterConfig::default();
        assert!(redis_client(&config, "redis://127.0.0.1:6379/1").is_ok());
        assert!(redis_client(&config, "rediss://127.0.0.1:6380").is_ok());
        let e = redis_client(&config, "http://pw:x@127.0.0.1").unwrap_err();
        assert_eq!(e.key(), "cluster.redis_urls");
        assert!(!e.to_string().contains("pw:x"));
        let config = ClusterConfig {
            redis_ca_file: "/nonexistent/ca.pem".into(),
            ..ClusterConfig::default()
        };
        assert!(redis_client(&config, "redis://127.0.0.1").is_ok());
        let e = redis_client(&config, "rediss://127.0.0.1").unwrap_err();
        assert_eq!(e.key(), "cluster.redis_ca_file");
    }
}
