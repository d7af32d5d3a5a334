//! One collection cycle: collect from the kernel, record the outcome in the
//! metric catalogue, render the text and the summary. Failures become
//! metrics and one log line per distinct error, never a crash.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crate::collectors::{Kind, KindSet};
use crate::export::metrics::{Metrics, NetnsCounts, NetnsInfo};
use crate::export::render;
use crate::kernel::dump::ErrorKey;
use crate::kernel::transport::Transport;
use crate::log::{self, Level};
use crate::outcome::{Health, Lines, LogOnce, Problem};
use crate::scope::cgroup::{Problem as CgroupProblem, ROOT_CGROUP_ID};
use crate::scope::cgroup_attribution::{Attribution, CgroupRows};
use crate::scope::cgroup_health::{self, HealthRows, Totals};
use crate::scope::namespaces::{Fleet, Part};

/// How a collector's failure and recovery read in the log.
const COLLECTOR_LINES: Lines<'static> = Lines {
    problem: (
        Level::Error,
        "collection failed; the collector's series are left out until it recovers",
    ),
    field: "err",
    recovered: "collection recovered",
    last: Some("last_err"),
};

/// Everything a scrape or a dump serves from one collection.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The Prometheus text exposition.
    pub text: String,
    /// The human summary (`dump --format table`, landing page).
    pub summary: String,
    /// When the collection started (monotonic, for the cache).
    pub started: Instant,
    pub duration: Duration,
    /// Every enabled collector succeeded.
    pub success: bool,
    /// The collectors asked for (a scrape's `collect[]` filter, or all);
    /// only the enabled ones among them ran.
    pub set: KindSet,
}

/// Where a collection's summary goes.
enum Summary<'a> {
    Skip,
    /// Into the snapshot.
    Text,
    /// Written to this, a namespace at a time.
    To(&'a mut dyn std::fmt::Write),
}

pub struct Exporter<T> {
    fleet: Fleet<T>,
    metrics: Metrics,
    /// Each collector's log state per namespace label, so a persistent
    /// fault logs once, not per scrape, and recovery is logged once too.
    steps: HashMap<(String, Kind), LogOnce<ErrorKey>>,
    /// The last collection's errors, for [`Exporter::last_error`].
    last_errors: Vec<(String, Kind, String)>,
    /// Log failures (the server) or leave them to the caller (`dump`).
    log_failures: bool,
    /// `--collector.cgroup`.
    cgroups: Option<Cgroups>,
}

/// Refuses a cgroup2 mount whose top is not the hierarchy's root although
/// mountinfo says it is: inside a cgroup namespace (a container without the
/// host's /sys/fs/cgroup) the mount shows only the container's own subtree
/// as `/`, so every path would be wrong and every other cgroup unknown.
fn check_root(attribution: Attribution) -> Result<Attribution, CgroupProblem> {
    use std::os::unix::fs::MetadataExt;
    let mount = attribution.paths().mount();
    if mount.root != "/" {
        return Ok(attribution); // a subtree mount, with its prefix known
    }
    match std::fs::metadata(&mount.mount_point) {
        Ok(meta) if meta.ino() != ROOT_CGROUP_ID => Err(CgroupProblem::NotRoot {
            mount: mount.mount_point.clone(),
            inode: meta.ino(),
        }),
        Ok(_) => Ok(attribution),
        Err(e) => Err(CgroupProblem::Unreadable {
            mount: mount.mount_point.clone(),
            error: (&e).into(),
        }),
    }
}

/// Each namespace's cgroup rows (socket counts; with `--collector.tcp.info`
/// the health rows with their counters too), and the cgroup collector's
/// health.
type Attributed<'a> = (NsRows<'a, CgroupRows>, NsRows<'a, HealthRows>, Health);

/// `--collector.cgroup`: turns each namespace's per-cgroup-id TCP counts
/// (from the tcp collector's dump) into capped rows by cgroup path.
pub struct Cgroups {
    /// Err: why there is no attribution at all (no cgroup2 mount).
    attribution: Result<Attribution, CgroupProblem>,
    /// What was logged last, so each problem is logged once.
    logged: LogOnce<<CgroupProblem as Problem>::Key>,
    /// The per-cgroup retransmission counters (`--collector.tcp.info`).
    totals: Totals,
}

/// One collection's per-cgroup rows, per namespace label.
type NsRows<'a, R> = Vec<(&'a str, R)>;

