//! systemd's notification protocol (`sd_notify`): tells a `Type=notify` unit when Herald
//! serves (`READY=1`), when it drains (`STOPPING=1`) and what it is doing (`STATUS=`), and
//! sends `WATCHDOG=1` keep-alives when the unit sets `WatchdogSec=`, so systemd restarts a
//! Herald whose shards stopped answering.
//!
//! The protocol is one datagram per notification, newline-separated `KEY=value` assignments,
//! sent to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). It is written here rather than taken from a crate: it is a few lines over
//! `std`'s `UnixDatagram`, and Herald needs nothing else from libsystemd.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::hub::Node;
use crate::hub::node::{ShardMsg, Task};

/// Where notifications go; absent when Herald does not run under systemd (or a unit without
/// `Type=notify`), and then every notification is skipped.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, if any. An unusable value is logged and ignored:
    /// the service still runs, systemd just hears nothing.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_str().unwrap_or_default();
        if name.is_empty() {
            return None;
        }
        match Notifier::connect(name) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                tracing::warn!(socket = name, error = %e, "NOTIFY_SOCKET is unusable; systemd will not hear from Herald");
                None
            }
        }
    }

    /// A notifier for a socket path, or for `@name` in the abstract namespace.
    pub fn connect(name: &str) -> io::Result<Notifier> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)?
            }
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract name",
                ));
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one notification (`READY=1\nSTATUS=…`). A failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// How often to send `WATCHDOG=1`: half the watchdog timeout, as `sd_watchdog_enabled(3)`
/// advises, when `WATCHDOG_USEC` is set and `WATCHDOG_PID`, if set, is this process (a
/// watchdog meant for a parent that runs Herald as a child is not Herald's to feed).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// The watchdog interval from the environment systemd sets.
pub fn watchdog_from_env() -> Option<Duration> {
    let var = |name| std::env::var(name).ok();
    watchdog_interval(
        var("WATCHDOG_USEC").as_deref(),
        var("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// Sends `WATCHDOG=1` every `every`, but only after every shard has answered through its
/// inbox within that time: a shard stuck in a loop or blocked stops the keep-alives, and
/// systemd restarts the service. A thread that merely ticked would prove nothing.
pub async fn watchdog(node: Arc<Node>, notifier: Arc<Notifier>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if shards_answer(&node, every).await {
            notifier.notify("WATCHDOG=1");
        } else if !node.is_shutting_down() {
            tracing::error!(
                "a shard did not answer within {every:?}; withholding the systemd watchdog keep-alive"
            );
        }
    }
}

/// Whether every shard runs a task put in its inbox within `within`.
async fn shards_answer(node: &Node, within: Duration) -> bool {
    let asked = async {
        let mut answers = Vec::with_capacity(node.shards());
        for shard in 0..node.shards() {
            let (tx, rx) = oneshot::channel::<()>();
            let task = Task(Box::new(move |_| {
                let _ = tx.send(());
            }));
            node.inbox(shard).send(ShardMsg::Run(task)).await;
            answers.push(rx);
        }
        for rx in answers {
            if rx.await.is_err() {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(within, asked).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;

    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        let half = Some(Duration::from_secs(5));
        assert_eq!(watchdog_interval(Some("10000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("10000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("10000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn notifies_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("herald-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::connect(path.to_str().unwrap())
            .unwrap()
            .notify("READY=1\nSTATUS=hello");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=hello");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("herald-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        Notifier::connect(&format!("@{name}"))
            .unwrap()
            .notify("WATCHDOG=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        assert!(Notifier::connect("relative/path").is_err());
    }
}
