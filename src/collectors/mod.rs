//! The socket collectors, one module each (its dump requests, its
//! per-socket aggregation, its metrics and its table section), and the
//! [`Collector`] that runs the enabled ones once per collection, each to
//! its own outcome.
//!
//! Collectors (each switchable, each with its own outcome, so one failing
//! never blanks another):
//! - `tcp`: one legacy TCPDIAG_GETSOCK dump with AF_UNSPEC (the kernel walks
//!   its hash tables once for both families), falling back for good to two
//!   SOCK_DIAG_BY_FAMILY dumps if the kernel refuses it; no extensions, so
//!   the big dump stays as cheap as possible;
//! - `listeners`: LISTEN-only dumps with SKMEMINFO (drops), which walk only
//!   the kernel's listening hash;
//! - `udp`: per-family UDP dumps with SKMEMINFO;
//! - `unix`: one unix_diag dump with names and queue lengths.
//!
//! Every failure is a [`CollectError`] that says which dump failed and why;
//! a collection with a dump flagged NLM_F_DUMP_INTR is retried once.
//!
//! Two sockets: the kernel builds a dump's answer inside the `recvmsg` of
//! the socket that asked, on the asking thread, and charges about as much
//! per UDP or unix socket as per TCP socket. Run one after another on one
//! socket, 10k UDP and 10k unix sockets next to 100k TCP ones add about
//! 17% to a collection's wall time. So the side collectors (listeners, udp,
//! unix) can get a transport of their own ([`Collector::with_side`]; the
//! server and `dump` open a second NETLINK_SOCK_DIAG socket), and then run
//! in order on a scoped thread while tcp runs on the calling thread. The
//! CPU a collection costs is unchanged; its wall time becomes about the
//! longer of the two, max(tcp, listeners + udp + unix), when a second core
//! is free. The thread lives only inside [`Collector::collect`], and is
//! started only when tcp and at least one side collector are enabled.
//! Each collector still has its own outcome and duration, and its reports

pub mod listeners;
pub mod ports;
pub mod tcp;
pub mod udp;
pub mod unix;

use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::diag::{
    meminfo, Attributes, DumpRequest, Family, InetDiagMsg, INET_DIAG_SKMEMINFO, SK_MEMINFO_DROPS,
};
use crate::dump::{CollectError, Dumper};
use crate::exposition::{Spec, Type};
use crate::log::{self, Level};
use crate::parse::ParseError;
use crate::transport::Transport;
use listeners::ListenStats;
use ports::PortSet;
use tcp::{tcp_plan, DumpMode, TcpPart, TcpStats};
use udp::UdpStats;
use unix::UnixStats;

fn inet(payload: &[u8]) -> Result<(InetDiagMsg<'_>, Family), ParseError> {
    let msg = InetDiagMsg::new(payload).ok_or(ParseError::ShortSocket {
        offset: 0,
        payload: payload.len(),
        needed: crate::diag::INET_DIAG_MSG_LEN,
    })?;
    let family = Family::from_kernel(msg.family()).ok_or(ParseError::UnknownFamily {
        family: msg.family(),
    })?;
    Ok((msg, family))
}

/// The SK_MEMINFO_DROPS value from the attributes after a socket message.
fn drops(attributes: &[u8]) -> Result<u64, ParseError> {
    for attribute in Attributes::new(attributes) {
        let (kind, payload) = attribute.map_err(ParseError::Attribute)?;
        if kind == INET_DIAG_SKMEMINFO {
            return meminfo(payload, SK_MEMINFO_DROPS).map(u64::from).ok_or(
                ParseError::MissingAttribute {
                    name: "INET_DIAG_SKMEMINFO",
                },
            );
        }
    }
    Err(ParseError::MissingAttribute {
        name: "INET_DIAG_SKMEMINFO",
    })
}

/// Labels of the per-state series shared by tcp and udp.
const BY_STATE: &[&str] = &["protocol", "family", "state"];

pub static SOCKETS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_sockets",
    help: "Sockets by protocol, address family and state, as the kernel reports them over sock_diag. TCP: request sockets count as syn_recv, TIME_WAIT sockets in their FIN_WAIT2 substate as fin_wait2 (as in ss). UDP: connected (connect() gave a default peer) or unconnected.",
    labels: BY_STATE,
};

