//! The `tcp` collector: every TCP socket of both families by state, queue
//! bytes per state, the SYN queue by local port, the per-port view of
//! `--collector.tcp.ports`, and (with `--collector.cgroup`) counts per
//! cgroup id.
//!
//! One legacy TCPDIAG_GETSOCK dump with AF_UNSPEC makes the kernel walk its
//! hash tables once for both families; if the kernel refuses it, auto mode
//! falls back for good to two SOCK_DIAG_BY_FAMILY dumps. No extensions are
//! asked for, so the big dump stays as cheap as possible. Each socket is
//! folded into fixed-size arrays and maps that keep their capacity, so
//! counting allocates nothing after the first collection.
//!
//! Counting per cgroup ([`TcpStats::with_cgroups`], off by default) reads
//! the INET_DIAG_CGROUP_ID the kernel sends unasked on every full socket and
//! counts the socket under (id, state), keyed by the raw u64, so no string
//! work happens per socket; `cgroup_attribution::Attribution` turns ids
//! into paths once per collection.
//!
//! With `--collector.tcp.info` the same dumps also ask for INET_DIAG_INFO,
//! and each socket's attributes go to [`tcp_health`](super::tcp_health),
//! which owns what is read from `struct tcp_info` and its metrics.
//!
//! Two views per socket live in modules of their own, fed by one call each
//! from [`TcpStats::add`]: ephemeral port use per destination
//! (`ephemeral`, on by default) and counts by remote network
//! (`remote_networks`, with `--collector.tcp.remote-networks`).

use std::collections::HashMap;

use super::ephemeral::{self, Ephemeral};
use super::ports::PortCounts;
use super::remote_networks::{self, RemoteNetworks};
use super::tcp_health::{self, TcpHealth};
use super::{inet, Options, SocketCollector, RECEIVE_QUEUE, SEND_QUEUE, SOCKETS};
use crate::config::PortSet;
use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{self, DumpRequest, Family, InetDiagMsg, TcpState, INET_DIAG_MSG_LEN};
use crate::kernel::dump::{CollectError, Dumper, ErrorKind, Sink};
use crate::kernel::parse::ParseError;
use crate::kernel::transport::Transport;
use crate::log::{self, Level};
use crate::table::{columns, row};

/// Per-family, per-state values, indexed `[Family as usize][TcpState as usize]`.
pub type ByState = [[u64; TcpState::COUNT]; 2];

/// Which requests a collection uses (`--collector.tcp.dump`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DumpMode {
    /// Legacy first; per-family from the first refusal on.
    #[default]
    Auto,
    /// Only the legacy AF_UNSPEC dump.
    Legacy,
    /// Only per-family SOCK_DIAG_BY_FAMILY dumps.
    ByFamily,
}

impl DumpMode {
    pub fn parse(s: &str) -> Result<DumpMode, String> {
        match s {
            "auto" => Ok(DumpMode::Auto),
            "legacy" => Ok(DumpMode::Legacy),
            "by-family" => Ok(DumpMode::ByFamily),
            _ => Err(format!(
                "unknown dump mode {s:?}, expected auto, legacy or by-family"
            )),
        }
    }
}

pub(super) const LEGACY: &[DumpRequest] = &[DumpRequest::Legacy];
pub(super) const BY_FAMILY: &[DumpRequest] = &[
    DumpRequest::ByFamily(Family::Ipv4),
    DumpRequest::ByFamily(Family::Ipv6),
];
/// The same with INET_DIAG_INFO (`--collector.tcp.info`).
pub(super) const LEGACY_INFO: &[DumpRequest] = &[DumpRequest::LegacyInfo];
pub(super) const BY_FAMILY_INFO: &[DumpRequest] = &[
    DumpRequest::ByFamilyInfo(Family::Ipv4),
    DumpRequest::ByFamilyInfo(Family::Ipv6),
];

/// The INET_DIAG_CGROUP_ID from the attributes after a socket message:
/// None when the kernel sent none.
fn cgroup_id(attributes: &[u8]) -> Result<Option<u64>, ParseError> {
    diag::cgroup_id(attributes).map_err(ParseError::Attribute)
}

