//! The runtime: Herald's composition root and its shard threads. [`serve`] builds, in order,
//! the I/O backend, the listeners, TLS, the backplane (`local` or `redis`), the node that
//! holds hub state, the control runtime and the shard threads, and owns them until shutdown.
//! Each shard thread has its own single-threaded runtime and its own `SO_REUSEPORT` listener on
//! the one address, on one of two I/O backends chosen at start-up.
//!
//! Both backends run the same code: the only thing that differs is how a shard accepts a
//! socket, and what type that socket is ([`Acceptor`]). Everything above works on any
//! `AsyncRead + AsyncWrite`.

pub mod systemd;
pub(crate) mod uring;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backplane::Cluster;
use crate::config::{BackplaneKind, Config, IoMode};
use crate::fault::CloseReason;
use crate::hub::backplane::{Backplane, Local};
use crate::hub::{Hubs, Node, Shard};
use crate::metrics::TlsFailure;
use crate::transport::http;
use crate::transport::tls::Tls;

/// The I/O backend of every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring through tokio-uring.
    Uring,
    /// epoll through a current-thread tokio runtime.
    Epoll,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }

    /// Resolves `auto` by probing io_uring: kernels without it and container seccomp profiles
    /// that refuse `io_uring_setup` make the probe fail, and Herald falls back to epoll.
    pub fn choose(mode: IoMode) -> anyhow::Result<Backend> {
        match mode {
            IoMode::Epoll => Ok(Backend::Epoll),
            IoMode::Uring => match probe_uring() {
                Ok(()) => Ok(Backend::Uring),
                Err(e) => bail!("--io uring was requested but io_uring is unavailable: {e}"),
            },
            IoMode::Auto => match (AUTO_PREFERS, probe_uring()) {
                (Backend::Uring, Ok(())) => {
                    tracing::info!("io_uring is available; using it (io=auto)");
                    Ok(Backend::Uring)
                }
                (Backend::Uring, Err(e)) => {
                    tracing::info!(
                        "io_uring is unavailable ({e}); falling back to epoll (io=auto)"
                    );
                    Ok(Backend::Epoll)
                }
                (Backend::Epoll, probe) => {
                    let uring = match probe {
                        Ok(()) => "available".to_string(),
                        Err(e) => format!("unavailable: {e}"),
                    };
                    tracing::info!(
                        "io=auto: using epoll, measured faster than io_uring here \
                         (bench/RESULTS.md); io_uring is {uring} (--io uring to use it)"
                    );
                    Ok(Backend::Epoll)
                }
            },
        }
    }
}

/// What `--io auto` picks when io_uring is available: the backend the load test measured
/// faster on the machines Herald is developed on (bench/RESULTS.md, "io_uring or epoll"):
/// epoll delivered more at saturation with lower latency and used less memory per
/// connection, while the two tied at low rates.
const AUTO_PREFERS: Backend = Backend::Epoll;

/// Builds (and drops) an io_uring runtime. `tokio_uring::start` would panic where io_uring is
/// refused, so the fallible constructor is used.
fn probe_uring() -> io::Result<()> {
    tokio_uring::Runtime::new(&tokio_uring::builder()).map(drop)
}

/// How a shard takes new sockets; the one place the backends differ.
pub trait Acceptor: 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>>;
    /// Resolves once the peer has sent something (or the socket has failed), without reading
    /// it: until then a connection holds no HTTP buffers (about 16 KiB), so sockets opened and
    /// left silent — speculative browser connections, or a flood of them — cost little.
    fn first_data(io: &mut Self::Io) -> impl Future<Output = ()>;
    /// Stops accepting: pending accepts fail and the listening socket stops taking connections.
    fn stop(&self);
}

struct EpollAcceptor(tokio::net::TcpListener);

impl Acceptor for EpollAcceptor {
    type Io = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn first_data(io: &mut Self::Io) {
        // A peek, not `readable()`: a new socket may report itself readable before anything
        // has arrived, and a peek clears that and waits again.
        let _ = io.peek(&mut [0u8; 1]).await;
    }

    fn stop(&self) {
        shutdown_listener(self.0.as_raw_fd());
    }
}

struct UringAcceptor {
    listener: tokio_uring::net::TcpListener,
    fd: RawFd,
}

