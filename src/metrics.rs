//! Counters and latency histograms, kept per shard without atomics or locks and merged when
//! `/metrics` is read, then written in the Prometheus text format.
//!
//! Label sets are bounded: hubs come from the configuration, transports and close reasons and
//! HTTP fault codes from fixed tables.

pub mod histogram;
pub mod process;

use std::cell::{Cell, RefCell};
use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::fault::{CloseReason, HttpFault};
use crate::protocol::TransportKind;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, to 2 significant digits.
fn empty_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// The named latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// From the transport being established to a successful SignalR handshake.
    Handshake,
    /// From a publish being made to its bytes being written to a client socket.
    PublishToWrite,
    /// From an HTTP request's head arriving to its response being ready (REST and negotiate).
    Request,
}

impl Latency {
    const ALL: [Latency; 3] = [
        Latency::Handshake,
        Latency::PublishToWrite,
        Latency::Request,
    ];

    fn name(self) -> &'static str {
        match self {
            Latency::Handshake => "herald_handshake_latency_seconds",
            Latency::PublishToWrite => "herald_publish_to_write_latency_seconds",
            Latency::Request => "herald_http_request_latency_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Latency::Handshake => "Time from transport start to a completed SignalR handshake.",
            Latency::PublishToWrite => {
                "Time from a publish to its bytes being written to a client socket (one delivery in 8 sampled)."
            }
            Latency::Request => "Time to answer negotiate and REST API requests.",
        }
    }

    /// Upper bounds of the exposed buckets, in microseconds: around where each latency
    /// normally lies, then out to where it means trouble.
    fn buckets(self) -> &'static [u64] {
        match self {
            // Includes the client's own time to send its handshake after connecting.
            Latency::Handshake => &[
                500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
                1_000_000, 2_500_000, 5_000_000, 10_000_000,
            ],
            // Tens of microseconds when idle; milliseconds and more under load.
            Latency::PublishToWrite => &[
                50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
                500_000, 1_000_000, 2_500_000, 5_000_000,
            ],
            Latency::Request => &[
                100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
                500_000, 1_000_000, 2_500_000, 5_000_000,
            ],
        }
    }
}

/// Why a connection to a TLS port ended before its handshake completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The handshake failed (a bad or unsupported client hello, an untrusted peer…).
    Handshake,
    /// It did not complete within `connections.handshake_timeout_ms`.
    Timeout,
    /// The client spoke plain HTTP; it got 400 and a hint.
    PlainHttp,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 3] = [
        TlsFailure::Handshake,
        TlsFailure::Timeout,
        TlsFailure::PlainHttp,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            TlsFailure::Handshake => "handshake",
            TlsFailure::Timeout => "timeout",
            TlsFailure::PlainHttp => "plain_http",
        }
    }
}

/// Why Herald stopped reading from a client (see `transport::inflow`): the
/// label of the input-pause metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Its own outbound queue is backed up.
    Outbound,
    /// The node's budget for unfinished messages is spent, and it holds one.
    Budget,
    /// It publishes, and recipients in its hub are backed up (for a bounded time).
    Recipients,
}

impl Pause {
    pub const ALL: [Pause; 3] = [Pause::Outbound, Pause::Budget, Pause::Recipients];

