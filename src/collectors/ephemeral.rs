//! Ephemeral port use per destination, from the tcp collector's dump (no
//! walk of its own): how many local ports `connect()` can choose from
//! (`sockdiag_ephemeral_ports`), and how many of them the sockets to each
//! destination hold (`sockdiag_ephemeral_ports_used`, the busiest N, and
//! `sockdiag_ephemeral_ports_used_max`).
//!
//! The kernel's rule, checked against `connect()` running out in a private
//! namespace (tests/it/ephemeral.rs): `connect()` without an explicit port
//! takes a port P from `ip_local_port_range`, minus
//! `ip_local_reserved_ports`, such that no socket, TIME_WAIT included,
//! already has the 4-tuple (source address, P, destination address,
//! destination port), and such that P is not held by a socket that
//! `bind()` gave that port explicitly (a listener, or bind before connect):
//! those ports are skipped for every destination. Ports are shared between
//! destinations, and between source addresses to one destination. So the
//! unit that runs out is (source address, destination address, destination
//! port), and that is what is counted here: TCP sockets in any state but
//! LISTEN whose local port is in the range and not reserved, keyed by
//! (local address, remote address, remote port). Ports held by explicit
//! binds cannot be told apart in a dump from ports `connect()` chose, so a
//! destination can run out a little before its count reaches
//! `sockdiag_ephemeral_ports` (docs/metrics.md).
//!
//! Memory stays bounded whatever the mix: a fixed-size open-addressing
//! table of [`TABLE_ENTRIES`] destinations is exact while they fit; beyond
//! it the table becomes a Misra-Gries summary (the deterministic twin of
//! Space-Saving): when a new destination finds the table full, every count
//! is lowered by one and the zeros leave. Each such round removes at least
//! `TABLE_ENTRIES + 1` sockets' worth of counts, so the rounds are at most
//! `sockets / (TABLE_ENTRIES + 1)` and cost amortised O(1) per socket. The
//! reported counts add the number of rounds back, so a reported count is
//! never below the truth and at most that many above it; the bound is
//! exported as `sockdiag_ephemeral_ports_used_error` (0: exact).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{Family, InetDiagMsg, TcpState};
use crate::kernel::sysctl::LocalPorts;
use crate::table::{columns, row};

/// Destinations counted exactly at most (per namespace).
pub const TABLE_ENTRIES: usize = 8192;
/// The table's slots at most: half full at most, so probes stay short.
const MAX_SLOTS: usize = 2 * TABLE_ENTRIES;
/// The table's first size; it doubles as destinations arrive, up to
/// [`MAX_SLOTS`], and keeps its size across collections.
const FIRST_SLOTS: usize = 64;

/// Where the sockets using ephemeral ports go: source address, destination
/// address and destination port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// AF_INET or AF_INET6 (0 in an empty slot).
    family: u8,
    local: [u8; 16],
    remote: [u8; 16],
    port: u16,
}

impl Flow {
    fn family(&self) -> Family {
        if self.family == crate::kernel::diag::AF_INET6 {
            Family::Ipv6
        } else {
            Family::Ipv4
        }
    }

    fn format(&self, raw: &[u8; 16]) -> String {
        match self.family() {
            Family::Ipv4 => Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string(),
            // Rust writes IPv4-mapped addresses as ss does: ::ffff:1.2.3.4.
            Family::Ipv6 => Ipv6Addr::from(*raw).to_string(),
        }
    }

    /// The local address as `ss` writes it.
    pub fn local_address(&self) -> String {
        self.format(&self.local)
    }

    /// The remote address as `ss` writes it.
    pub fn remote_address(&self) -> String {
        self.format(&self.remote)
    }

    pub fn remote_port(&self) -> u16 {
        self.port
    }

    /// A cheap mix of the 35 key bytes: the four address words folded with
    /// rotations, one multiply, the high half folded down (the table takes
    /// the low bits).
    #[inline]
    fn hash(&self) -> u64 {
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
        let h = word(&self.local[..8])
            ^ word(&self.local[8..]).rotate_left(13)
            ^ word(&self.remote[..8]).rotate_left(29)
            ^ word(&self.remote[8..]).rotate_left(43)
            ^ (u64::from(self.port) << 8 | u64::from(self.family));
        let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 29)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    flow: Flow,
    /// 0: empty.
    count: u32,
}

/// Counts per [`Flow`]: exact while at most [`TABLE_ENTRIES`] flows were
/// seen, a Misra-Gries summary beyond.
#[derive(Debug, Clone, Default)]
pub struct FlowCounts {
    slots: Vec<Slot>,
    len: usize,
    /// Rounds in which every count was lowered by one: the most a
    /// reported count can exceed the truth.
    rounds: u64,
    /// Flows that left the table (their count fell to zero in a round).
    evicted: u64,
    scratch: Vec<Slot>,
    capacity: usize,
}