pub static RECEIVE_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_receive_queue_bytes",
    help: "Receive queues summed over non-listening sockets. TCP: bytes received but not yet read. UDP: receive memory charged to the sockets (buffer overhead included, so more than the payload).",
    labels: BY_STATE,
};

pub static SEND_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_send_queue_bytes",
    help: "Send queues summed over non-listening sockets. TCP: bytes written but not yet acknowledged by the peer. UDP: send memory not yet released by the device.",
    labels: BY_STATE,
};

pub static SERIES_DROPPED: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_series_dropped",
    help: "What a cardinality cap left out of the last collection, by the metric it belongs to: listeners for the listener metrics, unix paths, per-port series, and cgroups (summed into other) for sockdiag_cgroup_sockets.",
    labels: &["metric"],
};

/// The collectors, in the order they run and are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Tcp,
    Listeners,
    Udp,
    Unix,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tcp, Kind::Listeners, Kind::Udp, Kind::Unix];

    /// The `collector` label value and the flag name (`--collector.tcp`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Listeners => "listeners",
            Kind::Udp => "udp",
            Kind::Unix => "unix",
        }
    }
}

/// What to collect (from the `--collector.*` flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub tcp: bool,
    pub listeners: bool,
    pub udp: bool,
    pub unix: bool,
    pub tcp_dump: DumpMode,
    /// `--collector.tcp.ports`: per-port views (empty: none).
    pub tcp_ports: PortSet,
    /// `--collector.udp.ports`.
    pub udp_ports: PortSet,
    /// `--collector.cgroup`: TCP counts per cgroup id ([`TcpStats::by_cgroup`]).
    pub cgroup: bool,
    /// A dump not finished after this long fails (`--collector.timeout`).
    pub deadline: Duration,
    /// TCP listeners beyond this many are left out (`--collector.listeners.max`).
    pub max_listeners: usize,
    /// Unix listener paths beyond this many are summed as `@other`
    /// (`--collector.unix.max-listeners`).
    pub max_unix_listeners: usize,
    /// Per-port series per protocol at most (`--collector.ports.max-series`).
    pub max_port_series: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tcp: true,
            listeners: true,
            udp: true,
            unix: true,
            tcp_dump: DumpMode::Auto,
            tcp_ports: PortSet::default(),
            udp_ports: PortSet::default(),
            cgroup: false,
            deadline: Duration::from_secs(10),
            max_listeners: 1000,
            max_unix_listeners: 200,
            max_port_series: 2000,
        }
    }
}

impl Options {
    /// Only the TCP collector (tests, benchmarks, TCP-only fixtures).
    pub fn tcp_only(tcp_dump: DumpMode, deadline: Duration) -> Options {
        Options {
            listeners: false,
            udp: false,
            unix: false,
            tcp_dump,
            deadline,
            ..Options::default()
        }
    }

    /// Whether a side transport would be used: tcp and at least one of
    /// listeners, udp and unix are enabled, so the side collectors can run
    /// while tcp does. Otherwise there is nothing to overlap, and a second
    /// transport would sit unused.
    pub fn wants_side(&self) -> bool {
        self.tcp && (self.listeners || self.udp || self.unix)
    }

    pub fn enabled(&self, kind: Kind) -> bool {
        match kind {
            Kind::Tcp => self.tcp,
            Kind::Listeners => self.listeners,
            Kind::Udp => self.udp,
            Kind::Unix => self.unix,
        }
    }
}

/// Borrowed stats of every collector, for the metrics and the table.
#[derive(Clone, Copy)]
pub struct Stats<'a> {
    pub tcp: &'a TcpStats,
    pub listen: &'a ListenStats,
    pub udp: &'a UdpStats,
    pub unix: &'a UnixStats,
    /// What they were collected with (caps for the series).
    pub options: &'a Options,
}

/// Owned stats of every collector, for tests that build stats by hand.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct OwnedStats {
    pub tcp: TcpStats,
    pub listen: ListenStats,
    pub udp: UdpStats,
    pub unix: UnixStats,
    pub options: Options,
}

#[cfg(test)]
impl OwnedStats {
    pub fn stats(&self) -> Stats<'_> {
        Stats {
            tcp: &self.tcp,
            listen: &self.listen,
            udp: &self.udp,
            unix: &self.unix,
            options: &self.options,
        }
    }
}

