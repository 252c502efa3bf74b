//! The scenarios, run by one process over its share of the connections: connect, broadcast,
//! groups and echo. Each thread runs a current-thread runtime with its connections; results
//! are merged into one [`Outcome`], which worker processes print as JSON for the parent.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald::protocol::{Protocol, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{Conn, Reader, Target, Writer};
use crate::stats::{Buckets, Sequence, histogram};
use crate::wire::{self, Incoming, Mode, Stamp};

/// Messages received by this process so far, for the progress line.
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Connect,
    Broadcast,
    Groups,
    Echo,
    Presence,
}

/// Everything a process needs to run its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub kind: Kind,
    /// Total connections over all processes.
    pub connections: usize,
    /// This process takes connections `i` with `i % workers == worker`.
    pub worker: usize,
    pub workers: usize,
    pub threads: usize,
    /// New connections per second over all processes (0 = as fast as possible).
    pub connect_rate: u64,
    /// Broadcast: how many of the connections publish.
    pub publishers: usize,
    /// Groups: members per group (the first member of each group publishes).
    pub group_size: usize,
    /// Messages per second over all publishers (0 = as fast as possible).
    pub rate: u64,
    pub size: usize,
    /// Messages each publisher packs into one transport message (one WebSocket message, one
    /// POST), as the official JavaScript client sends a burst; 0 or 1: one each.
    pub burst: usize,
    pub duration_secs: f64,
    /// Source addresses to spread connections over (empty: the system's choice).
    pub sources: Vec<IpAddr>,
}

impl Plan {
    fn mine(&self) -> Vec<usize> {
        (0..self.connections)
            .filter(|i| i % self.workers == self.worker)
            .collect()
    }

    fn publishers_total(&self) -> usize {
        match self.kind {
            Kind::Broadcast => self.publishers.min(self.connections),
            Kind::Groups => self.connections.div_ceil(self.group_size.max(1)),
            _ => 0,
        }
    }

    /// The publisher id connection `i` publishes as, if any.
    fn publisher_of(&self, i: usize) -> Option<u32> {
        match self.kind {
            Kind::Broadcast if i < self.publishers => Some(i as u32),
            Kind::Groups if i.is_multiple_of(self.group_size) => Some((i / self.group_size) as u32),
            _ => None,
        }
    }

    /// The publishers whose messages connection `i` should receive.
    fn expected_by(&self, i: usize) -> Vec<u32> {
        match self.kind {
            Kind::Broadcast => (0..self.publishers_total() as u32).collect(),
            Kind::Groups => vec![(i / self.group_size) as u32],
            _ => Vec::new(),
        }
    }
}

/// What one process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub attempted: u64,
    pub connected: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub connect_latency: Buckets,
    /// Messages each publisher of this process sent.
    pub published: BTreeMap<u32, u64>,
    /// For each publisher, how many connections of this process should receive it.
    pub receivers: BTreeMap<u32, u64>,
    /// For each publisher, distinct messages received from it (summed over receivers).
    pub unique: BTreeMap<u32, u64>,
    pub duplicates: u64,
    pub reordered: u64,
    /// Messages received that carried no valid stamp, or stamps of unknown publishers.
    pub strays: u64,
    pub latency: Buckets,
    /// Connections the server closed (or that failed) during the run.
    pub dropped: u64,
    pub first_receive_ns: u64,
    pub last_receive_ns: u64,
    pub echo_rtt: Buckets,
    pub errors: BTreeMap<String, u64>,
    /// Presence: messages received (joined, left, presence), connections that heard the
    /// final count (every connection), and when the last of them did; when the last
    /// connection was up.
    pub presence_messages: u64,
    pub presence_settled: u64,
    pub presence_settled_ns: u64,
    pub last_connect_ns: u64,
}