    /// The label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Pause::Outbound => "outbound",
            Pause::Budget => "input_budget",
            Pause::Recipients => "recipients",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One shard's metrics; only its own thread touches them.
pub struct ShardMetrics {
    messages_in: Box<[Cell<u64>]>,
    messages_out: Box<[Cell<u64>]>,
    invocation_errors: Box<[Cell<u64>]>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    connections_opened: Cell<u64>,
    slow_consumers: Cell<u64>,
    tls_failures: [Cell<u64>; TlsFailure::ALL.len()],
    silent_sockets: Cell<u64>,
    closes: [Cell<u64>; CloseReason::CODES.len()],
    /// Connections that ended before their handshake completed, by reason.
    failures: [Cell<u64>; CloseReason::CODES.len()],
    http_faults: [Cell<u64>; HttpFault::CODES.len()],
    http_requests: Cell<u64>,
    /// Long polls that found nothing queued and waited for data.
    long_polls_waited: Cell<u64>,
    /// Times reading from a client was paused, and microseconds it stayed paused, by reason.
    input_pauses: [Cell<u64>; Pause::ALL.len()],
    input_paused_us: [Cell<u64>; Pause::ALL.len()],
    latencies: [RefCell<Histogram<u64>>; Latency::ALL.len()],
    /// Exact sums of the recorded latencies, in microseconds (the histogram's own values are
    /// rounded to its precision).
    latency_sums: [Cell<u64>; Latency::ALL.len()],
}

impl ShardMetrics {
    pub fn new(hubs: usize) -> ShardMetrics {
        let cells = |n: usize| (0..n).map(|_| Cell::new(0)).collect::<Box<[_]>>();
        ShardMetrics {
            messages_in: cells(hubs),
            messages_out: cells(hubs),
            invocation_errors: cells(hubs),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            connections_opened: Cell::new(0),
            slow_consumers: Cell::new(0),
            tls_failures: std::array::from_fn(|_| Cell::new(0)),
            silent_sockets: Cell::new(0),
            closes: std::array::from_fn(|_| Cell::new(0)),
            failures: std::array::from_fn(|_| Cell::new(0)),
            http_faults: std::array::from_fn(|_| Cell::new(0)),
            http_requests: Cell::new(0),
            long_polls_waited: Cell::new(0),
            input_pauses: std::array::from_fn(|_| Cell::new(0)),
            input_paused_us: std::array::from_fn(|_| Cell::new(0)),
            latencies: std::array::from_fn(|_| RefCell::new(empty_histogram())),
            latency_sums: std::array::from_fn(|_| Cell::new(0)),
        }
    }

    fn bump(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get().wrapping_add(n));
    }

    pub fn message_in(&self, hub: u16) {
        Self::bump(&self.messages_in[hub as usize], 1);
    }
    pub fn messages_out(&self, hub: u16, n: u64) {
        Self::bump(&self.messages_out[hub as usize], n);
    }
    pub fn invocation_error(&self, hub: u16) {
        Self::bump(&self.invocation_errors[hub as usize], 1);
    }
    pub fn bytes_in(&self, n: usize) {
        Self::bump(&self.bytes_in, n as u64);
    }
    pub fn bytes_out(&self, n: usize) {
        Self::bump(&self.bytes_out, n as u64);
    }
    pub fn connection_opened(&self) {
        Self::bump(&self.connections_opened, 1);
    }
    pub fn slow_consumer(&self) {
        Self::bump(&self.slow_consumers, 1);
    }
    pub fn tls_failure(&self, why: TlsFailure) {
        Self::bump(&self.tls_failures[why as usize], 1);
    }
    pub fn silent_socket(&self) {
        Self::bump(&self.silent_sockets, 1);
    }
    /// A connection ended: one that `opened` (completed its handshake) is a close, one that
    /// did not a failure, so that opened = closed + open.
    pub fn closed(&self, reason: &CloseReason, opened: bool) {
        let counts = if opened { &self.closes } else { &self.failures };
        Self::bump(&counts[reason.index()], 1);
    }
    pub fn http_fault(&self, fault: &HttpFault) {
        Self::bump(&self.http_faults[fault.index()], 1);
    }
    pub fn http_request(&self) {
        Self::bump(&self.http_requests, 1);
    }
    pub fn long_poll_waited(&self) {
        Self::bump(&self.long_polls_waited, 1);
    }
    pub fn input_paused(&self, why: Pause) {
        Self::bump(&self.input_pauses[why.index()], 1);
    }
    pub fn input_resumed(&self, why: Pause, paused: std::time::Duration) {
        Self::bump(
            &self.input_paused_us[why.index()],
            paused.as_micros().min(u128::from(u64::MAX)) as u64,
        );
    }

    pub fn record(&self, latency: Latency, micros: u64) {
        let micros = micros.clamp(1, 600_000_000);
        let _ = self.latencies[latency as usize].borrow_mut().record(micros);
        Self::bump(&self.latency_sums[latency as usize], micros);
    }

