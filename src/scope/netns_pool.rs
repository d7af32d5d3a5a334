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
//! the ones not started are [`Outcome::NotReached`]. The caller ranks the
//! jobs (oldest data first) and decides what an unreached namespace shows.
//!
//! Why the pool surveys before it collects: a collection lasts as long as
//! its busiest thread, and the namespaces differ a lot in cost. One that
//! holds no TCP socket costs microseconds (its dumps are skipped or walk
//! small tables), one with a few TCP sockets costs a walk of the host's
//! whole TCP hash (about 0.1 s next to 1M sockets elsewhere), and one that
//! holds the 1M sockets costs that walk plus reading them all (about 1 s).
//! Taken in discovery order, the big one can come last and run alone on
//! one core while the others idle. So the threads first read every
//! namespace's counters ([`Occupancy`], a few microseconds each), and then
//! collect, within each rank, the namespaces that need a TCP walk first,
//! the most sockets first: the longest jobs first, so that the threads
//! finish together. The counters are read again when a namespace is
//! collected, so a skip is decided on counters read just before it.
//!
//! The caller's own work (the exporter's own namespace) runs on the calling
//! thread while the pool works ([`run`]'s `during`), so it adds to the
//! threads' work instead of coming before it.

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
    /// Lower ranks are started first, whatever their cost (the caller's
    /// oldest-data-first rule).
    pub rank: u64,
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

/// Collects every job on at most `config.threads` scoped threads, while
/// the calling thread runs `during`; returns how many threads collected.
/// Jobs are started by rank, then the costliest first (see the module
/// comment), then in slice order.
pub fn run(
    jobs: &mut [Job<'_>],
    options: &Options,
    config: PoolConfig,
    during: impl FnOnce(),
) -> usize {
    let wanted = config.threads.max(1).min(jobs.len());
    // With no more jobs than threads, or no time left, order is moot.
    let costs = if jobs.len() > wanted && Instant::now() < config.deadline {
        let namespaces: Vec<&Namespace> = jobs.iter().map(|job| job.ns).collect();
        survey(&namespaces, wanted, options, config.only)
    } else {
        vec![Cost::default(); jobs.len()]
    };
    let ranks: Vec<u64> = jobs.iter().map(|job| job.rank).collect();
    let mut slots: Vec<Option<&mut Job<'_>>> = jobs.iter_mut().map(Some).collect();
    let queue: Vec<&mut Job<'_>> = start_order(&ranks, &costs)
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect();
    let queue = Mutex::new(queue.into_iter());
    let work = || worker(&queue, options, config);
    std::thread::scope(|scope| {
        let started = spawn_workers(scope, wanted, "netns", &work);
        during();
        started
    })
}

/// The order jobs are started in, as indices: by rank, then the costliest
/// first, then as given.
fn start_order(ranks: &[u64], costs: &[Cost]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ranks.len()).collect();
    order.sort_by_key(|&i| (ranks[i], std::cmp::Reverse(costs[i]), i));
    order
}

/// What a namespace is expected to cost, compared longest first: whether
/// its TCP dump has to walk the host's TCP hash, then how many sockets its
/// counters show. Unknown counters count as a walk (they are dumped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Cost {
    walks: bool,
    sockets: u64,
}

impl Cost {
    /// The cost of collecting the collectors in `only` of a namespace whose
    /// counters read `occupancy`.
    fn of(occupancy: &Occupancy, options: &Options, only: KindSet) -> Cost {
        let wanted = |kind: Kind| options.enabled.contains(&kind) && only.contains(kind);
        let walks = wanted(Kind::Tcp) && !occupancy.empty(Kind::Tcp);
        let count = |n: Option<u64>, kinds: &[Kind]| {
            if kinds.iter().any(|k| wanted(*k)) {
                n.unwrap_or(u64::MAX / 4)
            } else {
                0
            }
        };
        Cost {
            walks,
            sockets: count(occupancy.tcp, &[Kind::Tcp, Kind::Listeners])
                + count(occupancy.udp, &[Kind::Udp])
                + count(occupancy.unix, &[Kind::Unix]),
        }
    }
}

