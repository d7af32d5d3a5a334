//! Streaming aggregation: each socket from a dump is folded into counts and
//! queue sums as it is parsed, and then forgotten.
//!
//! One stats type per collector: [`TcpStats`] (the main TCP dump),
//! [`ListenStats`] (the LISTEN-only dump with drops), [`UdpStats`] and
//! [`UnixStats`]. Storage is fixed-size arrays plus maps keyed by listener or
//! port, which keep their capacity across collections: after the first
//! collection, counting a socket allocates nothing, so memory stays flat
//! from 10 sockets to millions.
//!
//! [`TcpStats`] can also count sockets per cgroup id
//! ([`TcpStats::count_cgroups`], off by default): the INET_DIAG_CGROUP_ID
//! attribute the kernel sends unasked on every full socket is read and the
//! socket counted under (id, state), keyed by the raw u64, so no string work
//! happens per socket; `cgroup::Attribution` turns ids into paths once per
//! collection.

use std::collections::HashMap;

use crate::diag::{
    self, meminfo, Attributes, Family, InetDiagMsg, TcpState, UdpState, UnixDiagMsg, UnixState,
    UnixType, INET_DIAG_MSG_LEN, INET_DIAG_SKMEMINFO, SK_MEMINFO_DROPS, UNIX_DIAG_NAME,
    UNIX_DIAG_RQLEN,
};
use crate::parse::ParseError;

/// Per-family, per-state values, indexed `[Family as usize][TcpState as usize]`.
pub type ByState = [[u64; TcpState::COUNT]; 2];
/// Per-family, per-UDP-state values.
pub type UdpByState = [[u64; UdpState::COUNT]; 2];
/// Per-type, per-state values for unix sockets.
pub type UnixByState = [[u64; UnixState::COUNT]; UnixType::COUNT];

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

    #[inline]
    fn add(
        &mut self,
        msg: &InetDiagMsg<'_>,
        state: TcpState,
        attributes: &[u8],
    ) -> Result<(), ParseError> {
        let s = state as usize;
        match cgroup_id(attributes)? {
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
        Ok(())
    }
}

/// A set of ports (`--collector.tcp.ports 22,80,8000-8100`), as a bitmap so
/// that checking a socket costs one load. The default is the empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    bits: Vec<u64>,
    /// Ports listed one by one: their series are always emitted, zeros
    /// included. Ports inside ranges appear only while they have sockets.
    singles: Vec<u16>,
}

impl PortSet {
    /// Parses a comma-separated list of ports and inclusive ranges.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut set = PortSet {
            bits: vec![0; 1024],
            singles: Vec::new(),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{p:?} in {s:?} is not a port (1-65535); expected a list like 22,80,8000-8100"
                )),
            }
        };
        for item in s.split(',') {
            if item.trim().is_empty() {
                return Err(format!(
                    "empty item in port list {s:?}; expected a list like 22,80,8000-8100"
                ));
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(format!("port range {item:?} in {s:?} runs backwards"));
                    }
                    (a..=b).for_each(|p| set.insert(p));
                }
                None => {
                    let p = port(item)?;
                    set.insert(p);
                    set.singles.push(p);
                }
            }
        }
        set.singles.sort_unstable();
        set.singles.dedup();
        Ok(set)
    }

    fn insert(&mut self, port: u16) {
        self.bits[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.bits
            .get(usize::from(port >> 6))
            .is_some_and(|w| w & (1 << (port & 63)) != 0)
    }

    pub fn singles(&self) -> &[u16] {
        &self.singles
    }
}

/// Which end of a connection a port view matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The port is the socket's local port: we serve it.
    Local,
    /// The port is the remote port: we are a client of it.
    Remote,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Local, Direction::Remote];

    /// The `direction` label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Local => "local",
            Direction::Remote => "remote",
        }
    }
}

