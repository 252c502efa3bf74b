//! TLS termination: HTTPS and WSS with a certificate the test generates, reloaded on SIGHUP,
//! on both backends, with the official JavaScript client too.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::support::{Server, TempDir, token};

/// A self-signed certificate for localhost and 127.0.0.1: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

fn write(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// A TLS client that trusts only `trusted`.
fn connector(trusted: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `POST /hubs/chat/negotiate` over HTTPS; the connection token, or the TLS error.
async fn negotiate(
    server: &Server,
    trusted: &CertificateDer<'static>,
) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(server.addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(trusted).connect(name, tcp).await?;
    let req = "POST /hubs/chat/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    tls.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let res = crate::support::parse_response(&raw, false);
    assert_eq!(res.status, 200);
    Ok(res.json()["connectionToken"].as_str().unwrap().to_string())
}

async fn https_and_wss_with_reload(io: &'static str) {
    let dir = TempDir::new();
    let (cert, key, der) = certificate();
    write(&dir.0, &cert, &key);
    let config = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.0.join("cert.pem").display(),
        dir.0.join("key.pem").display()
    );
    let server = Server::builder(io).config(&config).start();
    assert!(server.url("").starts_with("http://"));

    // The official client over https/wss, trusting the certificate (alone on the hub, as the
    // scenario counts connections).
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    assert!(
        js.join("node_modules/@microsoft/signalr").exists(),
        "@microsoft/signalr is not installed: run tests/run"
    );
    let base = format!("https://localhost:{}", server.addr.port());
    for transport in ["ws", "sse", "lp"] {
        let out = Command::new("node")
            .arg(js.join("chat.mjs"))
            .args([
                base.as_str(),
                &token(&["--user", "alice"]),
                &token(&["--user", "carol"]),
                "json",
                transport,
            ])
            .env("NODE_EXTRA_CA_CERTS", dir.0.join("cert.pem"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Let the run's connections leave before the next counts presence.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // WSS with the test's client: negotiate, upgrade, handshake, an Echo.
    let token_id = negotiate(&server, &der).await.unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = connector(&der)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!(
        "wss://localhost:{}/hubs/chat?id={token_id}",
        server.addr.port()
    );
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    let mut client = crate::support::Client::from_tls(ws);
    client.handshake().await;
    assert_eq!(
        client.invoke("Echo", serde_json::json!(["over tls"])).await["result"],
        "over tls"
    );

    // A plain-text request is refused at the TLS layer and counted.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // A new certificate on disk, then SIGHUP: new connections get it, the old one is gone.
    let (cert2, key2, der2) = certificate();
    write(&dir.0, &cert2, &key2);
    assert!(negotiate(&server, &der2).await.is_err(), "not reloaded yet");
    server.signal(1);
    crate::support::eventually("the new certificate to be served", || {
        let server = &server;
        let der2 = der2.clone();
        async move { negotiate(server, &der2).await.is_ok() }
    })
    .await;
    assert!(negotiate(&server, &der).await.is_err());
    // The WSS connection opened before the reload still works.
    assert_eq!(
        client.invoke("Echo", serde_json::json!([1])).await["result"],
        1
    );
    // A broken file on reload keeps the certificate in use.
    std::fs::write(dir.0.join("cert.pem"), "not a certificate").unwrap();
    server.signal(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(negotiate(&server, &der2).await.is_ok());
}
both_backends!(https_and_wss_with_reload);

/// A request over HTTPS on a fresh connection, trusting `trusted`.
async fn https(
    server: &Server,
    trusted: &CertificateDer<'static>,
    path: &str,
) -> crate::support::HttpResponse {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(trusted).connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    crate::support::parse_response(&raw, false)
}

/// `herald_tls_handshake_failures_total{reason=…}`, read over HTTPS.
async fn tls_failures(server: &Server, trusted: &CertificateDer<'static>, reason: &str) -> u64 {
    let prefix = format!("herald_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
    let text = https(server, trusted, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Plain HTTP to the TLS port gets 400 and a hint, as from nginx, and is counted; TLS
/// clients on the same port are served as before.
async fn plain_http_on_the_tls_port_gets_a_hint(io: &'static str) {
    let dir = TempDir::new();
    let (cert, key, der) = certificate();
    write(&dir.0, &cert, &key);
    let config = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.0.join("cert.pem").display(),
        dir.0.join("key.pem").display()
    );
    let server = Server::builder(io).config(&config).start();
    let before = tls_failures(&server, &der, "plain_http").await;

    let res = crate::support::http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(res.status, 400);
    assert!(
        res.text()
            .starts_with("The plain HTTP request was sent to HTTPS port"),
        "{}",
        res.text()
    );
    assert_eq!(res.header("connection"), Some("close"));
    crate::support::eventually("the plain HTTP request to be counted", || {
        let (server, der) = (&server, &der);
        async move { tls_failures(server, der, "plain_http").await == before + 1 }
    })
    .await;
    assert_eq!(https(&server, &der, "/healthz").await.status, 200);
}
both_backends!(plain_http_on_the_tls_port_gets_a_hint);