/// Per-cgroup TCP socket counts of one collection.
#[derive(Debug, Default, Clone)]
struct CgroupCounts {
    /// By cgroup id, states summed over both families.
    by_id: HashMap<u64, [u64; TcpState::COUNT]>,
    /// Sockets that carried no cgroup id.
    none: [u64; TcpState::COUNT],
    /// Of those, sockets that should have had one: neither TIME_WAIT nor a
    /// request socket (SYN_RECV).
    full_without_id: u64,
}

impl CgroupCounts {
    fn clear(&mut self) {
        self.by_id.clear();
        self.none = [0; TcpState::COUNT];
        self.full_without_id = 0;
    }

    /// Counts one socket; returns its cgroup id.
    #[inline]
    fn add(
        &mut self,
        msg: &InetDiagMsg<'_>,
        state: TcpState,
        attributes: &[u8],
    ) -> Result<Option<u64>, ParseError> {
        let s = state as usize;
        let id = cgroup_id(attributes)?;
        match id {
            Some(id) => self.by_id.entry(id).or_insert([0; TcpState::COUNT])[s] += 1,
            None => {
                self.none[s] += 1;
                // TIME_WAIT sockets are dumped with their substate (maybe
                // FIN_WAIT2) but always with idiag_timer 3.
                let time_wait = state == TcpState::TimeWait || msg.timer() == 3;
                if !time_wait && state != TcpState::SynRecv {
                    self.full_without_id += 1;
                }
            }
        }
        Ok(id)
    }
}

/// TCP sockets by family and state, queue sums, the SYN queue by local port,
/// and the optional per-port view.
#[derive(Debug, Default, Clone)]
pub struct TcpStats {
    /// Socket counts.
    pub sockets: ByState,
    /// Sum of idiag_rqueue (unread bytes) over non-listening sockets.
    pub receive_queue_bytes: ByState,
    /// Sum of idiag_wqueue (unacknowledged bytes) over non-listening sockets.
    pub send_queue_bytes: ByState,
    /// SYN_RECV sockets (request sockets: half-open connections waiting for
    /// the client's ACK) by family and local port.
    syn_queue: HashMap<(Family, u16), u64>,
    pub ports: PortCounts<{ TcpState::COUNT }>,
    /// Per-cgroup counts, when [`count_cgroups`](Self::count_cgroups) is on.
    cgroups: Option<Box<CgroupCounts>>,
    /// Health from tcp_info, when [`read_info`](Self::read_info) is on.
    health: Option<Box<TcpHealth>>,
    /// Ephemeral port use per destination.
    pub ephemeral: Ephemeral,
    /// Destinations shown in the table (`--collector.tcp.ephemeral.top`).
    pub ephemeral_top: usize,
    /// Per remote network counts (`--collector.tcp.remote-networks`).
    pub remote_networks: RemoteNetworks,
    /// The port sysctls could not be read: logged once, until they can.
    ports_unreadable: bool,
    /// The requests to send (`--collector.tcp.dump`).
    pub mode: DumpMode,
    /// Auto mode saw the kernel refuse the legacy request: per-family dumps
    /// from then on. Kept across collections.
    legacy_refused: bool,
}

impl TcpStats {
    pub fn new(ports: PortSet) -> TcpStats {
        TcpStats {
            ports: PortCounts::new(ports),
            ..TcpStats::default()
        }
    }

    /// The same, counting sockets per cgroup id when `on`.
    pub fn with_cgroups(mut self, on: bool) -> TcpStats {
        self.count_cgroups(on);
        self
    }

    /// Turns per-cgroup counting on or off (off by default). When on, each
    /// socket's INET_DIAG_CGROUP_ID is read from the attributes after its
    /// `struct inet_diag_msg`, and a malformed attribute area fails the
    /// collection like any other malformed message. When off, attributes are
    /// never looked at.
    pub fn count_cgroups(&mut self, on: bool) {
        match (on, self.cgroups.is_some()) {
            (true, false) => self.cgroups = Some(Box::default()),
            (false, true) => self.cgroups = None,
            _ => {}
        }
        if let Some(health) = &mut self.health {
            health.by_cgroups(on);
        }
    }

    /// Turns `--collector.tcp.info` on or off: the dumps ask for
    /// INET_DIAG_INFO and established sockets feed [`TcpHealth`]. Turning
    /// it off forgets the retransmission totals.
    pub fn read_info(&mut self, on: bool) {
        match (on, self.health.is_some()) {
            (true, false) => {
                let mut health = TcpHealth::new(self.ports.set.clone());
                health.by_cgroups(self.cgroups.is_some());
                self.health = Some(Box::new(health));
            }
            (false, true) => self.health = None,
            _ => {}
        }
    }