/// Socket counts by state for the configured ports, each as a local and as a
/// remote port. `N` is the protocol's number of states.
#[derive(Debug, Clone, Default)]
pub struct PortCounts<const N: usize> {
    set: PortSet,
    counts: HashMap<(Direction, u16), [u64; N]>,
}

impl<const N: usize> PortCounts<N> {
    pub fn new(set: PortSet) -> PortCounts<N> {
        PortCounts {
            set,
            counts: HashMap::new(),
        }
    }

    fn clear(&mut self) {
        self.counts.clear();
    }

    #[inline]
    fn add(&mut self, local: u16, remote: u16, state: usize) {
        if self.set.is_empty() {
            return;
        }
        if self.set.contains(local) {
            self.counts
                .entry((Direction::Local, local))
                .or_insert([0; N])[state] += 1;
        }
        if remote != 0 && self.set.contains(remote) {
            self.counts
                .entry((Direction::Remote, remote))
                .or_insert([0; N])[state] += 1;
        }
    }

    /// Every (direction, port) with sockets, plus both directions of every
    /// single listed port (zeros included), sorted by direction then port.
    pub fn series(&self) -> Vec<((Direction, u16), [u64; N])> {
        let mut out: Vec<_> = self.counts.iter().map(|(k, v)| (*k, *v)).collect();
        for &port in self.set.singles() {
            for direction in Direction::ALL {
                if !self.counts.contains_key(&(direction, port)) {
                    out.push(((direction, port), [0; N]));
                }
            }
        }
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }
}

/// A listening address: sockets sharing it (SO_REUSEPORT) are one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub family: Family,
    /// IPv4 addresses use the first 4 bytes; the rest are zero.
    pub address: [u8; 16],
    pub port: u16,
}

/// One listener, summed over its SO_REUSEPORT group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Connections completed and waiting for accept() (sk_ack_backlog).
    pub queue: u64,
    /// The accept backlog limit (sk_max_ack_backlog).
    pub max: u64,
    /// Listening sockets in the group.
    pub sockets: u64,
    /// SYNs and completed connections dropped (SK_MEMINFO_DROPS, raised by
    /// tcp_listendrop() with the namespace's ListenDrops).
    pub drops: u64,
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
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.clear();
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
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.add(&msg, state, &payload[INET_DIAG_MSG_LEN..])?;
        }
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

/// TCP listeners from the LISTEN-only dump, with their drop counters.
#[derive(Debug, Default, Clone)]
pub struct ListenStats {
    listeners: HashMap<ListenerKey, Listener>,
}

impl ListenStats {
    pub fn clear(&mut self) {
        self.listeners.clear();
    }

    /// Folds one LISTEN socket (with its SKMEMINFO attribute) in.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let (msg, family) = inet(payload)?;
        if TcpState::from_kernel(msg.state()) != Some(TcpState::Listen) {
            return Err(ParseError::UnknownState { state: msg.state() });
        }
        let drops = drops(&payload[INET_DIAG_MSG_LEN..])?;
        let mut address = msg.local_address();
        if family == Family::Ipv4 {
            address[4..].fill(0);
        }
        let key = ListenerKey {
            family,
            address,
            port: msg.local_port(),
        };
        let listener = self.listeners.entry(key).or_default();
        listener.queue += u64::from(msg.rqueue());
        listener.max += u64::from(msg.wqueue());
        listener.sockets += 1;
        listener.drops += drops;
        Ok(())
    }

    /// Listeners in a stable order (family, address, port).
    pub fn listeners(&self) -> Vec<(ListenerKey, Listener)> {
        let mut out: Vec<_> = self.listeners.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }
}

