//! Collections on a thread of their own, so that the serving loop never
//! waits for the kernel: one collection at a time (synchronous, as the
//! exporter guidelines want), started on request, its [`Entry`] (text,
//! gzip, summary) handed back through a channel, and the loop woken through
//! a socket pair whose read end it polls, like the bcrypt verifier's.
//!
//! The thread owns the [`Exporter`] (and through it the netlink sockets);
//! the loop owns only this handle. If the thread dies (a panic in a
//! collection), its end of the wake-up pair closes, the loop wakes, and
//! [`Collections::finished`] reports it, so no scrape waits forever.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use crate::cycle::cache::Entry;
use crate::cycle::exporter::Exporter;
use crate::kernel::transport::Transport;

/// The handle the serving loop keeps.
pub struct Collections {
    start: mpsc::Sender<()>,
    done: mpsc::Receiver<Arc<Entry>>,
    wake: UnixStream,
    /// When the collection in progress was asked for.
    running: Option<Instant>,
    /// Collections started so far.
    started: u64,
}

/// The collection thread is gone (it panicked).
#[derive(Debug)]
pub struct Died;

impl std::fmt::Display for Died {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the collection thread died")
    }
}

impl std::error::Error for Died {}

/// Wakes the loop when dropped: after each collection, and when the thread
/// ends however it ends.
struct Waker(UnixStream);

impl Waker {
    fn wake(&mut self) {
        // A full socket already holds a wake-up: ignore WouldBlock.
        let _ = self.0.write(&[1]);
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.wake();
    }
}

impl Collections {
    /// Starts the thread; it waits for [`request`](Self::request)s.
    pub fn start<T: Transport + Send + 'static>(
        mut exporter: Exporter<T>,
    ) -> io::Result<Collections> {
        let (wake, writer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let (start, requests) = mpsc::channel::<()>();
        let (results, done) = mpsc::channel::<Arc<Entry>>();
        thread::Builder::new()
            .name("collect".into())
            .spawn(move || {
                let mut waker = Waker(writer);
                for () in requests {
                    let begun = Instant::now();
                    let entry = Entry::encode(exporter.refresh(), begun);
                    if results.send(Arc::new(entry)).is_err() {
                        return;
                    }
                    waker.wake();
                }
            })?;
        Ok(Collections {
            start,
            done,
            wake,
            running: None,
            started: 0,
        })
    }

    /// The fd to poll for readability: a collection has finished (or the
    /// thread is gone).
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Starts a collection unless one is running. Returns false if the
    /// thread is gone.
    pub fn request(&mut self) -> bool {
        if self.running.is_some() {
            return true;
        }
        if self.start.send(()).is_err() {
            return false;
        }
        self.running = Some(Instant::now());
        self.started += 1;
        true
    }

    /// Since when the collection in progress runs, if one does.
    pub fn running(&self) -> Option<Instant> {
        self.running
    }

    /// Collections started so far.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The collection that finished since the last call, if any; Err when
    /// the thread is gone.
    pub fn finished(&mut self) -> Result<Option<Arc<Entry>>, Died> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        match self.done.try_recv() {
            Ok(entry) => {
                self.running = None;
                Ok(Some(entry))
            }
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(Died),
        }
    }
}