impl Cgroups {
    /// On this host's cgroup2 mount; see [`Attribution::new`] for `depth`
    /// (0: whole paths) and `max_series`.
    pub fn detect(depth: usize, max_series: usize) -> Cgroups {
        Cgroups {
            attribution: Attribution::detect(depth, max_series)
                .map_err(CgroupProblem::NoMount)
                .and_then(check_root),
            logged: LogOnce::default(),
            totals: Totals::default(),
        }
    }

    /// The rows of every namespace whose tcp collection succeeded, and the
    /// cgroup collector's health. No rows when the ids cannot be mapped at
    /// all (no cgroup2 mount, or a kernel that sends no ids); rows with
    /// `unknown` sockets and health 0 when the last walk was incomplete;
    /// and how many cgroup directories the last walk could not list.
    fn attribute_counting<'a>(&mut self, parts: &[Part<'a>]) -> (Attributed<'a>, usize) {
        let rows = self.attribute(parts);
        let unreadable = self
            .attribution
            .as_ref()
            .map_or(0, |a| a.paths().last_walk().unreadable);
        (rows, unreadable)
    }

    fn attribute<'a>(&mut self, parts: &[Part<'a>]) -> Attributed<'a> {
        let started = SystemTime::now();
        let clock = Instant::now();
        let counted: Vec<&Part<'a>> = parts
            .iter()
            .filter(|p| {
                p.reports
                    .iter()
                    .any(|r| r.kind == Kind::Tcp && r.error.is_none())
            })
            .collect();
        let mut rows = Vec::new();
        let mut health_rows = Vec::new();
        let problem = match &mut self.attribution {
            Err(why) => Some(why.clone()),
            Ok(attribution) => {
                let with_id: u64 = counted
                    .iter()
                    .map(|p| p.stats.tcp.sockets_with_cgroup_id())
                    .sum();
                let without: u64 = counted
                    .iter()
                    .map(|p| p.stats.tcp.full_sockets_without_cgroup_id())
                    .sum();
                if with_id == 0 && without > 0 {
                    Some(CgroupProblem::NoIds { sockets: without })
                } else {
                    attribution.start_collection();
                    self.totals.start();
                    for part in &counted {
                        let per_id = cgroup_health::per_id(part.stats.tcp);
                        let attributed = cgroup_health::attribute(attribution, per_id);
                        rows.push((part.label, cgroup_health::counts(&attributed)));
                        if part.stats.tcp.health().is_some() {
                            let served = self.totals.add(part.label, &attributed);
                            health_rows.push((part.label, served));
                        }
                    }
                    self.totals.finish(parts.iter().map(|p| p.label));
                    attribution.problem().cloned()
                }
            }
        };
        const LINES: Lines<'static> = Lines {
            problem: (Level::Warn, "cgroup attribution incomplete"),
            field: "problem",
            recovered: "cgroup attribution complete again",
            last: None,
        };
        self.logged.update(problem.as_slice(), &LINES, &[], true);
        let health = Health {
            started,
            duration: clock.elapsed(),
            ok: problem.is_none(),
        };
        (rows, health_rows, health)
    }
}

impl<T: Transport> Exporter<T> {
    pub fn new(fleet: Fleet<T>, metrics: Metrics) -> Exporter<T> {
        Exporter {
            fleet,
            metrics,
            steps: HashMap::new(),
            last_errors: Vec::new(),
            log_failures: true,
            cgroups: None,
        }
    }

    /// Counts TCP sockets by cgroup too (`--collector.cgroup`; the
    /// collectors must have been built with `Options::cgroup`).
    pub fn with_cgroups(mut self, cgroups: Cgroups) -> Exporter<T> {
        self.cgroups = Some(cgroups);
        self
    }

    /// For callers that report the error themselves.
    pub fn quiet(mut self) -> Exporter<T> {
        self.log_failures = false;
        self
    }

    /// The errors of the last collection (`collector: error; ...`), if any
    /// collector failed.
    pub fn last_error(&self) -> Option<String> {
        if self.last_errors.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .last_errors
            .iter()
            .map(|(netns, kind, e)| match self.fleet.netns() {
                None => format!("{} collector: {e}", kind.label()),
                Some(_) => format!("{} collector in netns {netns}: {e}", kind.label()),
            })
            .collect();
        Some(parts.join("; "))
    }

    pub fn fleet(&self) -> &Fleet<T> {
        &self.fleet
    }

    /// Runs one collection and renders it.
    pub fn refresh(&mut self) -> Snapshot {
        self.refresh_only(KindSet::all())
    }

