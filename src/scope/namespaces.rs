//! Collection across network namespaces (`--collector.netns`): the own
//! namespace's [`Collector`], plus the counts and last reports of every
//! other namespace, kept between collections and refreshed by a pool of
//! threads ([`netns_pool`]).
//!
//! Every collection lists the namespaces ([`netns::discover_keeping`]:
//! past `--collector.netns.max` the ones collected last time keep their
//! place), forgets the ones that are gone, and hands the others to the
//! pool, oldest data first (the pool then takes the costliest first); the
//! own namespace is collected on the calling thread meanwhile. The pool skips the
//! collectors a namespace's own counters prove empty (exact zeros, no dump)
//! and stops starting namespaces when `--collector.netns.budget`, counted
//! from the start of the collection, is spent. Each namespace's collectors
//! report on their own: a dump failing in one namespace blanks only that
//! namespace's series of that collector.
//!
//! A namespace the budget did not reach keeps the series of its last
//! collection, with that collection's `sockdiag_collect_timestamp_seconds`,
//! is counted in `sockdiag_netns_stale`, and is among the first of the next
//! collection; one never collected yet has no series until it is reached.
//! Running out is a problem (health 0, logged once while it lasts).
//!
//! The `netns` collector's own health (`sockdiag_collect_success
//! {collector="netns"}`) is 0 when the list may be incomplete, a namespace
//! could not be entered, or the budget ran out: without CAP_SYS_PTRACE
//! other users' namespaces cannot be seen, without CAP_SYS_ADMIN none can
//! be entered. The own namespace is collected regardless, and each distinct
//! problem is logged once.
//!
//! Cost: the kernel's socket hash tables are shared by all namespaces, so
//! each non-empty namespace's TCP dump walks every socket on the host and
//! skips the foreign ones; N such namespaces cost about N walks, spread
//! over the pool's threads (BENCHMARKS.md).

use std::collections::HashSet;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::collectors::{Collector, Counts, Kind, KindSet, Options, Report, Stats};
use crate::kernel::transport::Transport;
use crate::log::{self, Level};
use crate::outcome::Health;
use crate::outcome::{Lines, LogOnce};
use crate::scope::netns::{self, Namespace, NsId, OWN_NETNS};
use crate::scope::netns_cache::PerNamespace;
use crate::scope::netns_pool::{self, Job, Outcome, PoolConfig};
use crate::scope::netns_problem::{Problem, ProblemKey};

/// One namespace's part of the latest collection.
pub struct Part<'a> {
    /// The `netns` label ([`OWN_NETNS`] for the exporter's own namespace).
    pub label: &'a str,
    pub stats: Stats<'a>,
    /// One per enabled collector.
    pub reports: &'a [Report],
}