    /// A copy for merging, with the gauges the shard counted: open connections, and
    /// connections whose reading is paused (by reason).
    pub fn snapshot(&self, connections: Vec<u64>, paused: [u64; Pause::ALL.len()]) -> Snapshot {
        let get = |cells: &[Cell<u64>]| cells.iter().map(Cell::get).collect::<Vec<_>>();
        Snapshot {
            connections,
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            invocation_errors: get(&self.invocation_errors),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connections_opened: self.connections_opened.get(),
            slow_consumers: self.slow_consumers.get(),
            tls_failures: std::array::from_fn(|i| self.tls_failures[i].get()),
            silent_sockets: self.silent_sockets.get(),
            closes: get(&self.closes),
            failures: get(&self.failures),
            http_faults: get(&self.http_faults),
            http_requests: self.http_requests.get(),
            long_polls_waited: self.long_polls_waited.get(),
            awaiting_reconnect: 0,
            input_pauses: std::array::from_fn(|i| self.input_pauses[i].get()),
            input_paused_us: std::array::from_fn(|i| self.input_paused_us[i].get()),
            paused,
            input_held: 0,
            input_budget: 0,
            latencies: self.latencies.iter().map(|h| h.borrow().clone()).collect(),
            latency_sums: std::array::from_fn(|i| self.latency_sums[i].get()),
        }
    }
}

/// Metrics of one shard, or of several merged.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Open connections, indexed by `hub * TransportKind::ALL.len() + transport`.
    pub connections: Vec<u64>,
    pub messages_in: Vec<u64>,
    pub messages_out: Vec<u64>,
    pub invocation_errors: Vec<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_opened: u64,
    pub slow_consumers: u64,
    pub tls_failures: [u64; TlsFailure::ALL.len()],
    pub silent_sockets: u64,
    pub closes: Vec<u64>,
    pub failures: Vec<u64>,
    pub http_faults: Vec<u64>,
    pub http_requests: u64,
    pub long_polls_waited: u64,
    /// Connections whose socket dropped, held for a stateful reconnect.
    pub awaiting_reconnect: u64,
    pub input_pauses: [u64; Pause::ALL.len()],
    pub input_paused_us: [u64; Pause::ALL.len()],
    /// Connections whose reading is paused now, by reason.
    pub paused: [u64; Pause::ALL.len()],
    /// Node-wide: bytes of unfinished hub messages held, and the budget for them.
    pub input_held: u64,
    pub input_budget: u64,
    pub latencies: Vec<Histogram<u64>>,
    /// Sums of the recorded latencies, in microseconds.
    pub latency_sums: [u64; Latency::ALL.len()],
}