impl Acceptor for UringAcceptor {
    type Io = uring::LocalSend<uring::UringIo>;

    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(uring::LocalSend::new(uring::UringIo::new(stream)))
    }

    /// io_uring reads are completions, not readiness: the first read goes into the socket's
    /// own small buffer (`uring::READ_MIN`) and waits there for HTTP to take it.
    async fn first_data(io: &mut Self::Io) {
        io.get_mut().first_data().await;
    }

    fn stop(&self) {
        shutdown_listener(self.fd);
    }
}

/// `shutdown(2)` on a listening socket fails its pending accepts (an in-flight io_uring accept
/// would otherwise keep taking connections after the listener is dropped).
fn shutdown_listener(fd: RawFd) {
    // SAFETY: `fd` is a listening socket owned by the caller for the duration of the call.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Binds one `SO_REUSEPORT` listener per shard on `addr`. A first, plain bind finds the port
/// (for port 0) and fails if another process holds it: with `SO_REUSEPORT` alone, a second
/// server would silently share the port instead.
pub fn bind(addr: SocketAddr, shards: usize, backlog: u32) -> anyhow::Result<Vec<StdListener>> {
    let probe = StdListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let addr = probe.local_addr()?;
    drop(probe);
    (0..shards)
        .map(|_| {
            let domain = socket2::Domain::for_address(addr);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(backlog.min(i32::MAX as u32) as i32)?;
            Ok(socket.into())
        })
        .collect::<io::Result<Vec<StdListener>>>()
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully (a second signal cuts the drain
/// short). Prints the listening line once every shard is ready, and tells systemd (see
/// [`systemd`]).
pub fn serve(config: Config) -> anyhow::Result<()> {
    let backend = Backend::choose(config.server.io)?;
    let shards = match config.server.shards {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let listeners = bind(config.listen_addr()?, shards, config.server.listen_backlog)?;
    let addr = listeners[0].local_addr()?;
    let mut internal = config.internal_addr()?.map(bind_internal).transpose()?;
    let internal_addr = internal.as_ref().map(StdListener::local_addr).transpose()?;
    let drain = Duration::from_millis(config.server.shutdown_drain_ms);
    if config.auth.access_key == crate::config::DEVELOPMENT_ACCESS_KEY {
        tracing::warn!(
            "auth.access_key is the public development key; set HERALD_AUTH_ACCESS_KEY before exposing Herald"
        );
    }
    let tls = if config.server.tls.enabled() {
        Some(Arc::new(
            Tls::new(&config.server.tls).map_err(crate::transport::tls::io_error)?,
        ))
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let redis = redis_backplane(&config);
    let backplane: Arc<dyn Backplane> = match &redis {
        Some(cluster) => cluster.clone(),
        None => Arc::new(Local),
    };
    let node = Node::with_backplane(config, shards, backend.name(), backplane);
    // The control runtime: work that is not per connection (periodic presence, the Redis
    // backplane). It never runs a shard's work, and a shard never waits for it.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("herald-control")
        .enable_all()
        .build()?;
    crate::hub::presence::start(&node, control.handle());
    if let Some(cluster) = &redis {
        crate::backplane::start(cluster, &node, control.handle());
        tracing::info!(node = %cluster.name, redis = ?cluster.config.redis_urls, partitions = cluster.config.partitions, "backplane: redis");
    }

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut sigterm, mut sigint, mut sighup) = signals.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut threads = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let node = node.clone();
        let tls = tls.clone();
        let ready = ready_tx.clone();
        let exit = ExitGuard(exit_tx.clone(), id);
        // Shard 0 serves the internal listener too: a scrape or a probe is little work.
        let internal = internal.take();
        threads.push(
            std::thread::Builder::new()
                .name(format!("herald-shard-{id}"))
                .spawn(move || {
                    let _exit = exit;
                    if let Err(e) = run_thread(backend, node, tls, id, listener, internal, &ready) {
                        let _ = ready.send(Err(format!("shard {id}: {e:#}")));
                    }
                })?,
        );
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                node.begin_shutdown();
                bail!("{e}");
            }
            Err(_) => bail!("a shard thread ended during start-up"),
        }
    }
    let internal_note = internal_addr
        .map(|a| format!(", internal=http://{a}"))
        .unwrap_or_default();
    println!(
        "herald listening on {scheme}://{addr} (io={}, shards={shards}{internal_note})",
        backend.name()
    );
    let _ = io::stdout().flush();
    tracing::info!(%addr, io = backend.name(), shards, "herald is serving");
    let notifier = systemd::Notifier::from_env().map(Arc::new);
    if let Some(notifier) = &notifier {
        notifier.notify(&format!(
            "READY=1\nSTATUS=Serving on {scheme}://{addr} (io={}, shards={shards}{internal_note})",
            backend.name()
        ));
        if let Some(every) = systemd::watchdog_from_env() {
            control.spawn(systemd::watchdog(node.clone(), notifier.clone(), every));
        }
    }

    let unexpected = signals.block_on(async {
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); return None }
                _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); return None }
                _ = sighup.recv() => match tls.as_deref().map(Tls::reload) {
                    Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Some(Err(e)) => tracing::error!("SIGHUP: TLS reload failed, the certificate in use stays: {e}"),
                    None => tracing::info!("SIGHUP: nothing to reload (no TLS configured)"),
                },
                id = exit_rx.recv() => return id,
            }
        }
    });
    node.begin_shutdown();
    if let Some(notifier) = &notifier {
        notifier.notify(&format!(
            "STOPPING=1\nSTATUS=Draining connections (up to {} ms)",
            drain.as_millis()
        ));
    }
    node.backplane.goodbye();
    let deadline = Instant::now() + drain + Duration::from_secs(2);
    let running = shards - usize::from(unexpected.is_some());
    let second = signals.block_on(drained(
        &mut exit_rx,
        running,
        deadline,
        &mut sigterm,
        &mut sigint,
    ));
    if let Some((name, number)) = second {
        tracing::warn!("second {name} during the drain: exiting at once");
        std::process::exit(128 + number);
    }
    for thread in threads {
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
    // Give the backplane a moment to hand what is queued (the goodbye above all) on.
    node.backplane
        .flush(Instant::now() + Duration::from_secs(1));
    control.shutdown_timeout(Duration::from_millis(100));
    if let Some(id) = unexpected {
        bail!("shard {id} stopped unexpectedly");
    }
    tracing::info!("herald stopped");
    Ok(())
}