/// What the last namespace collection found, for the netns meta series.
#[derive(Debug, Clone)]
pub struct NetnsOutcome {
    pub health: Health,
    /// Why the list may be incomplete or a namespace was not collected.
    pub problems: Vec<Problem>,
    /// The namespaces served, the own one first.
    pub namespaces: Vec<NamespaceInfo>,
    /// Found beyond `--collector.netns.max`.
    pub skipped: usize,
    /// Processes whose namespace could not be read.
    pub unreadable: usize,
    /// Served from an earlier collection: the budget ran out first.
    pub stale: usize,
    /// Not reached within the budget and never collected yet (no series).
    pub pending: usize,
    /// Per collector, the namespaces whose counters proved it had nothing
    /// to dump (its dump skipped, its series exact zeros), in
    /// [`Kind::ALL`] order of the enabled collectors.
    pub empty: Vec<(Kind, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub label: String,
    pub inode: u64,
    pub lowest_pid: Option<u32>,
}

/// What is kept of one other namespace between collections.
struct Member {
    ns: Namespace,
    counts: Counts,
    /// Its last collection's reports; empty until first collected.
    reports: Vec<Report>,
    /// The collection that last refreshed it (0: never).
    refreshed: u64,
    /// The collectors its counters proved empty then (not dumped).
    skipped: Vec<Kind>,
}

/// `--collector.netns` settings.
#[derive(Debug, Clone, Copy)]
pub struct NetnsConfig {
    /// `--collector.netns.max`.
    pub limit: usize,
    /// `--collector.timeout`, for the sockets opened in other namespaces.
    pub timeout: Duration,
    /// `--collector.netns.parallel`: pool threads at most.
    pub parallel: usize,
    /// `--collector.netns.budget`: no namespace is started after this long
    /// from the start of a collection.
    pub budget: Duration,
}

impl NetnsConfig {
    /// The defaults of the flags: limit 512, a pool as wide as the CPUs
    /// this process may use, an 8 s budget.
    pub fn new(limit: usize, timeout: Duration) -> NetnsConfig {
        NetnsConfig {
            limit,
            timeout,
            parallel: netns_pool::usable_cpus(),
            budget: Duration::from_secs(8),
        }
    }
}

struct Netns {
    config: NetnsConfig,
    options: Options,
    members: PerNamespace<Member>,
    /// The other namespaces served last time, in discovery order.
    order: Vec<NsId>,
    /// Collections so far.
    generation: u64,
    outcome: NetnsOutcome,
    /// Problems already logged, so each is logged once.
    logged: LogOnce<ProblemKey>,
}

/// The own namespace's collector, plus, with `--collector.netns`, what is
/// kept of every other namespace.
pub struct Fleet<T> {
    own: Collector<T>,
    own_reports: Vec<Report>,
    netns: Option<Netns>,
}

impl<T: Transport> Fleet<T> {
    /// `own` collects the exporter's own namespace (the kernel or a
    /// fixture); with `netns`, the others are collected too.
    pub fn new(own: Collector<T>, netns: Option<NetnsConfig>) -> Fleet<T> {
        let options = own.options().clone();
        Fleet {
            own,
            own_reports: Vec::new(),
            netns: netns.map(|config| Netns {
                config,
                options,
                members: PerNamespace::new(),
                order: Vec::new(),
                generation: 0,
                outcome: NetnsOutcome {
                    health: Health {
                        started: SystemTime::UNIX_EPOCH,
                        duration: Duration::ZERO,
                        ok: true,
                    },
                    problems: Vec::new(),
                    namespaces: Vec::new(),
                    skipped: 0,
                    unreadable: 0,
                    stale: 0,
                    pending: 0,
                    empty: Vec::new(),
                },
                logged: LogOnce::default(),
            }),
        }
    }

    pub fn own(&self) -> &Collector<T> {
        &self.own
    }

    /// Runs one collection: the own namespace, then (with netns) discovery
    /// and the other namespaces, within the budget.
    pub fn collect(&mut self) {
        self.collect_only(KindSet::all());
    }

    /// As [`collect`](Self::collect), with only the collectors in `only`
    /// (a scrape's `collect[]` filter), in every namespace: the filter
    /// picks collectors, not namespaces.
    pub fn collect_only(&mut self, only: KindSet) {
        let clock = Instant::now();
        let Fleet {
            own,
            own_reports,
            netns,
        } = self;
        let mut collect_own = || *own_reports = own.collect_only(only);
        match netns {
            // The own namespace is collected on this thread while the pool
            // collects the others, so its dumps add to the pool's work
            // rather than delaying it.
            Some(netns) => netns.collect(clock + netns.config.budget, only, collect_own),
            None => collect_own(),
        }
    }

    /// Every namespace's part of the last collection, the own one first.
    pub fn parts(&self) -> Vec<Part<'_>> {
        let mut parts = vec![Part {
            label: OWN_NETNS,
            stats: self.own.stats(),
            reports: &self.own_reports,
        }];
        if let Some(netns) = &self.netns {
            for id in &netns.order {
                if let Some(member) = netns.members.get(*id) {
                    parts.push(Part {
                        label: &member.ns.label,
                        stats: member.counts.stats(&netns.options),
                        reports: &member.reports,
                    });
                }
            }
        }
        parts
    }

    /// Whether anything is kept for namespace `id` (the own one is not
    /// counted). Only counts: no socket or fd is held between collections,
    /// so nothing keeps a namespace alive.
    pub fn holds(&self, id: NsId) -> bool {
        self.netns.as_ref().is_some_and(|n| n.members.contains(id))
    }

    /// The collectors whose dump the latest collection of the namespace
    /// labelled `label` skipped, because its own counters showed no socket
    /// for them; None for the own namespace and labels not served.
    pub fn skipped_as_empty(&self, label: &str) -> Option<&[Kind]> {
        let netns = self.netns.as_ref()?;
        netns
            .order
            .iter()
            .filter_map(|id| netns.members.get(*id))
            .find(|member| member.ns.label == label)
            .map(|member| member.skipped.as_slice())
    }

    /// Changes `--collector.netns.budget` from the next collection on.
    pub fn set_budget(&mut self, budget: Duration) {
        if let Some(netns) = &mut self.netns {
            netns.config.budget = budget;
        }
    }

