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
//!
//! A collection is of a set of collectors ([`KindSet`]: all, or a scrape's
//! `collect[]` filter). Still one at a time: a request for another set
//! while one runs is queued (each set once, in order of arrival) and
//! started when the running one finishes; a request for the running or a
//! queued set joins it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use crate::collectors::KindSet;
use crate::cycle::cache::{Entry, Packer};
use crate::cycle::exporter::Exporter;
use crate::kernel::transport::Transport;

/// The handle the serving loop keeps.
pub struct Collections {
    start: mpsc::Sender<KindSet>,
    done: mpsc::Receiver<Arc<Entry>>,
    wake: UnixStream,
    /// When the collection in progress was asked for, and of which set.
    running: Option<(Instant, KindSet)>,
    /// Sets asked for while another ran, in order, each once.
    queued: VecDeque<KindSet>,
    /// The collectors the flags enabled.
    enabled: KindSet,
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
        let enabled = KindSet::of(&exporter.fleet().own().options().enabled);
        let (start, requests) = mpsc::channel::<KindSet>();
        let (results, done) = mpsc::channel::<Arc<Entry>>();
        thread::Builder::new()
            .name("collect".into())
            .spawn(move || {
                let mut waker = Waker(writer);
                for set in requests {
                    let begun = Instant::now();
                    // The text goes straight into the compressor: the
                    // entry keeps only its gzip (see `cache`).
                    let mut summary = Packer::new();
                    let snapshot = exporter.record_set(set, &mut summary);
                    let entry = Entry::encode_with(snapshot, summary.finish(), begun, |out| {
                        exporter.write_text(out)
                    });
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
            queued: VecDeque::new(),
            enabled,
            started: 0,
        })
    }

    /// The fd to poll for readability: a collection has finished (or the
    /// thread is gone).
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The collectors the flags enabled (the set of an unfiltered scrape).
    pub fn enabled(&self) -> KindSet {
        self.enabled
    }

    /// Starts a collection of `set` unless one runs; then it is queued,
    /// unless it is the running set or already queued. Returns false if
    /// the thread is gone.
    pub fn request(&mut self, set: KindSet) -> bool {
        match self.running {
            Some((_, running)) => {
                if running != set && !self.queued.contains(&set) {
                    self.queued.push_back(set);
                }
                true
            }
            None => self.begin(set),
        }
    }

    fn begin(&mut self, set: KindSet) -> bool {
        if self.start.send(set).is_err() {
            return false;
        }
        self.running = Some((Instant::now(), set));
        self.started += 1;
        true
    }

    /// Since when the collection in progress runs, if one does.
    pub fn running(&self) -> Option<Instant> {
        self.running.map(|(since, _)| since)
    }

    /// The sets waiting for the running collection to finish.
    pub fn queued(&self) -> impl Iterator<Item = KindSet> + '_ {
        self.queued.iter().copied()
    }

    /// Collections started so far.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The collection that finished since the last call, if any (the next
    /// queued set's then starts); Err when the thread is gone.
    pub fn finished(&mut self) -> Result<Option<Arc<Entry>>, Died> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        match self.done.try_recv() {
            Ok(entry) => {
                self.running = None;
                if let Some(next) = self.queued.pop_front() {
                    // If the thread is gone, the next call says so.
                    self.begin(next);
                }
                Ok(Some(entry))
            }
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(Died),
        }
    }
}
