//! The command line: config check/default, token, and start-up errors.

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

/// Variables a platform sets (Kubernetes: HERALD_PORT, HERALD_SERVICE_HOST… for a Service
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
    let mut child = Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1"])
        .env("HERALD_PORT", "tcp://10.0.0.1:5000")
        .env("HERALD_SERVICE_PORT", "5000")
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