    /// Runs one collection of the collectors in `only` (those enabled) and
    /// renders it: their series and health only; with `--collector.netns`
    /// in every namespace, with the discovery's health; the cgroup rows
    /// and health only when tcp is among them (they come from its dump).
    pub fn refresh_only(&mut self, only: KindSet) -> Snapshot {
        let mut snapshot = self.record_only(only, Summary::Text);
        snapshot.text = self.metrics.take_text();
        snapshot
    }

    /// Writes the text exposition of the collection [`record`](Self::record)
    /// made to `out`, as it is made: `dump` holds no copy of the whole text
    /// (5.5 MB with 500 namespaces).
    pub fn write_text(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.metrics.write_text(out)
    }

    /// [`refresh`](Self::refresh) without the text (empty in the snapshot):
    /// [`write_text`](Self::write_text) writes it. Without `summary` the
    /// summary is empty too (it is about 1.4 KB per namespace).
    pub fn record(&mut self, summary: bool) -> Snapshot {
        let summary = match summary {
            true => Summary::Text,
            false => Summary::Skip,
        };
        self.record_only(KindSet::all(), summary)
    }

    /// [`record`](Self::record) of the collectors in `only` (see
    /// [`refresh_only`](Self::refresh_only)), with the summary: the
    /// server's collection, whose text [`write_text`](Self::write_text)
    /// then writes straight into the compressor.
    /// The summary is written to `summary` (the snapshot's is empty).
    pub fn record_set(&mut self, only: KindSet, summary: &mut dyn std::fmt::Write) -> Snapshot {
        self.record_only(only, Summary::To(summary))
    }