/// One collector's outcome in one collection.
#[derive(Debug)]
pub struct Report {
    pub kind: Kind,
    /// Wall-clock start, for the timestamp metric.
    pub started: SystemTime,
    pub duration: Duration,
    pub error: Option<CollectError>,
}

impl Report {
    /// The collector series' view of this outcome.
    pub fn health(&self) -> crate::outcome::Health {
        crate::outcome::Health {
            started: self.started,
            duration: self.duration,
            ok: self.error.is_none(),
        }
    }
}

/// The collectors that may run beside tcp, in the order they run.
const SIDE: [Kind; 3] = [Kind::Listeners, Kind::Udp, Kind::Unix];

/// The side collectors' stats, borrowed apart from tcp's so that they can
/// be filled on another thread while tcp's are filled on this one.
struct SideStats<'a> {
    listen: &'a mut ListenStats,
    udp: &'a mut UdpStats,
    unix: &'a mut UnixStats,
}

impl SideStats<'_> {
    /// Runs the side collectors in `kinds` (never tcp) through `dumper`,
    /// one report each, in order.
    fn collect<S: Transport>(&mut self, dumper: &mut Dumper<S>, kinds: &[Kind]) -> Vec<Report> {
        kinds
            .iter()
            .map(|&kind| {
                timed(kind, || match kind {
                    Kind::Listeners => self.listen.collect(dumper),
                    Kind::Udp => self.udp.collect(dumper),
                    Kind::Unix => self.unix.collect(dumper),
                    // Callers pass side kinds only; tcp has its own path.
                    Kind::Tcp => Ok(()),
                })
            })
            .collect()
    }
}

/// Runs one collector and times it.
fn timed(kind: Kind, run: impl FnOnce() -> Result<(), CollectError>) -> Report {
    let started = SystemTime::now();
    let clock = Instant::now();
    let error = run().err();
    Report {
        kind,
        started,
        duration: clock.elapsed(),
        error,
    }
}

/// The enabled collectors and their latest stats (valid for the collectors
/// whose last report has no error).
///
/// Built with [`Collector::new`], every collector shares one transport and
/// they run one after another. [`Collector::with_side`] gives the side
/// collectors (listeners, udp, unix) a transport `S` of their own, and
/// [`Collector::collect`] then runs them on a scoped thread while tcp runs
/// on the calling thread.
pub struct Collector<T, S = Box<dyn Transport + Send>> {
    dumper: Dumper<T>,
    /// The side collectors' own dumper, if they have a transport of their own.
    side: Option<Dumper<S>>,
    options: Options,
    /// Auto mode saw the kernel refuse the legacy request.
    legacy_refused: bool,
    pub tcp: TcpStats,
    pub listen: ListenStats,
    pub udp: UdpStats,
    pub unix: UnixStats,
}

impl<T: Transport> Collector<T> {
    /// Every collector on `transport`, one after another.
    pub fn new(transport: T, options: Options) -> Collector<T> {
        Collector {
            dumper: Dumper::new(transport, options.deadline),
            side: None,
            tcp: TcpStats::new(options.tcp_ports.clone()).with_cgroups(options.cgroup),
            udp: UdpStats::new(options.udp_ports.clone()),
            listen: ListenStats::default(),
            unix: UnixStats::default(),
            options,
            legacy_refused: false,
        }
    }
}

impl<T: Transport, S: Transport + Send> Collector<T, S> {
    /// Gives the side collectors (listeners, udp, unix) their own transport,
    /// which must answer like the main one (a second netlink socket in the
    /// same namespace, or a second copy of the same fixture). From then on a
    /// collection with tcp and at least one side collector enabled runs the
    /// side collectors on a scoped thread while tcp runs on the caller's
    /// (see [`Options::wants_side`]); otherwise `side` is never used.
    pub fn with_side<S2: Transport + Send>(self, side: S2) -> Collector<T, S2> {
        let deadline = self.options.deadline;
        Collector {
            dumper: self.dumper,
            side: Some(Dumper::new(side, deadline)),
            options: self.options,
            legacy_refused: self.legacy_refused,
            tcp: self.tcp,
            listen: self.listen,
            udp: self.udp,
            unix: self.unix,
        }
    }

    /// The main transport: tcp's, and everyone's without a side transport.
    pub fn transport(&self) -> &T {
        &self.dumper.transport
    }