impl Snapshot {
    pub fn merge(&mut self, other: &Snapshot) {
        let add = |a: &mut Vec<u64>, b: &[u64]| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        };
        add(&mut self.connections, &other.connections);
        add(&mut self.messages_in, &other.messages_in);
        add(&mut self.messages_out, &other.messages_out);
        add(&mut self.invocation_errors, &other.invocation_errors);
        add(&mut self.closes, &other.closes);
        add(&mut self.failures, &other.failures);
        add(&mut self.http_faults, &other.http_faults);
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.connections_opened += other.connections_opened;
        self.slow_consumers += other.slow_consumers;
        for (x, y) in self.tls_failures.iter_mut().zip(other.tls_failures) {
            *x += y;
        }
        self.silent_sockets += other.silent_sockets;
        self.http_requests += other.http_requests;
        self.long_polls_waited += other.long_polls_waited;
        self.awaiting_reconnect += other.awaiting_reconnect;
        for i in 0..Pause::ALL.len() {
            self.input_pauses[i] += other.input_pauses[i];
            self.input_paused_us[i] += other.input_paused_us[i];
            self.paused[i] += other.paused[i];
        }
        // Node-wide values: every shard reads the same ones.
        self.input_held = self.input_held.max(other.input_held);
        self.input_budget = self.input_budget.max(other.input_budget);
        for (a, b) in self.latencies.iter_mut().zip(&other.latencies) {
            let _ = a.add(b);
        }
        for (a, b) in self.latency_sums.iter_mut().zip(other.latency_sums) {
            *a = a.wrapping_add(b);
        }
    }

    /// Renders the Prometheus text exposition format (version 0.0.4). `hubs` are the hub
    /// names, in hub id order (the order of the per-hub values).
    pub fn render(&self, hubs: &[&str], io: &str, shards: usize, uptime_secs: f64) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        header(
            o,
            "herald_info",
            "gauge",
            "Static facts about this Herald process.",
        );
        let _ = writeln!(
            o,
            "herald_info{{version=\"{}\",revision=\"{}\",io=\"{io}\",shards=\"{shards}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::REVISION
        );
        header(
            o,
            "herald_uptime_seconds",
            "gauge",
            "Seconds since start-up.",
        );
        let _ = writeln!(o, "herald_uptime_seconds {uptime_secs:.3}");

        header(
            o,
            "herald_connections",
            "gauge",
            "Open connections, by hub and transport.",
        );
        for (id, hub) in hubs.iter().enumerate() {
            for (t, transport) in TransportKind::ALL.iter().enumerate() {
                let i = id * TransportKind::ALL.len() + t;
                let _ = writeln!(
                    o,
                    "herald_connections{{hub=\"{}\",transport=\"{}\"}} {}",
                    hub,
                    transport.name(),
                    self.connections.get(i).copied().unwrap_or(0)
                );
            }
        }
        per_hub(
            o,
            hubs,
            "herald_messages_received_total",
            "Hub messages received from clients.",
            &self.messages_in,
        );
        per_hub(
            o,
            hubs,
            "herald_messages_sent_total",
            "Messages queued to client connections (one per recipient).",
            &self.messages_out,
        );
        per_hub(
            o,
            hubs,
            "herald_invocation_errors_total",
            "Invocations answered with an error (unknown method, bad arguments).",
            &self.invocation_errors,
        );
        counter(
            o,
            "herald_received_bytes_total",
            "Bytes read from client sockets.",
            self.bytes_in,
        );
        counter(
            o,
            "herald_sent_bytes_total",
            "Bytes written to client sockets.",
            self.bytes_out,
        );
        counter(
            o,
            "herald_connections_opened_total",
            "Connections that completed the handshake.",
            self.connections_opened,
        );

        header(
            o,
            "herald_connections_closed_total",
            "counter",
            "Connections that completed the handshake and then closed, by reason (opened = closed + open).",
        );
        for (code, n) in CloseReason::CODES.iter().zip(&self.closes) {
            let _ = writeln!(
                o,
                "herald_connections_closed_total{{reason=\"{code}\"}} {n}"
            );
        }
        header(
            o,
            "herald_connections_failed_total",
            "counter",
            "Connections that ended before completing the handshake, by reason.",
        );
        for (code, n) in CloseReason::CODES.iter().zip(&self.failures) {
            let _ = writeln!(
                o,
                "herald_connections_failed_total{{reason=\"{code}\"}} {n}"
            );
        }
        counter(
            o,
            "herald_slow_consumer_closes_total",
            "Connections cut because their outbound queue passed its cap (counted when cut).",
            self.slow_consumers,
        );
        header(
            o,
            "herald_tls_handshake_failures_total",
            "counter",
            "Connections to a TLS port that ended before the handshake completed, by reason.",
        );
        for (why, n) in TlsFailure::ALL.iter().zip(self.tls_failures) {
            let _ = writeln!(
                o,
                "herald_tls_handshake_failures_total{{reason=\"{}\"}} {n}",
                why.name()
            );
        }
        counter(
            o,
            "herald_silent_sockets_closed_total",
            "Accepted sockets closed because they sent nothing within connections.handshake_timeout_ms.",
            self.silent_sockets,
        );
        header(
            o,
            "herald_protocol_errors_total",
            "counter",
            "Clients that broke the SignalR or WebSocket protocol, by layer.",
        );
        for (kind, reason) in [
            (
                "handshake",
                CloseReason::Handshake(crate::protocol::handshake::HandshakeError::TimedOut),
            ),
            (
                "hub",
                CloseReason::Protocol(crate::protocol::ProtocolError::Missing("type")),
            ),
            (
                "websocket",
                CloseReason::WebSocket(crate::protocol::frame::FrameError::Unmasked),
            ),
        ] {
            let _ = writeln!(
                o,
                "herald_protocol_errors_total{{kind=\"{kind}\"}} {}",
                self.closes[reason.index()] + self.failures[reason.index()]
            );
        }
        counter(
            o,
            "herald_http_requests_total",
            "HTTP requests received.",
            self.http_requests,
        );
        counter(
            o,
            "herald_long_polls_waited_total",
            "Long polls that found nothing queued and waited for data (or their timeout).",
            self.long_polls_waited,
        );
        header(
            o,
            "herald_connections_awaiting_reconnect",
            "gauge",
            "Connections whose socket dropped, held for a stateful reconnect.",
        );
        let _ = writeln!(
            o,
            "herald_connections_awaiting_reconnect {}",
            self.awaiting_reconnect
        );
        header(
            o,
            "herald_http_errors_total",
            "counter",
            "Refused HTTP requests, by stable error code.",
        );
        for (code, n) in HttpFault::CODES.iter().zip(&self.http_faults) {
            let _ = writeln!(o, "herald_http_errors_total{{code=\"{code}\"}} {n}");
        }
        per_pause(
            o,
            "herald_input_pauses_total",
            "counter",
            "Times Herald stopped reading from a client, by reason: its own outbound queue above \
             the high watermark (outbound), the node's budget for unfinished messages spent \
             (input_budget), or recipients of what it published backed up (recipients).",
            |i| self.input_pauses[i].to_string(),
        );
        per_pause(
            o,
            "herald_input_paused_seconds_total",
            "counter",
            "Time clients spent not being read, by reason (counted when reading resumes or the connection ends).",
            |i| format!("{:.6}", self.input_paused_us[i] as f64 / 1e6),
        );
        per_pause(
            o,
            "herald_input_paused_connections",
            "gauge",
            "Connections not being read now, by reason.",
            |i| self.paused[i].to_string(),
        );
        header(
            o,
            "herald_input_buffered_bytes",
            "gauge",
            "Bytes of unfinished hub messages held for all clients (connections.input_budget_bytes bounds it).",
        );
        let _ = writeln!(o, "herald_input_buffered_bytes {}", self.input_held);
        header(
            o,
            "herald_input_budget_bytes",
            "gauge",
            "connections.input_budget_bytes.",
        );
        let _ = writeln!(o, "herald_input_budget_bytes {}", self.input_budget);
        for latency in Latency::ALL {
            histogram::render(
                o,
                latency.name(),
                latency.help(),
                latency.buckets(),
                &self.latencies[latency as usize],
                self.latency_sums[latency as usize],
            );
        }
        out
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, value: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {value}");
}