    fn record_only(&mut self, only: KindSet, summary: Summary<'_>) -> Snapshot {
        let started = Instant::now();
        self.fleet.collect_only(only);
        let duration = started.elapsed();
        let parts = self.fleet.parts();
        let netns = self.fleet.netns();
        let mut errors = Vec::new();
        let mut steps = HashMap::with_capacity(self.steps.len());
        for part in &parts {
            for report in part.reports {
                let key = (part.label.to_string(), report.kind);
                let mut once = self.steps.remove(&key).unwrap_or_default();
                let collector = report.kind.label();
                let mut fields: Vec<(&str, &dyn std::fmt::Display)> =
                    vec![("collector", &collector)];
                if netns.is_some() {
                    fields.push(("netns", &part.label));
                }
                once.update(
                    report.error.as_slice(),
                    &COLLECTOR_LINES,
                    &fields,
                    self.log_failures,
                );
                if let Some(error) = &report.error {
                    errors.push((part.label.to_string(), report.kind, error.to_string()));
                }
                steps.insert(key, once);
            }
        }
        // A namespace that is gone takes its log state with it; the
        // collectors a filtered collection left out keep theirs.
        for (key, once) in self.steps.drain() {
            if !only.contains(key.1) && parts.iter().any(|p| p.label == key.0) {
                steps.insert(key, once);
            }
        }
        self.steps = steps;
        self.last_errors = errors;
        self.metrics.begin_only(only);
        for part in &parts {
            self.metrics
                .record_namespace(part.label, part.stats, part.reports);
        }
        let mut cgroup_rows = Vec::new();
        let mut cgroups_ok = true;
        if let Some(cgroups) = self.cgroups.as_mut().filter(|_| only.contains(Kind::Tcp)) {
            let ((rows, health_rows, health), unreadable) = cgroups.attribute_counting(&parts);
            self.metrics.record_cgroup_unreadable(unreadable);
            for (label, capped) in &rows {
                self.metrics
                    .record_cgroups(label, &capped.rows, capped.dropped);
            }
            for (label, served) in &health_rows {
                self.metrics.record_cgroup_health(label, served);
            }
            self.metrics.record_global_health("cgroup", health);
            cgroups_ok = health.ok;
            cgroup_rows = rows;
        }
        if let Some(netns) = netns {
            self.metrics.record_global_health("netns", netns.health);
            let infos: Vec<NetnsInfo<'_>> = netns
                .namespaces
                .iter()
                .map(|ns| NetnsInfo {
                    label: &ns.label,
                    inode: ns.inode,
                    lowest_pid: ns.lowest_pid,
                })
                .collect();
            let counts = NetnsCounts {
                skipped: netns.skipped,
                unreadable: netns.unreadable,
                stale: netns.stale,
                pending: netns.pending,
                empty: &netns.empty,
            };
            self.metrics.record_netns(&infos, &counts);
        }
        let success =
            self.last_errors.is_empty() && netns.map_or(true, |n| n.health.ok) && cgroups_ok;
        log::log(
            Level::Debug,
            "collected",
            &[
                ("duration", &format!("{duration:?}")),
                ("success", &success),
            ],
        );
        Snapshot {
            text: String::new(),
            summary: match summary {
                Summary::Text => render::summary(&parts, netns, &cgroup_rows),
                Summary::Skip => String::new(),
                Summary::To(out) => {
                    render::write_summary(out, &parts, netns, &cgroup_rows)
                        .expect("the summary's writer cannot fail");
                    String::new()
                }
            },
            started,
            duration,
            success,
            set: only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::tcp::TcpStats;
    use crate::collectors::{OwnedStats, Report};
    use crate::config::PortSet;
    use crate::kernel::diag::AF_INET;
    use crate::kernel::parse::tests::{inet_diag_msg, v4};
    use crate::scope::cgroup_mount::Cgroup2Mount;

    fn tcp_ok() -> Vec<Report> {
        vec![Report {
            kind: Kind::Tcp,
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            error: None,
        }]
    }

    #[test]
    fn a_kernel_without_cgroup_ids_gives_no_rows_and_health_0() {
        let mut stats = OwnedStats {
            tcp: TcpStats::new(PortSet::default()).with_cgroups(true),
            ..OwnedStats::default()
        };
        // An ESTABLISHED socket with no attributes at all.
        let m = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 80, 9, 0, 0, 1);
        stats.tcp.add(&m).unwrap();
        let reports = tcp_ok();
        let parts = [Part {
            label: "host",
            stats: stats.stats(),
            reports: &reports,
        }];
        let mount = Cgroup2Mount {
            mount_point: "/nonexistent".into(),
            root: "/".into(),
        };
        let mut cgroups = Cgroups {
            attribution: Ok(Attribution::new(mount, 0, 10)),
            logged: LogOnce::default(),
            totals: Totals::default(),
        };
        let (rows, _, health) = cgroups.attribute(&parts);
        assert!(rows.is_empty());
        assert!(!health.ok);
        assert!(cgroups
            .logged
            .texts()
            .next()
            .unwrap()
            .contains("INET_DIAG_CGROUP_ID"));

        let mut missing = Cgroups {
            attribution: Err(CgroupProblem::NoMount(
                "no cgroup2 filesystem is mounted".into(),
            )),
            logged: LogOnce::default(),
            totals: Totals::default(),
        };
        let (rows, _, health) = missing.attribute(&parts);
        assert!(rows.is_empty() && !health.ok);
        // A failed tcp collection contributes nothing.
        let failed = vec![];
        let parts = [Part {
            label: "host",
            stats: stats.stats(),
            reports: &failed,
        }];
        let (rows, _, _) = cgroups.attribute(&parts);
        assert!(rows.is_empty());
    }

    /// Refuses every request, so every collector fails.
    struct Refuses;

    impl Transport for Refuses {
        fn send(&mut self, _request: &[u8]) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }
        fn recv(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
            Ok(0)
        }
        fn port(&self) -> u32 {
            0
        }
        fn reset(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_filtered_collection_keeps_the_left_out_collectors_log_state() {
        use crate::collectors::{Collector, Options};
        use crate::export::metrics::Shape;
        use crate::scope::netns::OWN_NETNS;
        let fleet = Fleet::new(Collector::new(Refuses, Options::default()), None);
        let mut exporter = Exporter::new(fleet, Metrics::new(Shape::default())).quiet();
        let key = |kind| (OWN_NETNS.to_string(), kind);
        let failing = |e: &Exporter<Refuses>, kind| {
            e.steps
                .get(&key(kind))
                .is_some_and(|once| once.texts().next().is_some())
        };
        let all = exporter.refresh();
        assert!(!all.success);
        assert!(Kind::ALL.iter().all(|k| failing(&exporter, *k)));
        let udp = exporter.refresh_only(KindSet::of(&[Kind::Udp]));
        assert_eq!(udp.set, KindSet::of(&[Kind::Udp]));
        assert!(udp
            .text
            .contains(r#"sockdiag_collect_success{collector="udp"} 0"#));
        assert!(!udp.text.contains(r#"collector="tcp""#), "{}", udp.text);
        // tcp's failure is still known: it is not logged again when the
        // next unfiltered collection fails the same way.
        assert!(Kind::ALL.iter().all(|k| failing(&exporter, *k)));
        assert_eq!(
            exporter.last_error().unwrap().matches("collector").count(),
            1,
            "the last collection's errors: udp's only"
        );
    }
}