impl Outcome {
    pub fn merge(&mut self, other: &Outcome) {
        let add = |a: &mut BTreeMap<u32, u64>, b: &BTreeMap<u32, u64>| {
            for (k, v) in b {
                *a.entry(*k).or_default() += v;
            }
        };
        let add_s = |a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            for (k, v) in b {
                *a.entry(k.clone()).or_default() += v;
            }
        };
        self.attempted += other.attempted;
        self.connected += other.connected;
        add_s(&mut self.connect_errors, &other.connect_errors);
        add_s(&mut self.errors, &other.errors);
        add(&mut self.published, &other.published);
        add(&mut self.receivers, &other.receivers);
        add(&mut self.unique, &other.unique);
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.strays += other.strays;
        self.dropped += other.dropped;
        for (mine, theirs) in [
            (&mut self.connect_latency, &other.connect_latency),
            (&mut self.latency, &other.latency),
            (&mut self.echo_rtt, &other.echo_rtt),
        ] {
            let mut h = histogram();
            mine.add_to(&mut h);
            theirs.add_to(&mut h);
            *mine = Buckets::of(&h);
        }
        if other.first_receive_ns != 0
            && (self.first_receive_ns == 0 || other.first_receive_ns < self.first_receive_ns)
        {
            self.first_receive_ns = other.first_receive_ns;
        }
        self.last_receive_ns = self.last_receive_ns.max(other.last_receive_ns);
        self.presence_messages += other.presence_messages;
        self.presence_settled += other.presence_settled;
        self.presence_settled_ns = self.presence_settled_ns.max(other.presence_settled_ns);
        self.last_connect_ns = self.last_connect_ns.max(other.last_connect_ns);
    }

    /// Messages that should have arrived: each publisher's count times its receivers.
    pub fn expected(&self) -> u64 {
        self.published
            .iter()
            .map(|(p, n)| n * self.receivers.get(p).copied().unwrap_or(0))
            .sum()
    }

    pub fn received(&self) -> u64 {
        self.unique.values().sum()
    }
}

/// Signals from the parent (or the in-process driver) to the connection tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Connecting,
    Running,
    Draining,
    Done,
}

/// One thread's shared counters.
struct ThreadStats {
    outcome: Outcome,
    /// Reader, publisher and echo tasks still running; the thread reports once all ended.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connect_latency: Histogram<u64>,
    latency: Histogram<u64>,
    echo_rtt: Histogram<u64>,
}

impl ThreadStats {
    fn new() -> ThreadStats {
        ThreadStats {
            outcome: Outcome::default(),
            tasks: Vec::new(),
            connect_latency: histogram(),
            latency: histogram(),
            echo_rtt: histogram(),
        }
    }

    fn error(map: &mut BTreeMap<String, u64>, e: impl std::fmt::Display) {
        let key = e.to_string();
        let key: String = key.chars().take(80).collect();
        *map.entry(key).or_default() += 1;
    }
}

/// Runs this process's share of `plan`. `phase` drives it: connections are opened at once,
/// `ready` is sent when all are up (or failed); publishing starts when the phase becomes
/// `Running` and stops at `Draining`; connections close at `Done`.
pub fn run(
    plan: Plan,
    target: &Target,
    phase: &watch::Receiver<Phase>,
    ready: &std::sync::mpsc::Sender<()>,
) -> Outcome {
    let mine = plan.mine();
    let threads = plan.threads.max(1);
    let plan = Arc::new(plan);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let conns: Vec<usize> = mine.iter().copied().skip(t).step_by(threads).collect();
            let plan = plan.clone();
            let target = target.clone();
            let phase = phase.clone();
            let ready = ready.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, run_thread(plan, target, conns, phase, ready, threads))
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for h in handles {
        outcome.merge(&h.join().expect("load thread"));
    }
    outcome
}

