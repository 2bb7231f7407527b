//! Closing a connection so that its last packet reaches the client.
//!
//! When the broker ends a connection with a reason (DISCONNECT 0x93, 0x95, 0x8E, 0x8B, a CONNACK
//! refusal), the client may still be sending. Closing a TCP socket whose receive buffer holds
//! unread bytes makes the kernel answer with RST instead of FIN, and a client that gets RST
//! before it read the DISCONNECT never sees the reason (it reports a broken pipe or a reset).
//!
//! ntex owns the socket and closes it when the connection ends, so `Socket::linger` takes a
//! second descriptor of the same socket while the connection is still open. Once ntex has
//! flushed the last packet and dropped its own descriptor, the socket lives on through the second
//! one: its write side is shut (the client reads the packet, then end of stream), whatever the
//! client still sends is read and discarded until it closes or `LINGER` passes, and only then is
//! the socket closed.

use std::net::Shutdown;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use ntex::io::IoRef;
use tokio::io::AsyncReadExt;

/// How long a closed connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How long ntex may take to flush and close once asked (its own flush limit is shorter).
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// The file descriptor of a connection's socket, recorded when it was accepted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Socket(pub(super) RawFd);

impl Socket {
    /// Makes the coming close of `io` graceful; call it before asking ntex to close (or while
    /// ntex is about to), on the connection's worker. Does nothing if the connection is already
    /// closing: then ntex may have released the descriptor, and the number may name another
    /// socket by now.
    pub(super) fn linger(self, io: &IoRef) {
        if io.is_closed() {
            return;
        }
        // SAFETY: the connection is open, so ntex still holds this descriptor and it names the
        // connection's socket; it is only borrowed for the duplication.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0) };
        let Ok(owned) = fd.try_clone_to_owned() else {
            return;
        };
        let stream = std::net::TcpStream::from(owned);
        let closed = io.on_disconnect();
        ntex::rt::spawn(async move {
            // ntex has written what it had (the reason packet last) and let go of the socket.
            // Should the close never happen, the second descriptor is dropped untouched.
            if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
                return;
            }
            let _ = stream.shutdown(Shutdown::Write);
            // The descriptor shares ntex's non-blocking file description.
            let Ok(mut stream) = tokio::net::TcpStream::from_std(stream) else {
                return;
            };
            let mut sink = [0u8; 4096];
            let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}