/// UDP sockets by family and state, queue sums and drops.
#[derive(Debug, Default, Clone)]
pub struct UdpStats {
    pub sockets: UdpByState,
    /// Sum of idiag_rqueue: receive memory charged to the socket
    /// (skb truesize, so more than the payload bytes), over all sockets.
    pub receive_queue_bytes: UdpByState,
    /// Sum of idiag_wqueue: send memory not yet released by the device.
    pub send_queue_bytes: UdpByState,
    /// Sum of SK_MEMINFO_DROPS over the open sockets, by family.
    pub drops: [u64; 2],
    pub ports: PortCounts<{ UdpState::COUNT }>,
    /// Drops of the sockets bound to each configured port.
    port_drops: HashMap<u16, u64>,
}

impl UdpStats {
    pub fn new(ports: PortSet) -> UdpStats {
        UdpStats {
            ports: PortCounts::new(ports),
            ..UdpStats::default()
        }
    }

    pub fn clear(&mut self) {
        self.sockets = UdpByState::default();
        self.receive_queue_bytes = UdpByState::default();
        self.send_queue_bytes = UdpByState::default();
        self.drops = [0; 2];
        self.ports.clear();
        self.port_drops.clear();
    }

    /// Folds one UDP socket (with its SKMEMINFO attribute) in.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let (msg, family) = inet(payload)?;
        let state = UdpState::from_kernel(msg.state())
            .ok_or(ParseError::UnknownUdpState { state: msg.state() })?;
        let drops = drops(&payload[INET_DIAG_MSG_LEN..])?;
        let (f, s) = (family as usize, state as usize);
        self.sockets[f][s] += 1;
        self.receive_queue_bytes[f][s] += u64::from(msg.rqueue());
        self.send_queue_bytes[f][s] += u64::from(msg.wqueue());
        self.drops[f] += drops;
        self.ports.add(msg.local_port(), msg.remote_port(), s);
        if !self.ports.set.is_empty() && self.ports.set.contains(msg.local_port()) {
            *self.port_drops.entry(msg.local_port()).or_default() += drops;
        }
        Ok(())
    }

    /// Drops by local port for the configured ports: every single listed
    /// port (zero included) and range ports with sockets, sorted.
    pub fn port_drops(&self) -> Vec<(u16, u64)> {
        let mut out: Vec<_> = self.port_drops.iter().map(|(k, v)| (*k, *v)).collect();
        for &port in self.ports.set.singles() {
            if !self.port_drops.contains_key(&port) {
                out.push((port, 0));
            }
        }
        out.sort_unstable();
        out
    }
}

/// How a unix listener is named in its series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixName {
    /// A filesystem path (lossy UTF-8 for the label).
    Path(Vec<u8>),
    /// Any abstract name: aggregated into one series.
    Abstract,
    /// No name at all: aggregated into one series.
    Unnamed,
}

impl UnixName {
    /// The `path` label value: the path, or `@abstract` / `@unnamed`. A
    /// relative path (bound relative to the binder's working directory) gets
    /// a `./` prefix, so no path can read like one of the `@` names.
    pub fn label(&self) -> String {
        match self {
            UnixName::Path(p) if p.starts_with(b"/") => String::from_utf8_lossy(p).into_owned(),
            UnixName::Path(p) => format!("./{}", String::from_utf8_lossy(p)),
            UnixName::Abstract => "@abstract".into(),
            UnixName::Unnamed => "@unnamed".into(),
        }
    }
}

/// One unix listener (summed if several share a name).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnixListener {
    /// Connections waiting for accept().
    pub queue: u64,
    /// The backlog limit.
    pub max: u64,
    pub sockets: u64,
}

/// Unix sockets by type and state, queue sums and listeners.
#[derive(Debug, Default, Clone)]
pub struct UnixStats {
    pub sockets: UnixByState,
    /// Bytes waiting to be read (for dgram: the first datagram's length
    /// only, which is what the kernel reports), over non-listening sockets.
    pub receive_queue_bytes: UnixByState,
    /// Send memory not yet consumed by the peer (sk_wmem_alloc), over
    /// non-listening sockets.
    pub send_queue_bytes: UnixByState,
    /// Keyed by path; b"\0" collects every abstract name, b"" unnamed ones.
    listeners: HashMap<Vec<u8>, UnixListener>,
}

