//! TLS termination with rustls: the certificate in use, loaded from PEM files and swapped on
//! reload (SIGHUP) without touching connections already established.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert_file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("server.tls.key_file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Reads the files and builds a server configuration (HTTP/1.1 over TLS 1.2 and 1.3).
pub fn load(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: config.cert_file.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| TlsError::Key {
        path: config.key_file.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The TLS configuration in use, replaceable while serving.
pub struct Tls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// Reloads that swapped the configuration, and reloads that kept it (a broken file), so
    /// an operator sees whether a SIGHUP took.
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl Tls {
    pub fn new(files: &TlsConfig) -> Result<Tls, TlsError> {
        Ok(Tls {
            current: RwLock::new(load(files)?),
            files: files.clone(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files).inspect_err(|_| {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        })?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The reload counters' lines of the Prometheus exposition.
    pub fn render(&self) -> String {
        format!(
            "# HELP herald_tls_reloads_total Certificate reloads (SIGHUP): ok swapped it in, error kept the one in use.\n\
             # TYPE herald_tls_reloads_total counter\n\
             herald_tls_reloads_total{{result=\"ok\"}} {}\n\
             herald_tls_reloads_total{{result=\"error\"}} {}\n",
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed)
        )
    }
}

/// A TLS error as an I/O error, for start-up.
pub fn io_error(e: TlsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}
