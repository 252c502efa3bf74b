//! The report: what was measured, as a table for people and JSON for machines, plus the
//! server's CPU and memory read from /proc.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::scenario::{Kind, Outcome, Plan};
use crate::stats::{Percentiles, histogram};
use crate::wire::{Mode, Transport};

/// The server process's CPU time and memory at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerSample {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
}

impl ServerSample {
    /// Reads /proc/PID/stat (user + system time) and /proc/PID/status (`VmRSS`).
    pub fn read(pid: u32) -> anyhow::Result<ServerSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which may contain spaces, start after ')'.
        let after = &stat[stat.rfind(')').unwrap_or(0) + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf is always safe to call.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(ServerSample {
            cpu_secs: ticks / hz,
            rss_bytes: rss_kb * 1024,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Traffic {
    pub publishers: usize,
    pub published: u64,
    /// Deliveries that should have happened (each message times its receivers).
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub strays: u64,
    /// From the start of publishing to the last message received.
    pub seconds: f64,
    pub delivered_per_second: f64,
    pub latency: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Echo {
    pub calls: u64,
    pub per_second: f64,
    pub round_trip: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Server {
    pub cpu_secs: f64,
    /// Server CPU time per delivered message (broadcast, groups), per call (echo) or per
    /// connection opened (connect).
    pub cpu_us_per_delivery: Option<f64>,
    pub rss_bytes: u64,
    /// The largest RSS seen during the run (sampled every 50 ms).
    pub rss_peak_bytes: Option<u64>,
    /// Growth of the server's RSS while the connections were opened, per connection.
    pub rss_bytes_per_connection: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Presence {
    /// Presence messages received by all connections (joined, left, presence).
    pub messages: u64,
    pub messages_per_connection: f64,
    /// Connections that heard the final count.
    pub settled: u64,
    /// From the last connection being up to the last one hearing the final count.
    pub settle_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Kind,
    pub mode: Mode,
    pub transport: Transport,
    pub connections: Connections,
    pub traffic: Option<Traffic>,
    pub echo: Option<Echo>,
    pub presence: Option<Presence>,
    pub server: Option<Server>,
    /// Connections dropped during the run, and the errors seen.
    pub dropped: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &Plan,
        mode: Mode,
        transport: Transport,
        o: &Outcome,
        connect_secs: f64,
        run_started_ns: u64,
        before: Option<ServerSample>,
        start: Option<ServerSample>,
        end: Option<ServerSample>,
        rss_peak: Option<u64>,
    ) -> Report {
        let hist = |b: &crate::stats::Buckets| {
            let mut h = histogram();
            b.add_to(&mut h);
            Percentiles::of(&h)
        };
        let connections = Connections {
            attempted: o.attempted,
            connected: o.connected,
            failed: o.attempted - o.connected,
            errors: o.connect_errors.clone(),
            seconds: connect_secs,
            per_second: o.connected as f64 / connect_secs.max(1e-9),
            latency: hist(&o.connect_latency),
        };
        let received = o.received();
        let seconds = if o.last_receive_ns > run_started_ns {
            (o.last_receive_ns - run_started_ns) as f64 / 1e9
        } else {
            plan.duration_secs
        };
        let traffic = matches!(plan.kind, Kind::Broadcast | Kind::Groups).then(|| Traffic {
            publishers: o.published.len(),
            published: o.published.values().sum(),
            expected: o.expected(),
            received,
            lost: o.expected().saturating_sub(received),
            duplicates: o.duplicates,
            reordered: o.reordered,
            strays: o.strays,
            seconds,
            delivered_per_second: received as f64 / seconds.max(1e-9),
            latency: hist(&o.latency),
        });
        let rtt = hist(&o.echo_rtt);
        let echo = (plan.kind == Kind::Echo).then(|| Echo {
            calls: rtt.count,
            per_second: rtt.count as f64 / plan.duration_secs.max(1e-9),
            round_trip: rtt,
        });
        let presence = (plan.kind == Kind::Presence).then(|| Presence {
            messages: o.presence_messages,
            messages_per_connection: o.presence_messages as f64 / o.connected.max(1) as f64,
            settled: o.presence_settled,
            settle_ms: (o.presence_settled == o.connected && o.connected > 0)
                .then(|| o.presence_settled_ns.saturating_sub(o.last_connect_ns) as f64 / 1e6),
        });
        let work = match plan.kind {
            Kind::Broadcast | Kind::Groups => received,
            Kind::Echo => echo.as_ref().map_or(0, |e| e.calls),
            Kind::Connect => o.connected,
            Kind::Presence => o.presence_messages,
        };
        // A connect or presence run's work is the connecting itself: count the server's CPU
        // from before.
        let start = if matches!(plan.kind, Kind::Connect | Kind::Presence) {
            before.or(start)
        } else {
            start
        };
        let server = match (start, end) {
            (Some(start), Some(end)) => Some(Server {
                cpu_secs: end.cpu_secs - start.cpu_secs,
                cpu_us_per_delivery: (work > 0)
                    .then(|| (end.cpu_secs - start.cpu_secs) * 1e6 / work as f64),
                rss_bytes: end.rss_bytes,
                rss_peak_bytes: rss_peak,
                rss_bytes_per_connection: before
                    .filter(|_| o.connected > 0)
                    .map(|b| (end.rss_bytes as f64 - b.rss_bytes as f64) / o.connected as f64),
            }),
            _ => None,
        };
        Report {
            scenario: plan.kind,
            mode,
            transport,
            connections,
            traffic,
            echo,
            presence,
            server,
            dropped: o.dropped,
            errors: o.errors.clone(),
        }
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.connections;
        let _ = writeln!(
            t,
            "scenario        {:?} ({:?} over {:?})",
            self.scenario, self.mode, self.transport
        );
        let _ = writeln!(
            t,
            "connections     {} of {} in {:.2} s ({:.0}/s), {} failed",
            c.connected, c.attempted, c.seconds, c.per_second, c.failed
        );
        let _ = writeln!(t, "connect latency {}", lat(&c.latency));
        for (e, n) in &c.errors {
            let _ = writeln!(t, "  connect error {n} × {e}");
        }
        if let Some(x) = &self.traffic {
            let _ = writeln!(
                t,
                "published       {} by {} publishers",
                x.published, x.publishers
            );
            let _ = writeln!(
                t,
                "delivered       {} of {} expected in {:.2} s: {:.0}/s",
                x.received, x.expected, x.seconds, x.delivered_per_second
            );
            let _ = writeln!(
                t,
                "lost            {}   duplicated {}   out of order {}   strays {}",
                x.lost, x.duplicates, x.reordered, x.strays
            );
            let _ = writeln!(t, "latency         {}", lat(&x.latency));
        }
        if let Some(e) = &self.echo {
            let _ = writeln!(t, "echo calls      {} ({:.0}/s)", e.calls, e.per_second);
            let _ = writeln!(t, "round trip      {}", lat(&e.round_trip));
        }
        if let Some(p) = &self.presence {
            let settle = p.settle_ms.map_or("not settled".to_string(), |ms| {
                format!("settled {ms:.0} ms after the last connect")
            });
            let _ = writeln!(
                t,
                "presence        {} messages ({:.1} per connection), {} heard the final count, {settle}",
                p.messages, p.messages_per_connection, p.settled
            );
        }
        if let Some(s) = &self.server {
            let _ = write!(t, "server          {:.2} s CPU", s.cpu_secs);
            if let Some(us) = s.cpu_us_per_delivery {
                let unit = match self.scenario {
                    Kind::Connect => "connection",
                    Kind::Echo => "call",
                    Kind::Presence => "presence message",
                    _ => "delivery",
                };
                let _ = write!(t, ", {us:.2} µs per {unit}");
            }
            let _ = write!(t, ", RSS {:.1} MiB", s.rss_bytes as f64 / 1_048_576.0);
            if let Some(peak) = s.rss_peak_bytes {
                let _ = write!(t, " (peak {:.1} MiB)", peak as f64 / 1_048_576.0);
            }
            if let Some(per) = s.rss_bytes_per_connection {
                let _ = write!(t, " ({per:.0} B per connection)");
            }
            let _ = writeln!(t);
        }
        if self.dropped > 0 || !self.errors.is_empty() {
            let _ = writeln!(t, "dropped         {} connections", self.dropped);
            for (e, n) in &self.errors {
                let _ = writeln!(t, "  error {n} × {e}");
            }
        }
        t
    }

    /// Writes the delivery (or round-trip) latency histogram as an HdrHistogram interval log,
    /// readable by HdrHistogram's plotting tools.
    pub fn write_hdr_log(&self, o: &Outcome, path: &std::path::Path) -> anyhow::Result<()> {
        use hdrhistogram::serialization::V2Serializer;
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        let mut h = histogram();
        if self.scenario == Kind::Echo {
            o.echo_rtt.add_to(&mut h);
        } else {
            o.latency.add_to(&mut h);
        }
        let mut file = std::fs::File::create(path)?;
        let mut serializer = V2Serializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment("herald-loadtest latency, microseconds")
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut file, &mut serializer)?;
        let seconds = self.traffic.as_ref().map_or(0.0, |x| x.seconds);
        writer
            .write_histogram(
                &h,
                std::time::Duration::ZERO,
                std::time::Duration::from_secs_f64(seconds),
                Tag::new("latency"),
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }
}

fn lat(p: &Percentiles) -> String {
    format!(
        "p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
    )
}
