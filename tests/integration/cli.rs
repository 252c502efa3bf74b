//! The command line: config check/default, token, and start-up errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{TempDir, herald_bin};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(herald_bin()).args(args).output().unwrap()
}

#[test]
fn config_default_is_the_shipped_file_and_checks_clean() {
    let out = run(&["config", "default"]);
    assert!(out.status.success());
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald.toml"))
            .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shipped);
    let out = run(&[
        "config",
        "check",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald.toml"),
    ]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = TempDir::new();
    let file = dir.0.join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nshardz = 2\n").unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shardz"),
        "{out:?}"
    );
    std::fs::write(&file, "[connections]\nmax_message_bytes = 12\n").unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connections.max_message_bytes"),
        "{out:?}"
    );
    std::fs::write(
        &file,
        "[cluster]\nbackplane = \"redis\"\nredis_urls = [\"rediss://:pw@127.0.0.1:6380\"]\n\
         redis_ca_file = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cluster.redis_ca_file"), "{out:?}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{out:?}");
}

#[test]
fn serve_refuses_bad_config_and_the_public_key_off_loopback() {
    let out = Command::new(herald_bin())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.access_key"),
        "{out:?}"
    );
    let out = Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_SERVER_SHARDS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HERALD_SERVER_SHARDS"),
        "{out:?}"
    );
    // A config error is exit code 2 from `config check` too.
    let dir = TempDir::new();
    let file = dir.0.join("bad.toml");
    std::fs::write(&file, "[server]\nshardz = 2\n").unwrap();
    assert_eq!(
        run(&["config", "check", file.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

/// Variables a platform sets (Kubernetes: `HERALD_PORT`, `HERALD_SERVICE_HOST`… for a Service
/// named `herald`) do not stop Herald: they are named in a warning, the nearest key with a
/// typo's.
#[test]
fn unknown_environment_variables_are_warnings() {
    let dir = TempDir::new();
    let file = dir.0.join("ok.toml");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(herald_bin())
        .args(["config", "check", file.to_str().unwrap()])
        .env("HERALD_PORT", "tcp://10.0.0.1:5000")
        .env("HERALD_SERVER_LISTN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HERALD_PORT names no configuration key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean HERALD_SERVER_LISTEN?"),
        "{stderr}"
    );
    let (mut child, _) = serve_until_listening_with(
        &["--listen", "127.0.0.1:0", "--shards", "1"],
        &[
            ("HERALD_PORT", "tcp://10.0.0.1:5000"),
            ("HERALD_SERVICE_PORT", "5000"),
        ],
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn token_prints_only_a_token() {
    let out = run(&["token", "--user", "alice", "--ttl-secs", "60"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().split('.').count(), 3, "{text}");
    assert_eq!(text.lines().count(), 1);
    assert!(
        !run(&["token"]).status.success(),
        "either --user or --server is required"
    );
}

/// Starts `herald serve ARGS` and returns it with its "herald listening on …" line.
fn serve_until_listening(args: &[&str]) -> (std::process::Child, String) {
    serve_until_listening_with(args, &[])
}

/// [`serve_until_listening`] with environment variables set for it.
fn serve_until_listening_with(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let mut child = Command::new(herald_bin())
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("herald listening on"), "{line:?}");
    (child, line)
}

/// `--listen` takes a host name as well as an address; what it cannot use is named.
#[test]
fn listen_accepts_host_names() {
    let (mut child, line) = serve_until_listening(&["--listen", "localhost:0", "--shards", "1"]);
    assert!(
        line.starts_with("herald listening on http://127.0.0.1:"),
        "{line:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    for (listen, says) in [
        (
            "no-such-host.invalid:5000",
            "cannot resolve host `no-such-host.invalid`",
        ),
        ("localhost", "expected IP:PORT or HOST:PORT"),
        ("localhost:http", "not a port number"),
    ] {
        let out = run(&["serve", "--listen", listen]);
        assert_eq!(out.status.code(), Some(2), "{listen}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("server.listen") && stderr.contains(says),
            "{listen}: {stderr}"
        );
    }
}

/// A file that does not parse is named, with the line and column of the fault, by `serve`
/// and `config check` alike.
#[test]
fn parse_errors_name_the_file_and_line() {
    let dir = TempDir::new();
    let file = dir.0.join("typo.toml");
    std::fs::write(&file, "[server]\nshards = 1\nshardz = 2\n").unwrap();
    let path = file.to_str().unwrap();
    let expected = format!("{path}:3:1: unknown field `shardz`");
    let out = run(&["serve", "--config", path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&expected), "{stderr}");
    let out = run(&["config", "check", path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&expected), "{stderr}");
    // Not TOML at all.
    std::fs::write(&file, "[server\n").unwrap();
    let stderr = String::from_utf8_lossy(&run(&["serve", "--config", path]).stderr).into_owned();
    assert!(stderr.contains(&format!("{path}:1:")), "{stderr}");
}

/// A port another process holds stops `serve` with exit code 1 and one clear message, in the
/// log (text or JSON) or, with logging off, on stderr.
#[test]
fn port_in_use_is_reported_once() {
    let (mut holder, line) = serve_until_listening(&["--listen", "127.0.0.1:0", "--shards", "1"]);
    let addr = line
        .trim()
        .strip_prefix("herald listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    for (format, level) in [("text", "info"), ("json", "info"), ("text", "off")] {
        let out = Command::new(herald_bin())
            .args(["serve", "--listen", &addr, "--shards", "1"])
            .env("HERALD_LOG_FORMAT", format)
            .env("HERALD_LOG_LEVEL", level)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}/{level}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "{format}/{level}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("cannot listen on {addr}"))
                && stderr.contains("another process listens there"),
            "{format}/{level}: {stderr}"
        );
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

/// `config default --secrets` and `init` give a configuration with a fresh access key, which
/// may listen beyond loopback at once; `init` never overwrites a file.
#[test]
fn fresh_secrets_for_a_new_deployment() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald.toml"))
            .unwrap();
    let key_of = |text: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with("access_key = "))
            .unwrap();
        line.trim_start_matches("access_key = ")
            .trim_matches('"')
            .to_string()
    };
    let first = String::from_utf8(run(&["config", "default", "--secrets"]).stdout).unwrap();
    let second = String::from_utf8(run(&["config", "default", "--secrets"]).stdout).unwrap();
    let key = key_of(&first);
    assert_ne!(key, key_of(&shipped));
    assert_ne!(key, key_of(&second));
    assert!(key.len() >= 43, "{key}");
    assert!(
        key.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "{key}"
    );
    // Nothing else differs from the shipped file.
    let differing: Vec<_> = first
        .lines()
        .zip(shipped.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(differing.len(), 1, "{differing:?}");

    let dir = TempDir::new();
    let file = dir.0.join("herald.toml");
    let path = file.to_str().unwrap();
    let out = run(&["init", path]);
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_ne!(key_of(&written), key_of(&shipped));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = run(&["init", path]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    // The development key is refused off loopback; the fresh one is not.
    let (mut child, _) =
        serve_until_listening(&["--config", path, "--listen", "0.0.0.0:0", "--shards", "1"]);
    let _ = child.kill();
    let _ = child.wait();
}

/// `herald --version` names the package version and the git revision built from: the short
/// commit hash of this checkout (with `-dirty` while tracked files differ from it), or
/// `unknown` where there is no git.
#[test]
fn version_names_the_git_revision() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let version = concat!("herald ", env!("CARGO_PKG_VERSION"), " (");
    let revision = text
        .trim_end()
        .strip_prefix(version)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text:?}"));
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(git) if git.status.success() => {
            let hash = String::from_utf8(git.stdout).unwrap();
            let hash = hash.trim();
            assert!(
                revision == hash || revision == format!("{hash}-dirty"),
                "{revision:?} is not {hash:?}"
            );
        }
        _ => assert_eq!(revision, "unknown"),
    }
}
