//! TLS termination with rustls: the certificate in use, loaded from PEM files and swapped on
//! reload (SIGHUP) without touching connections already established; and the first byte of
//! each connection, which tells a TLS client from one that speaks plain HTTP to the TLS port.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::config::TlsConfig;
use crate::metrics::TlsFailure;

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
}

/// Reloads that swapped the configuration, and reloads that kept it (a broken file), so an
/// operator sees whether a SIGHUP took. Process-wide: a process serves one TLS configuration.
static RELOADS: AtomicU64 = AtomicU64::new(0);
static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

impl Tls {
    pub fn new(files: &TlsConfig) -> Result<Tls, TlsError> {
        Ok(Tls {
            current: RwLock::new(load(files)?),
            files: files.clone(),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files).inspect_err(|_| {
            RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
        })?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        RELOADS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The reload counters' lines of the Prometheus exposition (for a node that serves TLS).
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP herald_tls_reloads_total Certificate reloads (SIGHUP): ok swapped it in, error kept the one in use.\n\
             # TYPE herald_tls_reloads_total counter\n\
             herald_tls_reloads_total{{result=\"ok\"}} {}\n\
             herald_tls_reloads_total{{result=\"error\"}} {}\n",
        RELOADS.load(Ordering::Relaxed),
        RELOAD_FAILURES.load(Ordering::Relaxed)
    );
}

/// A TLS error as an I/O error, for start-up.
pub fn io_error(e: TlsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// The first byte of every TLS connection: the content type of a handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Most bytes of a plain HTTP request head read before answering it: enough for any browser's
/// or curl's request, and the answer does not depend on it.
const PLAIN_HEAD_MAX: usize = 8 * 1024;

/// What a client that speaks plain HTTP to the TLS port is told, as nginx tells it.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 91\r\n\
Connection: close\r\n\
\r\n\
The plain HTTP request was sent to HTTPS port: this port speaks TLS (https:// and wss://).\n";

/// Reads the first byte of a connection to the TLS port, within `limit`. A TLS client's
/// connection comes back with the byte put back, for the TLS handshake. One whose first byte
/// starts an HTTP method (an ASCII letter) is answered `400` with a hint, as nginx does, rather
/// than dropped without a word; anything else is dropped. Either way the caller counts why.
pub async fn expect_handshake<S>(mut io: S, limit: Duration) -> Result<Rewound<S>, TlsFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = match tokio::time::timeout(limit, io.read_u8()).await {
        Ok(Ok(byte)) => byte,
        Ok(Err(_)) => return Err(TlsFailure::Handshake),
        Err(_) => return Err(TlsFailure::Timeout),
    };
    if first == HANDSHAKE_RECORD {
        return Ok(Rewound {
            first: Some(first),
            io,
        });
    }
    if !first.is_ascii_alphabetic() {
        return Err(TlsFailure::Handshake);
    }
    // Best effort: a client that goes away or stalls only misses its answer.
    let _ = tokio::time::timeout(limit, answer_plain_http(&mut io)).await;
    Err(TlsFailure::PlainHttp)
}

/// Reads the rest of the request head (so closing does not reset the connection before the
/// client reads the answer), answers it, and closes the sending side.
async fn answer_plain_http<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < PLAIN_HEAD_MAX {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    io.write_all(PLAIN_HTTP_ANSWER).await?;
    io.shutdown().await
}

/// A connection whose first byte was read to look at it, and is read again first.
pub struct Rewound<S> {
    first: Option<u8>,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(byte) = self.first
            && buf.remaining() > 0
        {
            buf.put_slice(&[byte]);
            self.first = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_says_what_it_is() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.starts_with("The plain HTTP request was sent to HTTPS port"));
    }

    #[tokio::test]
    async fn tls_gets_its_first_byte_back_and_plain_http_an_answer() {
        let limit = Duration::from_secs(5);
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let mut tls = expect_handshake(server, limit).await.ok().unwrap();
        let mut read = [0u8; 3];
        tls.read_exact(&mut read).await.unwrap();
        assert_eq!(read, [0x16, 0x03, 0x01]);

        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let failure = expect_handshake(server, limit).await.err().unwrap();
        assert_eq!(failure, TlsFailure::PlainHttp);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, PLAIN_HTTP_ANSWER);

        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(&[0x00, 0x01]).await.unwrap();
        let failure = expect_handshake(server, limit).await.err().unwrap();
        assert_eq!(failure, TlsFailure::Handshake);
    }
}