    /// The tcp_info health, when `--collector.tcp.info` is on.
    pub fn health(&self) -> Option<&TcpHealth> {
        self.health.as_deref()
    }

    /// Whether per-cgroup counting is on.
    #[cfg(any(test, feature = "testing"))]
    pub fn counts_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Forgets all sockets but keeps the maps' capacity.
    pub fn clear(&mut self) {
        self.sockets = ByState::default();
        self.receive_queue_bytes = ByState::default();
        self.send_queue_bytes = ByState::default();
        self.syn_queue.clear();
        self.ports.clear();
        self.ephemeral.clear();
        self.remote_networks.clear();
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.clear();
        }
        if let Some(health) = &mut self.health {
            health.clear();
        }
    }

    /// Folds one socket message in. For LISTEN sockets the kernel's queue
    /// fields are the accept queue length and its limit, not bytes, so they
    /// never go into the byte sums (the listeners collector reports them).
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let (msg, family) = inet(payload)?;
        let state = TcpState::from_kernel(msg.state())
            .ok_or(ParseError::UnknownState { state: msg.state() })?;
        // First, so that a malformed attribute leaves no partial counts.
        let cgroup = match &mut self.cgroups {
            Some(cgroups) => cgroups.add(&msg, state, &payload[INET_DIAG_MSG_LEN..])?,
            None => None,
        };
        if let Some(health) = &mut self.health {
            health.add(&msg, state, &payload[INET_DIAG_MSG_LEN..], cgroup)?;
        }
        self.ephemeral.add(&msg, state);
        self.remote_networks.add(&msg, family, state);
        let (f, s) = (family as usize, state as usize);
        self.sockets[f][s] += 1;
        match state {
            TcpState::Listen => {}
            TcpState::SynRecv => {
                *self
                    .syn_queue
                    .entry((family, msg.local_port()))
                    .or_default() += 1;
            }
            _ => {
                self.receive_queue_bytes[f][s] += u64::from(msg.rqueue());
                self.send_queue_bytes[f][s] += u64::from(msg.wqueue());
            }
        }
        self.ports.add(msg.local_port(), msg.remote_port(), s);
        Ok(())
    }

    /// SYN_RECV sockets by (family, local port), sorted.
    pub fn syn_queue(&self) -> Vec<((Family, u16), u64)> {
        let mut out: Vec<_> = self.syn_queue.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }

    /// Total sockets in one state over both families.
    pub fn total(&self, state: TcpState) -> u64 {
        Family::ALL
            .iter()
            .map(|f| self.sockets[*f as usize][state as usize])
            .sum()
    }

    /// Socket counts by cgroup id and state (indexed `[TcpState as usize]`,
    /// both families summed), in no particular order. `None` holds the
    /// sockets that carried no cgroup id (TIME_WAIT and request sockets,
    /// and every socket on kernels that send no INET_DIAG_CGROUP_ID); it
    /// comes first and always, zeros included. Listeners are counted too.
    /// Empty when per-cgroup counting is off.
    pub fn by_cgroup(&self) -> impl Iterator<Item = (Option<u64>, &[u64; TcpState::COUNT])> + '_ {
        self.cgroups.iter().flat_map(|c| {
            std::iter::once((None, &c.none)).chain(c.by_id.iter().map(|(id, v)| (Some(*id), v)))
        })
    }

    /// Whether per-cgroup counting saw a socket carrying cgroup `id` (None:
    /// the no-id row, always there when counting is on).
    pub fn has_cgroup(&self, id: Option<u64>) -> bool {
        self.cgroups.as_ref().is_some_and(|c| match id {
            None => true,
            Some(id) => c.by_id.contains_key(&id),
        })
    }

    /// Sockets without a cgroup id that should have had one: neither
    /// TIME_WAIT nor request (SYN_RECV) sockets. Non-zero while no socket
    /// has an id means the kernel sends no INET_DIAG_CGROUP_ID at all
    /// (before 5.7, or without CONFIG_SOCK_CGROUP_DATA). 0 when counting is
    /// off.
    pub fn full_sockets_without_cgroup_id(&self) -> u64 {
        self.cgroups.as_ref().map_or(0, |c| c.full_without_id)
    }

    /// Sockets that carried a cgroup id (0 when counting is off).
    pub fn sockets_with_cgroup_id(&self) -> u64 {
        self.cgroups
            .as_ref()
            .map_or(0, |c| c.by_id.values().flatten().sum())
    }
}

