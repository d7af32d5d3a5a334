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
//!   the big dump stays as cheap as possible (`--collector.tcp.info` adds
//!   INET_DIAG_INFO to the same dump for [`tcp_health`]);
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

mod driver;
pub mod ephemeral;
pub mod listeners;
pub mod ports;
pub mod remote_networks;
pub mod tcp;
pub mod tcp_health;
pub mod udp;
pub mod unix;

use std::time::Duration;

use crate::config::{Networks, PortSet};
use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{
    meminfo, Attributes, Family, InetDiagMsg, INET_DIAG_SKMEMINFO, SK_MEMINFO_DROPS,
};
use crate::kernel::dump::Sink;
use crate::kernel::dump::{CollectError, Dumper};
use crate::kernel::parse::ParseError;
use crate::kernel::transport::Transport;
pub use driver::{Collector, Counts, Report};
use tcp::{DumpMode, TcpStats};

fn inet(payload: &[u8]) -> Result<(InetDiagMsg<'_>, Family), ParseError> {
    let msg = InetDiagMsg::new(payload).ok_or(ParseError::ShortSocket {
        offset: 0,
        payload: payload.len(),
        needed: crate::kernel::diag::INET_DIAG_MSG_LEN,
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
    help: "What a cardinality cap left out of the last collection, by the metric it belongs to: listeners for the listener metrics, unix paths, per-port series, and cgroups (summed into other) for sockdiag_cgroup_sockets and sockdiag_cgroup_tcp_rtt_seconds (the per-cgroup health series).",
    labels: &["metric"],
};

/// What to collect (from the `--collector.*` flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// The collectors to run (`--[no-]collector.NAME`), in [`Kind::ALL`]
    /// order.
    pub enabled: Vec<Kind>,
    pub tcp_dump: DumpMode,
    /// `--collector.tcp.ports`: per-port views (empty: none).
    pub tcp_ports: PortSet,
    /// `--collector.udp.ports`.
    pub udp_ports: PortSet,
    /// `--collector.tcp.info`: the tcp dump asks for INET_DIAG_INFO and
    /// serves [`tcp_health`]'s metrics.
    pub tcp_info: bool,
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
    /// Destinations with their own `sockdiag_ephemeral_ports_used` series
    /// (`--collector.tcp.ephemeral.top`).
    pub ephemeral_top: usize,
    /// `--collector.tcp.remote-networks` (empty: no per-network counts).
    pub remote_networks: Networks,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            enabled: Kind::ALL.to_vec(),
            tcp_dump: DumpMode::Auto,
            tcp_ports: PortSet::default(),
            udp_ports: PortSet::default(),
            tcp_info: false,
            cgroup: false,
            deadline: Duration::from_secs(10),
            max_listeners: 1000,
            max_unix_listeners: 200,
            max_port_series: 2000,
            ephemeral_top: 10,
            remote_networks: Networks::default(),
        }
    }
}

impl Options {
    /// Only the TCP collector (tests, benchmarks, TCP-only fixtures).
    #[cfg(any(test, feature = "testing"))]
    pub fn tcp_only(tcp_dump: DumpMode, deadline: Duration) -> Options {
        Options {
            enabled: vec![Kind::Tcp],
            tcp_dump,
            deadline,
            ..Options::default()
        }
    }

    /// Only these collectors.
    pub fn only(kinds: &[Kind]) -> Options {
        Options {
            enabled: kinds.to_vec(),
            ..Options::default()
        }
    }

    /// Whether a side transport would be used: a collector that runs on the
    /// main socket and one that may run beside it are both enabled, so the
    /// two can overlap. Otherwise a second transport would sit unused.
    pub fn wants_side(&self) -> bool {
        self.enabled.iter().any(|k| k.side()) && self.enabled.iter().any(|k| !k.side())
    }

    pub fn enabled(&self, kind: Kind) -> bool {
        self.enabled.contains(&kind)
    }
}

/// A set of collectors: the enabled ones, or those a scrape's `collect[]`
/// filter names. Small and `Copy`, so that the scrape cache and the
/// collection thread can key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u32);

impl KindSet {
    fn bit(kind: Kind) -> u32 {
        let at = Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in Kind::ALL");
        1 << at
    }

    /// Every collector.
    pub const ALL: KindSet = KindSet((1 << Kind::ALL.len()) - 1);

    /// Every collector.
    pub fn all() -> KindSet {
        KindSet::ALL
    }