impl FlowCounts {
    /// A table exact for up to `capacity` flows (tests use small ones).
    #[cfg(test)]
    fn with_capacity(capacity: usize) -> FlowCounts {
        FlowCounts {
            capacity,
            ..FlowCounts::default()
        }
    }

    fn capacity(&self) -> usize {
        if self.capacity == 0 {
            TABLE_ENTRIES
        } else {
            self.capacity
        }
    }

    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.len = 0;
        self.rounds = 0;
        self.evicted = 0;
    }

    /// The slot holding `flow`, or the empty one where it would go.
    #[inline]
    fn find(slots: &[Slot], flow: &Flow) -> usize {
        let mask = slots.len() - 1;
        let mut i = flow.hash() as usize & mask;
        loop {
            let slot = &slots[i];
            if slot.count == 0 || slot.flow == *flow {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub fn add(&mut self, flow: Flow) {
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); FIRST_SLOTS];
        }
        let i = Self::find(&self.slots, &flow);
        if self.slots[i].count != 0 {
            self.slots[i].count += 1;
            return;
        }
        if self.len < self.capacity() {
            self.len += 1;
            self.slots[i] = Slot { flow, count: 1 };
            if self.len * 2 > self.slots.len() && self.slots.len() < MAX_SLOTS {
                self.rehash(self.slots.len() * 2, false);
            }
            return;
        }
        // Full: the new flow's one and one of every other count go.
        self.rounds += 1;
        self.evicted += 1;
        self.rehash(self.slots.len(), true);
    }

    /// Rebuilds the table with `size` slots, lowering every count by one
    /// first when `lower`.
    fn rehash(&mut self, size: usize, lower: bool) {
        self.scratch.clear();
        for slot in &self.slots {
            if slot.count == 0 {
                continue;
            }
            let count = slot.count - u32::from(lower);
            if count == 0 {
                self.evicted += 1;
            } else {
                self.scratch.push(Slot { count, ..*slot });
            }
        }
        if size == self.slots.len() {
            self.slots.fill(Slot::default());
        } else {
            self.slots = vec![Slot::default(); size];
        }
        self.len = self.scratch.len();
        for slot in &self.scratch {
            let i = Self::find(&self.slots, &slot.flow);
            self.slots[i] = *slot;
        }
    }

    /// The most any reported count exceeds the true one (0: exact).
    pub fn error(&self) -> u64 {
        self.rounds
    }

    /// Flows that left the table since the collection began.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The `n` flows with the most sockets, most first (ties by flow), as
    /// reported: never below the truth, at most [`error`](Self::error)
    /// above it.
    pub fn top(&self, n: usize) -> Vec<(Flow, u64)> {
        let mut all: Vec<(Flow, u64)> = self
            .slots
            .iter()
            .filter(|s| s.count != 0)
            .map(|s| (s.flow, u64::from(s.count) + self.rounds))
            .collect();
        let by_count = |a: &(Flow, u64), b: &(Flow, u64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
        if n < all.len() {
            all.select_nth_unstable_by(n, by_count);
            all.truncate(n);
        }
        all.sort_unstable_by(by_count);
        all
    }

    /// The largest count over all flows, as reported (a flow no longer in
    /// the table had at most `error` sockets).
    pub fn max(&self) -> u64 {
        let tracked = self.slots.iter().map(|s| u64::from(s.count)).max();
        tracked.unwrap_or(0) + self.rounds
    }
}

/// The ports `connect()` may pick, as a test per port.
#[derive(Debug, Clone)]
struct Range {
    low: u16,
    /// Ports in `ip_local_port_range`.
    size: u32,
    /// Reserved ports, one bit each; empty when none are.
    reserved: Vec<u64>,
    /// `size` minus the reserved ports inside the range.
    available: u32,
}

impl Range {
    fn new(ports: &LocalPorts) -> Range {
        let size = u32::from(ports.high) - u32::from(ports.low) + 1;
        let mut reserved = Vec::new();
        let mut held = 0;
        if !ports.reserved.is_empty() {
            reserved = vec![0u64; 1024];
            for &(a, b) in &ports.reserved {
                for p in a..=b {
                    let (w, bit) = (usize::from(p >> 6), 1u64 << (p & 63));
                    if reserved[w] & bit == 0 && (ports.low..=ports.high).contains(&p) {
                        held += 1;
                    }
                    reserved[w] |= bit;
                }
            }
        }
        Range {
            low: ports.low,
            size,
            reserved,
            available: size - held,
        }
    }