impl Sink for TcpStats {
    fn clear(&mut self) {
        TcpStats::clear(self)
    }
    #[inline]
    fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        TcpStats::add(self, payload)
    }
}

impl TcpStats {
    /// Reads the namespace's port range for the ephemeral counts. Without
    /// it (a transport that cannot tell, or /proc/sys unreadable) those
    /// series are left out and the rest of the collection goes on; a real
    /// failure is logged once, until the range can be read again.
    fn read_local_ports<T: Transport>(&mut self, transport: &mut T) {
        match transport.local_ports() {
            Ok(ports) => {
                self.ephemeral.set_ports(Some(&ports));
                self.ports_unreadable = false;
            }
            Err(error) => {
                self.ephemeral.set_ports(None);
                if error.kind() != std::io::ErrorKind::Unsupported && !self.ports_unreadable {
                    self.ports_unreadable = true;
                    log::log(
                        Level::Warn,
                        "cannot read the local port range; sockdiag_ephemeral_* left out",
                        &[("err", &error)],
                    );
                }
            }
        }
    }
}

/// Errnos with which a kernel refuses a request it does not support.
fn is_unsupported(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT)
}

/// The TCP requests for `mode`, once auto mode has (or has not) seen the
/// kernel refuse the legacy request; with INET_DIAG_INFO when `info`.
fn tcp_plan(mode: DumpMode, legacy_refused: bool, info: bool) -> &'static [DumpRequest] {
    let legacy = match mode {
        DumpMode::Legacy => true,
        DumpMode::ByFamily => false,
        DumpMode::Auto => !legacy_refused,
    };
    match (legacy, info) {
        (true, false) => LEGACY,
        (false, false) => BY_FAMILY,
        (true, true) => LEGACY_INFO,
        (false, true) => BY_FAMILY_INFO,
    }
}

impl TcpStats {
    /// The TCP requests the next collection sends.
    pub fn plan(&self) -> &'static [DumpRequest] {
        tcp_plan(self.mode, self.legacy_refused, self.health.is_some())
    }

    /// In auto mode, a kernel error answering the legacy request (before any
    /// socket arrived) that says "not supported" means "use the other
    /// request", not "fail". Transient errors (EBUSY, ENOMEM, ENOBUFS, ...)
    /// fail this collection and leave the legacy request in use.
    fn is_legacy_refusal(&self, error: &CollectError) -> bool {
        self.mode == DumpMode::Auto
            && !self.legacy_refused
            && (error.request == DumpRequest::Legacy.name()
                || error.request == DumpRequest::LegacyInfo.name())
            && matches!(
                error.kind,
                ErrorKind::Parse(
                    ParseError::KernelError { errno } | ParseError::DoneError { errno }
                ) if is_unsupported(errno)
            )
            && self.sockets == ByState::default()
    }
}

pub static SYN_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_listen_syn_queue",
    help: "Half-open connections (SYN received, final ACK not yet) by local port: the SYN queue of the listener on that port. From the tcp collector's dump.",
    labels: &["protocol", "family", "port"],
};

/// The metrics this collector alone produces (with `--collector.tcp.info`'s, ephemeral ports and remote networks).
pub static SPECS: &[&Spec] = &[
    &SYN_QUEUE,
    &tcp_health::RTT,
    &tcp_health::RETRANSMITTED,
    &tcp_health::RETRANSMITTING,
    &tcp_health::NOTSENT,
    &tcp_health::UNTRACKED,
    &tcp_health::SHORT_INFO,
    &tcp_health::CGROUP_RTT,
    &tcp_health::CGROUP_RETRANSMITTED,
    &tcp_health::CGROUP_RETRANSMITTING,
    &tcp_health::CGROUP_NOTSENT,
    &ephemeral::EPHEMERAL_PORTS,
    &ephemeral::USED,
    &ephemeral::USED_MAX,
    &ephemeral::USED_ERROR,
    &ephemeral::EVICTED,
    &remote_networks::REMOTE_NETWORK_SOCKETS,
];

