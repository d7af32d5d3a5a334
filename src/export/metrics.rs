//! The metric catalogue: every metric's name, HELP text and labels live here
//! and nowhere else, and [`Metrics::record`] is the one place values are set.
//!
//! Conventions: base units (`_bytes`, `_seconds`); counts and bytes never
//! share a metric; every family x state series is emitted, zeros included,
//! so dashboards never see gaps; lowercase label values. Series whose number
//! depends on the host (listeners, ports) are capped, and what a cap leaves
//! out is counted in `sockdiag_series_dropped`, never dropped silently.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::process_collector::ProcessCollector;

use crate::collectors::tcp_health;
use crate::collectors::SERIES_DROPPED;
use crate::collectors::{self, Kind, KindSet, Report, Stats};
use crate::exposition::{Families, Ns, Sizes, Spec, Type};
use crate::kernel::diag::TcpState;
use crate::outcome::Health;
use crate::scope::cgroup_health::HealthRows;
use crate::scope::netns::OWN_NETNS;

const BY_COLLECTOR: &[&str] = &["collector"];

pub static COLLECT_DURATION: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_collect_duration_seconds",
    help: "Wall time of the collection whose data is served, per collector.",
    labels: BY_COLLECTOR,
};
pub static COLLECT_SUCCESS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_collect_success",
    help: "1 if the collector's collection whose data is served succeeded, 0 if it failed (its series are then left out). collector=\"netns\": 0 when namespaces may be missing (privileges, limit); collector=\"cgroup\": 0 when cgroups cannot be named or the last walk was incomplete (the log says why).",
    labels: BY_COLLECTOR,
};
pub static COLLECT_TIMESTAMP: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_collect_timestamp_seconds",
    help: "Unix time at which the served data was collected. Collections are cached: data may be up to max(--cache.ttl, 4x the collection's duration) old; a namespace --collector.netns.budget did not reach keeps its last collection's time.",
    labels: BY_COLLECTOR,
};
pub static COLLECTIONS: Spec = Spec {
    kind: Type::Counter,
    name: "sockdiag_collections_total",
    help: "Collections run against the kernel since start; scrapes served from the cache, and namespaces served from an earlier collection (--collector.netns.budget), do not count.",
    labels: BY_COLLECTOR,
};
pub static CGROUP_SOCKETS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_cgroup_sockets",
    help: "TCP sockets by the cgroup v2 path of their owner and state (--collector.cgroup). `none`: sockets that carry no cgroup (TIME_WAIT, request sockets); `unknown`: a cgroup no longer or not visible in the cgroup2 tree; `other`: cgroups beyond --collector.cgroup.max-series, summed.",
    labels: &["cgroup", "protocol", "state"],
};
pub static CGROUP_UNREADABLE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_cgroup_unreadable_directories",
    help: "Cgroup directories the last walk of the cgroup2 tree could not list (--collector.cgroup): their subtrees were skipped, and sockets in them are counted as unknown.",
    labels: &[],
};
pub static NETNS_INFO: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_netns_info",
    help: "One series per network namespace collected (--collector.netns): its netns label, its inode (as lsns and readlink /proc/PID/ns/net print it) and the lowest pid found in it, to map the label to a container; always 1.",
    labels: &["netns", "inode", "pid"],
};
pub static NETNS_SKIPPED: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_netns_skipped",
    help: "Network namespaces found beyond --collector.netns.max and not collected.",
    labels: &[],
};
pub static NETNS_UNREADABLE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_netns_unreadable_processes",
    help: "Processes whose network namespace could not be read (permission denied): a namespace held only by them is not collected.",
    labels: &[],
};
pub static NETNS_STALE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_netns_stale",
    help: "Network namespaces served from an earlier collection: --collector.netns.budget ran out before they were reached. Their series carry that collection's sockdiag_collect_timestamp_seconds, and they are collected first next time.",
    labels: &[],
};
pub static NETNS_PENDING: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_netns_pending",
    help: "Network namespaces found but not collected yet: --collector.netns.budget ran out before they were reached, and they have no earlier collection to serve. They are collected first next time.",
    labels: &[],
};
pub static NETNS_EMPTY: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_netns_empty",
    help: "Network namespaces (the own one not included) whose own counters (/proc/net/sockstat, sockstat6, protocols) showed no socket for the collector in the last collection: its dump was skipped and its series there are exact zeros.",
    labels: BY_COLLECTOR,
};
pub static BUILD_INFO: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_build_info",
    help: "Build information of the running sockdiag_exporter; always 1.",
    labels: &["version", "revision"],
};
/// `--compat.node-exporter`: node_exporter's tcpstat series, same name,
/// label and meaning (both families summed).
pub static NODE_TCP_STATES: Spec = Spec {
    kind: Type::Gauge,
    name: "node_tcp_connection_states",
    help: "Number of connection states (node_exporter tcpstat compatible: both address families summed; every state emitted).",
    labels: &["state"],
};