/// Waits until `running` shard threads have ended or `deadline` passes. A second SIGTERM or
/// SIGINT ends the wait: an operator who asks twice wants the process gone now, not after the
/// drain (`serve` then exits with 128 + the signal's number, as a shell reports a process
/// killed by it: 143 or 130).
async fn drained(
    exits: &mut tokio::sync::mpsc::UnboundedReceiver<usize>,
    mut running: usize,
    deadline: Instant,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Option<(&'static str, i32)> {
    let timeout = tokio::time::sleep_until(deadline.into());
    tokio::pin!(timeout);
    while running > 0 {
        tokio::select! {
            _ = sigterm.recv() => return Some(("SIGTERM", libc::SIGTERM)),
            _ = sigint.recv() => return Some(("SIGINT", libc::SIGINT)),
            exit = exits.recv() => match exit {
                Some(_) => running -= 1,
                None => break,
            },
            () = &mut timeout => break,
        }
    }
    None
}

/// Tells the main thread when a shard thread ends, however it ends.
struct ExitGuard(tokio::sync::mpsc::UnboundedSender<usize>, usize);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// The `redis` backplane when the configuration asks for it (`None`: the `local` one).
fn redis_backplane(config: &Config) -> Option<Arc<Cluster>> {
    match config.cluster.backplane {
        BackplaneKind::Local => None,
        BackplaneKind::Redis => Some(Arc::new(Cluster::new(
            &config.cluster,
            &Hubs::from_config(config),
            // A token's clock starts at negotiate, before its connection ends: this bounds it.
            crate::transport::negotiate::token_lifetime(&config.connections)
                + Duration::from_secs(1),
        ))),
    }
}

fn run_thread(
    backend: Backend,
    node: Arc<Node>,
    tls: Option<Arc<Tls>>,
    id: usize,
    listener: StdListener,
    internal: Option<StdListener>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> anyhow::Result<()> {
    match backend {
        Backend::Epoll => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let _ = ready.send(Ok(()));
                run_shard(node, tls, id, EpollAcceptor(listener), internal).await;
                Ok(())
            })
        }
        Backend::Uring => {
            let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(4096))?;
            rt.block_on(async {
                let fd = listener.as_raw_fd();
                let listener = tokio_uring::net::TcpListener::from_std(listener);
                let _ = ready.send(Ok(()));
                run_shard(node, tls, id, UringAcceptor { listener, fd }, internal).await;
                Ok(())
            })
        }
    }
}

