//! The HTTP surface as src/api/openapi.json describes it: schemathesis (installed by
//! `tests/run` into tests/compat/.venv) generates requests for every documented operation and
//! checks every answer against the file — status, content type, headers, body schema — and
//! that undocumented methods get 405 with `Allow`. The specific findings it once made are
//! pinned by plain tests here too.

use std::path::Path;

use serde_json::Value;

use crate::both_backends;
use crate::compat::compat_dir;
use crate::support::{Server, http, rest};

fn spec() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn info_version_follows_cargo_toml() {
    assert_eq!(spec()["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_route_is_described() {
    let spec = spec();
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/",
        "/page/{file}",
        "/hubs/{hub}/negotiate",
        "/hubs/{hub}",
        "/client/negotiate",
        "/client",
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not in openapi.json");
    }
}

/// Runs schemathesis against a fresh Herald: a fixed number of examples per operation, a
/// fixed seed, every check that applies to a server (not those that need data it cannot
/// create, such as existing connections).
async fn schemathesis(io: &'static str) {
    let dir = compat_dir();
    let bin = dir.join(".venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is not installed: run tests/run, or pip install -r tests/compat/requirements.txt into tests/compat/.venv"
    );
    let server = Server::start(io);
    let token = server.server_token();
    let work = crate::support::TempDir::new();
    let mut cmd = std::process::Command::new(bin);
    cmd.current_dir(&work.0)
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json"))
        .args(["--url", &server.url("")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,unsupported_method,\
             allow_header_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--request-timeout",
            "5",
        ])
        .args([
            "--generation-database",
            "none",
            "--no-color",
            "--warnings",
            "off",
        ]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers that disagree with openapi.json:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    drop(server);
}
both_backends!(schemathesis);

/// What schemathesis found once: 405s without `Allow`, probes answering any method, empty
/// 404s where a JSON error is declared.
async fn findings(io: &'static str) {
    let server = Server::start(io);
    for (method, path, allow) in [
        ("TRACE", "/metrics", "GET, HEAD"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/api/openapi.json", "GET, HEAD"),
        ("POST", "/api/health", "GET, HEAD"),
        ("GET", "/hubs/chat/negotiate", "POST"),
        ("PUT", "/hubs/chat", "GET, POST, DELETE"),
        ("GET", "/api/hubs/chat/:send", "POST"),
        (
            "POST",
            "/api/hubs/chat/users/u/groups/g",
            "GET, HEAD, PUT, DELETE",
        ),
        ("PUT", "/api/v1/hubs/chat/groups/g", "GET, HEAD, POST"),
    ] {
        let res = http(server.addr, method, path, &[], b"").await;
        assert_eq!(res.status, 405, "{method} {path}");
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.json()["code"], "method_not_allowed");
    }
    for (path, code) in [
        ("/api/hubs/chat/groups/nobody-here", "group_not_found"),
        ("/api/hubs/chat/users/nobody", "user_not_found"),
        ("/api/hubs/chat/users/nobody/groups/g", "user_not_in_group"),
        ("/api/v1/hubs/chat/groups/nobody-here", "group_not_found"),
    ] {
        let res = rest(&server, "GET", path, None).await;
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.json()["code"], code, "{path}");
        let head = rest(&server, "HEAD", path, None).await;
        assert_eq!((head.status, head.body.len()), (404, 0), "HEAD {path}");
    }
}
both_backends!(findings);