/// The metrics of the exporter itself (health, namespaces, cgroups, build),
/// next to the collectors' own ([`collectors::specs`]).
pub static EXPORTER_SPECS: &[&Spec] = &[
    &COLLECT_DURATION,
    &COLLECT_SUCCESS,
    &COLLECT_TIMESTAMP,
    &COLLECTIONS,
    &CGROUP_SOCKETS,
    &CGROUP_UNREADABLE,
    &NETNS_INFO,
    &NETNS_SKIPPED,
    &NETNS_UNREADABLE,
    &NETNS_STALE,
    &NETNS_PENDING,
    &NETNS_EMPTY,
    &BUILD_INFO,
    &NODE_TCP_STATES,
];

/// Every metric the exporter serves (besides the process metrics).
pub fn catalogue() -> Vec<&'static Spec> {
    collectors::specs()
        .chain(EXPORTER_SPECS.iter().copied())
        .collect()
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("SOCKDIAG_REVISION");

/// How the series are shaped (from the flags).
#[derive(Debug, Clone)]
pub struct Shape {
    /// Register the standard process_* metrics (tests leave them out).
    pub process: bool,
    /// Emit `node_tcp_connection_states` too (for the own namespace only:
    /// node_exporter sees nothing else).
    pub compat_node_exporter: bool,
    /// `--collector.netns`: every socket and collector series carries a
    /// `netns` label, and the netns meta metrics are served.
    pub netns: bool,
    /// `--collector.cgroup`: serve `sockdiag_cgroup_sockets`.
    pub cgroup: bool,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            process: true,
            compat_node_exporter: false,
            netns: false,
            cgroup: false,
        }
    }
}

/// The `netns` value of series that belong to no one namespace (the netns
/// and cgroup collectors' own health). Prometheus treats an empty label
/// value as an absent label.
const NO_NETNS: &str = "";

/// The netns meta counts of one collection (see the specs above).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsCounts<'a> {
    pub skipped: usize,
    pub unreadable: usize,
    pub stale: usize,
    pub pending: usize,
    /// Per enabled collector, namespaces whose dump was skipped as empty.
    pub empty: &'a [(Kind, usize)],
}

/// One namespace in the `sockdiag_netns_info` series.
#[derive(Debug, Clone, Copy)]
pub struct NetnsInfo<'a> {
    pub label: &'a str,
    pub inode: u64,
    pub lowest_pid: Option<u32>,
}

/// The catalogue's families for each collection, and what lasts from one
/// collection to the next: the collection counts and the process metrics.
pub struct Metrics {
    shape: Shape,
    /// The standard process_* metrics, with [`Shape::process`].
    process: Option<ProcessCollector>,
    /// The series of the collection being recorded: made afresh by
    /// [`begin`](Self::begin), so nothing a collection did not set is
    /// served.
    current: RefCell<Families>,
    /// Collections per (collector, netns), kept here so that the series of
    /// a namespace that disappeared can be dropped while the others keep
    /// counting: pairs not seen in a collection are forgotten at the next.
    counts: RefCell<Counts>,
    /// The last collection's family sizes, reserved by the next one.
    sizes: RefCell<Sizes>,
}

#[derive(Default)]
struct Counts {
    /// Per (collector, netns): collections counted, and the start of the
    /// last one counted. A namespace the budget did not reach is served
    /// from its last collection, whose start it keeps: it is not counted
    /// again.
    totals: HashMap<(String, String), (u64, Option<SystemTime>)>,
    seen: HashSet<(String, String)>,
    /// The collectors the last collection ran (a `collect[]` filter's).
    last: KindSet,
}

/// Whether `collector`'s health is recorded by a collection of `set`
/// (`cgroup` comes with tcp; `netns` with every collection).
fn records(set: KindSet, collector: &str) -> bool {
    match KindSet::kind_named(collector) {
        Some(kind) => set.contains(kind),
        None if collector == "cgroup" => set.contains(Kind::Tcp),
        None => true,
    }
}

impl Metrics {
    pub fn new(shape: Shape) -> Metrics {
        let metrics = Metrics {
            process: shape.process.then(ProcessCollector::for_self),
            shape,
            current: RefCell::default(),
            counts: RefCell::default(),
            sizes: RefCell::default(),
        };
        metrics.begin();
        metrics
    }

    /// One collection in one namespace, for callers without
    /// `--collector.netns`: [`begin`](Self::begin) plus
    /// [`record_namespace`](Self::record_namespace).
    pub fn record(&self, stats: Stats<'_>, reports: &[Report]) {
        self.begin();
        self.record_namespace(OWN_NETNS, stats, reports);
    }

    /// Starts recording a collection: the families start empty, so that
    /// what the collection does not set (a failed collector, a namespace
    /// that is gone) is absent rather than stale.
    pub fn begin(&self) {
        self.begin_only(KindSet::ALL);
    }