/// One shard's life: accept until shutdown, then close every connection with
/// `allowReconnect` and wait (up to the drain time) for them to finish.
async fn run_shard<A: Acceptor>(
    node: Arc<Node>,
    tls: Option<Arc<Tls>>,
    id: usize,
    acceptor: A,
    internal: Option<StdListener>,
) {
    let shard = Shard::new(id, node.clone());
    tokio::task::spawn_local(shard.clone().run_inbox());
    tokio::task::spawn_local(shard.clone().run_housekeeping());
    if let Some(listener) = internal {
        tokio::task::spawn_local(run_internal(shard.clone(), listener));
    }
    let shutdown = node.shutdown_signal();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.accept() => match accepted {
                Ok(io) => {
                    backoff = Duration::from_millis(5);
                    tokio::task::spawn_local(serve_socket::<A>(shard.clone(), tls.clone(), io));
                }
                Err(e) => {
                    // Out of descriptors or memory: wait instead of spinning.
                    tracing::warn!(shard = id, error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    acceptor.stop();
    drain_shard(
        &shard,
        Duration::from_millis(node.config.server.shutdown_drain_ms),
    )
    .await;
}

/// Binds the internal listener (`server.internal_listen`).
fn bind_internal(addr: SocketAddr) -> anyhow::Result<StdListener> {
    let listener = StdListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (server.internal_listen)"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts on the internal listener until shutdown. Plain HTTP through tokio's own sockets on
/// either backend (tokio-uring runs a tokio runtime underneath): a scrape every few seconds
/// does not need io_uring.
async fn run_internal(shard: Rc<Shard>, listener: StdListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "internal listener unusable");
            return;
        }
    };
    let shutdown = shard.node.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => {
                    tokio::task::spawn_local(http::serve_internal(shard.clone(), io));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "internal accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Serves one accepted socket: HTTP, over TLS when configured (the handshake runs in the
/// connection's own task, within the handshake timeout, so it never holds up accepting).
async fn serve_socket<A: Acceptor>(shard: Rc<Shard>, tls: Option<Arc<Tls>>, mut io: A::Io) {
    // Nothing is set up for a socket until it speaks, and one that stays silent for the
    // handshake timeout is closed.
    let limit = Duration::from_millis(shard.node.config.connections.handshake_timeout_ms);
    tokio::select! {
        first = tokio::time::timeout(limit, A::first_data(&mut io)) => {
            if first.is_err() {
                shard.metrics.silent_socket();
                return;
            }
        }
        () = shard.node.shutdown_signal() => return,
    }
    let Some(tls) = tls else {
        return http::serve(shard, io).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    // Boxed: the TLS state machine is several times the size of the plain one, and a task
    // holds its future's largest variant for as long as the connection lives.
    Box::pin(serve_tls(shard, io, acceptor, limit)).await;
}

async fn serve_tls<S>(shard: Rc<Shard>, io: S, acceptor: tokio_rustls::TlsAcceptor, limit: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = match crate::transport::tls::expect_handshake(io, limit).await {
        Ok(io) => io,
        Err(failure) => return shard.metrics.tls_failure(failure),
    };
    match tokio::time::timeout(limit, acceptor.accept(io)).await {
        Ok(Ok(stream)) => http::serve(shard, stream).await,
        Ok(Err(e)) => {
            shard.metrics.tls_failure(TlsFailure::Handshake);
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shard.metrics.tls_failure(TlsFailure::Timeout);
            tracing::debug!("TLS handshake timed out");
        }
    }
}

async fn drain_shard(shard: &Rc<Shard>, drain: Duration) {
    let deadline = Instant::now() + drain;
    loop {
        // Again each turn: a connection whose upgrade was under way may have joined since.
        shard.close_all(&CloseReason::ServerShutdown);
        if (shard.connection_count() == 0 && shard.http_connections() == 0)
            || Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