    #[inline]
    fn contains(&self, port: u16) -> bool {
        u32::from(port.wrapping_sub(self.low)) < self.size
            && (self.reserved.is_empty()
                || self.reserved[usize::from(port >> 6)] & (1 << (port & 63)) == 0)
    }
}

/// One namespace's ephemeral port use.
#[derive(Debug, Clone, Default)]
pub struct Ephemeral {
    /// The namespace's range as last read; None when it could not be read
    /// (then nothing is counted and the series are left out).
    range: Option<Range>,
    pub flows: FlowCounts,
}

impl Ephemeral {
    /// Sets the range for the next collection.
    pub fn set_ports(&mut self, ports: Option<&LocalPorts>) {
        self.range = ports.map(Range::new);
    }

    pub fn clear(&mut self) {
        self.flows.clear();
    }

    /// Ports `connect()` may choose from; None when unknown.
    pub fn available(&self) -> Option<u32> {
        self.range.as_ref().map(|r| r.available)
    }

    /// Counts one socket if it holds an ephemeral port.
    #[inline]
    pub fn add(&mut self, msg: &InetDiagMsg<'_>, state: TcpState) {
        let Some(range) = &self.range else { return };
        if state == TcpState::Listen || !range.contains(msg.local_port()) {
            return;
        }
        self.flows.add(Flow {
            family: msg.family(),
            local: msg.local_address(),
            remote: msg.remote_address(),
            port: msg.remote_port(),
        });
    }

    /// Its series for one namespace; none when the range is unknown.
    pub fn families(&self, top: usize, out: &mut Families, ns: Ns<'_>) {
        let Some(available) = self.available() else {
            return;
        };
        out.int(&EPHEMERAL_PORTS, &[], ns, u64::from(available));
        out.int(&USED_MAX, &[], ns, self.flows.max());
        out.int(&USED_ERROR, &[], ns, self.flows.error());
        out.int(&EVICTED, &[], ns, self.flows.evicted());
        for (flow, n) in self.flows.top(top) {
            let labels = [
                flow.local_address(),
                flow.remote_address(),
                flow.remote_port().to_string(),
            ];
            out.int(&USED, &labels.each_ref().map(String::as_str), ns, n);
        }
    }

    /// The busiest destinations and their share of the range.
    pub fn table(&self, top: usize, out: &mut String) {
        let Some(available) = self.available() else {
            return;
        };
        out.push('\n');
        let error = self.flows.error();
        let mut rows = vec![row([
            "Ephemeral ports".to_string(),
            "to".to_string(),
            "used".to_string(),
            format!("of {available}"),
        ])];
        let share = |n: u64| {
            if available == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * n as f64 / f64::from(available))
            }
        };
        for (flow, n) in self.flows.top(top) {
            let (remote, port) = (flow.remote_address(), flow.remote_port());
            let to = match flow.family() {
                Family::Ipv4 => format!("{remote}:{port}"),
                Family::Ipv6 => format!("[{remote}]:{port}"),
            };
            rows.push(row([flow.local_address(), to, n.to_string(), share(n)]));
        }
        rows.push(row([
            "max".to_string(),
            String::new(),
            self.flows.max().to_string(),
            share(self.flows.max()),
        ]));
        out.push_str(&columns(&rows, 1));
        if error > 0 {
            out.push_str(&format!(
                "(more than {TABLE_ENTRIES} destinations: counts are at most {error} above the truth)\n"
            ));
        }
    }
}

pub static EPHEMERAL_PORTS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_ephemeral_ports",
    help: "Local ports connect() can choose from: the size of net.ipv4.ip_local_port_range minus the ip_local_reserved_ports inside it, read in each network namespace (both families use them).",
    labels: &[],
};

pub static USED: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_ephemeral_ports_used",
    help: "TCP sockets in any state but listen (TIME_WAIT included) whose local port is an ephemeral one, for the destinations with the most (--collector.tcp.ephemeral.top), by local (source) address, remote address and remote port: connect() fails with EADDRNOTAVAIL when this reaches sockdiag_ephemeral_ports. Exact up to 8192 destinations per namespace; beyond, a bounded summary reports at most sockdiag_ephemeral_ports_used_error above the truth, never below.",
    labels: &["local_address", "remote_address", "remote_port"],
};