    /// The last namespace collection's outcome; None without
    /// `--collector.netns`.
    pub fn netns(&self) -> Option<&NetnsOutcome> {
        self.netns.as_ref().map(|n| &n.outcome)
    }
}

impl Netns {
    /// Discovers and collects the other namespaces on the pool, running
    /// `during` (the own namespace's collection) on this thread meanwhile.
    fn collect(&mut self, deadline: Instant, only: KindSet, during: impl FnOnce()) {
        let started = SystemTime::now();
        let clock = Instant::now();
        self.generation += 1;
        let keep: HashSet<NsId> = self.order.iter().copied().collect();
        let discovery = netns::discover_keeping(self.config.limit, &keep);
        let dropped = self.members.retain_live(&discovery.namespaces);
        if dropped > 0 {
            log::log(
                Level::Debug,
                "network namespaces gone; their counts forgotten",
                &[("count", &dropped)],
            );
        }
        let mut problems = discovery.problems;
        problems.extend(privilege_problems());

        // Every other namespace, with what is kept of it, oldest data
        // first (never collected first of all), then in discovery order.
        let mut queue: Vec<(usize, Member)> = Vec::new();
        for (index, ns) in discovery.namespaces.iter().enumerate() {
            if ns.own {
                continue;
            }
            let member = match self.members.remove(ns.id) {
                Some(mut member) => {
                    // A namespace named after it was first seen changes
                    // label, and is opened from this discovery's path.
                    member.ns = ns.clone();
                    member
                }
                None => Member {
                    ns: ns.clone(),
                    counts: Counts::new(&self.options),
                    reports: Vec::new(),
                    refreshed: 0,
                    skipped: Vec::new(),
                },
            };
            queue.push((index, member));
        }
        queue.sort_by_key(|(index, member)| oldest_first(member.refreshed, *index));
        let mut jobs: Vec<Job<'_>> = queue
            .iter_mut()
            .map(|(_, member)| Job {
                ns: &member.ns,
                rank: member.refreshed,
                counts: &mut member.counts,
                outcome: Outcome::NotReached,
            })
            .collect();
        let pool = PoolConfig {
            threads: self.config.parallel,
            deadline,
            timeout: self.config.timeout,
            only,
        };
        netns_pool::run(&mut jobs, &self.options, pool, during);
        let outcomes: Vec<Outcome> = jobs.into_iter().map(|job| job.outcome).collect();

        let mut refused: Vec<(String, io::Error)> = Vec::new();
        let (mut stale, mut pending) = (0, 0);
        let mut empty: Vec<(Kind, usize)> = self.options.enabled.iter().map(|k| (*k, 0)).collect();
        let mut served: Vec<(usize, NsId)> = Vec::new();
        for ((index, mut member), outcome) in queue.into_iter().zip(outcomes) {
            let id = member.ns.id;
            match outcome {
                Outcome::Collected { reports, skipped } => {
                    for (kind, n) in &mut empty {
                        *n += usize::from(skipped.contains(kind));
                    }
                    member.reports = reports;
                    member.refreshed = self.generation;
                    member.skipped = skipped;
                }
                Outcome::NotReached if member.refreshed > 0 => stale += 1,
                Outcome::NotReached => pending += 1,
                // Gone between discovery and now: nothing to collect.
                Outcome::Gone => continue,
                Outcome::Refused(e) => {
                    refused.push((member.ns.label.clone(), e));
                    continue;
                }
            }
            if member.refreshed > 0 {
                served.push((index, id));
            }
            let _ = self
                .members
                .get_or_try_insert_with(id, || Ok::<_, ()>(member));
        }
        served.sort_unstable();
        self.order = served.iter().map(|(_, id)| *id).collect();
        let info = |ns: &Namespace| NamespaceInfo {
            label: ns.label.clone(),
            inode: ns.id.ino,
            lowest_pid: ns.lowest_pid,
        };
        let mut namespaces: Vec<NamespaceInfo> = discovery
            .namespaces
            .iter()
            .filter(|ns| ns.own)
            .map(info)
            .collect();
        namespaces.extend(
            self.order
                .iter()
                .filter_map(|id| self.members.get(*id))
                .map(|member| info(&member.ns)),
        );
        // One problem for all namespaces that could not be entered, so an
        // unprivileged exporter logs it once, not once per namespace.
        if let Some((label, e)) = refused.first() {
            problems.push(Problem::CannotEnter {
                refused: refused.len(),
                others: discovery.namespaces.len().saturating_sub(1),
                example: label.clone(),
                error: e.into(),
            });
        }
        if discovery.skipped > 0 {
            problems.push(Problem::OverLimit {
                skipped: discovery.skipped,
                limit: self.config.limit,
            });
        }
        if stale + pending > 0 {
            problems.push(Problem::OverBudget {
                unreached: stale + pending,
                budget: self.config.budget,
            });
        }
        self.log_changes(&problems);
        self.outcome = NetnsOutcome {
            health: Health {
                started,
                duration: clock.elapsed(),
                ok: problems.is_empty(),
            },
            problems,
            namespaces,
            skipped: discovery.skipped,
            unreadable: discovery.denied_processes,
            stale,
            pending,
            empty,
        };
    }