impl SocketCollector for TcpStats {
    const NAME: &'static str = "tcp";
    const HELP: &'static str = "sockets and queues by state";
    const SIDE: bool = false;
    fn specs() -> &'static [&'static Spec] {
        SPECS
    }
    fn new(options: &Options) -> TcpStats {
        let mut stats = TcpStats::new(options.tcp_ports.clone()).with_cgroups(options.cgroup);
        stats.mode = options.tcp_dump;
        stats.read_info(options.tcp_info);
        stats.ephemeral_top = options.ephemeral_top;
        stats.remote_networks = RemoteNetworks::new(&options.remote_networks);
        stats
    }
    /// Its series for one namespace (`ns`: the `netns` label, if any).
    fn families(&self, options: &Options, out: &mut Families, ns: Ns<'_>) {
        let tcp = self;
        for family in Family::ALL {
            for state in TcpState::ALL {
                let labels = &["tcp", family.label(), state.label()];
                let (f, s) = (family as usize, state as usize);
                out.int(&SOCKETS, labels, ns, tcp.sockets[f][s]);
                out.int(&RECEIVE_QUEUE, labels, ns, tcp.receive_queue_bytes[f][s]);
                out.int(&SEND_QUEUE, labels, ns, tcp.send_queue_bytes[f][s]);
            }
        }
        for ((family, port), n) in tcp.syn_queue() {
            out.int(
                &SYN_QUEUE,
                &["tcp", family.label(), &port.to_string()],
                ns,
                n,
            );
        }
        let states = TcpState::ALL.map(|s| s.label());
        self.ports
            .families(out, "tcp", &states, options.max_port_series, ns);
        if let Some(health) = &self.health {
            health.families(out, options.max_port_series, ns);
        }
        self.ephemeral.families(options.ephemeral_top, out, ns);
        self.remote_networks.families(out, ns);
    }

    fn table(&self, out: &mut String) {
        let (v4, v6) = (Family::Ipv4 as usize, Family::Ipv6 as usize);
        let mut rows = vec![row(
            ["TCP sockets", "ipv4", "ipv6", "total"].map(String::from)
        )];
        for state in TcpState::ALL {
            let s = state as usize;
            rows.push(row([
                state.label().to_string(),
                self.sockets[v4][s].to_string(),
                self.sockets[v6][s].to_string(),
                self.total(state).to_string(),
            ]));
        }
        out.push_str(&columns(&rows, 1));

        out.push('\n');
        let mut rows = vec![row([
            "TCP queued bytes",
            "recv ipv4",
            "send ipv4",
            "recv ipv6",
            "send ipv6",
        ]
        .map(String::from))];
        for state in TcpState::ALL {
            if state == TcpState::Listen {
                continue; // listeners queue connections, not bytes
            }
            let s = state as usize;
            rows.push(row([
                state.label().to_string(),
                self.receive_queue_bytes[v4][s].to_string(),
                self.send_queue_bytes[v4][s].to_string(),
                self.receive_queue_bytes[v6][s].to_string(),
                self.send_queue_bytes[v6][s].to_string(),
            ]));
        }
        out.push_str(&columns(&rows, 1));

        let syn = self.syn_queue();
        if !syn.is_empty() {
            out.push('\n');
            let mut rows = vec![row(["SYN queue", "port", "half-open"].map(String::from))];
            for ((family, port), n) in syn {
                rows.push(row([
                    family.label().to_string(),
                    port.to_string(),
                    n.to_string(),
                ]));
            }
            out.push_str(&columns(&rows, 1));
        }
        self.ports
            .table(out, "TCP", &TcpState::ALL.map(|s| s.label()));
        if let Some(health) = &self.health {
            health.table(out);
        }
        self.ephemeral.table(self.ephemeral_top, out);
        self.remote_networks.table(out);
    }

    /// An empty namespace still has a port range: its ephemeral series are
    /// served (with no use) like any other namespace's.
    fn skip<T: Transport>(&mut self, transport: &mut T) {
        Sink::clear(self);
        self.read_local_ports(transport);
    }

    /// Runs the TCP dumps into these counts, falling back from the legacy
    /// request in auto mode.
    fn collect<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError> {
        self.read_local_ports(&mut dumper.transport);
        let result = self.run(dumper);
        if let (Ok(()), Some(health)) = (&result, &mut self.health) {
            health.finish();
        }
        result
    }
}

