//! The socket under a connection's ntex-io state: one task that reads into its buffers and
//! writes out of them.
//!
//! Why not ntex-net's tokio stream: it spawns a read task and a write task per connection, two
//! tokio task cells (256 B each, measured with heaptrack) for a connection that mostly waits.
//! Here one task serves both directions and is woken by either. The connection's loop still
//! writes directly when it flushes (`Handle::write`); the task writes only what the socket would
//! not take then, and shuts the socket down when ntex-io asks.

use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use ntex::io::{Handle, IoContext, IoStream, IoTaskStatus, Readiness, types};
use ntex_bytes::{BufMut, BytePage};
use tokio::net::TcpStream;

/// An accepted TCP connection, for `ntex::io::Io::new`.
pub(super) struct Tcp(pub(super) TcpStream);

impl IoStream for Tcp {
    fn start(self, ctx: IoContext) -> Box<dyn Handle> {
        let stream = Rc::new(self.0);
        tokio::task::spawn_local(drive(stream.clone(), ctx));
        Box::new(Direct(stream))
    }
}

/// What ntex-io calls on the connection's own task: a direct write, and the peer address.
struct Direct(Rc<TcpStream>);

impl Handle for Direct {
    fn query(&self, id: std::any::TypeId) -> Option<Box<dyn std::any::Any>> {
        if id == std::any::TypeId::of::<types::PeerAddr>() {
            return Some(Box::new(types::PeerAddr(self.0.peer_addr().ok()?)));
        }
        None
    }

    fn write(&self, ctx: &IoContext) {
        let _ = write(&self.0, ctx);
    }

    // Readiness changes wake the task through the wakers it registered; nothing to forward.
    fn notify(&self, _: &IoContext) {}
}

/// Both directions of one connection until ntex-io's state is stopped.
async fn drive(stream: Rc<TcpStream>, ctx: IoContext) {
    let mut reading = true;
    // Set once ntex-io asked the write direction to end.
    let mut closing: Option<Closing> = None;
    poll_fn(|cx| {
        if reading && read_side(&stream, &ctx, cx).is_ready() {
            reading = false;
        }
        if closing.is_none() {
            let how = ready!(write_side(&stream, &ctx, cx));
            if ctx.is_stopped() {
                return Poll::Ready(());
            }
            closing = Some(how);
        }
        if let Some(how) = &closing {
            ready!(close(&stream, &ctx, matches!(how, Closing::Flush), cx));
        }
        Poll::Ready(())
    })
    .await;
    if !ctx.is_stopped() {
        ctx.stop(None);
    }
}

/// Reads while the socket has bytes and ntex-io has room; ready once reading is over.
fn read_side(stream: &TcpStream, ctx: &IoContext, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        match ready!(ctx.poll_read_ready(cx)) {
            Readiness::Ready => {}
            Readiness::Shutdown | Readiness::Terminate => return Poll::Ready(()),
        }
        if let Err(e) = ready!(stream.poll_read_ready(cx)) {
            ctx.stop(Some(e));
            return Poll::Ready(());
        }
        loop {
            match read(stream, ctx) {
                Poll::Ready(IoTaskStatus::Io) => continue,
                // The buffer is full: ntex-io wakes the task once it is consumed.
                Poll::Ready(IoTaskStatus::Pause) => return Poll::Pending,
                Poll::Ready(IoTaskStatus::Stop) => return Poll::Ready(()),
                // The socket is drained: wait for readiness again.
                Poll::Pending => break,
            }
        }
    }
}

/// One read into ntex-io's buffer; `Pending` when the socket had nothing more.
fn read(stream: &TcpStream, ctx: &IoContext) -> Poll<IoTaskStatus> {
    let mut buf = ctx.get_read_buf();
    let spare = buf.chunk_mut();
    // SAFETY: `try_read` only writes into the slice, so its uninitialised bytes are never read.
    let spare = unsafe { &mut *(std::ptr::from_mut(spare) as *mut [u8]) };
    let (result, pending) = match stream.try_read(spare) {
        Ok(0) => {
            ctx.stop(None);
            (Ok(0), false)
        }
        Ok(n) => {
            // SAFETY: `try_read` initialised these `n` bytes.
            unsafe { buf.advance_mut(n) };
            (Ok(n), false)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (Ok(0), true),
        Err(e) => (Err(e), false),
    };
    match ctx.update_read_status(buf, result) {
        IoTaskStatus::Io if pending => Poll::Pending,
        status => Poll::Ready(status),
    }
}

/// How ntex-io asked the write direction to end.
enum Closing {
    Flush,
    Terminate,
}

/// Writes what is buffered whenever the socket takes it, until ntex-io asks to close.
fn write_side(stream: &TcpStream, ctx: &IoContext, cx: &mut Context<'_>) -> Poll<Closing> {
    match ready!(ctx.poll_write_ready(cx)) {
        Readiness::Ready => {}
        Readiness::Shutdown => return Poll::Ready(Closing::Flush),
        Readiness::Terminate => return Poll::Ready(Closing::Terminate),
    }
    loop {
        if let Err(e) = ready!(stream.poll_write_ready(cx)) {
            ctx.update_write_status(Err(e));
            return Poll::Ready(Closing::Terminate);
        }
        match write(stream, ctx) {
            IoTaskStatus::Io => continue,
            IoTaskStatus::Pause => return Poll::Pending,
            IoTaskStatus::Stop => return Poll::Ready(Closing::Terminate),
        }
    }
}

/// Flushes what is left (for a graceful close), then waits for ntex-io to finish the close.
fn close(stream: &TcpStream, ctx: &IoContext, flush: bool, cx: &mut Context<'_>) -> Poll<()> {
    if let Err(e) = ready!(stream.poll_write_ready(cx)) {
        ctx.update_write_status(Err(e));
        return Poll::Ready(());
    }
    if write(stream, ctx) == IoTaskStatus::Stop {
        return Poll::Ready(());
    }
    ctx.shutdown(flush, cx)
}

/// Pages handed to one `writev`, and the bytes after which it stops adding more.
const WRITE_PAGES: usize = 16;
const WRITE_BYTES: usize = 64 * 1024;

/// One vectored write of the buffered pages; what is not written goes back to the buffer.
/// Runs for every flush of every connection, so it allocates nothing.
fn write(stream: &TcpStream, ctx: &IoContext) -> IoTaskStatus {
    let result = ctx.with_write_buf(|buf| {
        let mut pages: [Option<BytePage>; WRITE_PAGES] = Default::default();
        let (mut taken, mut size) = (0, 0);
        while taken < WRITE_PAGES && size < WRITE_BYTES {
            let Some(page) = buf.take() else { break };
            size += page.len();
            pages[taken] = Some(page);
            taken += 1;
        }
        if taken == 0 {
            return Ok(false);
        }
        let slices: [io::IoSlice<'_>; WRITE_PAGES] = std::array::from_fn(|i| {
            io::IoSlice::new(pages[i].as_ref().map_or(&[], |p| p.as_ref()))
        });
        let written = match stream.try_write_vectored(&slices[..taken]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "failed to write frame to transport",
            )),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        };
        let mut left = written.as_ref().ok().copied().flatten().unwrap_or(0);
        for page in pages.iter_mut().flatten() {
            let n = page.len().min(left);
            page.advance_to(n);
            left -= n;
        }
        // `prepend` skips the pages written whole.
        for page in pages.into_iter().rev().flatten() {
            buf.prepend(page);
        }
        Ok(written?.is_some())
    });
    ctx.update_write_status(result)
}