    /// Logs each new problem once, and the recovery when none is left.
    fn log_changes(&mut self, problems: &[Problem]) {
        const LINES: Lines<'static> = Lines {
            problem: (Level::Warn, "network namespace collection incomplete"),
            field: "problem",
            recovered: "network namespace collection complete again",
            last: None,
        };
        self.logged.update(problems, &LINES, &[], true);
    }
}

/// The order the pool takes namespaces in: the oldest data first (never
/// collected, 0, first of all), then discovery order. After a collection the
/// budget cut short, the namespaces it did not reach hold the oldest data,
/// so the next collection starts with them.
fn oldest_first(refreshed: u64, index: usize) -> (u64, usize) {
    (refreshed, index)
}

/// Capability numbers (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// The init pid namespace's inode (PROC_PID_INIT_INO, fixed in the kernel).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// Why discovery may miss namespaces without any error showing it: without
/// CAP_SYS_PTRACE other users' processes may be hidden (hidepid, systemd's
/// ProtectProc) rather than refused; without CAP_SYS_ADMIN nothing can be
/// entered; in a pid namespace of its own (a pod without hostPID) only its
/// own processes are visible at all.
fn privilege_problems() -> Vec<Problem> {
    let mut problems = Vec::new();
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        });
    let has = |cap: u32| caps.is_some_and(|c| c & (1 << cap) != 0);
    if !has(CAP_SYS_ADMIN) {
        problems.push(Problem::NoSysAdmin);
    }
    if !has(CAP_SYS_PTRACE) {
        problems.push(Problem::NoPtrace);
    }
    if let Ok(meta) = std::fs::metadata("/proc/self/ns/pid") {
        use std::os::unix::fs::MetadataExt;
        if meta.ino() != INIT_PID_NS_INO {
            problems.push(Problem::OwnPidNamespace);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Problem as _;

    #[test]
    fn unreached_namespaces_go_first_so_each_is_refreshed_every_second_collection() {
        // Six namespaces, a budget that reaches four per collection.
        let mut refreshed = [0u64; 6];
        let mut history: Vec<Vec<usize>> = Vec::new();
        for generation in 1..=6u64 {
            let mut order: Vec<usize> = (0..refreshed.len()).collect();
            order.sort_by_key(|&i| oldest_first(refreshed[i], i));
            let reached: Vec<usize> = order[..4].to_vec();
            for &i in &reached {
                refreshed[i] = generation;
            }
            // Nobody's data is more than one collection old.
            assert!(
                refreshed.iter().all(|&r| generation - r <= 1),
                "collection {generation}: {refreshed:?}"
            );
            history.push(reached);
        }
        assert_eq!(history[0], [0, 1, 2, 3], "discovery order at first");
        assert_eq!(history[1], [4, 5, 0, 1], "the unreached first");
        assert_eq!(history[2], [2, 3, 0, 1]);
        // A namespace never collected goes before any collected one.
        assert!(oldest_first(0, 9) < oldest_first(1, 0));
    }

    #[test]
    fn a_problem_keeps_its_identity_whatever_its_numbers() {
        let denied = |denied, seen| Problem::ProcessesDenied {
            denied,
            seen,
            example: "/proc/1/ns/net".into(),
        };
        assert_eq!(denied(3, 70).key(), denied(4, 71).key());
        let enter = |errno: i32| Problem::CannotEnter {
            refused: 1,
            others: 2,
            example: "ino:5".into(),
            error: (&io::Error::from_raw_os_error(errno)).into(),
        };
        assert_eq!(enter(libc::EPERM).key(), enter(libc::EPERM).key());
        assert_ne!(enter(libc::EPERM).key(), enter(libc::ENOENT).key());
        assert_ne!(denied(1, 1).key(), Problem::NoPtrace.key());
        assert!(enter(libc::EPERM)
            .to_string()
            .contains("(for example ino:5: Operation not permitted (os error 1))"));
    }
}
