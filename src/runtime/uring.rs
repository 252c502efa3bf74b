//! The io_uring backend's socket: a tokio-uring `TcpStream` behind tokio's `AsyncRead` and
//! `AsyncWrite`, so both backends share every line of protocol code.
//!
//! tokio-uring works with owned buffers: an operation owns its buffer until the kernel is
//! done, and dropping the future does not cancel the operation. The adapter therefore keeps
//! each in-flight read and write inside itself across polls (so no bytes are lost when a
//! caller's `select!` drops a read), writes behind (bytes are accepted at once and submitted as
//! one write per batch), and shuts the socket down when dropped with operations in flight (so
//! the peer sees the close at once instead of when the operation completes).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_uring::net::TcpStream;

/// The read buffer of an in-flight read stays pinned in the kernel while a connection is
/// idle, so it starts small and grows only while reads fill it (a client sending a lot),
/// shrinking again when they do not.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;

/// A drained write buffer larger than this is freed rather than kept for reuse.
const SPARE_MAX: usize = 64 * 1024;

/// Most bytes accepted and not yet written. Writes beyond it are taken in part or told to
/// wait, so the connection's own byte-capped queue keeps holding the rest (shared with other
/// recipients, and counted against its cap) instead of this adapter copying it.
const HIGH_WATER: usize = 64 * 1024;

type Op = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

pub struct UringIo {
    stream: Rc<TcpStream>,
    read_op: Option<Op>,
    /// Bytes read and not yet handed to the caller: `read_buf[read_pos..]`.
    read_buf: Vec<u8>,
    read_pos: usize,
    /// Capacity of the next read buffer.
    read_size: usize,
    write_op: Option<Op>,
    /// Bytes in the in-flight write.
    inflight: usize,
    /// Bytes accepted and not yet submitted.
    staging: Vec<u8>,
    /// A drained write buffer kept for reuse.
    spare: Vec<u8>,
    write_error: Option<io::Error>,
}

impl UringIo {
    pub fn new(stream: TcpStream) -> UringIo {
        UringIo {
            stream: Rc::new(stream),
            read_op: None,
            read_buf: Vec::new(),
            read_pos: 0,
            read_size: READ_MIN,
            write_op: None,
            inflight: 0,
            staging: Vec::new(),
            spare: Vec::new(),
            write_error: None,
        }
    }

    fn submit_write(&mut self, buf: Vec<u8>) {
        self.inflight = buf.len();
        let stream = self.stream.clone();
        self.write_op = Some(Box::pin(async move { stream.write(buf).submit().await }));
    }

