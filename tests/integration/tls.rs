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
use crate::support::{HttpResponse, Server, TempDir, token};

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

/// One request over HTTPS (`Connection: close`); the response, or the TLS error.
async fn https(
    server: &Server,
    trusted: &CertificateDer<'static>,
    method: &str,
    path: &str,
) -> Result<HttpResponse, std::io::Error> {
    let tcp = TcpStream::connect(server.addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(trusted).connect(name, tcp).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    Ok(crate::support::parse_response(&raw, false))
}

/// `POST /hubs/chat/negotiate` over HTTPS; the connection token, or the TLS error.
async fn negotiate(
    server: &Server,
    trusted: &CertificateDer<'static>,
) -> Result<String, std::io::Error> {
    let res = https(
        server,
        trusted,
        "POST",
        "/hubs/chat/negotiate?negotiateVersion=1",
    )
    .await?;
    assert_eq!(res.status, 200);
    Ok(res.json()["connectionToken"].as_str().unwrap().to_string())
}

/// The sum of every sample of `name` (whatever its labels) on `/metrics`, over HTTPS.
async fn tls_metric(server: &Server, trusted: &CertificateDer<'static>, name: &str) -> f64 {
    let text = https(server, trusted, "GET", "/metrics")
        .await
        .unwrap()
        .text();
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with([' ', '{']))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!samples.is_empty(), "no metric {name} in:\n{text}");
    samples.iter().sum()
}

/// The plain-HTTP line of `herald_tls_handshake_failures_total`.
const PLAIN_HTTP_FAILURES: &str = "herald_tls_handshake_failures_total{reason=\"plain_http\"}";

/// A server on `io` with a fresh self-signed certificate for `localhost`: its files' folder,
/// the certificate to trust, and the server.
fn tls_server(io: &'static str) -> (TempDir, CertificateDer<'static>, Server) {
    let dir = TempDir::new();
    let (cert, key, der) = certificate();
    write(&dir.0, &cert, &key);
    let config = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.0.join("cert.pem").display(),
        dir.0.join("key.pem").display()
    );
    let server = Server::builder(io).config(&config).start();
    (dir, der, server)
}

async fn https_and_wss_with_reload(io: &'static str) {
    let (dir, der, server) = tls_server(io);
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
        // The run's connections leave before the next counts presence.
        crate::support::eventually("the run's connections to leave", || {
            let (server, der) = (&server, &der);
            async move { tls_metric(server, der, "herald_connections").await == 0.0 }
        })
        .await;
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
    let failures = "herald_tls_handshake_failures_total";
    let before = tls_metric(&server, &der, failures).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    crate::support::eventually("the refused handshake to be counted", || {
        let (server, der) = (&server, &der);
        async move { tls_metric(server, der, failures).await > before }
    })
    .await;

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
    let reloads = "herald_tls_reloads_total{result=";
    assert_eq!(
        tls_metric(&server, &der2, &format!("{reloads}\"ok\"}}")).await,
        1.0
    );
    assert_eq!(
        tls_metric(&server, &der2, &format!("{reloads}\"error\"}}")).await,
        0.0
    );
    // A broken file on reload keeps the certificate in use.
    std::fs::write(dir.0.join("cert.pem"), "not a certificate").unwrap();
    server.signal(1);
    crate::support::eventually("the broken reload to be counted", || {
        let (server, der2) = (&server, &der2);
        async move { tls_metric(server, der2, &format!("{reloads}\"error\"}}")).await == 1.0 }
    })
    .await;
    assert!(negotiate(&server, &der2).await.is_ok());
    assert_eq!(
        tls_metric(&server, &der2, &format!("{reloads}\"ok\"}}")).await,
        1.0
    );
}
both_backends!(https_and_wss_with_reload);

/// Plain HTTP to the TLS port gets 400 and a hint, as from nginx, and is counted; TLS
/// clients on the same port are served as before.
async fn plain_http_on_the_tls_port_gets_a_hint(io: &'static str) {
    let (_dir, der, server) = tls_server(io);
    let before = tls_metric(&server, &der, PLAIN_HTTP_FAILURES).await;

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
        async move { tls_metric(server, der, PLAIN_HTTP_FAILURES).await == before + 1.0 }
    })
    .await;
    assert_eq!(
        https(&server, &der, "GET", "/healthz")
            .await
            .unwrap()
            .status,
        200
    );
}
both_backends!(plain_http_on_the_tls_port_gets_a_hint);