pub static USED_MAX: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_ephemeral_ports_used_max",
    help: "The largest sockdiag_ephemeral_ports_used over every destination, whatever --collector.tcp.ephemeral.top is: divided by sockdiag_ephemeral_ports, how close the busiest destination is to connect() failing. Exact up to 8192 destinations; beyond, at most sockdiag_ephemeral_ports_used_error above the truth, never below.",
    labels: &[],
};

pub static USED_ERROR: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_ephemeral_ports_used_error",
    help: "The most sockdiag_ephemeral_ports_used and _max can exceed the true counts: 0 while the destinations fit the exact table (8192), else the rounds of the bounded summary, at most the sockets counted divided by 8193.",
    labels: &[],
};

pub static EVICTED: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_ephemeral_destinations_evicted",
    help: "Destinations that did not fit the table of 8192 in the last collection and were dropped from the ephemeral port counts (each at most sockdiag_ephemeral_ports_used_error sockets); 0 means the counts are exact.",
    labels: &[],
};

/// The metrics of this module.
pub static SPECS: [&Spec; 5] = [&EPHEMERAL_PORTS, &USED, &USED_MAX, &USED_ERROR, &EVICTED];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::parse::tests::{inet_diag_msg, v4};

    fn flow(i: u32) -> Flow {
        let mut remote = [0; 16];
        remote[..4].copy_from_slice(&i.to_be_bytes());
        Flow {
            family: AF_INET,
            local: v4([127, 0, 0, 1]),
            remote,
            port: 80,
        }
    }

    /// A socket from local `sport` to `dst`:`dport` in kernel state `state`.
    fn socket(
        family: u8,
        state: u8,
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
    ) -> Vec<u8> {
        let mut m = inet_diag_msg(family, state, src, sport, dport, 0, 0, 1);
        m[24..40].copy_from_slice(&dst);
        m
    }

    fn ports(low: u16, high: u16, reserved: &[(u16, u16)]) -> LocalPorts {
        LocalPorts {
            low,
            high,
            reserved: reserved.to_vec(),
        }
    }

    fn add(e: &mut Ephemeral, m: &[u8]) {
        let msg = InetDiagMsg::new(m).unwrap();
        e.add(&msg, TcpState::from_kernel(msg.state()).unwrap());
    }

    #[test]
    fn counts_sockets_in_the_range_but_not_reserved_or_listening() {
        let mut e = Ephemeral::default();
        e.set_ports(Some(&ports(
            40000,
            40009,
            &[(40003, 40004), (80, 80), (40009, 40011)],
        )));
        assert_eq!(e.available(), Some(7));
        let (lo, dst) = (v4([127, 0, 0, 1]), v4([10, 1, 2, 3]));
        for (state, sport) in [
            (1, 40000),  // established: counted
            (6, 40001),  // TIME_WAIT: counted
            (8, 40002),  // CLOSE_WAIT: counted
            (1, 40003),  // reserved
            (1, 40009),  // reserved, at the top of the range
            (10, 40005), // listener
            (1, 39999),  // below
            (1, 40010),  // above
        ] {
            add(&mut e, &socket(AF_INET, state, lo, sport, dst, 5432));
        }
        let top = e.flows.top(10);
        assert_eq!(top.len(), 1);
        assert_eq!(
            (
                top[0].0.local_address(),
                top[0].0.remote_address(),
                top[0].0.remote_port(),
                top[0].1
            ),
            ("127.0.0.1".into(), "10.1.2.3".into(), 5432, 3)
        );
        assert_eq!((e.flows.max(), e.flows.error()), (3, 0));
        // Unknown range: nothing counted, no series.
        e.set_ports(None);
        e.clear();
        add(&mut e, &socket(AF_INET, 1, lo, 40000, dst, 5432));
        assert_eq!(e.flows.max(), 0);
        let mut out = Families::default();
        e.families(10, &mut out, None);
        assert!(out.encode(&[]).is_empty());
    }

    #[test]
    fn keys_by_source_and_destination_and_writes_addresses_as_ss() {
        let mut e = Ephemeral::default();
        e.set_ports(Some(&LocalPorts::linux_default()));
        let mapped: [u8; 16] = "::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets();
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let (a, b) = (v4([127, 0, 0, 1]), v4([127, 0, 0, 2]));
        let dst = v4([127, 0, 0, 9]);
        for sport in 40000..40005 {
            add(&mut e, &socket(AF_INET, 1, a, sport, dst, 7001));
        }
        for sport in 40000..40003 {
            add(&mut e, &socket(AF_INET, 1, b, sport, dst, 7001)); // other source
            add(&mut e, &socket(AF_INET, 1, a, sport, dst, 7002)); // other port
        }
        add(&mut e, &socket(AF_INET6, 1, mapped, 50000, mapped, 443));
        add(&mut e, &socket(AF_INET6, 1, v6, 50000, v6, 443));
        let got: Vec<_> = e
            .flows
            .top(3)
            .iter()
            .map(|(f, n)| (f.local_address(), f.remote_address(), f.remote_port(), *n))
            .collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1".into(), "127.0.0.9".into(), 7001, 5),
                ("127.0.0.1".into(), "127.0.0.9".into(), 7002, 3),
                ("127.0.0.2".into(), "127.0.0.9".into(), 7001, 3),
            ]
        );
        let all = e.flows.top(100);
        assert_eq!(all.len(), 5);
        let mapped = all
            .iter()
            .find(|(f, _)| f.remote_port() == 443 && f.remote_address().contains('.'))
            .unwrap();
        assert_eq!(mapped.0.remote_address(), "::ffff:192.0.2.7");
        assert!(all.iter().any(|(f, _)| f.remote_address() == "2001:db8::1"));
        let mut out = Families::default();
        e.families(1, &mut out, Some("ns1"));
        let text = out.encode(&[]);
        assert!(
            text.contains("sockdiag_ephemeral_ports{netns=\"ns1\"} 28232\n"),
            "{text}"
        );
        assert!(text.contains("sockdiag_ephemeral_ports_used{local_address=\"127.0.0.1\",netns=\"ns1\",remote_address=\"127.0.0.9\",remote_port=\"7001\"} 5\n"), "{text}");
        assert_eq!(
            text.matches("sockdiag_ephemeral_ports_used{").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("sockdiag_ephemeral_ports_used_max{netns=\"ns1\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("sockdiag_ephemeral_ports_used_error{netns=\"ns1\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn exact_while_the_table_holds_every_destination() {
        let mut c = FlowCounts::default();
        // TABLE_ENTRIES destinations, destination i with i % 7 + 1 sockets.
        for round in 0..7 {
            for i in 0..TABLE_ENTRIES as u32 {
                if i % 7 >= round {
                    c.add(flow(i));
                }
            }
        }
        assert_eq!((c.error(), c.evicted()), (0, 0));
        assert_eq!(c.max(), 7);
        let top = c.top(TABLE_ENTRIES);
        assert_eq!(top.len(), TABLE_ENTRIES);
        for (f, n) in &top {
            let i = u32::from_be_bytes(f.remote[..4].try_into().unwrap());
            assert_eq!(*n, u64::from(i % 7 + 1));
        }
        assert!(c.slots.len() <= MAX_SLOTS);
        // A new collection keeps the table's size.
        let size = c.slots.len();
        c.clear();
        assert_eq!((c.max(), c.top(5).len(), c.slots.len()), (0, 0, size));
    }

    #[test]
    fn beyond_the_table_counts_are_bounded_and_never_below_the_truth() {
        // A table of 16, a heavy destination among 10_000 single ones.
        let mut c = FlowCounts::with_capacity(16);
        let mut truth = std::collections::HashMap::new();
        let mut n = 0u64;
        for i in 0..10_000u32 {
            for f in [flow(1_000_000), flow(i)] {
                if f == flow(1_000_000) && i % 3 != 0 {
                    continue;
                }
                c.add(f);
                *truth.entry(f).or_insert(0u64) += 1;
                n += 1;
            }
        }
        let heavy = truth[&flow(1_000_000)];
        assert_eq!(heavy, 3334);
        assert!(c.error() > 0 && c.error() <= n / 17, "{} {}", c.error(), n);
        assert!(c.evicted() > 0);
        let top = c.top(1);
        assert_eq!(top[0].0, flow(1_000_000));
        assert!(top[0].1 >= heavy && top[0].1 <= heavy + c.error());
        for (f, reported) in c.top(16) {
            assert!(reported >= truth[&f] && reported <= truth[&f] + c.error());
        }
        assert!(c.max() >= heavy && c.max() <= heavy + c.error());
        assert!(c.slots.len() <= 64);
    }

    #[test]
    fn table_shows_the_share_of_the_range() {
        let mut e = Ephemeral::default();
        e.set_ports(Some(&ports(40000, 40009, &[])));
        for sport in 40000..40004 {
            add(
                &mut e,
                &socket(
                    AF_INET,
                    1,
                    v4([127, 0, 0, 1]),
                    sport,
                    v4([127, 0, 0, 3]),
                    7001,
                ),
            );
        }
        let mut out = String::new();
        e.table(10, &mut out);
        assert!(out.contains("127.0.0.3:7001"), "{out}");
        assert!(out.contains("40.0%"), "{out}");
        assert!(out.contains("of 10"), "{out}");
    }
}
