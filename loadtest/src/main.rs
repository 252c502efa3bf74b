//! `herald-loadtest`: opens many client connections to a SignalR hub (or a plain WebSocket or
//! Socket.IO server) and measures connects, broadcasts, group traffic and invocation round
//! trips. Beyond what one process may hold open, it spreads connections over worker processes
//! (itself, re-run) and source addresses 127.0.0.x.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use herald_loadtest::client::Target;
use herald_loadtest::report::{Report, ServerSample};
use herald_loadtest::scenario::{self, Kind, Outcome, Phase, Plan};
use herald_loadtest::wire::{Mode, Transport};
use tokio::sync::watch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Descriptors one worker process may use for connections (the machine's hard limit is
/// 20,000 per process; some are kept for the process itself). A client that does not use
/// WebSockets takes two.
const CONNECTIONS_PER_WORKER: usize = 18_000;

/// Connections per source address (the default ephemeral port range holds about 28,000).
const SOURCE_PORTS: usize = 25_000;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Scenario {
    /// Open N connections at a rate, hold them, report connect latency and server memory.
    Connect,
    /// N connections, P of which publish numbered messages that everyone receives.
    Broadcast,
    /// G groups of K members; the first member of each group publishes to its group.
    Groups,
    /// Invocation round trips (Echo), one outstanding call per connection.
    Echo,
    /// N connections join at the connect rate; every one counts the presence messages it
    /// receives and notes when it hears the final count: messages, server CPU, settle time.
    Presence,
}

#[derive(Debug, Parser)]
#[command(
    name = "herald-loadtest",
    version,
    about = "Load generator for Herald and other WebSocket servers"
)]
struct Args {
    scenario: Scenario,
    /// Server base URL; several, comma-separated, spread the connections over the nodes of a
    /// cluster in turn (connection 0, the first publisher, on the first).
    #[arg(long, default_value = "http://127.0.0.1:5000", value_delimiter = ',')]
    url: Vec<String>,
    /// SignalR hub name.
    #[arg(long, default_value = "chat")]
    hub: String,
    /// Wire protocol: SignalR JSON or MessagePack, raw WebSocket text frames, or Socket.IO.
    #[arg(long, value_enum, default_value = "signalr-json")]
    mode: Mode,
    /// How SignalR clients connect: WebSockets, Server-Sent Events (JSON only) or long polling
    /// (other modes always use WebSockets).
    #[arg(long, value_enum, default_value = "websockets")]
    transport: Transport,
    /// WebSocket path for raw mode.
    #[arg(long, default_value = "/")]
    path: String,
    /// Access token (SignalR hubs with auth = "token").
    #[arg(long)]
    token: Option<String>,
    /// Connections in total (connect, broadcast, echo).
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// New connections per second (0 = as fast as possible).
    #[arg(long, default_value_t = 2000)]
    connect_rate: u64,
    /// Broadcast: how many connections publish.
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    /// Groups: number of groups.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Groups: members per group.
    #[arg(long, default_value_t = 100)]
    group_size: usize,
    /// Messages per second over all publishers (0 = as fast as possible).
    #[arg(long, short = 'r', default_value_t = 100)]
    rate: u64,
    /// Message text size in bytes.
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
    /// Broadcast, groups: each publisher packs this many messages into one transport message
    /// (one WebSocket message, one POST), as the official JavaScript client sends a burst of
    /// `send`s; the rate still counts messages.
    #[arg(long, default_value_t = 0)]
    burst: usize,
    /// Seconds of traffic (connect: seconds to hold the connections).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Longest wait, after traffic stops, for messages still on their way.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// The drain ends early once nothing has arrived for this many seconds.
    #[arg(long, default_value_t = 1.0)]
    drain_quiet: f64,
    /// Client threads per process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Worker processes (raised automatically above 18,000 connections per process).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Source addresses to spread connections over, e.g. 127.0.0.1,127.0.0.2 (default: one
    /// per 25,000 connections from 127.0.0.1 up when above that, as one source address has
    /// about 28,000 ephemeral ports).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// The server's process id: report its CPU time per delivered message and its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the latency histogram as an HdrHistogram log to this file.
    #[arg(long)]
    hdr_log: Option<std::path::PathBuf>,
    /// Internal: run as worker INDEX of the parent's plan (given as JSON on stdin).
    #[arg(long, hide = true)]
    worker_index: Option<usize>,
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with valid pointers.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must be http://HOST:PORT")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .context("no address")
}