impl TcpStats {
    fn run<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError> {
        match dumper.run(self.plan(), self) {
            Err(error) if self.is_legacy_refusal(&error) => {
                self.legacy_refused = true;
                log::log(
                    Level::Warn,
                    "the kernel refused the legacy AF_UNSPEC dump; using per-family dumps from now on",
                    &[("err", &error)],
                );
                dumper.run(self.plan(), self)
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ports::Direction;
    use super::*;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::parse::tests::{inet_diag_msg, rtattr, v4};

    #[test]
    fn counts_every_state_in_both_families() {
        let mut stats = TcpStats::default();
        for family in [AF_INET, AF_INET6] {
            for state in 1..=11u8 {
                for _ in 0..state {
                    let m = inet_diag_msg(family, state, v4([10, 0, 0, 1]), 1000, 2000, 7, 11, 0);
                    stats.add(&m).unwrap();
                }
            }
        }
        for family in Family::ALL {
            for state in TcpState::ALL {
                let (f, s) = (family as usize, state as usize);
                let n = u64::from(state.kernel());
                assert_eq!(stats.sockets[f][s], n, "{family:?} {state:?}");
                let bytes = if matches!(state, TcpState::Listen | TcpState::SynRecv) {
                    (0, 0)
                } else {
                    (7 * n, 11 * n)
                };
                let got = (
                    stats.receive_queue_bytes[f][s],
                    stats.send_queue_bytes[f][s],
                );
                assert_eq!(got, bytes, "{family:?} {state:?}");
            }
        }
        assert_eq!(stats.total(TcpState::Closing), 22);
        // SYN_RECV (3) sockets per family on local port 1000.
        assert_eq!(
            stats.syn_queue(),
            vec![((Family::Ipv4, 1000), 3), ((Family::Ipv6, 1000), 3)]
        );
        stats.clear();
        assert!(stats.syn_queue().is_empty());
        assert_eq!(stats.sockets, ByState::default());
    }

    #[test]
    fn rejects_unknown_states_and_families() {
        let mut stats = TcpStats::default();
        for state in [0, 14] {
            let bad = inet_diag_msg(AF_INET, state, v4([1, 2, 3, 4]), 1, 2, 0, 0, 0);
            assert_eq!(stats.add(&bad), Err(ParseError::UnknownState { state }));
        }
        let bad_family = inet_diag_msg(1, 1, v4([1, 2, 3, 4]), 1, 2, 0, 0, 0);
        assert_eq!(
            stats.add(&bad_family),
            Err(ParseError::UnknownFamily { family: 1 })
        );
        assert_eq!(stats.sockets, ByState::default());
    }

    /// What a 6.x kernel appends to a full TCP socket of a dump that asked
    /// for no extension (no MARK: that needs CAP_NET_ADMIN), for cgroup `id`.
    fn full_socket_attributes(id: u64) -> Vec<u8> {
        let mut a = rtattr(diag::INET_DIAG_SHUTDOWN, &[0]); // rta_len 5, type 8, 0, pad 3
        a.extend(rtattr(diag::INET_DIAG_CGROUP_ID, &id.to_ne_bytes())); // rta_len 12, type 21, u64
        a.extend(rtattr(diag::INET_DIAG_SOCKOPT, &[0, 0])); // rta_len 6, type 22, u16, pad 2
        a
    }

    /// A socket in kernel state `state` carrying cgroup `id`.
    fn in_cgroup(family: u8, state: u8, id: u64) -> Vec<u8> {
        let mut m = inet_diag_msg(family, state, v4([127, 0, 0, 1]), 80, 4000, 1, 2, 77);
        m.extend(full_socket_attributes(id));
        m
    }

    /// A TIME_WAIT socket as inet_twsk_diag_fill sends it: `state` is the
    /// tw_substate (TIME_WAIT or FIN_WAIT2), idiag_timer 3, no attributes.
    fn time_wait(state: u8) -> Vec<u8> {
        let mut m = inet_diag_msg(AF_INET, state, v4([127, 0, 0, 1]), 4000, 80, 0, 0, 0);
        m[2] = 3; // idiag_timer: 3, the TIME_WAIT timer
        m
    }

    fn cgroup_rows(stats: &TcpStats) -> Vec<(Option<u64>, [u64; TcpState::COUNT])> {
        let mut rows: Vec<_> = stats.by_cgroup().map(|(id, v)| (id, *v)).collect();
        rows.sort();
        rows
    }

    fn one(state: TcpState, n: u64) -> [u64; TcpState::COUNT] {
        let mut v = [0; TcpState::COUNT];
        v[state as usize] = n;
        v
    }

    #[test]
    fn cgroup_counting_is_off_by_default_and_never_reads_attributes() {
        let mut stats = TcpStats::default();
        assert!(!stats.counts_cgroups());
        // rta_len 40 with 4 bytes left: malformed, but nobody looks.
        let mut m = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 1, 2, 0, 0, 1);
        m.extend_from_slice(&[40, 0, 21, 0]);
        stats.add(&m).unwrap();
        stats.add(&in_cgroup(AF_INET, 1, 5)).unwrap();
        assert_eq!(stats.by_cgroup().count(), 0);
        assert_eq!(stats.full_sockets_without_cgroup_id(), 0);
        assert_eq!(stats.sockets_with_cgroup_id(), 0);
        assert_eq!(stats.total(TcpState::Established), 2);
    }

    #[test]
    fn counts_by_cgroup_id_and_state_over_both_families() {
        let mut stats = TcpStats::new(PortSet::default()).with_cgroups(true);
        assert!(stats.counts_cgroups());
        assert_eq!(cgroup_rows(&stats), vec![(None, [0; TcpState::COUNT])]);
        for (family, state, id) in [
            (AF_INET, 1, 100),  // established
            (AF_INET6, 1, 100), // established, the other family
            (AF_INET, 10, 100), // listen
            (AF_INET6, 10, 200),
            (AF_INET, 8, 200), // close_wait
        ] {
            stats.add(&in_cgroup(family, state, id)).unwrap();
        }
        stats.add(&time_wait(6)).unwrap();
        stats.add(&time_wait(5)).unwrap(); // TIME_WAIT in substate FIN_WAIT2
                                           // A request socket: SYN_RECV with MARK only (rta_len 8, type 15).
        let mut request = inet_diag_msg(AF_INET, 3, v4([127, 0, 0, 1]), 80, 5000, 0, 0, 0);
        request[2] = 1; // idiag_timer: 1, the SYN-ACK retransmit timer
        request.extend(rtattr(diag::INET_DIAG_MARK, &0u32.to_ne_bytes()));
        stats.add(&request).unwrap();
        // A full socket without the attribute (an old kernel): SHUTDOWN only.
        let mut old = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 80, 6000, 0, 0, 9);
        old.extend(rtattr(diag::INET_DIAG_SHUTDOWN, &[0]));
        stats.add(&old).unwrap();

        let mut none = one(TcpState::TimeWait, 1);
        none[TcpState::FinWait2 as usize] = 1;
        none[TcpState::SynRecv as usize] = 1;
        none[TcpState::Established as usize] = 1;
        let mut a = one(TcpState::Established, 2);
        a[TcpState::Listen as usize] = 1;
        let mut b = one(TcpState::Listen, 1);
        b[TcpState::CloseWait as usize] = 1;
        assert_eq!(
            cgroup_rows(&stats),
            vec![(None, none), (Some(100), a), (Some(200), b)]
        );
        assert_eq!(
            stats.full_sockets_without_cgroup_id(),
            1,
            "only the old one"
        );
        assert_eq!(stats.sockets_with_cgroup_id(), 5);
        // The per-family counts are unchanged by cgroup counting.
        assert_eq!(stats.total(TcpState::Established), 3);
        assert_eq!(
            stats.sockets[Family::Ipv6 as usize][TcpState::Listen as usize],
            1
        );

        // A new collection starts from zero and keeps the map's capacity.
        let capacity = stats.cgroups.as_ref().unwrap().by_id.capacity();
        stats.clear();
        assert_eq!(cgroup_rows(&stats), vec![(None, [0; TcpState::COUNT])]);
        assert_eq!(stats.full_sockets_without_cgroup_id(), 0);
        assert_eq!(stats.cgroups.as_ref().unwrap().by_id.capacity(), capacity);
        stats.add(&in_cgroup(AF_INET, 1, 300)).unwrap();
        assert_eq!(
            cgroup_rows(&stats)[1],
            (Some(300), one(TcpState::Established, 1))
        );
        stats.count_cgroups(false);
        assert_eq!(stats.by_cgroup().count(), 0);
    }

    #[test]
    fn a_malformed_cgroup_attribute_fails_without_partial_counts() {
        let mut stats = TcpStats::default().with_cgroups(true);
        let lo = v4([127, 0, 0, 1]);
        // CGROUP_ID with a 4-byte payload (rta_len 8) after SHUTDOWN.
        let mut short = inet_diag_msg(AF_INET, 1, lo, 80, 4000, 0, 0, 1);
        short.extend(rtattr(diag::INET_DIAG_SHUTDOWN, &[0]));
        short.extend(rtattr(diag::INET_DIAG_CGROUP_ID, &[1, 2, 3, 4]));
        assert_eq!(
            stats.add(&short),
            Err(ParseError::Attribute(diag::BadAttribute {
                offset: 8,
                len: 8,
                left: 8
            }))
        );
        // rta_len 0: would loop forever if accepted.
        let mut zero = inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1);
        zero.extend_from_slice(&[0, 0, 21, 0]);
        assert!(matches!(stats.add(&zero), Err(ParseError::Attribute(_))));
        assert_eq!(stats.sockets, ByState::default());
        assert_eq!(cgroup_rows(&stats), vec![(None, [0; TcpState::COUNT])]);
    }

