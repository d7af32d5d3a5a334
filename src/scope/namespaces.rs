//! Collection across network namespaces (`--collector.netns`): one
//! [`Collector`] per namespace, kept between collections, each on a netlink
//! socket opened inside its namespace.
//!
//! Every collection first lists the namespaces ([`netns::discover`]), then
//! drops the collectors of namespaces that are gone (closing their sockets:
//! a dead namespace is held at most until the next collection), and of
//! those that failed last time (reopened from this discovery), opens a socket in
//! each new one (a brief visit on a short-lived thread, so the collecting
//! thread never changes namespace), and runs every enabled collector in
//! every namespace. Each namespace's collectors report on their own: a dump
//! failing in one namespace blanks only that namespace's series of that
//! collector.
//!
//! The `netns` collector's own health (`sockdiag_collect_success
//! {collector="netns"}`) is 0 when the list may be incomplete or a namespace
//! could not be entered: without CAP_SYS_PTRACE other users' namespaces
//! cannot be seen, without CAP_SYS_ADMIN none can be entered. The own
//! namespace is collected regardless, and each distinct problem is logged
//! once.
//!
//! Cost: the kernel's socket hash tables are shared by all namespaces, so
//! each namespace's dump walks every socket on the host and skips the
//! foreign ones; N namespaces cost about N walks (BENCHMARKS.md).

use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::collectors::{Collector, KindSet, Options, Report, Stats};
use crate::kernel::transport::{Netlink, Transport};
use crate::log::{self, Level};
use crate::outcome::Health;
use crate::outcome::{Lines, LogOnce};
use crate::scope::netns::{self, Namespace, NsId, OWN_NETNS};
use crate::scope::netns_cache::PerNamespace;
use crate::scope::netns_enter;
use crate::scope::netns_problem::{Problem, ProblemKey};

/// A netlink socket opened inside a namespace. A reset after a failed dump
/// reopens it there too: a socket opened on the collecting thread would
/// silently dump the exporter's own namespace under the other's label.
pub struct InNamespace {
    netlink: Netlink,
    ns: Namespace,
    timeout: Duration,
}

impl InNamespace {
    /// Opens a sock_diag socket inside `ns`, from a short-lived thread.
    pub fn open(ns: &Namespace, timeout: Duration) -> io::Result<InNamespace> {
        let netlink = netns_enter::run_on_new_thread(ns, || Netlink::open(timeout))??;
        Ok(InNamespace {
            netlink,
            ns: ns.clone(),
            timeout,
        })
    }
}

impl Transport for InNamespace {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.netlink.send(request)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.netlink.recv(buf)
    }
    fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.netlink.set_recv_timeout(timeout)
    }
    fn port(&self) -> u32 {
        self.netlink.port()
    }
    fn reset(&mut self) -> io::Result<()> {
        *self = InNamespace::open(&self.ns, self.timeout)?;
        Ok(())
    }
}

/// One namespace's part of the latest collection.
pub struct Part<'a> {
    /// The `netns` label ([`OWN_NETNS`] for the exporter's own namespace).
    pub label: &'a str,
    pub stats: Stats<'a>,
    /// One per enabled collector.
    pub reports: &'a [Report],
}

/// What the last namespace discovery found, for the netns meta series.
#[derive(Debug, Clone)]
pub struct NetnsOutcome {
    pub health: Health,
    /// Why the list may be incomplete or a namespace was not collected.
    pub problems: Vec<Problem>,
    /// The namespaces collected, the own one first.
    pub namespaces: Vec<NamespaceInfo>,
    /// Found beyond `--collector.netns.max`.
    pub skipped: usize,
    /// Processes whose namespace could not be read.
    pub unreadable: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub label: String,
    pub inode: u64,
    pub lowest_pid: Option<u32>,
}

struct Member {
    label: String,
    collector: Collector<InNamespace>,
    reports: Vec<Report>,
}

impl Member {
    /// A collector failed: the member is replaced at the next collection,
    /// opened afresh from that discovery's path (the path it was opened
    /// from, /proc/PID/ns/net of a pid that may have exited since, can no
    /// longer reopen it).
    fn failed(&self) -> bool {
        self.reports.iter().any(|r| r.error.is_some())
    }
}