fn target(args: &Args) -> anyhow::Result<Target> {
    let addrs = args
        .url
        .iter()
        .map(|u| resolve(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!addrs.is_empty(), "--url names no server");
    Ok(Target {
        addr: addrs[0],
        addrs,
        hub: args.hub.clone(),
        path: args.path.clone(),
        mode: args.mode,
        transport: if args.mode.protocol().is_some() {
            args.transport
        } else {
            Transport::WebSockets
        },
        token: args.token.clone(),
    })
}

fn plan(args: &Args) -> Plan {
    let (kind, connections) = match args.scenario {
        Scenario::Connect => (Kind::Connect, args.connections),
        Scenario::Broadcast => (Kind::Broadcast, args.connections),
        Scenario::Groups => (Kind::Groups, args.groups * args.group_size),
        Scenario::Echo => (Kind::Echo, args.connections),
        Scenario::Presence => (Kind::Presence, args.connections),
    };
    // Without WebSockets a client holds two sockets: one to receive, one to send.
    let sockets = if args.mode.protocol().is_some() && args.transport != Transport::WebSockets {
        2
    } else {
        1
    };
    let workers = args
        .workers
        .max(connections.div_ceil(CONNECTIONS_PER_WORKER / sockets))
        .max(1);
    let sources = if args.sources.is_empty() && connections * sockets > SOURCE_PORTS {
        (0..(connections * sockets).div_ceil(SOURCE_PORTS))
            .map(|i| IpAddr::from([127, 0, 0, 1 + i as u8]))
            .collect()
    } else {
        args.sources.clone()
    };
    Plan {
        kind,
        connections,
        worker: 0,
        workers,
        threads: args.threads,
        connect_rate: args.connect_rate,
        publishers: args.publishers,
        group_size: args.group_size.max(1),
        rate: args.rate,
        size: args.size,
        burst: args.burst,
        duration_secs: args.duration,
        sources,
    }
}

/// The worker side: read the plan, connect, then follow the parent's phase commands.
fn worker(index: usize, args: &Args) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut plan: Plan = serde_json::from_str(&lines.next().context("no plan")??)?;
    plan.worker = index;
    let target = target(args)?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let threads = plan.threads.max(1);
    let runner = std::thread::spawn(move || scenario::run(plan, &target, &phase_rx, &ready_tx));
    for _ in 0..threads {
        ready_rx.recv().context("a load thread failed")?;
    }
    let out = std::io::stdout();
    writeln!(out.lock(), "ready")?;
    // Report progress while following commands.
    let progress = std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let n = scenario::RECEIVED.load(Ordering::Relaxed);
            if writeln!(std::io::stdout().lock(), "progress {n}").is_err() {
                break;
            }
        }
    });
    for line in lines {
        match line?.trim() {
            "run" => phase_tx.send_replace(Phase::Running),
            "drain" => phase_tx.send_replace(Phase::Draining),
            "done" => {
                phase_tx.send_replace(Phase::Done);
                break;
            }
            _ => Phase::Connecting,
        };
    }
    phase_tx.send_replace(Phase::Done);
    let outcome = runner.join().expect("runner");
    writeln!(
        std::io::stdout().lock(),
        "result {}",
        serde_json::to_string(&outcome)?
    )?;
    drop(progress);
    Ok(())
}

/// How the parent drives its share of the run: in process, or through worker processes.
trait Driver {
    fn set(&mut self, phase: Phase);
    /// Messages received so far, over every process.
    fn received(&mut self) -> u64;
    fn finish(self: Box<Self>) -> anyhow::Result<Outcome>;
}

struct InProcess {
    phase: watch::Sender<Phase>,
    runner: std::thread::JoinHandle<Outcome>,
}

impl Driver for InProcess {
    fn set(&mut self, phase: Phase) {
        self.phase.send_replace(phase);
    }
    fn received(&mut self) -> u64 {
        scenario::RECEIVED.load(Ordering::Relaxed)
    }
    fn finish(self: Box<Self>) -> anyhow::Result<Outcome> {
        self.phase.send_replace(Phase::Done);
        Ok(self.runner.join().expect("runner"))
    }
}

struct Workers {
    children: Vec<std::process::Child>,
    progress: std::sync::Arc<Vec<std::sync::atomic::AtomicU64>>,
    results: std::sync::mpsc::Receiver<(usize, anyhow::Result<Outcome>)>,
}

