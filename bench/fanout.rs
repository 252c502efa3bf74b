//! Fan-out: publish → encode once → enqueue to 10,000 connections spread over the shards →
//! every queue drained by the real writer into a sink. The clock stops only when every
//! connection has written every message, so the figure is the whole user-space cost of a
//! delivery (the kernel's send is what a sink leaves out).
//!
//! The figure reported is the CPU time the shard threads spent (read from their thread CPU
//! clocks), not wall time: on a small machine the benchmark's own thread competes for cores,
//! and CPU per delivery is what does not depend on it.
//!
//! `cargo bench --bench fanout`; results and how to read them are in bench/RESULTS.md.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_utils::CachePadded;
use herald::config::Config;
use herald::hub::{
    Connection, ConnectionId, Node, Outgoing, Publish, Shard, ShardMsg, Target, TransportKind,
};
use herald::protocol::{Protocol, Value};
use herald::transport::writer::poll_write_queue;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 10_000;
const SHARDS: usize = 2;

/// Shard threads holding `CONNECTIONS` in-memory connections, each with a writer task that
/// drains its queue into `tokio::io::sink()` and counts what it wrote.
struct Rig {
    node: Arc<Node>,
    written: Arc<Vec<CachePadded<AtomicU64>>>,
    runtime: tokio::runtime::Runtime,
    /// The CPU clock of each shard thread.
    clocks: Vec<libc::clockid_t>,
}

impl Rig {
    fn new() -> Rig {
        let config = Config::from_toml("[hubs.bench]\npresence = false\n").unwrap();
        let node = Node::new(config, SHARDS, "bench");
        let written: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
            (0..SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for s in 0..SHARDS {
            let node = node.clone();
            let written = written.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                let mut clock: libc::clockid_t = 0;
                // SAFETY: pthread_self is always valid; the clock id is written to `clock`.
                unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &raw mut clock) };
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let shard = Shard::new(s, node.clone());
                    tokio::task::spawn_local(shard.clone().run_inbox());
                    let cap = node.config.connections.outbound_queue_bytes;
                    for _ in 0..CONNECTIONS / SHARDS {
                        let conn = Rc::new(Connection::new(
                            ConnectionId::random(),
                            0,
                            None,
                            TransportKind::WebSockets,
                            cap,
                        ));
                        shard.attach(conn.clone());
                        shard.open(&conn, Protocol::Json).await;
                        tokio::task::spawn_local(writer(shard.clone(), conn, written.clone()));
                    }
                    ready.send(clock).unwrap();
                    std::future::pending::<()>().await;
                });
            });
        }
        let clocks = (0..SHARDS).map(|_| ready_rx.recv().unwrap()).collect();
        Rig {
            node,
            written,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            clocks,
        }
    }

    /// CPU time the shard threads have used so far.
    fn shard_cpu(&self) -> Duration {
        self.clocks
            .iter()
            .map(|clock| {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `clock` is a valid thread CPU clock of a live shard thread.
                unsafe { libc::clock_gettime(*clock, &raw mut ts) };
                Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
            })
            .sum()
    }

    fn total(&self) -> u64 {
        self.written.iter().map(|c| c.load(Ordering::Acquire)).sum()
    }

    /// Publishes `burst` broadcasts (64-byte payloads) through every shard's inbox, then waits
    /// until every connection has written all of them.
    fn round(&self, burst: usize) {
        let target = self.total() + (burst * CONNECTIONS) as u64;
        self.runtime.block_on(async {
            for _ in 0..burst {
                let publish = Arc::new(Publish {
                    hub: 0,
                    target: Target::All,
                    excluded: Vec::new(),
                    message: Outgoing::new(
                        "broadcastMessage".into(),
                        vec![Value::from("bench"), Value::from("x".repeat(20))],
                    ),
                    created: Instant::now(),
                });
                for s in 0..SHARDS {
                    self.node
                        .inbox(s)
                        .send(ShardMsg::Publish(publish.clone()))
                        .await;
                }
            }
        });
        while self.total() < target {
            std::thread::yield_now();
        }
    }
}

async fn writer(shard: Rc<Shard>, conn: Rc<Connection>, written: Arc<Vec<CachePadded<AtomicU64>>>) {
    let mut sink = tokio::io::sink();
    loop {
        let mut n = 0;
        poll_fn(
            |cx| match poll_write_queue(cx, &shard, &conn, &mut sink, &mut n) {
                Poll::Ready(_) if n > 0 => Poll::Ready(()),
                _ => {
                    conn.register(cx.waker());
                    Poll::Pending
                }
            },
        )
        .await;
        written[shard.id].fetch_add(n as u64, Ordering::Release);
    }
}

fn fanout(c: &mut Criterion) {
    let rig = Rig::new();
    let mut group = c.benchmark_group("fanout_10k_shard_cpu");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for burst in [1usize, 16] {
        group.throughput(Throughput::Elements((burst * CONNECTIONS) as u64));
        group.bench_function(format!("burst_{burst}"), |b| {
            b.iter_custom(|iters| {
                let start = rig.shard_cpu();
                for _ in 0..iters {
                    rig.round(burst);
                }
                rig.shard_cpu().checked_sub(start).unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