async fn run_thread(
    plan: Arc<Plan>,
    target: Target,
    conns: Vec<usize>,
    phase: watch::Receiver<Phase>,
    ready: std::sync::mpsc::Sender<()>,
    threads: usize,
) -> Outcome {
    let stats = Rc::new(RefCell::new(ThreadStats::new()));
    // Pace connects: this thread's share of the global rate.
    let share = (plan.workers * threads) as f64;
    let interval = if plan.connect_rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(share / plan.connect_rate as f64)
    };
    let started = Instant::now();
    let mut pending = Vec::new();
    for (n, &i) in conns.iter().enumerate() {
        if !interval.is_zero() {
            let due = started + interval * n as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let source = (!plan.sources.is_empty()).then(|| plan.sources[i % plan.sources.len()]);
        let task = tokio::task::spawn_local(connection(
            plan.clone(),
            target.for_connection(i),
            i,
            source,
            stats.clone(),
            phase.clone(),
        ));
        pending.push(task);
        // Keep the number of handshakes in flight bounded.
        if pending.len() >= 256 {
            let first = pending.remove(0);
            let _ = first.await;
        }
    }
    for task in pending {
        let _ = task.await;
    }
    let _ = ready.send(());
    let mut phase = phase;
    let _ = phase.wait_for(|p| *p == Phase::Done).await;
    // Every task records its counts as it ends.
    let tasks = std::mem::take(&mut stats.borrow_mut().tasks);
    for task in tasks {
        let _ = task.await;
    }
    let mut s = stats.borrow_mut();
    let ThreadStats {
        outcome,
        tasks: _,
        connect_latency,
        latency,
        echo_rtt,
    } = &mut *s;
    outcome.connect_latency = Buckets::of(connect_latency);
    outcome.latency = Buckets::of(latency);
    outcome.echo_rtt = Buckets::of(echo_rtt);
    std::mem::take(outcome)
}

/// Opens connection `i`, records the connect latency, then starts its reader and (if it
/// publishes or echoes) its writer in their own tasks; returns once the connection is up.
async fn connection(
    plan: Arc<Plan>,
    target: Target,
    i: usize,
    source: Option<IpAddr>,
    stats: Rc<RefCell<ThreadStats>>,
    phase: watch::Receiver<Phase>,
) {
    stats.borrow_mut().outcome.attempted += 1;
    let t0 = Instant::now();
    let conn = match Conn::open(&target, source).await {
        Ok(conn) => conn,
        Err(e) => {
            ThreadStats::error(&mut stats.borrow_mut().outcome.connect_errors, e);
            return;
        }
    };
    {
        let mut s = stats.borrow_mut();
        s.outcome.connected += 1;
        s.outcome.last_connect_ns = s.outcome.last_connect_ns.max(wire::now_ns());
        let _ = s
            .connect_latency
            .record((t0.elapsed().as_micros() as u64).max(1));
        for p in plan.expected_by(i) {
            *s.outcome.receivers.entry(p).or_default() += 1;
        }
    }
    let (reader, mut writer) = conn.split();
    // SignalR groups: join before anything is published.
    if plan.kind == Kind::Groups {
        let group = format!("g{}", i / plan.group_size);
        let protocol = writer.protocol().unwrap_or(Protocol::Json);
        let join = wire::signalr_send(protocol, "JoinGroup", vec![Value::Str(group)]);
        if let Err(e) = writer.send(&join).await {
            ThreadStats::error(&mut stats.borrow_mut().outcome.errors, e);
        }
    }
    let mut tasks = Vec::new();
    if plan.kind == Kind::Echo {
        tasks.push(tokio::task::spawn_local(echo(
            plan,
            reader,
            writer,
            stats.clone(),
            phase,
        )));
    } else {
        let publisher = plan.publisher_of(i);
        tasks.push(tokio::task::spawn_local(receive(
            plan.clone(),
            reader,
            stats.clone(),
            phase.clone(),
        )));
        match publisher {
            Some(id) => {
                tasks.push(tokio::task::spawn_local(publish(
                    plan,
                    writer,
                    id,
                    stats.clone(),
                    phase,
                )));
            }
            None => {
                tasks.push(tokio::task::spawn_local(async move {
                    let mut writer = writer;
                    keep_alive(&mut writer, phase, Phase::Done).await;
                }));
            }
        }
    }
    stats.borrow_mut().tasks.extend(tasks);
}