impl Driver for Workers {
    fn set(&mut self, phase: Phase) {
        let cmd = match phase {
            Phase::Running => "run",
            Phase::Draining => "drain",
            Phase::Done => "done",
            Phase::Connecting => return,
        };
        for child in &mut self.children {
            if let Some(stdin) = child.stdin.as_mut() {
                let _ = writeln!(stdin, "{cmd}");
            }
        }
    }
    fn received(&mut self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum()
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<Outcome> {
        self.set(Phase::Done);
        let mut outcome = Outcome::default();
        for _ in 0..self.children.len() {
            let (i, result) = self.results.recv().context("a worker vanished")?;
            outcome.merge(&result.with_context(|| format!("worker {i}"))?);
        }
        for mut child in self.children {
            let _ = child.wait();
        }
        Ok(outcome)
    }
}

fn start_workers(plan: &Plan) -> anyhow::Result<Workers> {
    let exe = std::env::current_exe()?;
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    argv.retain(|a| a != "--json");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (result_tx, results) = std::sync::mpsc::channel();
    let progress = std::sync::Arc::new(
        (0..plan.workers)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    let mut children = Vec::new();
    for i in 0..plan.workers {
        let mut child = Command::new(&exe)
            .args(&argv)
            .args(["--worker-index", &i.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        writeln!(
            child.stdin.as_mut().unwrap(),
            "{}",
            serde_json::to_string(plan)?
        )?;
        let stdout = child.stdout.take().unwrap();
        let (ready, results, progress) = (ready_tx.clone(), result_tx.clone(), progress.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready.send(i);
                } else if let Some(n) = line.strip_prefix("progress ") {
                    progress[i].store(n.parse().unwrap_or(0), Ordering::Relaxed);
                } else if let Some(json) = line.strip_prefix("result ") {
                    let _ =
                        results.send((i, serde_json::from_str(json).map_err(anyhow::Error::from)));
                    return;
                }
            }
            let _ = results.send((i, Err(anyhow::anyhow!("worker {i} ended without a result"))));
        });
        children.push(child);
    }
    for _ in 0..plan.workers {
        ready_rx.recv().context("a worker failed to start")?;
    }
    Ok(Workers {
        children,
        progress,
        results,
    })
}

fn progress_line(phase: &str, elapsed: f64, total: f64, received: u64, rate: f64) {
    let width = 30;
    let filled = ((elapsed / total.max(0.001)).min(1.0) * width as f64) as usize;
    eprint!(
        "\r[{}{}] {phase:<8} {elapsed:5.1}/{total:.0}s  received {received:>12}  {rate:>10.0}/s ",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    raise_fd_limit();
    let result = match args.worker_index {
        Some(i) => worker(i, &args),
        None => lead(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server's largest RSS while the run lasts, sampled every 50 ms.
struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(sample) = ServerSample::read(pid) {
                    p.fetch_max(sample.rss_bytes, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        PeakRss { peak, stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The parent side: connect (itself or through workers), run, drain, report.
fn lead(args: &Args) -> anyhow::Result<()> {
    let plan = plan(args);
    let target = target(args)?;
    if matches!(plan.kind, Kind::Groups | Kind::Echo) && args.mode.protocol().is_none() {
        bail!(
            "the groups and echo scenarios need a SignalR hub (--mode signalr-json or signalr-msgpack)"
        );
    }
    if args.transport != Transport::WebSockets && args.mode.protocol().is_none() {
        bail!("--transport applies to SignalR modes only");
    }
    if args.transport == Transport::ServerSentEvents && args.mode != Mode::SignalrJson {
        bail!("Server-Sent Events carry text only: use --mode signalr-json");
    }
    let server_before_connect = args.server_pid.map(ServerSample::read).transpose()?;
    let peak = args.server_pid.map(PeakRss::start);
    let connect_started = Instant::now();
    let mut driver: Box<dyn Driver> = if plan.workers == 1 {
        let (phase, phase_rx) = watch::channel(Phase::Connecting);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let threads = plan.threads.max(1);
        let run_plan = plan.clone();
        let run_target = target.clone();
        let runner =
            std::thread::spawn(move || scenario::run(run_plan, &run_target, &phase_rx, &ready_tx));
        for _ in 0..threads {
            ready_rx.recv().context("a load thread failed")?;
        }
        Box::new(InProcess { phase, runner })
    } else {
        Box::new(start_workers(&plan)?)
    };
    let connect_secs = connect_started.elapsed().as_secs_f64();
    if !args.json {
        eprintln!(
            "connected in {connect_secs:.2}s; running {:.0}s",
            plan.duration_secs
        );
    }
    let server_start = args.server_pid.map(ServerSample::read).transpose()?;
    let run_started = Instant::now();
    let run_started_ns = herald_loadtest::wire::now_ns();
    driver.set(Phase::Running);
    let mut last = (Instant::now(), driver.received());
    while run_started.elapsed().as_secs_f64() < plan.duration_secs {
        std::thread::sleep(Duration::from_millis(250));
        let now = (Instant::now(), driver.received());
        let rate = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64();
        if !args.json {
            progress_line(
                "running",
                run_started.elapsed().as_secs_f64(),
                plan.duration_secs,
                now.1,
                rate,
            );
        }
        last = now;
    }
    driver.set(Phase::Draining);
    // Drain: wait until nothing has arrived for `--drain-quiet` seconds, at most `--drain`.
    let drain_started = Instant::now();
    let mut quiet_since = Instant::now();
    let mut seen = driver.received();
    while drain_started.elapsed().as_secs_f64() < args.drain
        && quiet_since.elapsed() < Duration::from_secs_f64(args.drain_quiet)
    {
        std::thread::sleep(Duration::from_millis(100));
        let now = driver.received();
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
        if !args.json {
            progress_line(
                "draining",
                run_started.elapsed().as_secs_f64(),
                plan.duration_secs,
                now,
                0.0,
            );
        }
    }
    let server_end = args.server_pid.map(ServerSample::read).transpose()?;
    let rss_peak = peak.map(PeakRss::stop);
    let outcome = driver.finish()?;
    if !args.json {
        eprintln!();
    }
    let report = Report::new(
        &plan,
        args.mode,
        target.transport,
        &outcome,
        connect_secs,
        run_started_ns,
        server_before_connect,
        server_start,
        server_end,
        rss_peak,
    );
    if let Some(path) = &args.hdr_log {
        report.write_hdr_log(&outcome, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
