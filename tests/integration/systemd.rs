//! Running under systemd: the `sd_notify` messages a `Type=notify` unit waits for (READY=1,
//! WATCHDOG=1, STOPPING=1), read from a notification socket as systemd would, and the shipped
//! unit file, checked by `systemd-analyze verify`.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{TempDir, herald_bin};

/// A notification socket, like the one systemd passes in `NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: UnixDatagram,
    name: String,
    _dir: Option<TempDir>,
}

impl NotifySocket {
    /// A socket at a path in a fresh directory.
    pub fn path() -> NotifySocket {
        let dir = TempDir::new();
        let path = dir.0.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket::new(socket, path.to_str().unwrap().to_string(), Some(dir))
    }

    /// A socket in the abstract namespace (`@name`), as systemd uses for the manager's own.
    pub fn abstract_name() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let dir = TempDir::new();
        let name = dir.0.file_name().unwrap().to_str().unwrap().to_string();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        NotifySocket::new(socket, format!("@{name}"), None)
    }

    fn new(socket: UnixDatagram, name: String, dir: Option<TempDir>) -> NotifySocket {
        // A bound on a test that would otherwise hang, not a measure of anything.
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        NotifySocket {
            socket,
            name,
            _dir: dir,
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads notifications until one holds the line `line`, and returns that notification.
    pub fn wait_for(&self, line: &str) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {line} notification: {e}"));
            let text = String::from_utf8(buf[..n].to_vec()).unwrap();
            if text.lines().any(|l| l == line) {
                return text;
            }
        }
    }
}

#[test]
fn notifies_ready_watchdog_keep_alives_and_stopping() {
    let notify = NotifySocket::path();
    // `exec` keeps the shell's pid, so WATCHDOG_PID names Herald as systemd would.
    let mut child = KillOnDrop(
        Command::new("sh")
            .args([
                "-c",
                "WATCHDOG_PID=$$ exec \"$0\" serve --listen 127.0.0.1:0 --shards 2 --io epoll",
                herald_bin(),
            ])
            .env("NOTIFY_SOCKET", notify.name())
            .env("WATCHDOG_USEC", "200000")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = notify.wait_for("READY=1");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=Serving on http://127.0.0.1:")),
        "{ready:?}"
    );
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1");
    }
    unsafe { kill(child.0.id() as i32, 15) };
    let stopping = notify.wait_for("STOPPING=1");
    assert!(stopping.contains("STATUS=Draining"), "{stopping:?}");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The shipped unit is valid for systemd (unknown keys, bad values and a missing binary are
/// all reported), with `ExecStart` pointed at the binary under test.
#[test]
fn the_shipped_unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (package systemd)");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/herald.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/herald serve "));
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "LimitNOFILE=",
        "StateDirectory=herald",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(key)), "{key} missing");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("AmbientCapabilities")),
        "Herald needs no capabilities on port 5000"
    );
    let dir = TempDir::new();
    let path = dir.0.join("herald.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/herald", herald_bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Other units of the machine may draw warnings of their own; none may be about Herald's.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("herald.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{out:?}");
}

/// A child process killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
