//! Each scenario for about a second against the real `herald` binary; the counts must add up.
//!
//! The server binary is the workspace's `target/<profile>/herald`, which `cargo test
//! --workspace` builds for Herald's own integration tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

struct Herald {
    child: Child,
    url: String,
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn herald_bin() -> PathBuf {
    // target/<profile>/deps/scenarios-… → target/<profile>/herald
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("herald");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` (it builds the server)",
        bin.display()
    );
    bin
}

fn start() -> Herald {
    let mut child = Command::new(herald_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--io",
            "epoll",
            "--shards",
            "2",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    Herald {
        child,
        url: format!("http://{addr}"),
    }
}

fn run(server: &Herald, args: &[&str]) -> Value {
    let pid = server.child.id().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_herald-loadtest"))
        .args(args)
        .args([
            "--url",
            &server.url,
            "--json",
            "--server-pid",
            &pid,
            "--duration",
            "1",
            "--drain",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_scenario_adds_up() {
    let server = start();

    let r = run(&server, &["connect", "-n", "200", "--connect-rate", "0"]);
    assert_eq!(r["connections"]["connected"], 200, "{r:#}");
    assert_eq!(r["connections"]["latency"]["count"], 200);
    assert!(r["server"]["rss_bytes"].as_u64().unwrap() > 0);

    let r = run(&server, &["broadcast", "-n", "50", "-p", "2", "-r", "400"]);
    let t = &r["traffic"];
    let published = t["published"].as_u64().unwrap();
    assert!(published > 100, "{r:#}");
    assert_eq!(t["expected"].as_u64().unwrap(), published * 50, "{r:#}");
    assert_eq!(t["received"], t["expected"], "{r:#}");
    assert_eq!(
        (
            t["lost"].as_u64(),
            t["duplicates"].as_u64(),
            t["reordered"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(t["latency"]["count"], t["received"]);
    assert!(r["server"]["cpu_us_per_delivery"].as_f64().unwrap() > 0.0);

    let r = run(
        &server,
        &["groups", "--groups", "5", "--group-size", "10", "-r", "200"],
    );
    let t = &r["traffic"];
    assert_eq!(t["publishers"], 5, "{r:#}");
    assert_eq!(
        t["expected"].as_u64().unwrap(),
        t["published"].as_u64().unwrap() * 10
    );
    assert_eq!(t["received"], t["expected"], "{r:#}");
    assert_eq!(t["lost"], 0);

    let r = run(&server, &["echo", "-n", "4"]);
    let calls = r["echo"]["calls"].as_u64().unwrap();
    assert!(calls > 100, "{r:#}");
    assert_eq!(r["echo"]["round_trip"]["count"].as_u64(), Some(calls));

    // Bursts: 100 messages of 2 KB in one WebSocket message, every quarter second.
    let r = run(
        &server,
        &[
            "broadcast",
            "-n",
            "20",
            "-p",
            "1",
            "-s",
            "2000",
            "--burst",
            "100",
            "-r",
            "200",
        ],
    );
    let t = &r["traffic"];
    let published = t["published"].as_u64().unwrap();
    assert!(published >= 100 && published.is_multiple_of(100), "{r:#}");
    assert_eq!(t["received"], t["expected"], "{r:#}");
    assert_eq!(t["expected"].as_u64().unwrap(), published * 20);
    assert!(r["server"]["rss_peak_bytes"].as_u64().unwrap() > 0);

    // Presence: every connection hears the final count (the default chat hub: events).
    let r = run(&server, &["presence", "-n", "30", "--connect-rate", "0"]);
    let p = &r["presence"];
    assert_eq!(p["settled"], 30, "{r:#}");
    // Event mode: each connection hears every join from its own on (30 + 29 + … + 1), and
    // the leaves of connections of the runs before that are still closing.
    assert!(p["messages"].as_u64().unwrap() >= 30 * 31 / 2, "{r:#}");
    assert!(p["settle_ms"].as_f64().is_some(), "{r:#}");

    // Two worker processes share the connections; the parent merges their counts.
    let r = run(
        &server,
        &[
            "broadcast",
            "-n",
            "40",
            "-p",
            "2",
            "-r",
            "200",
            "--workers",
            "2",
        ],
    );
    let t = &r["traffic"];
    assert_eq!(r["connections"]["connected"], 40, "{r:#}");
    assert_eq!(t["received"], t["expected"], "{r:#}");
    assert_eq!(
        t["expected"].as_u64().unwrap(),
        t["published"].as_u64().unwrap() * 40
    );
}

/// Every protocol over every transport the server offers carries the same traffic losslessly.
#[test]
fn every_transport_and_protocol_adds_up() {
    let server = start();
    for (mode, transport) in [
        ("signalr-msgpack", "websockets"),
        ("signalr-json", "serversentevents"),
        ("signalr-json", "longpolling"),
        ("signalr-msgpack", "longpolling"),
    ] {
        let r = run(
            &server,
            &[
                "broadcast",
                "-n",
                "20",
                "-p",
                "2",
                "-r",
                "400",
                "--mode",
                mode,
                "--transport",
                transport,
            ],
        );
        let t = &r["traffic"];
        assert_eq!(r["transport"].as_str().unwrap().to_lowercase(), transport);
        assert_eq!(
            r["connections"]["connected"], 20,
            "{mode} {transport}: {r:#}"
        );
        let published = t["published"].as_u64().unwrap();
        assert!(published > 100, "{mode} {transport}: {r:#}");
        assert_eq!(t["expected"].as_u64().unwrap(), published * 20);
        assert_eq!(t["received"], t["expected"], "{mode} {transport}: {r:#}");
        assert_eq!(t["strays"], 0, "{mode} {transport}: {r:#}");

        let r = run(
            &server,
            &["echo", "-n", "2", "--mode", mode, "--transport", transport],
        );
        assert!(
            r["echo"]["calls"].as_u64().unwrap() > 20,
            "{mode} {transport}: {r:#}"
        );
        assert_eq!(r["dropped"], 0, "{mode} {transport}: {r:#}");
    }
    // Server-Sent Events are text only: a binary protocol over them is refused up front.
    let out = Command::new(env!("CARGO_BIN_EXE_herald-loadtest"))
        .args([
            "broadcast",
            "--url",
            &server.url,
            "--mode",
            "signalr-msgpack",
        ])
        .args(["--transport", "serversentevents"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("text only"));
}