/// Reads every namespace's counters on `threads` scoped threads, each
/// entering the namespaces it surveys (and ending with the survey). A
/// namespace that cannot be entered costs nothing here: its collection
/// fails fast.
fn survey(
    namespaces: &[&Namespace],
    threads: usize,
    options: &Options,
    only: KindSet,
) -> Vec<Cost> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let costs: Vec<Mutex<Cost>> = namespaces.iter().map(|_| Mutex::default()).collect();
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(ns) = namespaces.get(i) else {
            return;
        };
        if netns_enter::enter_for_good(ns).is_ok() {
            let cost = Cost::of(&Occupancy::of_current_thread(), options, only);
            if let Ok(mut slot) = costs[i].lock() {
                *slot = cost;
            }
        }
    };
    std::thread::scope(|scope| spawn_workers(scope, threads, "netns-survey", &work));
    costs
        .into_iter()
        .map(|c| c.into_inner().unwrap_or_default())
        .collect()
}

/// Spawns `count` scoped threads named `name-N` running `work`; returns
/// how many started (a failure to start one is logged, and the ones
/// started carry on).
fn spawn_workers<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    count: usize,
    name: &str,
    work: &'scope F,
) -> usize
where
    F: Fn() + Sync,
{
    let mut started = 0;
    for i in 0..count {
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn_scoped(scope, work);
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
}

/// A pool thread: takes jobs until none is left or the budget is spent.
fn worker<'j, 'a: 'j>(
    queue: &Mutex<impl Iterator<Item = &'j mut Job<'a>>>,
    options: &Options,
    config: PoolConfig,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn occupancy(tcp: Option<u64>, udp: Option<u64>, unix: Option<u64>) -> Occupancy {
        Occupancy { tcp, udp, unix }
    }

    #[test]
    fn a_tcp_walk_outweighs_any_number_of_other_sockets() {
        let options = Options::default();
        let all = KindSet::all();
        let cost = |o: Occupancy| Cost::of(&o, &options, all);
        let empty = cost(occupancy(Some(0), Some(0), Some(0)));
        let one_tcp = cost(occupancy(Some(1), Some(0), Some(0)));
        let many_tcp = cost(occupancy(Some(1_000_000), Some(0), Some(0)));
        let many_unix = cost(occupancy(Some(0), Some(5000), Some(100_000)));
        let unknown = cost(Occupancy::UNKNOWN);
        assert!(empty < many_unix && many_unix < one_tcp && one_tcp < many_tcp);
        // Unknown counters are dumped, so they count as a walk.
        assert!(unknown > one_tcp);
        // A collector left out (collect[] or a disabled one) costs nothing.
        let udp_only = KindSet::of(&[Kind::Udp]);
        let busy_tcp = occupancy(Some(1_000_000), Some(3), Some(9));
        assert_eq!(
            Cost::of(&busy_tcp, &options, udp_only),
            Cost {
                walks: false,
                sockets: 3
            }
        );
    }

    #[test]
    fn jobs_start_by_rank_then_costliest_first_then_as_given() {
        let walk = |sockets| Cost {
            walks: true,
            sockets,
        };
        let small = |sockets| Cost {
            walks: false,
            sockets,
        };
        // Rank 0 (never collected, or stale) goes first whatever its cost.
        let ranks = [3, 3, 3, 0, 3, 3];
        let costs = [
            small(5),
            walk(1),
            walk(1_000_000),
            small(0),
            walk(1),
            small(0),
        ];
        assert_eq!(start_order(&ranks, &costs), [3, 2, 1, 4, 0, 5]);
        assert_eq!(start_order(&[], &[]), Vec::<usize>::new());
    }
}