/// Receives and counts test messages until the run is done.
async fn receive(
    plan: Arc<Plan>,
    mut reader: Reader,
    stats: Rc<RefCell<ThreadStats>>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut sequences: HashMap<u32, Sequence> = HashMap::new();
    let known = plan.publishers_total() as u32;
    let mut settled = false;
    let mut records = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p == Phase::Done) => break,
            r = reader.next(&mut records) => r,
        };
        if let Err(e) = next {
            // The run's end closes connections from this side; an error then is not a drop.
            if *phase.borrow() != Phase::Done {
                let mut s = stats.borrow_mut();
                s.outcome.dropped += 1;
                ThreadStats::error(&mut s.outcome.errors, e);
            }
            break;
        }
        let now = wire::now_ns();
        let mut s = stats.borrow_mut();
        let mut data = 0;
        for record in records.drain(..) {
            match record {
                Incoming::Data(Stamp {
                    publisher,
                    seq,
                    sent_ns,
                }) if publisher < known => {
                    sequences.entry(publisher).or_default().observe(seq);
                    let _ = s
                        .latency
                        .record((now.saturating_sub(sent_ns) / 1000).max(1));
                    data += 1;
                }
                Incoming::Data(_) => s.outcome.strays += 1,
                Incoming::Presence { count } => {
                    s.outcome.presence_messages += 1;
                    data += 1;
                    if count == Some(plan.connections as i64) && !settled {
                        settled = true;
                        s.outcome.presence_settled += 1;
                        s.outcome.presence_settled_ns = s.outcome.presence_settled_ns.max(now);
                    }
                }
                Incoming::Closed(reason) => {
                    ThreadStats::error(
                        &mut s.outcome.errors,
                        format!("server closed: {}", reason.unwrap_or_default()),
                    );
                }
                _ => {}
            }
        }
        if data > 0 {
            RECEIVED.fetch_add(data, Ordering::Relaxed);
            if s.outcome.first_receive_ns == 0 {
                s.outcome.first_receive_ns = now;
            }
            s.outcome.last_receive_ns = now;
        }
    }
    let mut s = stats.borrow_mut();
    for (p, seq) in sequences {
        *s.outcome.unique.entry(p).or_default() += seq.unique;
        s.outcome.duplicates += seq.duplicates;
        s.outcome.reordered += seq.reordered;
    }
}

/// Encodes test message `seq` of publisher `id` for the server's protocol.
fn encode(plan: &Plan, mode: Mode, id: u32, seq: u64, out: &mut Vec<u8>) {
    let text = Stamp {
        publisher: id,
        seq,
        sent_ns: wire::now_ns(),
    }
    .text(plan.size);
    match (mode.protocol(), plan.kind) {
        (Some(protocol), Kind::Groups) => out.extend(wire::signalr_send(
            protocol,
            "SendToGroup",
            vec![
                Value::Str(format!("g{id}")),
                Value::from("lt"),
                Value::Str(text),
            ],
        )),
        (Some(protocol), _) => out.extend(wire::signalr_send(
            protocol,
            "Send",
            vec![Value::from("lt"), Value::Str(text)],
        )),
        (None, _) if mode == Mode::Socketio => out.extend(wire::socketio_emit(&text).into_bytes()),
        (None, _) => out.extend(text.into_bytes()),
    }
}