    pub fn of(kinds: &[Kind]) -> KindSet {
        KindSet(kinds.iter().fold(0, |bits, k| bits | KindSet::bit(*k)))
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & KindSet::bit(kind) != 0
    }

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= KindSet::bit(kind);
    }

    pub fn remove(&mut self, kind: Kind) {
        self.0 &= !KindSet::bit(kind);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Kind::ALL`] order.
    pub fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// The members' names, comma separated (`tcp, udp`).
    pub fn names(self) -> String {
        self.kinds().map(Kind::label).collect::<Vec<_>>().join(", ")
    }

    /// The collector called `name` (its `collector` label).
    pub fn kind_named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == name)
    }
}

/// What each collector module provides, registered in [`registry!`]'s list
/// below: adding a collector is its module, one line there, and its tests.
pub trait SocketCollector: Sink + Send + Default {
    /// The `collector` label value and the flag name (`--collector.NAME`).
    const NAME: &'static str;
    /// What it collects, for `--help` (lowercase, no final period).
    const HELP: &'static str;
    /// Whether it walks other kernel tables than tcp's and so may run on
    /// the side socket while tcp runs.
    const SIDE: bool;
    /// The metrics it alone produces.
    fn specs() -> &'static [&'static Spec];
    /// Its state for a collector built with `options`.
    fn new(options: &Options) -> Self;
    /// Runs its dumps through `dumper` into its counts.
    fn collect<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError>;
    /// Instead of [`collect`](Self::collect) when the namespace's own
    /// counters prove it holds no socket of this kind: the counts are
    /// cleared, as a dump that found no socket would leave them, and what
    /// does not depend on sockets (tcp: the local port range) is still
    /// read through `transport`.
    fn skip<T: Transport>(&mut self, _transport: &mut T) {
        Sink::clear(self);
    }
    /// Its series for one namespace (`ns`: the `netns` label, if any).
    fn families(&self, options: &Options, out: &mut Families, ns: Ns<'_>);
    /// Its section of the table dump.
    fn table(&self, out: &mut String);
}

/// Generates, from the one list of collectors, everything that has one
/// entry per collector: [`Kind`], [`Stats`] and the owned state, and the
/// dispatch from a kind to its module.
macro_rules! registry {
    ($($kind:ident: $field:ident: $ty:ty),* $(,)?) => {
        /// The collectors, in the order they run and are reported.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind),*
        }

        impl Kind {
            pub const ALL: [Kind; [$(Kind::$kind),*].len()] = [$(Kind::$kind),*];

            /// The `collector` label value and the flag name (`--collector.tcp`).
            pub fn label(self) -> &'static str {
                match self {
                    $(Kind::$kind => <$ty as SocketCollector>::NAME),*
                }
            }

            /// What it collects, for `--help`.
            pub fn help(self) -> &'static str {
                match self {
                    $(Kind::$kind => <$ty as SocketCollector>::HELP),*
                }
            }

            /// Whether it may run on the side socket.
            pub fn side(self) -> bool {
                match self {
                    $(Kind::$kind => <$ty as SocketCollector>::SIDE),*
                }
            }

            /// The metrics it alone produces.
            pub fn specs(self) -> &'static [&'static Spec] {
                match self {
                    $(Kind::$kind => <$ty as SocketCollector>::specs()),*
                }
            }
        }

        /// Borrowed counts of every collector, for the metrics and the table.
        #[derive(Clone, Copy)]
        pub struct Stats<'a> {
            $(pub $field: &'a $ty,)*
            /// What they were collected with (caps for the series).
            pub options: &'a Options,
        }

        impl Stats<'_> {
            /// Collector `kind`'s series for one namespace.
            pub fn families(&self, kind: Kind, out: &mut Families, ns: Ns<'_>) {
                match kind {
                    $(Kind::$kind => self.$field.families(self.options, out, ns)),*
                }
            }

            /// Collector `kind`'s section of the table dump.
            pub fn table(&self, kind: Kind, out: &mut String) {
                match kind {
                    $(Kind::$kind => SocketCollector::table(self.$field, out)),*
                }
            }
        }

        /// Owned counts of every collector.
        #[derive(Default)]
        struct All {
            $($field: $ty),*
        }

        impl All {
            fn new(options: &Options) -> All {
                All {
                    $($field: <$ty as SocketCollector>::new(options)),*
                }
            }

            fn stats<'a>(&'a self, options: &'a Options) -> Stats<'a> {
                Stats {
                    $($field: &self.$field,)*
                    options,
                }
            }

            /// One mutable handle per collector, in [`Kind::ALL`] order.
            fn parts(&mut self) -> Vec<PartMut<'_>> {
                vec![$(PartMut::$kind(&mut self.$field)),*]
            }
        }

        /// One collector's counts, borrowed apart from the others' so that
        /// collectors can run on two threads.
        enum PartMut<'a> {
            $($kind(&'a mut $ty)),*
        }

        impl PartMut<'_> {
            fn kind(&self) -> Kind {
                match self {
                    $(PartMut::$kind(_) => Kind::$kind),*
                }
            }

            fn collect<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError> {
                match self {
                    $(PartMut::$kind(c) => SocketCollector::collect(&mut **c, dumper)),*
                }
            }

            /// Forgets the counts, as a dump that found no socket would
            /// ([`SocketCollector::skip`]).
            fn skip<T: Transport>(&mut self, transport: &mut T) {
                match self {
                    $(PartMut::$kind(c) => SocketCollector::skip(&mut **c, transport)),*
                }
            }
        }

        /// Owned counts of every collector, for tests that build counts by
        /// hand.
        #[cfg(test)]
        #[derive(Default)]
        pub(crate) struct OwnedStats {
            $(pub $field: $ty,)*
            pub options: Options,
        }

        #[cfg(test)]
        impl OwnedStats {
            pub fn stats(&self) -> Stats<'_> {
                Stats {
                    $($field: &self.$field,)*
                    options: &self.options,
                }
            }
        }
    };
}

// The collectors, in the order they run and are reported.
registry! {
    Tcp: tcp: tcp::TcpStats,
    Listeners: listen: listeners::ListenStats,
    Udp: udp: udp::UdpStats,
    Unix: unix: unix::UnixStats,
}

/// Every metric the collectors produce.
pub fn specs() -> impl Iterator<Item = &'static Spec> {
    std::iter::once(SHARED_SPECS)
        .chain(Kind::ALL.into_iter().map(Kind::specs))
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