    /// Moves writes forward: completes the in-flight one and submits what is staged. A write
    /// error is kept and reported by the next write or flush.
    fn pump(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(op) = self.write_op.as_mut() {
                let (result, mut buf) = match op.as_mut().poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(done) => done,
                };
                self.write_op = None;
                self.inflight = 0;
                match result {
                    Ok(0) => {
                        self.write_error = Some(io::ErrorKind::WriteZero.into());
                        self.staging.clear();
                        return;
                    }
                    Ok(n) if n < buf.len() => {
                        buf.drain(..n);
                        self.submit_write(buf);
                        continue;
                    }
                    Ok(_) => {
                        buf.clear();
                        if buf.capacity() <= SPARE_MAX {
                            self.spare = buf;
                        }
                    }
                    Err(e) => {
                        self.write_error = Some(e);
                        self.staging.clear();
                        return;
                    }
                }
            }
            if self.staging.is_empty() || self.write_error.is_some() {
                return;
            }
            let next = std::mem::take(&mut self.spare);
            let buf = std::mem::replace(&mut self.staging, next);
            self.submit_write(buf);
        }
    }

    fn check_error(&mut self) -> io::Result<()> {
        match self.write_error.take() {
            Some(e) => {
                let kind = e.kind();
                self.write_error = Some(kind.into());
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn accept_bytes(&mut self, cx: &mut Context<'_>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        self.check_error()?;
        self.pump(cx);
        self.check_error()?;
        let room = HIGH_WATER.saturating_sub(self.staging.len() + self.inflight);
        if room == 0 {
            // `pump` left the in-flight write's waker registered.
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            self.staging.extend_from_slice(&b[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        self.pump(cx);
        Poll::Ready(Ok(n))
    }
}

impl UringIo {
    /// Makes sure read bytes are waiting in the buffer (or the stream has ended: an empty
    /// buffer after a completed read), submitting a read if none is in flight.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.read_pos < self.read_buf.len() {
            return Poll::Ready(Ok(()));
        }
        // Writers that never flush still get their bytes out while the task waits to read.
        self.pump(cx);
        if self.read_op.is_none() {
            let mut buf = std::mem::take(&mut self.read_buf);
            buf.clear();
            if buf.capacity() > self.read_size {
                buf = Vec::new();
            }
            buf.reserve_exact(self.read_size);
            self.read_pos = 0;
            let stream = self.stream.clone();
            self.read_op = Some(Box::pin(async move { stream.read(buf).await }));
        }
        let op = self.read_op.as_mut().expect("just set");
        let (result, buf) = match op.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        self.read_op = None;
        self.read_buf = buf;
        self.read_pos = 0;
        match result {
            Ok(read) => {
                self.read_size = if read >= self.read_size {
                    (self.read_size * 2).min(READ_MAX)
                } else if read < self.read_size / 4 {
                    (self.read_size / 2).max(READ_MIN)
                } else {
                    self.read_size
                };
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                self.read_buf.clear();
                Poll::Ready(Err(e))
            }
        }
    }

    /// Resolves once the peer has sent something or the stream has ended, keeping what
    /// arrived for the next read.
    pub async fn first_data(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
    }
}

impl AsyncRead for UringIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_fill(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let n = out.remaining().min(this.read_buf.len() - this.read_pos);
        out.put_slice(&this.read_buf[this.read_pos..this.read_pos + n]);
        this.read_pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UringIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.accept_bytes(cx, &[buf])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.accept_bytes(cx, &slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pump(cx);
        self.check_error()?;
        if self.write_op.is_some() || !self.staging.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        if self.read_op.is_some() || self.write_op.is_some() {
            // In-flight operations keep the descriptor open until they complete; shutting the
            // socket down completes them and tells the peer now.
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Marks a `!Send` value as `Send` for APIs that demand it but never move it (hyper's
/// upgrade path), and checks on every use that it is still on its own thread.
pub struct LocalSend<T> {
    inner: T,
    owner: usize,
}

thread_local! {
    static THREAD_MARK: u8 = const { 0 };
}

fn thread_mark() -> usize {
    THREAD_MARK.with(|m| std::ptr::from_ref::<u8>(m) as usize)
}

// SAFETY: every access goes through `get`/`get_pin`, which panic off the owning thread, and
// `Drop` leaks rather than drops off it; so the inner value is only ever touched by its owner.
unsafe impl<T> Send for LocalSend<T> {}

impl<T> LocalSend<T> {
    pub fn new(inner: T) -> LocalSend<T> {
        LocalSend {
            inner,
            owner: thread_mark(),
        }
    }

    /// The inner value, on its own thread.
    pub fn get_mut(&mut self) -> &mut T {
        assert_eq!(self.owner, thread_mark(), "LocalSend used off its thread");
        &mut self.inner
    }

    fn get_pin(self: Pin<&mut Self>) -> Pin<&mut T> {
        assert_eq!(self.owner, thread_mark(), "LocalSend used off its thread");
        // SAFETY: structural pinning of `inner`; `LocalSend` never moves it out.
        unsafe { self.map_unchecked_mut(|s| &mut s.inner) }
    }
}

impl<T> Drop for LocalSend<T> {
    fn drop(&mut self) {
        if self.owner != thread_mark() {
            // Never happens in Herald; leaking is the only sound answer if it ever did.
            tracing::error!("a thread-local socket was dropped off its thread; leaking it");
            let inner = unsafe { std::ptr::read(&raw const self.inner) };
            std::mem::forget(inner);
        }
    }
}

impl<T: AsyncRead> AsyncRead for LocalSend<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_pin().poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for LocalSend<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_pin().poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_pin().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_pin().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_pin().poll_shutdown(cx)
    }
}