    /// Starts a collection of the collectors in `only` (a scrape's
    /// `collect[]` filter). A counter is dropped only when the last
    /// collection ran its collector and did not record it (its namespace is
    /// gone): a collector a filter left out keeps counting where it was.
    pub fn begin_only(&self, only: KindSet) {
        let mut families = Families::with_hints(self.sizes.borrow().clone());
        families.int(&BUILD_INFO, &[VERSION, REVISION], None, 1);
        if self.shape.netns {
            families.int(&NETNS_SKIPPED, &[], None, 0);
            families.int(&NETNS_UNREADABLE, &[], None, 0);
            families.int(&NETNS_STALE, &[], None, 0);
            families.int(&NETNS_PENDING, &[], None, 0);
        }
        *self.current.borrow_mut() = families;
        let mut counts = self.counts.borrow_mut();
        let seen = std::mem::take(&mut counts.seen);
        let last = std::mem::replace(&mut counts.last, only);
        counts
            .totals
            .retain(|key, _| seen.contains(key) || !records(last, &key.0));
    }

    /// The `netns` label value for a namespace's series.
    fn ns<'a>(&self, netns: &'a str) -> Ns<'a> {
        self.shape.netns.then_some(netns)
    }

    /// Records one namespace's collection: `reports` has one entry per
    /// enabled collector, and `stats` is valid for those without an error.
    /// A failed collector's series are left out rather than shown stale or
    /// half-counted; the others are unaffected. `netns` is the namespace's
    /// label ([`OWN_NETNS`] for the own one), used with `--collector.netns`.
    pub fn record_namespace(&self, netns: &str, stats: Stats<'_>, reports: &[Report]) {
        let ns = self.ns(netns);
        let out = &mut *self.current.borrow_mut();
        for report in reports {
            self.record_health(out, report.kind.label(), ns, report.health());
            if report.error.is_some() {
                continue;
            }
            stats.families(report.kind, out, ns);
            if report.kind == Kind::Tcp && self.shape.compat_node_exporter && netns == OWN_NETNS {
                for state in TcpState::ALL {
                    out.int(
                        &NODE_TCP_STATES,
                        &[state.label()],
                        None,
                        stats.tcp.total(state),
                    );
                }
            }
        }
    }

    /// The health series of a collector that belongs to no one namespace
    /// (`netns`: discovery; `cgroup`: the id to path mapping).
    pub fn record_global_health(&self, collector: &str, health: Health) {
        let out = &mut *self.current.borrow_mut();
        self.record_health(out, collector, self.ns(NO_NETNS), health);
    }

    fn record_health(&self, out: &mut Families, collector: &str, ns: Ns<'_>, health: Health) {
        let labels = &[collector];
        out.set(&COLLECT_DURATION, labels, ns, health.duration.as_secs_f64());
        let since = health
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        out.set(&COLLECT_TIMESTAMP, labels, ns, since.as_secs_f64());
        out.set(&COLLECT_SUCCESS, labels, ns, f64::from(u8::from(health.ok)));
        let key = (collector.to_string(), ns.unwrap_or(NO_NETNS).to_string());
        let mut counts = self.counts.borrow_mut();
        let (total, last) = counts.totals.entry(key.clone()).or_insert((0, None));
        if *last != Some(health.started) {
            *total += 1;
            *last = Some(health.started);
        }
        let total = *total;
        counts.seen.insert(key);
        out.int(&COLLECTIONS, labels, ns, total);
    }

    /// The netns meta series: the namespaces collected, how many were left
    /// out by `--collector.netns.max`, and how many processes could not be
    /// looked into.
    pub fn record_netns(&self, namespaces: &[NetnsInfo<'_>], counts: &NetnsCounts<'_>) {
        let NetnsCounts {
            skipped,
            unreadable,
            stale,
            pending,
            empty,
        } = *counts;
        let mut out = self.current.borrow_mut();
        out.int(&NETNS_STALE, &[], None, stale as u64);
        out.int(&NETNS_PENDING, &[], None, pending as u64);
        for (kind, n) in empty {
            out.int(&NETNS_EMPTY, &[kind.label()], None, *n as u64);
        }
        for info in namespaces {
            let pid = info.lowest_pid.map(|p| p.to_string()).unwrap_or_default();
            out.int(
                &NETNS_INFO,
                &[info.label, &info.inode.to_string(), &pid],
                None,
                1,
            );
        }
        out.int(&NETNS_SKIPPED, &[], None, skipped as u64);
        out.int(&NETNS_UNREADABLE, &[], None, unreadable as u64);
    }

    /// One namespace's TCP sockets by cgroup path and state, after the
    /// series cap; `dropped` cgroups were summed into `other`.
    pub fn record_cgroups(
        &self,
        netns: &str,
        rows: &[(String, [u64; TcpState::COUNT])],
        dropped: usize,
    ) {
        let mut out = self.current.borrow_mut();
        let ns = self.ns(netns);
        for (cgroup, counts) in rows {
            for state in TcpState::ALL {
                out.int(
                    &CGROUP_SOCKETS,
                    &[cgroup, "tcp", state.label()],
                    ns,
                    counts[state as usize],
                );
            }
        }
        out.int(&SERIES_DROPPED, &[CGROUP_SOCKETS.name], ns, dropped as u64);
    }

    /// One namespace's TCP health by cgroup label (`--collector.tcp.info`
    /// with `--collector.cgroup`), after the same cap as
    /// [`record_cgroups`](Self::record_cgroups).
    pub fn record_cgroup_health(&self, netns: &str, rows: &HealthRows) {
        let mut out = self.current.borrow_mut();
        let ns = self.ns(netns);
        for (cgroup, health, total) in &rows.rows {
            let labels = &[cgroup.as_str()];
            out.histogram(&tcp_health::CGROUP_RTT, labels, ns, health.hist());
            out.int(&tcp_health::CGROUP_RETRANSMITTED, labels, ns, *total);
            out.int(
                &tcp_health::CGROUP_RETRANSMITTING,
                labels,
                ns,
                health.retransmitting,
            );
            out.int(
                &tcp_health::CGROUP_NOTSENT,
                labels,
                ns,
                health.notsent_bytes,
            );
        }
        out.int(
            &SERIES_DROPPED,
            &[tcp_health::CGROUP_RTT.name],
            ns,
            rows.dropped as u64,
        );
    }

    /// How many cgroup directories the last walk could not list.
    pub fn record_cgroup_unreadable(&self, directories: usize) {
        let mut out = self.current.borrow_mut();
        out.int(&CGROUP_UNREADABLE, &[], None, directories as u64);
    }

    /// The text exposition format (version 0.0.4) of the collection
    /// recorded since [`begin`](Self::begin).
    pub fn encode(&self) -> String {
        let extra: Vec<&dyn prometheus::core::Collector> = match &self.process {
            Some(process) => vec![process],
            None => Vec::new(),
        };
        self.current.borrow().encode(&extra)
    }

    /// [`encode`](Self::encode), giving up the collection's families as
    /// they are written (they are made afresh by the next
    /// [`begin`](Self::begin)): the peak is the text plus one family, not
    /// the text plus all of them.
    pub fn take_text(&self) -> String {
        let extra: Vec<&dyn prometheus::core::Collector> = match &self.process {
            Some(process) => vec![process],
            None => Vec::new(),
        };
        let families = std::mem::take(&mut *self.current.borrow_mut());
        *self.sizes.borrow_mut() = families.sizes();
        families.into_text(&extra)
    }

    /// [`take_text`](Self::take_text) written to `out` as it is made.
    pub fn write_text(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let extra: Vec<&dyn prometheus::core::Collector> = match &self.process {
            Some(process) => vec![process],
            None => Vec::new(),
        };
        let families = std::mem::take(&mut *self.current.borrow_mut());
        *self.sizes.borrow_mut() = families.sizes();
        families.write_to(&extra, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::collectors::tcp::TcpStats;
    use crate::config::PortSet;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::dump::CollectError;
    use crate::kernel::parse::tests::{inet_diag_msg, inet_with_drops, unix_diag_msg, v4};

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn count(text: &str, metric: &str, filter: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(filter))
            .count()
    }

    use crate::collectors::OwnedStats as All;

    /// A report of a collection of its own: each starts a nanosecond
    /// after the one before (1.7e9 s as an f64), so each is counted.
    fn report(kind: Kind, ok: bool) -> Report {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Report {
            kind,
            started: UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(n),
            duration: Duration::from_millis(5),
            error: (!ok).then_some(CollectError {
                request: "test",
                kind: crate::kernel::dump::ErrorKind::Eof,
            }),
        }
    }

    fn all_ok() -> Vec<Report> {
        Kind::ALL.into_iter().map(|k| report(k, true)).collect()
    }

    fn shape() -> Shape {
        Shape {
            process: false,
            ..Shape::default()
        }
    }

    #[test]
    fn catalogue_names_are_unique_and_in_base_units() {
        let mut names: Vec<_> = catalogue().iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), catalogue().len());
        for spec in catalogue() {
            let compat = spec.name == NODE_TCP_STATES.name;
            assert!(
                spec.name.starts_with("sockdiag_") || compat,
                "{}",
                spec.name
            );
            assert!(!spec.help.is_empty());
            assert!(
                !spec.name.ends_with("_count"),
                "reserved suffix: {}",
                spec.name
            );
        }
    }

    #[test]
    fn every_state_is_emitted_with_zeros() {
        let metrics = Metrics::new(shape());
        let mut all = All::default();
        let m = inet_diag_msg(AF_INET6, 8, [0; 16], 80, 9, 10, 20, 1);
        all.tcp.add(&m).unwrap();
        let l = inet_with_drops(AF_INET, 10, v4([127, 0, 0, 1]), 8080, 0, 2, 128, 7);
        all.listen.add(&l).unwrap();
        let u = inet_with_drops(AF_INET, 7, v4([0; 4]), 53, 0, 768, 0, 3);
        all.udp.add(&u).unwrap();
        all.unix.add(&unix_diag_msg(1, 1, None, 9, 0)).unwrap();
        metrics.record(all.stats(), &all_ok());
        let text = metrics.encode();
        for metric in [
            "sockdiag_sockets",
            "sockdiag_receive_queue_bytes",
            "sockdiag_send_queue_bytes",
        ] {
            assert_eq!(count(&text, metric, "protocol=\"tcp\""), 22, "{metric}");
            assert_eq!(count(&text, metric, "protocol=\"udp\""), 4, "{metric}");
        }
        for metric in [
            "sockdiag_unix_sockets",
            "sockdiag_unix_receive_queue_bytes",
            "sockdiag_unix_send_queue_bytes",
        ] {
            assert_eq!(count(&text, metric, ""), 9, "{metric}");
        }
        let cw = r#"{family="ipv6",protocol="tcp",state="close_wait"}"#;
        assert_eq!(value(&text, &format!("sockdiag_sockets{cw}")), Some(1.0));
        assert_eq!(
            value(&text, &format!("sockdiag_receive_queue_bytes{cw}")),
            Some(10.0)
        );
        assert_eq!(
            value(&text, &format!("sockdiag_send_queue_bytes{cw}")),
            Some(20.0)
        );
        let listener = r#"{address="127.0.0.1",family="ipv4",port="8080",protocol="tcp"}"#;
        for (metric, v) in [
            ("sockdiag_listen_queue", 2.0),
            ("sockdiag_listen_queue_max", 128.0),
            ("sockdiag_listen_sockets", 1.0),
            ("sockdiag_listen_drops_total", 7.0),
        ] {
            assert_eq!(
                value(&text, &format!("{metric}{listener}")),
                Some(v),
                "{metric}"
            );
        }
        assert!(text.contains("# TYPE sockdiag_listen_drops_total counter"));
        let udp = r#"{family="ipv4",protocol="udp",state="unconnected"}"#;
        assert_eq!(value(&text, &format!("sockdiag_sockets{udp}")), Some(1.0));
        assert_eq!(
            value(&text, &format!("sockdiag_receive_queue_bytes{udp}")),
            Some(768.0)
        );
        assert_eq!(
            value(&text, r#"sockdiag_udp_receive_drops{family="ipv4"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_unix_sockets{state="connected",type="stream"}"#
            ),
            Some(1.0)
        );
        for kind in Kind::ALL {
            let c = format!("{{collector=\"{}\"}}", kind.label());
            assert_eq!(
                value(&text, &format!("sockdiag_collect_success{c}")),
                Some(1.0)
            );
            assert_eq!(
                value(&text, &format!("sockdiag_collect_timestamp_seconds{c}")),
                Some(1.7e9)
            );
            assert_eq!(
                value(&text, &format!("sockdiag_collections_total{c}")),
                Some(1.0)
            );
        }
        assert!(text.contains("# TYPE sockdiag_collections_total counter"));
        assert!(text.contains(&format!(
            "sockdiag_build_info{{revision=\"{REVISION}\",version=\"{VERSION}\"}} 1"
        )));
        assert!(!text.contains("node_tcp_connection_states"));
        assert!(!text.contains("sockdiag_port_sockets{"));
    }

    #[test]
    fn a_collection_served_again_is_not_counted_again() {
        // A namespace the budget did not reach is recorded again with its
        // last collection's reports (the same start): not a new collection.
        let metrics = Metrics::new(shape());
        let all = All::default();
        let tcp = |text: &str| value(text, r#"sockdiag_collections_total{collector="tcp"}"#);
        let first = all_ok();
        metrics.record(all.stats(), &first);
        assert_eq!(tcp(&metrics.encode()), Some(1.0));
        metrics.record(all.stats(), &first);
        assert_eq!(tcp(&metrics.encode()), Some(1.0), "served again");
        metrics.record(all.stats(), &all_ok());
        assert_eq!(tcp(&metrics.encode()), Some(2.0), "a new collection");
    }

    #[test]
    fn a_failed_collector_drops_only_its_series() {
        let metrics = Metrics::new(shape());
        let mut all = All::default();
        all.udp
            .add(&inet_with_drops(AF_INET, 7, v4([0; 4]), 53, 0, 0, 0, 0))
            .unwrap();
        metrics.record(all.stats(), &all_ok());
        let reports = vec![
            report(Kind::Tcp, false),
            report(Kind::Listeners, true),
            report(Kind::Udp, true),
            report(Kind::Unix, false),
        ];
        metrics.record(all.stats(), &reports);
        let text = metrics.encode();
        assert_eq!(
            count(&text, "sockdiag_sockets", "protocol=\"tcp\""),
            0,
            "{text}"
        );
        assert_eq!(count(&text, "sockdiag_sockets", "protocol=\"udp\""), 4);
        assert_eq!(count(&text, "sockdiag_unix_sockets", ""), 0);
        assert!(text.contains("sockdiag_collect_success{collector=\"tcp\"} 0"));
        assert!(text.contains("sockdiag_collect_success{collector=\"unix\"} 0"));
        assert!(text.contains("sockdiag_collect_success{collector=\"udp\"} 1"));
        assert!(text.contains("sockdiag_collections_total{collector=\"tcp\"} 2"));
    }

    #[test]
    fn disabled_collectors_leave_no_series() {
        let metrics = Metrics::new(shape());
        let all = All::default();
        metrics.record(all.stats(), &[report(Kind::Udp, true)]);
        let text = metrics.encode();
        assert_eq!(count(&text, "sockdiag_sockets", "protocol=\"tcp\""), 0);
        assert!(!text.contains("collector=\"tcp\""));
        assert!(text.contains("sockdiag_collect_success{collector=\"udp\"} 1"));
    }

    #[test]
    fn closed_listeners_disappear() {
        let metrics = Metrics::new(shape());
        let mut all = All::default();
        let l = inet_with_drops(AF_INET, 10, v4([0, 0, 0, 0]), 22, 0, 0, 128, 0);
        all.listen.add(&l).unwrap();
        metrics.record(all.stats(), &all_ok());
        assert!(metrics.encode().contains("port=\"22\""));
        all.listen.clear();
        metrics.record(all.stats(), &all_ok());
        assert!(!metrics.encode().contains("port=\"22\""));
    }

    #[test]
    fn caps_count_what_they_leave_out() {
        let metrics = Metrics::new(shape());
        let mut all = All {
            tcp: TcpStats::new(PortSet::parse("1-100").unwrap()),
            options: crate::collectors::Options {
                max_listeners: 2,
                max_unix_listeners: 1,
                max_port_series: 11 * 2,
                ..Default::default()
            },
            ..All::default()
        };
        for port in 1..=5 {
            let l = inet_with_drops(AF_INET, 10, v4([0; 4]), port, 0, 1, 8, 0);
            all.listen.add(&l).unwrap();
            // Local port `port`, remote port 1000: one (local, port) key each.
            let m = inet_diag_msg(AF_INET, 1, v4([0; 4]), port, 1000, 0, 0, 1);
            all.tcp.add(&m).unwrap();
        }
        for path in [&b"/a"[..], b"/b", b"/c", b"\0abstract"] {
            all.unix
                .add(&unix_diag_msg(1, 10, Some(path), 1, 4))
                .unwrap();
        }
        metrics.record(all.stats(), &all_ok());
        let text = metrics.encode();
        assert_eq!(count(&text, "sockdiag_listen_queue", ""), 2);
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_listen_queue"}"#
            ),
            Some(3.0)
        );
        // /a kept, /b and /c summed as @other, @abstract always kept.
        assert_eq!(count(&text, "sockdiag_unix_listen_queue", ""), 3, "{text}");
        assert_eq!(
            value(&text, r#"sockdiag_unix_listen_queue{path="@other"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"sockdiag_unix_listen_queue_max{path="@other"}"#),
            Some(8.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_unix_listen_queue"}"#
            ),
            Some(2.0)
        );
        // Two (direction, port) keys of 11 states fit; three are cut.
        assert_eq!(count(&text, "sockdiag_port_sockets", ""), 22);
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_port_sockets"}"#
            ),
            Some(33.0)
        );
    }

    #[test]
    fn node_exporter_compat_sums_families() {
        let metrics = Metrics::new(Shape {
            compat_node_exporter: true,
            ..shape()
        });
        let mut all = All::default();
        for family in [AF_INET, AF_INET6] {
            let m = inet_diag_msg(family, 8, [0; 16], 80, 9, 0, 0, 1);
            all.tcp.add(&m).unwrap();
        }
        metrics.record(all.stats(), &all_ok());
        let text = metrics.encode();
        assert_eq!(count(&text, "node_tcp_connection_states", ""), 11);
        assert_eq!(
            value(&text, r#"node_tcp_connection_states{state="close_wait"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"node_tcp_connection_states{state="time_wait"}"#),
            Some(0.0)
        );
        metrics.record(all.stats(), &[report(Kind::Tcp, false)]);
        assert_eq!(
            count(&metrics.encode(), "node_tcp_connection_states", ""),
            0
        );
    }

    #[test]
    fn netns_label_on_every_namespace_series_and_gone_namespaces_vanish() {
        let metrics = Metrics::new(Shape {
            netns: true,
            compat_node_exporter: true,
            ..shape()
        });
        let mut host = All::default();
        let mut pod = All::default();
        host.tcp
            .add(&inet_diag_msg(AF_INET, 1, v4([0; 4]), 22, 9, 0, 0, 1))
            .unwrap();
        for _ in 0..3 {
            pod.tcp
                .add(&inet_diag_msg(AF_INET, 8, v4([0; 4]), 80, 9, 0, 0, 1))
                .unwrap();
        }
        let round = |with_pod: bool| {
            metrics.begin();
            metrics.record_namespace(OWN_NETNS, host.stats(), &all_ok());
            if with_pod {
                metrics.record_namespace("ino:4026532999", pod.stats(), &all_ok());
            }
            metrics.record_global_health(
                "netns",
                Health {
                    started: UNIX_EPOCH,
                    duration: Duration::from_millis(2),
                    ok: false,
                },
            );
            let pod_info = NetnsInfo {
                label: "ino:4026532999",
                inode: 4026532999,
                lowest_pid: Some(42),
            };
            let infos = if with_pod { vec![pod_info] } else { vec![] };
            let counts = NetnsCounts {
                skipped: 3,
                unreadable: 1,
                stale: 4,
                pending: 5,
                empty: &[(Kind::Tcp, 6), (Kind::Unix, 0)],
            };
            metrics.record_netns(&infos, &counts);
            metrics.encode()
        };
        round(true);
        let text = round(true);
        let ns = |n: &str| format!("netns=\"{n}\"");
        assert_eq!(
            value(
                &text,
                r#"sockdiag_sockets{family="ipv4",netns="ino:4026532999",protocol="tcp",state="close_wait"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_sockets{family="ipv4",netns="host",protocol="tcp",state="established"}"#
            ),
            Some(1.0)
        );
        // Every socket and collector series of both namespaces is labelled.
        for metric in [
            "sockdiag_sockets",
            "sockdiag_receive_queue_bytes",
            "sockdiag_unix_sockets",
            "sockdiag_collect_success",
            "sockdiag_collections_total",
        ] {
            let all = count(&text, metric, "");
            let labelled = count(&text, metric, "netns=");
            assert_eq!(all, labelled, "{metric}");
            assert!(count(&text, metric, &ns("ino:4026532999")) > 0, "{metric}");
        }
        assert_eq!(
            value(
                &text,
                r#"sockdiag_collections_total{collector="tcp",netns="ino:4026532999"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_collect_success{collector="netns",netns=""}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_netns_info{inode="4026532999",netns="ino:4026532999",pid="42"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "sockdiag_netns_skipped"), Some(3.0));
        assert_eq!(
            value(&text, "sockdiag_netns_unreadable_processes"),
            Some(1.0)
        );
        assert_eq!(value(&text, "sockdiag_netns_stale"), Some(4.0));
        assert_eq!(value(&text, "sockdiag_netns_pending"), Some(5.0));
        assert_eq!(
            value(&text, r#"sockdiag_netns_empty{collector="tcp"}"#),
            Some(6.0)
        );
        assert_eq!(
            value(&text, r#"sockdiag_netns_empty{collector="unix"}"#),
            Some(0.0)
        );
        // node_exporter's series stays the own namespace's, unlabelled.
        assert_eq!(
            value(&text, r#"node_tcp_connection_states{state="established"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"node_tcp_connection_states{state="close_wait"}"#),
            Some(0.0)
        );
        // The namespace goes: all its series go, counters included; when a
        // namespace of that label comes back its count starts again.
        let text = round(false);
        assert!(!text.contains(&ns("ino:4026532999")), "{text}");
        round(false);
        let text = round(true);
        assert_eq!(
            value(
                &text,
                r#"sockdiag_collections_total{collector="tcp",netns="ino:4026532999"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_collections_total{collector="tcp",netns="host"}"#
            ),
            Some(5.0)
        );
    }

    #[test]
    fn a_failure_in_one_namespace_leaves_the_others() {
        let metrics = Metrics::new(Shape {
            netns: true,
            ..shape()
        });
        let mut all = All::default();
        all.tcp
            .add(&inet_diag_msg(AF_INET, 1, v4([0; 4]), 22, 9, 0, 0, 1))
            .unwrap();
        let failed: Vec<Report> = Kind::ALL
            .into_iter()
            .map(|k| report(k, k != Kind::Tcp))
            .collect();
        metrics.begin();
        metrics.record_namespace(OWN_NETNS, all.stats(), &all_ok());
        metrics.record_namespace("ino:7", all.stats(), &failed);
        metrics.record_namespace("blue", all.stats(), &all_ok());
        let text = metrics.encode();
        let established = |ns: &str| {
            value(
                &text,
                &format!(
                    r#"sockdiag_sockets{{family="ipv4",netns="{ns}",protocol="tcp",state="established"}}"#
                ),
            )
        };
        assert_eq!(established("host"), Some(1.0));
        assert_eq!(established("blue"), Some(1.0));
        assert_eq!(established("ino:7"), None, "{text}");
        assert!(text.contains(r#"sockdiag_collect_success{collector="tcp",netns="ino:7"} 0"#));
        assert!(text.contains(r#"sockdiag_collect_success{collector="udp",netns="ino:7"} 1"#));
        assert_eq!(count(&text, "sockdiag_unix_sockets", "netns=\"ino:7\""), 9);
    }

    #[test]
    fn cgroup_rows_every_state_and_the_dropped_count() {
        let metrics = Metrics::new(Shape {
            cgroup: true,
            ..shape()
        });
        let mut nginx = [0u64; TcpState::COUNT];
        nginx[TcpState::CloseWait as usize] = 12;
        let rows = vec![
            ("/system.slice/nginx.service".to_string(), nginx),
            ("other".to_string(), [1; TcpState::COUNT]),
        ];
        metrics.begin();
        metrics.record_cgroups(OWN_NETNS, &rows, 7);
        let text = metrics.encode();
        assert_eq!(count(&text, "sockdiag_cgroup_sockets", ""), 22);
        assert_eq!(
            value(
                &text,
                r#"sockdiag_cgroup_sockets{cgroup="/system.slice/nginx.service",protocol="tcp",state="close_wait"}"#
            ),
            Some(12.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_cgroup_sockets{cgroup="/system.slice/nginx.service",protocol="tcp",state="listen"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_cgroup_sockets"}"#
            ),
            Some(7.0)
        );
        // Gone at the next collection unless recorded again.
        metrics.begin();
        assert_eq!(count(&metrics.encode(), "sockdiag_cgroup_sockets", ""), 0);
    }

    #[test]
    fn cgroup_health_rows_with_netns_and_the_dropped_count() {
        use crate::collectors::tcp_health::Health;
        let metrics = Metrics::new(Shape {
            cgroup: true,
            netns: true,
            ..shape()
        });
        let mut nginx = Health::default();
        nginx.rtt_buckets[2] = 3; // le 250 µs
        nginx.rtt_sum_us = 600;
        nginx.retransmitting = 1;
        nginx.notsent_bytes = 42;
        let rows = HealthRows {
            rows: vec![
                ("/system.slice/nginx.service".to_string(), nginx, 17),
                ("other".to_string(), Health::default(), 0),
            ],
            dropped: 4,
        };
        metrics.begin();
        metrics.record_cgroup_health("pod", &rows);
        let text = metrics.encode();
        let nginx = r#"cgroup="/system.slice/nginx.service",netns="pod""#;
        for (series, want) in [
            (
                format!("sockdiag_cgroup_tcp_rtt_seconds_bucket{{{nginx},le=\"0.0001\"}}"),
                0.0,
            ),
            (
                format!("sockdiag_cgroup_tcp_rtt_seconds_bucket{{{nginx},le=\"0.00025\"}}"),
                3.0,
            ),
            (
                format!("sockdiag_cgroup_tcp_rtt_seconds_count{{{nginx}}}"),
                3.0,
            ),
            (
                format!("sockdiag_cgroup_tcp_rtt_seconds_sum{{{nginx}}}"),
                0.0006,
            ),
            (
                format!("sockdiag_cgroup_tcp_retransmitted_segments_total{{{nginx}}}"),
                17.0,
            ),
            (
                format!("sockdiag_cgroup_tcp_retransmitting_sockets{{{nginx}}}"),
                1.0,
            ),
            (
                format!("sockdiag_cgroup_tcp_notsent_bytes{{{nginx}}}"),
                42.0,
            ),
            (
                r#"sockdiag_cgroup_tcp_retransmitted_segments_total{cgroup="other",netns="pod"}"#
                    .to_string(),
                0.0,
            ),
            (
                r#"sockdiag_series_dropped{metric="sockdiag_cgroup_tcp_rtt_seconds",netns="pod"}"#
                    .to_string(),
                4.0,
            ),
        ] {
            assert_eq!(value(&text, &series), Some(want), "{series}\n{text}");
        }
        let samples = text
            .lines()
            .filter(|l| l.starts_with("sockdiag_cgroup_tcp"));
        for line in samples {
            assert!(line.contains("netns=\"pod\""), "{line}");
        }
    }

    #[test]
    fn netns_series_only_with_the_flag() {
        let text = Metrics::new(shape()).encode();
        assert!(!text.contains("sockdiag_netns"), "{text}");
        assert!(!text.contains("netns="), "{text}");
        assert!(!text.contains("sockdiag_cgroup_sockets"), "{text}");
    }

    #[test]
    fn process_metrics_are_included_when_asked() {
        let text = Metrics::new(Shape::default()).encode();
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        let _ = SystemTime::now();
    }
}
