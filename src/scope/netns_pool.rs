//! The pool of threads that collects the other network namespaces
//! (`--collector.netns`), at most `--collector.netns.parallel` at a time,
//! within the collection's budget (`--collector.netns.budget`).
//!
//! Why threads: a dump runs inside the `recvmsg` of the thread that asked,
//! and each namespace's TCP dump walks the host's whole socket hash (see
//! [`netns_enter`](super::netns_enter)), so namespaces are CPU-bound and
//! independent: N threads on N cores collect N at a time.
//!
//! Why the threads own the buffers and sockets: a namespace keeps only its
//! counts and last reports between collections ([`Counts`]). Each pool
//! thread holds one [`Collector`] (its 32 KiB receive buffer) and, for the
//! namespace it is working on, one netlink socket opened inside it, closed
//! before the next. Memory therefore grows with the threads, not with the
//! namespaces, and no socket keeps a dead namespace alive between
//! collections.
//!
//! A pool thread enters each namespace for good
//! ([`netns_enter::enter_for_good`]) and does nothing else: it reads the
//! namespace's own counters ([`netns_sockstat`](super::netns_sockstat)),
//! skips the collectors they prove empty, opens the socket (so a reset after
//! a failed dump reopens it in the same namespace, on the same thread),
//! dumps, and takes the next job. The threads are scoped to one collection
//! and end with it, so none is left behind in a namespace.
//!
//! The budget is checked before each namespace is started: a namespace in
//! progress finishes (each dump is still bounded by `--collector.timeout`),
//! the ones not started are [`Outcome::NotReached`]. The caller orders the
//! jobs (oldest data first) and decides what an unreached namespace shows.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::collectors::{Collector, Counts, Kind, KindSet, Options, Report};
use crate::kernel::transport::{Netlink, Transport};
use crate::log::{self, Level};
use crate::scope::netns::Namespace;
use crate::scope::netns_enter;
use crate::scope::netns_sockstat::Occupancy;

/// One namespace to collect, borrowing its kept counts.
pub struct Job<'a> {
    pub ns: &'a Namespace,
    pub counts: &'a mut Counts,
    pub outcome: Outcome,
}

/// What became of one [`Job`].
#[derive(Debug)]
pub enum Outcome {
    /// The budget ran out before it was started; its counts are untouched.
    NotReached,
    /// Collected: one report per enabled collector; the `skipped` ones
    /// were not dumped because the namespace's counters proved them empty.
    Collected {
        reports: Vec<Report>,
        skipped: Vec<Kind>,
    },
    /// The namespace is gone.
    Gone,
    /// It could not be entered, or no socket could be opened in it.
    Refused(io::Error),
}

/// How the pool runs.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Threads at most (`--collector.netns.parallel`; 0 counts as 1).
    pub threads: usize,
    /// No namespace is started after this instant.
    pub deadline: Instant,
    /// `--collector.timeout`, for the netlink sockets.
    pub timeout: Duration,
    /// The collectors to run (a scrape's `collect[]` filter).
    pub only: KindSet,
}

/// The number of CPUs this process may run on (sched_getaffinity), the
/// default of `--collector.netns.parallel`; 1 if it cannot be read.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Collects every job on at most `config.threads` scoped threads; returns
/// how many threads ran. Jobs are started in slice order.
pub fn run(jobs: &mut [Job<'_>], options: &Options, config: PoolConfig) -> usize {
    let wanted = config.threads.max(1).min(jobs.len());
    let queue = Mutex::new(jobs.iter_mut());
    std::thread::scope(|scope| {
        let mut started = 0;
        for i in 0..wanted {
            let spawned = std::thread::Builder::new()
                .name(format!("netns-{i}"))
                .spawn_scoped(scope, || worker(&queue, options, config));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    log::log(
                        Level::Warn,
                        "cannot start a network namespace collection thread",
                        &[("err", &e), ("started", &started)],
                    );
                    break;
                }
            }
        }
        started
    })
}

/// A pool thread: takes jobs until none is left or the budget is spent.
fn worker(queue: &Mutex<std::slice::IterMut<'_, Job<'_>>>, options: &Options, config: PoolConfig) {
    let mut collector = Collector::new(Slot::new(config.timeout), options.clone());
    loop {
        // A poisoned lock means another pool thread panicked; the scope
        // passes that panic on, so this one just stops.
        let Some(job) = queue.lock().ok().and_then(|mut q| q.next()) else {
            return;
        };
        if Instant::now() >= config.deadline {
            continue; // left NotReached; the rest too
        }
        job.outcome = collect_one(&mut collector, job.ns, job.counts, options, config.only);
    }
}

/// Enters `ns` for good and collects it into `counts`.
fn collect_one(
    collector: &mut Collector<Slot>,
    ns: &Namespace,
    counts: &mut Counts,
    options: &Options,
    only: KindSet,
) -> Outcome {
    match netns_enter::enter_for_good(ns) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Gone,
        Err(e) => return Outcome::Refused(e),
    }
    let occupancy = Occupancy::of_current_thread();
    let empty = |kind: Kind| occupancy.empty(kind);
    let wanted: Vec<Kind> = options
        .enabled
        .iter()
        .copied()
        .filter(|k| only.contains(*k))
        .collect();
    let skipped: Vec<Kind> = wanted.iter().copied().filter(|k| empty(*k)).collect();
    if skipped.len() < wanted.len() {
        match Netlink::open(config_timeout(collector)) {
            Ok(netlink) => collector.transport_mut().netlink = Some(netlink),
            Err(e) => return Outcome::Refused(e),
        }
    }
    let reports = collector.collect_into(counts, only, &empty);
    // Closed before the next namespace: sockets belong to the thread's
    // current job only.
    collector.transport_mut().netlink = None;
    Outcome::Collected { reports, skipped }
}

fn config_timeout(collector: &Collector<Slot>) -> Duration {
    collector.transport().timeout
}

/// A pool thread's transport: the netlink socket of the namespace it is
/// working on, if any. A reset reopens it on this thread, which is inside
/// that namespace.
pub struct Slot {
    netlink: Option<Netlink>,
    timeout: Duration,
}

impl Slot {
    fn new(timeout: Duration) -> Slot {
        Slot {
            netlink: None,
            timeout,
        }
    }

    fn socket(&mut self) -> io::Result<&mut Netlink> {
        self.netlink.as_mut().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "no netlink socket open for this namespace",
            )
        })
    }
}

impl Transport for Slot {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.socket()?.send(request)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket()?.recv(buf)
    }
    fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.socket()?.set_recv_timeout(timeout)
    }
    fn port(&self) -> u32 {
        self.netlink.as_ref().map_or(0, Netlink::port)
    }
    fn reset(&mut self) -> io::Result<()> {
        self.netlink = None;
        self.netlink = Some(Netlink::open(self.timeout)?);
        Ok(())
    }
    /// The sysctl files were opened with the socket, on this thread inside
    /// the namespace being collected; without a socket (every dump skipped
    /// as empty) they are opened now, from the same thread and namespace.
    fn local_ports(&mut self) -> io::Result<crate::kernel::sysctl::LocalPorts> {
        match self.netlink.as_mut() {
            Some(netlink) => netlink.local_ports(),
            None => crate::kernel::sysctl::SysctlFiles::open()?.read(),
        }
    }
}