    #[test]
    fn tcp_info_asks_for_info_on_the_same_single_walk() {
        let mut stats = TcpStats::default();
        assert_eq!(stats.plan(), LEGACY);
        stats.read_info(true);
        assert_eq!(stats.plan(), &[DumpRequest::LegacyInfo]);
        // A refused legacy info request falls back to by-family with INFO.
        let refusal = CollectError {
            request: DumpRequest::LegacyInfo.name(),
            kind: ErrorKind::Parse(ParseError::KernelError {
                errno: libc::EOPNOTSUPP,
            }),
        };
        assert!(stats.is_legacy_refusal(&refusal));
        stats.legacy_refused = true;
        assert_eq!(stats.plan(), BY_FAMILY_INFO);
        stats.mode = DumpMode::Legacy;
        assert_eq!(stats.plan(), LEGACY_INFO);
        stats.read_info(false);
        assert_eq!(stats.plan(), LEGACY);
        assert!(stats.health().is_none());
    }

    #[test]
    fn per_port_views_count_both_directions() {
        let mut stats = TcpStats::new(PortSet::parse("5432,8000-8001").unwrap());
        let lo = v4([127, 0, 0, 1]);
        // Server side of :5432 (established, listen), a client of :5432,
        // a client of :8001, and a socket on no listed port.
        stats
            .add(&inet_diag_msg(AF_INET, 1, lo, 5432, 40000, 0, 0, 1))
            .unwrap();
        stats
            .add(&inet_diag_msg(AF_INET, 10, lo, 5432, 0, 0, 0, 1))
            .unwrap();
        stats
            .add(&inet_diag_msg(AF_INET6, 8, [0; 16], 40001, 5432, 0, 0, 1))
            .unwrap();
        stats
            .add(&inet_diag_msg(AF_INET, 1, lo, 40002, 8001, 0, 0, 1))
            .unwrap();
        stats
            .add(&inet_diag_msg(AF_INET, 1, lo, 22, 40003, 0, 0, 1))
            .unwrap();
        let series = stats.ports.series();
        let get = |d, p| series.iter().find(|(k, _)| *k == (d, p)).map(|(_, v)| *v);
        let est = TcpState::Established as usize;
        let local = get(Direction::Local, 5432).unwrap();
        assert_eq!((local[est], local[TcpState::Listen as usize]), (1, 1));
        let remote = get(Direction::Remote, 5432).unwrap();
        assert_eq!(remote[TcpState::CloseWait as usize], 1);
        assert_eq!(get(Direction::Remote, 8001).unwrap()[est], 1);
        // Range ports without sockets are absent; single ports never are.
        assert_eq!(get(Direction::Local, 8000), None);
        assert_eq!(get(Direction::Local, 8001), None);
        assert_eq!(series.len(), 3);
        stats.clear();
        let series = stats.ports.series();
        assert_eq!(series.len(), 2);
        assert!(series
            .iter()
            .all(|(k, v)| k.1 == 5432 && v.iter().all(|n| *n == 0)));
    }
}