/// `--collector.netns` settings.
#[derive(Debug, Clone, Copy)]
pub struct NetnsConfig {
    /// `--collector.netns.max`.
    pub limit: usize,
    /// `--collector.timeout`, for the sockets opened in other namespaces.
    pub timeout: Duration,
}

struct Netns {
    config: NetnsConfig,
    options: Options,
    members: PerNamespace<Member>,
    /// The other namespaces collected last time, in discovery order.
    order: Vec<NsId>,
    outcome: NetnsOutcome,
    /// Problems already logged, so each is logged once.
    logged: LogOnce<ProblemKey>,
}

/// The own namespace's collector, plus, with `--collector.netns`, one per
/// other namespace.
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
                },
                logged: LogOnce::default(),
            }),
        }
    }

    pub fn own(&self) -> &Collector<T> {
        &self.own
    }

    /// Runs one collection: the own namespace, then (with netns) discovery
    /// and every other namespace.
    pub fn collect(&mut self) {
        self.collect_only(KindSet::all());
    }

    /// As [`collect`](Self::collect), with only the collectors in `only`
    /// (a scrape's `collect[]` filter), in every namespace: the filter
    /// picks collectors, not namespaces.
    pub fn collect_only(&mut self, only: KindSet) {
        self.own_reports = self.own.collect_only(only);
        if let Some(netns) = &mut self.netns {
            netns.collect(only);
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
                        label: &member.label,
                        stats: member.collector.stats(),
                        reports: &member.reports,
                    });
                }
            }
        }
        parts
    }

    /// Whether a socket is held open in namespace `id` (the own one is not
    /// counted).
    pub fn holds(&self, id: NsId) -> bool {
        self.netns.as_ref().is_some_and(|n| n.members.contains(id))
    }

    /// The last discovery's outcome; None without `--collector.netns`.
    pub fn netns(&self) -> Option<&NetnsOutcome> {
        self.netns.as_ref().map(|n| &n.outcome)
    }
}

impl Netns {
    fn collect(&mut self, only: KindSet) {
        let started = SystemTime::now();
        let clock = Instant::now();
        let discovery = netns::discover(self.config.limit);
        let duration = clock.elapsed();
        let dropped = self.members.retain_live(&discovery.namespaces);
        if dropped > 0 {
            log::log(
                Level::Debug,
                "network namespaces gone; their sockets closed",
                &[("count", &dropped)],
            );
        }
        let mut problems = discovery.problems;
        problems.extend(privilege_problems());
        let mut namespaces = Vec::with_capacity(discovery.namespaces.len());
        let failed: Vec<NsId> = self
            .order
            .iter()
            .copied()
            .filter(|id| self.members.get(*id).is_some_and(Member::failed))
            .collect();
        for id in failed {
            self.members.remove(id);
        }
        let mut refused: Vec<(String, io::Error)> = Vec::new();
        self.order.clear();
        for ns in &discovery.namespaces {
            let info = NamespaceInfo {
                label: ns.label.clone(),
                inode: ns.id.ino,
                lowest_pid: ns.lowest_pid,
            };
            if ns.own {
                namespaces.push(info);
                continue;
            }
            let (options, timeout) = (&self.options, self.config.timeout);
            let member = self.members.get_or_try_insert_with(ns.id, || {
                InNamespace::open(ns, timeout).map(|transport| Member {
                    label: ns.label.clone(),
                    collector: Collector::new(transport, options.clone()),
                    reports: Vec::new(),
                })
            });
            match member {
                Ok(member) => {
                    // A namespace named after it was first seen changes label.
                    member.label.clone_from(&ns.label);
                    member.reports = member.collector.collect_only(only);
                    self.order.push(ns.id);
                    namespaces.push(info);
                }
                // Gone between discovery and now: nothing to collect.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => refused.push((ns.label.clone(), e)),
            }
        }
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
        self.log_changes(&problems);
        self.outcome = NetnsOutcome {
            health: Health {
                started,
                duration,
                ok: problems.is_empty(),
            },
            problems,
            namespaces,
            skipped: discovery.skipped,
            unreadable: discovery.denied_processes,
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