/// How often an otherwise silent SignalR client pings, as the official clients do (the
/// server closes clients it has not heard from within its client timeout).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Sends pings, where the transport needs them, until the run reaches `until`.
async fn keep_alive(writer: &mut Writer, mut phase: watch::Receiver<Phase>, until: Phase) {
    let ping = writer.keep_alive_payload();
    loop {
        tokio::select! {
            _ = phase.wait_for(|p| *p >= until) => return,
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if let Some(ping) = &ping
                    && writer.send(ping).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Most bytes one write (or one long-polling `POST`) carries, each message in its own frame
/// (bursts aside).
const BATCH_BYTES: usize = 256 * 1024;

/// Publishes numbered messages at this publisher's share of the rate while running.
async fn publish(
    plan: Arc<Plan>,
    mut writer: Writer,
    id: u32,
    stats: Rc<RefCell<ThreadStats>>,
    phase: watch::Receiver<Phase>,
) {
    keep_alive(&mut writer, phase.clone(), Phase::Running).await;
    let per_second = plan.rate as f64 / plan.publishers_total().max(1) as f64;
    let start = Instant::now();
    let mut seq = 0u64;
    let mut batch = Vec::new();
    let mut frame = Vec::new();
    while *phase.borrow() == Phase::Running {
        let due = if plan.rate == 0 {
            seq + 16
        } else {
            (start.elapsed().as_secs_f64() * per_second) as u64
        };
        if due <= seq {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        if plan.burst > 1 {
            // A burst: `burst` messages in one transport message, once all are due.
            if due < seq + plan.burst as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            frame.clear();
            for _ in 0..plan.burst {
                encode(&plan, writer.mode, id, seq, &mut frame);
                seq += 1;
            }
            if let Err(e) = writer.send(&frame).await {
                ThreadStats::error(&mut stats.borrow_mut().outcome.errors, e);
                break;
            }
            continue;
        }
        batch.clear();
        // One write carries every message due, each in its own frame.
        let until = due.min(seq + 1024);
        while seq < until && batch.len() < BATCH_BYTES {
            frame.clear();
            encode(&plan, writer.mode, id, seq, &mut frame);
            writer.frame_into(&frame, &mut batch);
            seq += 1;
        }
        if let Err(e) = writer.write_framed(&batch).await {
            ThreadStats::error(&mut stats.borrow_mut().outcome.errors, e);
            break;
        }
        if plan.rate == 0 {
            tokio::task::yield_now().await;
        }
    }
    stats.borrow_mut().outcome.published.insert(id, seq);
    keep_alive(&mut writer, phase, Phase::Done).await;
}

/// Invokes Echo in a loop, one call outstanding, measuring round trips.
async fn echo(
    plan: Arc<Plan>,
    mut reader: Reader,
    mut writer: Writer,
    stats: Rc<RefCell<ThreadStats>>,
    mut phase: watch::Receiver<Phase>,
) {
    keep_alive(&mut writer, phase.clone(), Phase::Running).await;
    let text = "x".repeat(plan.size);
    let protocol = writer.protocol().unwrap_or(Protocol::Json);
    let mut n = 0u64;
    let mut records = Vec::new();
    while *phase.borrow() == Phase::Running {
        n += 1;
        let id = n.to_string();
        let t0 = Instant::now();
        if let Err(e) = writer
            .send(&wire::signalr_invoke(
                protocol,
                &id,
                "Echo",
                vec![Value::from(text.as_str())],
            ))
            .await
        {
            ThreadStats::error(&mut stats.borrow_mut().outcome.errors, e);
            break;
        }
        let done = loop {
            records.clear();
            if let Err(e) = reader.next(&mut records).await {
                ThreadStats::error(&mut stats.borrow_mut().outcome.errors, e);
                break false;
            }
            if records
                .iter()
                .any(|r| matches!(r, Incoming::Completion { id: got, .. } if *got == id))
            {
                break true;
            }
        };
        if !done {
            stats.borrow_mut().outcome.dropped += 1;
            break;
        }
        let _ = stats
            .borrow_mut()
            .echo_rtt
            .record((t0.elapsed().as_micros() as u64).max(1));
        RECEIVED.fetch_add(1, Ordering::Relaxed);
    }
    let _ = phase.wait_for(|p| *p == Phase::Done).await;
}