fn per_hub(o: &mut String, hubs: &[&str], name: &str, help: &str, values: &[u64]) {
    header(o, name, "counter", help);
    for (id, hub) in hubs.iter().enumerate() {
        let _ = writeln!(o, "{name}{{hub=\"{hub}\"}} {}", values[id]);
    }
}

/// One sample per reason reading can be paused for.
fn per_pause(o: &mut String, name: &str, kind: &str, help: &str, value: impl Fn(usize) -> String) {
    header(o, name, kind, help);
    for why in Pause::ALL {
        let _ = writeln!(
            o,
            "{name}{{reason=\"{}\"}} {}",
            why.name(),
            value(why.index())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_merged_shards() {
        let hubs = ["chat"];
        let a = ShardMetrics::new(hubs.len());
        let b = ShardMetrics::new(hubs.len());
        a.message_in(0);
        b.message_in(0);
        a.slow_consumer();
        a.record(Latency::Handshake, 1000);
        b.record(Latency::Handshake, 3000);
        a.input_paused(Pause::Outbound);
        a.input_resumed(Pause::Outbound, std::time::Duration::from_millis(1500));
        let mut snap = a.snapshot(vec![2], [1, 0, 0]);
        snap.merge(&b.snapshot(vec![3], [0, 2, 0]));
        let text = snap.render(&hubs, "epoll", 2, 1.0);
        assert!(
            text.contains("herald_messages_received_total{hub=\"chat\"} 2"),
            "{text}"
        );
        assert!(text.contains("herald_connections{hub=\"chat\",transport=\"websockets\"} 5"));
        assert!(text.contains("herald_slow_consumer_closes_total 1"));
        assert!(text.contains("herald_handshake_latency_seconds_count 2"));
        assert!(text.contains("herald_handshake_latency_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("herald_handshake_latency_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("herald_handshake_latency_seconds_sum 0.004000"));
        assert!(text.contains("herald_input_pauses_total{reason=\"outbound\"} 1"));
        assert!(text.contains("herald_input_paused_seconds_total{reason=\"outbound\"} 1.500000"));
        assert!(text.contains("herald_input_paused_connections{reason=\"input_budget\"} 2"));
    }
}