impl UnixStats {
    /// Zeroes everything. Listener names seen last time keep their entry
    /// (zeroed) for one more collection so that a steady set of listeners
    /// allocates nothing; names gone for a whole collection are dropped.
    pub fn clear(&mut self) {
        self.sockets = UnixByState::default();
        self.receive_queue_bytes = UnixByState::default();
        self.send_queue_bytes = UnixByState::default();
        self.listeners.retain(|_, l| l.sockets > 0);
        self.listeners
            .values_mut()
            .for_each(|l| *l = UnixListener::default());
    }

    /// Folds one unix socket (with UNIX_DIAG_NAME and UNIX_DIAG_RQLEN) in.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let msg = UnixDiagMsg::new(payload).ok_or(ParseError::ShortSocket {
            offset: 0,
            payload: payload.len(),
            needed: crate::diag::UNIX_DIAG_MSG_LEN,
        })?;
        let kind = UnixType::from_kernel(msg.kind())
            .ok_or(ParseError::UnknownUnixType { kind: msg.kind() })?;
        let state = UnixState::from_kernel(msg.state())
            .ok_or(ParseError::UnknownUnixState { state: msg.state() })?;
        let mut name: Option<&[u8]> = None;
        let mut queues: Option<(u32, u32)> = None;
        for attribute in Attributes::new(&payload[crate::diag::UNIX_DIAG_MSG_LEN..]) {
            match attribute.map_err(ParseError::Attribute)? {
                (UNIX_DIAG_NAME, bytes) => name = Some(bytes),
                (UNIX_DIAG_RQLEN, bytes) => {
                    queues = Some((
                        meminfo(bytes, 0).ok_or(ParseError::MissingAttribute {
                            name: "UNIX_DIAG_RQLEN",
                        })?,
                        meminfo(bytes, 1).ok_or(ParseError::MissingAttribute {
                            name: "UNIX_DIAG_RQLEN",
                        })?,
                    ))
                }
                _ => {}
            }
        }
        let (rqueue, wqueue) = queues.ok_or(ParseError::MissingAttribute {
            name: "UNIX_DIAG_RQLEN",
        })?;
        let (t, s) = (kind as usize, state as usize);
        self.sockets[t][s] += 1;
        if state == UnixState::Listen {
            // Key: the path; b"\0" for every abstract name, b"" for none.
            let key: &[u8] = match name {
                Some([0, ..]) => b"\0",
                None => b"",
                Some(path) => path.strip_suffix(&[0]).unwrap_or(path),
            };
            let listener = match self.listeners.get_mut(key) {
                Some(listener) => listener,
                None => self.listeners.entry(key.to_vec()).or_default(),
            };
            listener.queue += u64::from(rqueue);
            listener.max += u64::from(wqueue);
            listener.sockets += 1;
        } else {
            self.receive_queue_bytes[t][s] += u64::from(rqueue);
            self.send_queue_bytes[t][s] += u64::from(wqueue);
        }
        Ok(())
    }

    /// Listeners with sockets, sorted by name.
    pub fn listeners(&self) -> Vec<(UnixName, UnixListener)> {
        let mut out: Vec<_> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.sockets > 0)
            .map(|(k, v)| {
                let name = match k.as_slice() {
                    b"" => UnixName::Unnamed,
                    b"\0" => UnixName::Abstract,
                    path => UnixName::Path(path.to_vec()),
                };
                (name, *v)
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{AF_INET, AF_INET6};
    use crate::parse::tests::{inet_diag_msg, inet_with_drops, rtattr, unix_diag_msg, v4};

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
    fn port_sets_parse_lists_and_ranges() {
        let set = PortSet::parse("22, 5432,8000-8002,22").unwrap();
        for p in [22, 5432, 8000, 8001, 8002] {
            assert!(set.contains(p), "{p}");
        }
        for p in [1, 21, 23, 7999, 8003, 65535] {
            assert!(!set.contains(p), "{p}");
        }
        assert_eq!(set.singles(), &[22, 5432]);
        assert!(PortSet::parse("65535").unwrap().contains(65535));
        assert!(PortSet::default().is_empty());
        for bad in ["", "0", "65536", "a", "5-", "9-1", "1,,2", "-3"] {
            assert!(PortSet::parse(bad).is_err(), "{bad:?} accepted");
        }
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

    #[test]
    fn listeners_sum_reuseport_groups_with_drops() {
        let mut stats = ListenStats::default();
        let lo = v4([127, 0, 0, 1]);
        let mut dirty = lo;
        dirty[8] = 0xFF; // IPv4 keys ignore bytes past the 4th
        stats
            .add(&inet_with_drops(AF_INET, 10, lo, 80, 0, 3, 128, 5))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 10, dirty, 80, 0, 2, 128, 1))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 10, lo, 81, 0, 0, 16, 0))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET6, 10, [0; 16], 80, 0, 1, 4096, 0))
            .unwrap();
        let listeners = stats.listeners();
        assert_eq!(listeners.len(), 3);
        assert_eq!(listeners[0].0.port, 80);
        assert_eq!(
            listeners[0].1,
            Listener {
                queue: 5,
                max: 256,
                sockets: 2,
                drops: 6
            }
        );
        assert_eq!(listeners[1].1.max, 16);
        assert_eq!(listeners[2].0.family, Family::Ipv6);
        stats.clear();
        assert!(stats.listeners().is_empty());
    }

    #[test]
    fn listener_dump_needs_listen_state_and_meminfo() {
        let mut stats = ListenStats::default();
        let lo = v4([127, 0, 0, 1]);
        assert_eq!(
            stats.add(&inet_with_drops(AF_INET, 1, lo, 80, 9, 0, 0, 0)),
            Err(ParseError::UnknownState { state: 1 })
        );
        assert_eq!(
            stats.add(&inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1)),
            Err(ParseError::MissingAttribute {
                name: "INET_DIAG_SKMEMINFO"
            })
        );
        // SKMEMINFO too short to hold the drops.
        let mut short = inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1);
        short.extend(rtattr(7, &[0; 16]));
        assert!(matches!(
            stats.add(&short),
            Err(ParseError::MissingAttribute { .. })
        ));
        // An attribute claiming more bytes than there are.
        let mut bad = inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1);
        bad.extend_from_slice(&[40, 0, 7, 0, 1, 2, 3, 4]);
        assert!(matches!(stats.add(&bad), Err(ParseError::Attribute(_))));
        assert!(stats.listeners().is_empty());
    }

    #[test]
    fn udp_counts_states_queues_and_drops() {
        let mut stats = UdpStats::new(PortSet::parse("53").unwrap());
        let any = v4([0; 4]);
        stats
            .add(&inet_with_drops(AF_INET, 7, any, 53, 0, 2304, 0, 4))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 7, any, 53, 0, 0, 0, 1))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 1, any, 40000, 53, 0, 768, 0))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET6, 7, [0; 16], 514, 0, 0, 0, 2))
            .unwrap();
        let (un, co) = (UdpState::Unconnected as usize, UdpState::Connected as usize);
        assert_eq!(stats.sockets[0][un], 2);
        assert_eq!(stats.sockets[0][co], 1);
        assert_eq!(stats.sockets[1][un], 1);
        assert_eq!(stats.receive_queue_bytes[0][un], 2304);
        assert_eq!(stats.send_queue_bytes[0][co], 768);
        assert_eq!(stats.drops, [5, 2]);
        assert_eq!(stats.port_drops(), vec![(53, 5)]);
        let series = stats.ports.series();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0], ((Direction::Local, 53), [2, 0]));
        assert_eq!(series[1], ((Direction::Remote, 53), [0, 1]));
        assert_eq!(
            stats.add(&inet_with_drops(AF_INET, 10, any, 1, 0, 0, 0, 0)),
            Err(ParseError::UnknownUdpState { state: 10 })
        );
        stats.clear();
        assert_eq!(stats.drops, [0, 0]);
        assert_eq!(stats.port_drops(), vec![(53, 0)]);
    }

    #[test]
    fn unix_counts_types_states_and_listeners() {
        let mut stats = UnixStats::default();
        let (stream, dgram, seqpacket) = (1, 2, 5);
        stats
            .add(&unix_diag_msg(stream, 10, Some(b"/run/a.sock"), 2, 128))
            .unwrap();
        stats
            .add(&unix_diag_msg(stream, 10, Some(b"/run/a.sock"), 1, 64))
            .unwrap();
        stats
            .add(&unix_diag_msg(seqpacket, 10, Some(b"\0abstract"), 1, 8))
            .unwrap();
        stats
            .add(&unix_diag_msg(stream, 10, Some(b"\0other"), 0, 8))
            .unwrap();
        stats.add(&unix_diag_msg(stream, 1, None, 100, 5)).unwrap();
        stats
            .add(&unix_diag_msg(dgram, 7, Some(b"/dev/log"), 30, 0))
            .unwrap();
        let (l, c, u) = (0, 1, 2);
        assert_eq!(stats.sockets[UnixType::Stream as usize][l], 3);
        assert_eq!(stats.sockets[UnixType::Stream as usize][c], 1);
        assert_eq!(stats.sockets[UnixType::Seqpacket as usize][l], 1);
        assert_eq!(stats.sockets[UnixType::Dgram as usize][u], 1);
        assert_eq!(stats.receive_queue_bytes[UnixType::Stream as usize][c], 100);
        assert_eq!(stats.send_queue_bytes[UnixType::Stream as usize][c], 5);
        assert_eq!(stats.receive_queue_bytes[UnixType::Dgram as usize][u], 30);
        // Listener queues stay out of the byte sums.
        assert_eq!(stats.receive_queue_bytes[UnixType::Stream as usize][l], 0);
        let listeners = stats.listeners();
        assert_eq!(listeners.len(), 2);
        assert_eq!(
            listeners[0],
            (
                UnixName::Path(b"/run/a.sock".to_vec()),
                UnixListener {
                    queue: 3,
                    max: 192,
                    sockets: 2
                }
            )
        );
        assert_eq!(listeners[1].0, UnixName::Abstract);
        assert_eq!(listeners[1].1.sockets, 2);
        assert_eq!(listeners[1].0.label(), "@abstract");
        assert_eq!(UnixName::Path(b"@abstract".to_vec()).label(), "./@abstract");
        assert_eq!(UnixName::Path(b"run/x".to_vec()).label(), "./run/x");
        // A listener gone for one collection is forgotten.
        stats.clear();
        assert!(stats.listeners().is_empty());
        stats.clear();
        assert!(stats.listeners.is_empty());
    }

    #[test]
    fn unix_rejects_what_it_cannot_count() {
        let mut stats = UnixStats::default();
        assert_eq!(
            stats.add(&unix_diag_msg(3, 1, None, 0, 0)),
            Err(ParseError::UnknownUnixType { kind: 3 })
        );
        assert_eq!(
            stats.add(&unix_diag_msg(1, 2, None, 0, 0)),
            Err(ParseError::UnknownUnixState { state: 2 })
        );
        let mut no_rqlen = unix_diag_msg(1, 1, None, 0, 0);
        no_rqlen.truncate(16);
        assert_eq!(
            stats.add(&no_rqlen),
            Err(ParseError::MissingAttribute {
                name: "UNIX_DIAG_RQLEN"
            })
        );
        assert_eq!(stats.sockets, UnixByState::default());
    }
}
