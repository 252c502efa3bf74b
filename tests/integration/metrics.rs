//! The Prometheus exposition: accepted by `promtool check metrics` (parse and lint), latencies
//! as histograms whose buckets add up, and the `process_*` metrics.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::{Client, Server, http, metric, rest};

/// Fetches `/metrics` and returns its text after `promtool check metrics` accepted it: no
/// parse error and no lint problem (promtool prints those and exits non-zero).
pub async fn checked_exposition(server: &Server) -> String {
    checked_exposition_at(server.addr).await
}

/// [`checked_exposition`] from any address (the internal listener's).
pub async fn checked_exposition_at(addr: SocketAddr) -> String {
    let res = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = res.text();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; tests/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics refused the exposition: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The samples of histogram `name`: its cumulative buckets (`le`, count), sum and count.
pub fn histogram(text: &str, name: &str) -> (Vec<(String, u64)>, f64, u64) {
    assert!(
        text.contains(&format!("# TYPE {name} histogram\n")),
        "{name} is not a histogram:\n{text}"
    );
    let value = |line: &str| line.rsplit(' ').next().unwrap().to_string();
    let buckets = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .map(|l| {
            let (le, _) = l.split_once('"').unwrap();
            (le.to_string(), value(l).parse().unwrap())
        })
        .collect::<Vec<_>>();
    let one = |suffix: &str| {
        let prefix = format!("{name}_{suffix} ");
        value(text.lines().find(|l| l.starts_with(&prefix)).unwrap())
    };
    (
        buckets,
        one("sum").parse().unwrap(),
        one("count").parse().unwrap(),
    )
}

/// Buckets never decrease, `+Inf` comes last and holds every observation.
pub fn assert_consistent(name: &str, (buckets, sum, count): &(Vec<(String, u64)>, f64, u64)) {
    assert!(buckets.len() > 2, "{name}: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), *count));
    assert!(
        *count == 0 || *sum > 0.0,
        "{name}: sum {sum}, count {count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_with_histograms_and_process_metrics() {
    let server = Server::start("epoll");
    // An exposition with nothing recorded yet is valid too.
    checked_exposition(&server).await;

    let mut alice = Client::connect(&server).await;
    let res = rest(
        &server,
        "POST",
        "/api/hubs/chat/:send?api-version=2022-06-01",
        Some(json!({"target": "note", "arguments": ["hi"]})),
    )
    .await;
    assert_eq!(res.status, 202, "{}", res.text());
    alice.expect_invocation("note").await;
    // One delivery in several has its publish-to-write latency recorded.
    let mut sent = 0;
    while metric(&server, "herald_publish_to_write_latency_seconds_count").await == 0.0 {
        assert!(
            sent < 1000,
            "no publish-to-write latency after {sent} messages"
        );
        alice.invoke("Send", json!(["alice", "hello"])).await;
        alice.expect_invocation("broadcastMessage").await;
        sent += 1;
    }

    let text = checked_exposition(&server).await;
    for name in [
        "herald_handshake_latency_seconds",
        "herald_publish_to_write_latency_seconds",
        "herald_http_request_latency_seconds",
    ] {
        let h = histogram(&text, name);
        assert_consistent(name, &h);
        assert!(h.2 > 0, "{name} recorded nothing:\n{text}");
    }
    let (buckets, _, count) = histogram(&text, "herald_handshake_latency_seconds");
    assert_eq!(buckets[0].0, "0.0005");
    assert_eq!(count, 1);
    assert!(!text.contains("quantile="), "{text}");

    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            metric(&server, &format!("{name} ")).await > 0.0,
            "{name} is not positive"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&server, "process_start_time_seconds ").await;
    assert!(started <= now + 1.0, "started {started}, now {now}");
    assert!(
        !text.contains("herald_backplane_"),
        "no backplane on a single node"
    );
}

/// The internal listener's address, from the listening line (`internal=http://…`).
fn internal_addr(server: &Server) -> SocketAddr {
    let (_, rest) = server
        .banner
        .split_once("internal=http://")
        .unwrap_or_else(|| panic!("no internal listener in {:?}", server.banner));
    rest.trim_end().trim_end_matches(')').parse().unwrap()
}

/// With `server.internal_listen`, the operational endpoints are on the private address, the
/// public one keeps its probes but not its numbers, and nothing else is served privately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_listener_serves_metrics_and_probes() {
    for io in ["epoll", "uring"] {
        let server = Server::builder(io)
            .config("[server]\ninternal_listen = \"127.0.0.1:0\"\n")
            .start();
        let internal = internal_addr(&server);
        assert_ne!(internal.port(), server.addr.port());
        let _client = Client::connect(&server).await;
        let text = checked_exposition_at(internal).await;
        assert!(
            text.contains("herald_connections{hub=\"chat\",transport=\"websockets\"} 1"),
            "{text}"
        );
        for path in ["/readyz", "/healthz"] {
            assert_eq!(http(internal, "GET", path, &[], b"").await.status, 200);
            assert_eq!(http(server.addr, "GET", path, &[], b"").await.status, 200);
        }
        let public = http(server.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(public.status, 404, "{}", public.text());
        assert_eq!(public.json()["code"], "not_found");
        let api = http(internal, "GET", "/api/health", &[], b"").await;
        assert_eq!(api.status, 404);
        assert_eq!(
            http(internal, "GET", "/hubs/chat/negotiate", &[], b"")
                .await
                .status,
            404
        );
        let put = http(internal, "PUT", "/metrics", &[], b"").await;
        assert_eq!(put.status, 405);
        assert_eq!(put.header("allow"), Some("GET, HEAD"));
        // Refusals are counted like the public address's.
        let text = http(internal, "GET", "/metrics", &[], b"").await.text();
        assert!(
            text.contains("herald_http_errors_total{code=\"not_found\"} 3\n"),
            "{text}"
        );
    }

    // public_metrics keeps /metrics on the public address as well.
    let server = Server::builder("epoll")
        .config("[server]\ninternal_listen = \"127.0.0.1:0\"\npublic_metrics = true\n")
        .start();
    checked_exposition(&server).await;
    checked_exposition_at(internal_addr(&server)).await;
}