    /// The side collectors' transport, if [`Collector::with_side`] gave one.
    pub fn side_transport(&self) -> Option<&S> {
        self.side.as_ref().map(|side| &side.transport)
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The TCP requests the next collection sends.
    pub fn plan(&self) -> &'static [DumpRequest] {
        tcp_plan(self.options.tcp_dump, self.legacy_refused)
    }

    /// The latest stats of every collector.
    pub fn stats(&self) -> Stats<'_> {
        Stats {
            tcp: &self.tcp,
            listen: &self.listen,
            udp: &self.udp,
            unix: &self.unix,
            options: &self.options,
        }
    }

    /// Runs every enabled collector once, each to its own outcome, and
    /// returns their reports in [`Kind::ALL`] order, each with its own
    /// start and duration.
    ///
    /// With a side transport, tcp and at least one side collector enabled,
    /// the side collectors run in order on a scoped thread (through the
    /// side transport) while tcp runs on the calling thread; the thread is
    /// joined before this returns, and a panic on it is resumed here. If
    /// the thread cannot be spawned, the collection runs on this thread
    /// after a warning. Otherwise everything runs here, one after another,
    /// through the main transport.
    pub fn collect(&mut self) -> Vec<Report> {
        let side_kinds: Vec<Kind> = SIDE
            .into_iter()
            .filter(|kind| self.options.enabled(*kind))
            .collect();
        let Collector {
            dumper,
            side,
            options,
            legacy_refused,
            tcp,
            listen,
            udp,
            unix,
        } = self;
        let mut tcp = TcpPart {
            dumper,
            mode: options.tcp_dump,
            legacy_refused,
            stats: tcp,
        };
        let mut stats = SideStats { listen, udp, unix };
        let mut reports = Vec::with_capacity(Kind::ALL.len());
        if let Some(side) = side.as_mut().filter(|_| options.wants_side()) {
            let split = std::thread::scope(|scope| {
                let thread = std::thread::Builder::new()
                    .name("collect-side".into())
                    .spawn_scoped(scope, || stats.collect(side, &side_kinds))?;
                let tcp_report = timed(Kind::Tcp, || tcp.collect());
                let side_reports = thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                Ok::<_, io::Error>((tcp_report, side_reports))
            });
            match split {
                Ok((tcp_report, side_reports)) => {
                    reports.push(tcp_report);
                    reports.extend(side_reports);
                    return reports;
                }
                Err(e) => log::log(
                    Level::Warn,
                    "cannot start the side collectors' thread; collecting one after another",
                    &[("err", &e)],
                ),
            }
        }
        if options.tcp {
            reports.push(timed(Kind::Tcp, || tcp.collect()));
        }
        reports.extend(stats.collect(tcp.dumper, &side_kinds));
        reports
    }

    /// Runs one collector on the main transport.
    pub fn collect_one(&mut self, kind: Kind) -> Result<(), CollectError> {
        match kind {
            Kind::Tcp => self.collect_tcp().map(|_| ()),
            side => {
                let mut stats = SideStats {
                    listen: &mut self.listen,
                    udp: &mut self.udp,
                    unix: &mut self.unix,
                };
                match stats.collect(&mut self.dumper, &[side]).pop() {
                    Some(Report { error: Some(e), .. }) => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Runs the TCP collector on the main transport, falling back from the
    /// legacy request in auto mode.
    pub fn collect_tcp(&mut self) -> Result<&TcpStats, CollectError> {
        TcpPart {
            dumper: &mut self.dumper,
            mode: self.options.tcp_dump,
            legacy_refused: &mut self.legacy_refused,
            stats: &mut self.tcp,
        }
        .collect()?;
        Ok(&self.tcp)
    }
}

/// Every metric the collectors produce.
pub fn specs() -> impl Iterator<Item = &'static Spec> {
    [
        SHARED_SPECS,
        tcp::SPECS,
        listeners::SPECS,
        udp::SPECS,
        unix::SPECS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// The metrics more than one collector produces.
static SHARED_SPECS: &[&Spec] = &[
    &SOCKETS,
    &RECEIVE_QUEUE,
    &SEND_QUEUE,
    &SERIES_DROPPED,
    &ports::PORT_SOCKETS,
];

#[cfg(test)]
mod tests;
