//! TCP connection health from `struct tcp_info` (`--collector.tcp.info`, off
//! by default): for established sockets, a histogram of the smoothed RTT,
//! a counter of retransmitted segments that never falls, the sockets with
//! retransmitted data outstanding, and the bytes not yet sent, once for
//! the whole host and per port of `--collector.tcp.ports` in both
//! directions.
//!
//! It is a part of the `tcp` collector, not a collector of its own: the
//! numbers come from the INET_DIAG_INFO attribute of the very dump tcp
//! makes (the legacy AF_UNSPEC dump takes extensions too, so it is still
//! one walk for both families), and a second walk would double the kernel
//! work this option exists to avoid. tcp asks for the attribute and hands
//! each socket's attribute bytes here ([`TcpHealth::add`]); its outcome is
//! tcp's outcome.
//!
//! No allocation per socket: the per-collection sums are fixed-size arrays
//! in maps that keep their capacity, and the attribute is read in place
//! ([`TcpInfo`]). A field the kernel did not send (older kernels send a
//! shorter tcp_info) is left out of the sums, never read as zero, and the
//! socket is counted in [`TcpHealth::short_info`].
//!
//! The retransmission counter. tcp_info carries each socket's lifetime
//! count (`tcpi_total_retrans`), which disappears with the socket. So the
//! counter adds each socket's growth between collections: a table keyed by
//! socket cookie remembers the last count of every socket that has
//! retransmitted (others need no entry: their last count was 0), bounded at
//! [`MAX_TRACKED`] sockets per namespace. A socket first seen with
//! retransmissions adds its whole count. Missed: retransmissions of a
//! socket between its last collection and its close, sockets born and
//! closed between two collections, retransmissions outside ESTABLISHED
//! (FIN retransmissions, SYN retries), and, while the table is full, the
//! sockets that find no room (counted in [`TcpHealth::untracked`]; they are
//! added in full once they find room). A socket stays in the table for
//! [`KEEP_UNSEEN`] collections after it was last seen, so one that a
//! (non-atomic) dump missed is not counted twice when it shows up again. The totals live per label set
//! (host, each direction and port) for the exporter's life, so a counter
//! keeps its value when the sockets under its labels close.
//!
//! Per cgroup (with `--collector.cgroup` too). Cgroup labels only exist
//! after the collection (ids resolved to paths, truncated, capped), so this
//! module books by cgroup id only: each id's sums of one collection
//! ([`TcpHealth::cgroup`]) and the retransmission growth booked to it since
//! the exporter last took it. The growth is kept across a retried or failed
//! collection (it is already in the tracking table, so it would never be
//! counted again) and dropped at the start of the first collection after a
//! complete one ([`TcpHealth::finish`]). The exporter adds each id's growth
//! to its label's running total (`scope::cgroup_health`).

use std::collections::HashMap;

use super::ports::Direction;
use super::SERIES_DROPPED;
use crate::cap;
use crate::config::PortSet;
use crate::exposition::{Families, Hist, Ns, Spec, Type};
use crate::kernel::diag::{Attributes, InetDiagMsg, TcpInfo, TcpState, INET_DIAG_INFO};
use crate::kernel::parse::ParseError;
use crate::table::{columns, row};

/// Upper bounds of the RTT histogram, microseconds: loopback and the same
/// host (tens of µs), a LAN or data centre (100 µs to 1 ms), a region
/// (1-10 ms), a continent and the world (10-250 ms), and stalls or
/// bufferbloat (0.5-2.5 s; tcpi_rtt is a smoothed value, so a few seconds
/// is already a pathological path). Roughly 1-2.5-5 steps, so each
/// decade has three buckets for histogram_quantile to interpolate in.
pub const RTT_BUCKETS_US: [u32; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];
/// Buckets plus the one above the largest bound.
const BUCKETS: usize = RTT_BUCKETS_US.len() + 1;

/// Sockets with retransmissions whose counts are remembered, per
/// namespace: 24 bytes each plus the map's overhead, about 2.5 MiB at most.
pub const MAX_TRACKED: usize = 65_536;

/// Collections a tracked socket may go unseen before it is forgotten.
pub const KEEP_UNSEEN: u32 = 3;

/// The `direction` and `port` label values of the host-wide series.
pub const ALL: &str = "all";

/// Series per (direction, port) view: the histogram's buckets, `+Inf`,
/// `_sum` and `_count`, then the counter and the two gauges.
const SERIES_PER_PORT: usize = BUCKETS + 2 + 3;

pub static RTT: Spec = Spec {
    kind: Type::Histogram,
    name: "sockdiag_tcp_rtt_seconds",
    help: "Smoothed round-trip time (tcpi_rtt) of established TCP sockets, from --collector.tcp.info. direction/port: per port of --collector.tcp.ports (local: the port is the socket's local port, the host serves it; remote: the peer's port, the host is a client); \"all\" for the whole host. The buckets count the sockets of the last collection (a gauge histogram): take histogram_quantile of the buckets themselves, not of their rate. A socket with no RTT measured yet counts in the first bucket (0).",
    labels: &["direction", "port"],
};

pub static RETRANSMITTED: Spec = Spec {
    kind: Type::Counter,
    name: "sockdiag_tcp_retransmitted_segments_total",
    help: "Segments retransmitted by established TCP sockets (tcpi_total_retrans), from --collector.tcp.info: each collection adds every live socket's growth since the last one. Not counted: retransmissions of a socket between its last collection and its close, sockets born and closed between two collections, retransmissions outside ESTABLISHED (SYN, FIN), and sockets that found the tracking table full (sockdiag_tcp_info_untracked_sockets). direction/port as for sockdiag_tcp_rtt_seconds.",
    labels: &["direction", "port"],
};

pub static RETRANSMITTING: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_tcp_retransmitting_sockets",
    help: "Established TCP sockets with retransmitted segments not yet acknowledged (tcpi_retrans > 0: an RTO or loss recovery in progress), from --collector.tcp.info. direction/port as for sockdiag_tcp_rtt_seconds.",
    labels: &["direction", "port"],
};

pub static NOTSENT: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_tcp_notsent_bytes",
    help: "Bytes written by applications to established TCP sockets but not yet sent (tcpi_notsent_bytes, summed): growing while the network or the peer's window cannot keep up, from --collector.tcp.info. direction/port as for sockdiag_tcp_rtt_seconds.",
    labels: &["direction", "port"],
};

pub static UNTRACKED: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_tcp_info_untracked_sockets",
    help: "Established TCP sockets with retransmissions that the last collection could not track for sockdiag_tcp_retransmitted_segments_total because the table (65536 sockets per namespace) was full; their retransmissions are added once they find room.",
    labels: &[],
};

pub static SHORT_INFO: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_tcp_info_incomplete_sockets",
    help: "Established TCP sockets of the last collection whose tcp_info lacked a field the exporter reads (an older kernel's shorter struct tcp_info) or was missing; the missing fields are left out of the sums, never read as 0.",
    labels: &[],
};

/// The per-cgroup series (`--collector.tcp.info` with `--collector.cgroup`):
/// separate names with one `cgroup` label, like `sockdiag_cgroup_sockets`
/// next to `sockdiag_sockets`, so the per-port series and the queries on
/// them stay as they are.
pub static CGROUP_RTT: Spec = Spec {
    kind: Type::Histogram,
    name: "sockdiag_cgroup_tcp_rtt_seconds",
    help: "Smoothed round-trip time (tcpi_rtt) of established TCP sockets by the cgroup v2 path of their owner (--collector.tcp.info with --collector.cgroup; cgroup values as for sockdiag_cgroup_sockets). The buckets count the sockets of the last collection (a gauge histogram); a socket with no RTT measured yet counts in the first bucket.",
    labels: &["cgroup"],
};

pub static CGROUP_RETRANSMITTED: Spec = Spec {
    kind: Type::Counter,
    name: "sockdiag_cgroup_tcp_retransmitted_segments_total",
    help: "Segments retransmitted by established TCP sockets by the cgroup v2 path of their owner (--collector.tcp.info with --collector.cgroup): the growth of each live socket since the last collection, added to the row its cgroup falls in at that collection (a removed cgroup's sockets go to `unknown`, cgroups beyond the cap to `other`), so a row's counter never falls while it is served. Not counted: as for sockdiag_tcp_retransmitted_segments_total.",
    labels: &["cgroup"],
};

pub static CGROUP_RETRANSMITTING: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_cgroup_tcp_retransmitting_sockets",
    help: "Established TCP sockets with retransmitted segments not yet acknowledged (tcpi_retrans > 0) by the cgroup v2 path of their owner (--collector.tcp.info with --collector.cgroup).",
    labels: &["cgroup"],
};

pub static CGROUP_NOTSENT: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_cgroup_tcp_notsent_bytes",
    help: "Bytes written to established TCP sockets but not yet sent (tcpi_notsent_bytes, summed) by the cgroup v2 path of their owner (--collector.tcp.info with --collector.cgroup).",
    labels: &["cgroup"],
};

/// The metrics of `--collector.tcp.info`.
pub static SPECS: &[&Spec] = &[
    &RTT,
    &RETRANSMITTED,
    &RETRANSMITTING,
    &NOTSENT,
    &UNTRACKED,
    &SHORT_INFO,
    &CGROUP_RTT,
    &CGROUP_RETRANSMITTED,
    &CGROUP_RETRANSMITTING,
    &CGROUP_NOTSENT,
];

/// One view's sums over one collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// RTT samples per bucket, not cumulative; the last is above the
    /// largest bound.
    pub rtt_buckets: [u64; BUCKETS],
    /// Sum of the RTT samples, µs.
    pub rtt_sum_us: u64,
    /// Sockets with tcpi_retrans > 0.
    pub retransmitting: u64,
    /// Sum of tcpi_notsent_bytes.
    pub notsent_bytes: u64,
}

impl Health {
    /// RTT samples.
    pub fn sockets(&self) -> u64 {
        self.rtt_buckets.iter().sum()
    }

    #[inline]
    fn add(&mut self, info: &TcpInfo<'_>) {
        if let Some(rtt) = info.rtt_us() {
            let bucket = RTT_BUCKETS_US.partition_point(|&le| le < rtt);
            self.rtt_buckets[bucket] += 1;
            self.rtt_sum_us += u64::from(rtt);
        }
        if info.retrans().is_some_and(|n| n > 0) {
            self.retransmitting += 1;
        }
        if let Some(n) = info.notsent_bytes() {
            self.notsent_bytes += u64::from(n);
        }
    }

    /// Adds another view's sums (rows merged under one cgroup label).
    pub fn merge(&mut self, other: &Health) {
        self.rtt_buckets
            .iter_mut()
            .zip(other.rtt_buckets)
            .for_each(|(a, b)| *a += b);
        self.rtt_sum_us += other.rtt_sum_us;
        self.retransmitting += other.retransmitting;
        self.notsent_bytes += other.notsent_bytes;
    }

    /// The histogram in seconds.
    pub fn hist(&self) -> Hist {
        let mut cumulative = 0;
        let buckets = RTT_BUCKETS_US
            .iter()
            .zip(self.rtt_buckets)
            .map(|(&le, n)| {
                cumulative += n;
                (f64::from(le) / 1e6, cumulative)
            })
            .collect();
        Hist {
            buckets,
            count: self.sockets(),
            sum: self.rtt_sum_us as f64 / 1e6,
        }
    }

    /// The RTT below which `q` of the samples lie, as the largest bucket
    /// bound reached (µs; None without samples, u32::MAX above the last).
    pub fn rtt_quantile_bound_us(&self, q: f64) -> Option<u32> {
        let total = self.sockets();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.rtt_buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(RTT_BUCKETS_US.get(i).copied().unwrap_or(u32::MAX));
            }
        }
        Some(u32::MAX)
    }
}

/// A socket that has retransmitted: its last count and the collection that
/// saw it last.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    total: u32,
    seen: u32,
}

/// The sums per cgroup id (None: sockets that carried no id).
#[derive(Debug, Clone, Default)]
struct ByCgroup {
    /// This collection's sums.
    health: HashMap<Option<u64>, Health>,
    /// Retransmission growth booked since the last complete collection
    /// was taken (see the module doc).
    growth: HashMap<Option<u64>, u64>,
    /// A complete collection ended: the next one starts the growth anew.
    taken: bool,
}

/// The health sums of one collection, and the retransmission totals kept
/// across collections.
#[derive(Debug, Clone)]
pub struct TcpHealth {
    ports: PortSet,
    host: Health,
    by_port: HashMap<(Direction, u16), Health>,
    retransmitted: u64,
    retransmitted_by_port: HashMap<(Direction, u16), u64>,
    tracked: HashMap<u64, Tracked>,
    max_tracked: usize,
    /// Bumped by each [`clear`](Self::clear): the entries a collection saw.
    generation: u32,
    untracked: u64,
    short_info: u64,
    /// Per cgroup id, with `--collector.cgroup`.
    by_cgroup: Option<Box<ByCgroup>>,
}

impl TcpHealth {
    pub fn new(ports: PortSet) -> TcpHealth {
        TcpHealth::with_max_tracked(ports, MAX_TRACKED)
    }

    /// The same with another bound on the tracking table (tests).
    pub fn with_max_tracked(ports: PortSet, max_tracked: usize) -> TcpHealth {
        TcpHealth {
            ports,
            host: Health::default(),
            by_port: HashMap::new(),
            retransmitted: 0,
            retransmitted_by_port: HashMap::new(),
            tracked: HashMap::new(),
            max_tracked,
            generation: 0,
            untracked: 0,
            short_info: 0,
            by_cgroup: None,
        }
    }

    /// Books the sums per cgroup id too (`--collector.cgroup`).
    pub fn by_cgroups(&mut self, on: bool) {
        match (on, self.by_cgroup.is_some()) {
            (true, false) => self.by_cgroup = Some(Box::default()),
            (false, true) => self.by_cgroup = None,
            _ => {}
        }
    }

    /// Starts a collection (or its retry): the per-collection sums restart,
    /// the totals and the tracking table stay. A socket seen twice (a
    /// retried dump) adds its growth once.
    pub fn clear(&mut self) {
        self.host = Health::default();
        self.by_port.clear();
        self.generation = self.generation.wrapping_add(1);
        self.untracked = 0;
        self.short_info = 0;
        if let Some(c) = &mut self.by_cgroup {
            c.health.clear();
            if c.taken {
                c.growth.clear();
                c.taken = false;
            }
        }
    }

    /// After a complete collection: forgets the sockets the last
    /// [`KEEP_UNSEEN`] complete collections did not see (closed, or no
    /// longer established). Dumps are not atomic: a socket can be missed by
    /// one while it lives, and must not add its whole count again when the
    /// next one sees it. Not called after a failed collection.
    pub fn finish(&mut self) {
        let generation = self.generation;
        self.tracked
            .retain(|_, t| generation.wrapping_sub(t.seen) < KEEP_UNSEEN);
        if let Some(c) = &mut self.by_cgroup {
            c.taken = true;
        }
    }

    /// Folds one socket in: `attributes` are the bytes after its `struct
    /// inet_diag_msg`. Only ESTABLISHED sockets count. A malformed
    /// attribute area is an error; a missing or short INFO is counted in
    /// [`short_info`](Self::short_info). `cgroup`: the socket's cgroup id
    /// (read by the caller), booked to when per-cgroup sums are on.
    #[inline]
    pub fn add(
        &mut self,
        msg: &InetDiagMsg<'_>,
        state: TcpState,
        attributes: &[u8],
        cgroup: Option<u64>,
    ) -> Result<(), ParseError> {
        if state != TcpState::Established {
            return Ok(());
        }
        let Some(payload) = Attributes::new(attributes)
            .find(INET_DIAG_INFO)
            .map_err(ParseError::Attribute)?
        else {
            self.short_info += 1;
            return Ok(());
        };
        let info = TcpInfo::new(payload);
        let complete = info.rtt_us().is_some()
            && info.retrans().is_some()
            && info.total_retrans().is_some()
            && info.notsent_bytes().is_some();
        if !complete {
            self.short_info += 1;
        }
        let growth = match info.total_retrans() {
            Some(total) if total > 0 => self.track(msg.cookie(), total),
            _ => 0,
        };
        self.host.add(&info);
        self.retransmitted += growth;
        if let Some(c) = &mut self.by_cgroup {
            c.health.entry(cgroup).or_default().add(&info);
            if growth > 0 {
                *c.growth.entry(cgroup).or_default() += growth;
            }
        }
        if self.ports.is_empty() {
            return Ok(());
        }
        let (local, remote) = (msg.local_port(), msg.remote_port());
        let mut view = |key: (Direction, u16)| {
            self.by_port.entry(key).or_default().add(&info);
            if growth > 0 {
                *self.retransmitted_by_port.entry(key).or_default() += growth;
            }
        };
        if self.ports.contains(local) {
            view((Direction::Local, local));
        }
        if remote != 0 && self.ports.contains(remote) {
            view((Direction::Remote, remote));
        }
        Ok(())
    }

    /// The growth of a socket's retransmission count since it was last
    /// seen, remembering the new count.
    fn track(&mut self, cookie: u64, total: u32) -> u64 {
        let generation = self.generation;
        if let Some(t) = self.tracked.get_mut(&cookie) {
            let growth = total.saturating_sub(t.total);
            t.total = t.total.max(total);
            t.seen = generation;
            return u64::from(growth);
        }
        if self.tracked.len() >= self.max_tracked {
            self.untracked += 1;
            return 0;
        }
        self.tracked.insert(
            cookie,
            Tracked {
                total,
                seen: generation,
            },
        );
        u64::from(total)
    }

    /// The host-wide sums of the last collection.
    pub fn host(&self) -> &Health {
        &self.host
    }

    /// Retransmitted segments counted so far, host-wide.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// Sockets with retransmissions the table had no room for.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Established sockets whose tcp_info lacked a field read.
    pub fn short_info(&self) -> u64 {
        self.short_info
    }

    /// One cgroup id's sums of this collection (zeros if none) and the
    /// retransmissions booked to it and not yet taken (see the module doc).
    pub fn cgroup(&self, id: Option<u64>) -> (Health, u64) {
        self.by_cgroup.as_ref().map_or((Health::default(), 0), |c| {
            (
                c.health.get(&id).copied().unwrap_or_default(),
                c.growth.get(&id).copied().unwrap_or(0),
            )
        })
    }

    /// The cgroup ids with retransmission growth not yet taken (some may
    /// have no socket in this collection: a retried dump no longer saw it).
    pub fn cgroups_with_growth(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.by_cgroup.iter().flat_map(|c| c.growth.keys().copied())
    }

    /// Sockets in the tracking table.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// Every (direction, port) view with sockets now or a non-zero total,
    /// plus both directions of every single listed port, sorted: its sums
    /// (zeros if none now) and its retransmission total.
    pub fn ports(&self) -> Vec<((Direction, u16), Health, u64)> {
        let mut keys: Vec<(Direction, u16)> = self
            .by_port
            .keys()
            .chain(self.retransmitted_by_port.keys())
            .copied()
            .collect();
        for &port in self.ports.singles() {
            keys.extend(Direction::ALL.map(|d| (d, port)));
        }
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|k| {
                let health = self.by_port.get(&k).copied().unwrap_or_default();
                let total = self.retransmitted_by_port.get(&k).copied().unwrap_or(0);
                (k, health, total)
            })
            .collect()
    }

    fn view(out: &mut Families, labels: &[&str; 2], ns: Ns<'_>, health: &Health, total: u64) {
        out.histogram(&RTT, labels, ns, health.hist());
        out.int(&RETRANSMITTED, labels, ns, total);
        out.int(&RETRANSMITTING, labels, ns, health.retransmitting);
        out.int(&NOTSENT, labels, ns, health.notsent_bytes);
    }

    /// Its series for one namespace: host-wide, then the per-port views,
    /// the first `max_series` series (whole views) by direction and port;
    /// the cut is counted in sockdiag_series_dropped{metric=
    /// "sockdiag_tcp_rtt_seconds"}.
    pub fn families(&self, out: &mut Families, max_series: usize, ns: Ns<'_>) {
        Self::view(out, &[ALL, ALL], ns, &self.host, self.retransmitted);
        out.int(&UNTRACKED, &[], ns, self.untracked);
        out.int(&SHORT_INFO, &[], ns, self.short_info);
        if self.ports.is_empty() {
            return;
        }
        let views = self.ports();
        let capped = cap::first(
            views.into_iter().map(|(k, h, t)| (k, (h, t))),
            max_series / SERIES_PER_PORT,
        );
        for ((direction, port), (health, total)) in &capped.rows {
            let port = port.to_string();
            Self::view(out, &[direction.label(), &port], ns, health, *total);
        }
        out.add(
            &SERIES_DROPPED,
            &[RTT.name],
            ns,
            (capped.dropped * SERIES_PER_PORT) as f64,
        );
    }

    /// Its section of the table dump: one row for the host, one per view.
    pub fn table(&self, out: &mut String) {
        out.push('\n');
        let mut rows = vec![row([
            "TCP health (established)",
            "direction",
            "sockets",
            "rtt p50 <=",
            "rtt p99 <=",
            "retransmitting",
            "retransmitted",
            "notsent bytes",
        ]
        .map(String::from))];
        let mut push = |port: String, direction: &str, h: &Health, total: u64| {
            rows.push(row([
                port,
                direction.to_string(),
                h.sockets().to_string(),
                bound(h.rtt_quantile_bound_us(0.5)),
                bound(h.rtt_quantile_bound_us(0.99)),
                h.retransmitting.to_string(),
                total.to_string(),
                h.notsent_bytes.to_string(),
            ]));
        };
        push(ALL.into(), ALL, &self.host, self.retransmitted);
        for ((direction, port), h, total) in self.ports() {
            push(port.to_string(), direction.label(), &h, total);
        }
        out.push_str(&columns(&rows, 2));
    }
}

/// A bucket bound for the table: "-" without samples, "inf" above the last.
pub fn bound(us: Option<u32>) -> String {
    match us {
        None => "-".into(),
        Some(u32::MAX) => "inf".into(),
        Some(us) if us >= 1_000_000 => format!("{}s", f64::from(us) / 1e6),
        Some(us) if us >= 1_000 => format!("{}ms", f64::from(us) / 1e3),
        Some(us) => format!("{us}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag::{AF_INET, INET_DIAG_SHUTDOWN};
    use crate::kernel::parse::tests::{inet_diag_msg, rtattr, v4};

    /// A 6.x tcp_info (248 bytes) with the fields read.
    fn info(rtt_us: u32, retrans: u32, total_retrans: u32, notsent: u32) -> Vec<u8> {
        let mut b = vec![0u8; 248];
        b[0] = 1; // tcpi_state ESTABLISHED
        b[36..40].copy_from_slice(&retrans.to_ne_bytes()); // tcpi_retrans
        b[68..72].copy_from_slice(&rtt_us.to_ne_bytes()); // tcpi_rtt
        b[100..104].copy_from_slice(&total_retrans.to_ne_bytes()); // tcpi_total_retrans
        b[144..148].copy_from_slice(&notsent.to_ne_bytes()); // tcpi_notsent_bytes
        b
    }

    /// An established socket `cookie` from local port `sport` to `dport`
    /// with the attributes a 6.x kernel sends when INFO is asked for:
    /// SHUTDOWN first, then INFO (rta_len 4 + tcp_info).
    fn socket(cookie: u64, sport: u16, dport: u16, tcp_info: &[u8]) -> Vec<u8> {
        let mut m = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), sport, dport, 0, 0, 1);
        m[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes()); // cookie[0]: low word
        m[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes()); // cookie[1]
        m.extend(rtattr(INET_DIAG_SHUTDOWN, &[0]));
        m.extend(rtattr(INET_DIAG_INFO, tcp_info));
        m
    }

    fn add(h: &mut TcpHealth, m: &[u8]) -> Result<(), ParseError> {
        add_in(h, m, None)
    }

    fn add_in(h: &mut TcpHealth, m: &[u8], cgroup: Option<u64>) -> Result<(), ParseError> {
        let msg = InetDiagMsg::new(m).unwrap();
        let state = TcpState::from_kernel(msg.state()).unwrap();
        h.add(&msg, state, &m[72..], cgroup)
    }

    #[test]
    fn growth_is_booked_per_cgroup_id_until_a_complete_collection_is_taken() {
        let mut h = TcpHealth::new(PortSet::default());
        h.by_cgroups(true);
        let (a, b) = (Some(100), Some(200));
        // Collection 1, retried: a's socket has 3 retransmissions, b's two
        // sockets 2 and 0 (RTT 60 and 3000 µs), a socket without an id 1.
        for _ in 0..2 {
            h.clear();
            add_in(&mut h, &socket(1, 1000, 80, &info(60, 1, 3, 7)), a).unwrap();
            add_in(&mut h, &socket(2, 1001, 80, &info(60, 0, 2, 0)), b).unwrap();
            add_in(&mut h, &socket(3, 1002, 80, &info(3000, 0, 0, 0)), b).unwrap();
            add_in(&mut h, &socket(4, 1003, 80, &info(60, 0, 1, 0)), None).unwrap();
        }
        h.finish();
        let (ha, ga) = h.cgroup(a);
        assert_eq!(
            (ha.sockets(), ha.retransmitting, ha.notsent_bytes, ga),
            (1, 1, 7, 3)
        );
        let (hb, gb) = h.cgroup(b);
        assert_eq!((hb.sockets(), hb.rtt_sum_us, gb), (2, 3060, 2));
        assert_eq!(hb.rtt_buckets[1], 1, "60 µs: le 100 µs");
        assert_eq!(hb.rtt_buckets[6], 1, "3 ms: le 5 ms");
        assert_eq!(h.cgroup(None).1, 1);
        assert_eq!(h.cgroup(Some(9)), (Health::default(), 0));
        assert_eq!(h.retransmitted(), 6, "the host total is the sum");
        // Collection 2 fails after a's socket grew to 5 (+2): the growth
        // stays booked to a, and the retry that follows adds nothing more.
        h.clear();
        assert_eq!(h.cgroup(a), (Health::default(), 0), "taken: restarts");
        add_in(&mut h, &socket(1, 1000, 80, &info(60, 0, 5, 0)), a).unwrap();
        h.clear();
        assert_eq!(h.cgroup(a).1, 2, "kept across a failed attempt");
        add_in(&mut h, &socket(1, 1000, 80, &info(60, 0, 5, 0)), a).unwrap();
        h.finish();
        assert_eq!(h.cgroup(a).1, 2);
        let growing: Vec<_> = h.cgroups_with_growth().collect();
        assert_eq!(growing, vec![a]);
        // Without per-cgroup booking nothing is kept per id.
        h.by_cgroups(false);
        assert_eq!(h.cgroup(a), (Health::default(), 0));
    }

    #[test]
    fn reads_the_cookie_low_word_first() {
        let m = socket(0x0000_0001_0000_0002, 1, 2, &info(1, 0, 0, 0));
        assert_eq!(
            InetDiagMsg::new(&m).unwrap().cookie(),
            0x0000_0001_0000_0002
        );
    }

    #[test]
    fn rtt_goes_into_its_bucket_with_inclusive_bounds() {
        let mut h = TcpHealth::new(PortSet::default());
        h.clear();
        // 0 (no RTT yet), 50 (on the first bound), 51, 2.5 s, above all.
        for (cookie, rtt) in [(1, 0), (2, 50), (3, 51), (4, 2_500_000), (5, 9_000_000)] {
            add(&mut h, &socket(cookie, 1000, 2000, &info(rtt, 0, 0, 0))).unwrap();
        }
        let host = h.host();
        assert_eq!(host.rtt_buckets[0], 2, "0 and 50 µs: le 50 µs");
        assert_eq!(host.rtt_buckets[1], 1, "51 µs: le 100 µs");
        assert_eq!(host.rtt_buckets[BUCKETS - 2], 1, "2.5 s: le 2.5 s");
        assert_eq!(host.rtt_buckets[BUCKETS - 1], 1, "9 s: +Inf only");
        assert_eq!(host.rtt_sum_us, 11_500_101);
        let hist = host.hist();
        assert_eq!(hist.count, 5);
        assert_eq!(hist.buckets[0], (0.00005, 2));
        assert_eq!(hist.buckets[1], (0.0001, 3));
        assert_eq!(*hist.buckets.last().unwrap(), (2.5, 4));
        assert_eq!(host.rtt_quantile_bound_us(0.5), Some(100));
        assert_eq!(host.rtt_quantile_bound_us(1.0), Some(u32::MAX));
    }

    #[test]
    fn only_established_sockets_count() {
        let mut h = TcpHealth::new(PortSet::default());
        h.clear();
        let mut m = socket(1, 1000, 2000, &info(70, 1, 5, 9));
        for state in [2u8, 4, 8, 10] {
            m[1] = state; // SYN_SENT, FIN_WAIT1, CLOSE_WAIT, LISTEN
            add(&mut h, &m).unwrap();
        }
        assert_eq!(*h.host(), Health::default());
        assert_eq!((h.retransmitted(), h.tracked()), (0, 0));
    }

    #[test]
    fn counter_adds_growth_per_socket_and_keeps_it_after_close() {
        let ports = PortSet::parse("7777").unwrap();
        let mut h = TcpHealth::new(ports);
        // Collection 1: a client of :7777 with 3 retransmissions, the
        // server end of the same connection with 0, a socket elsewhere with 2.
        h.clear();
        add(&mut h, &socket(10, 40000, 7777, &info(60, 1, 3, 0))).unwrap();
        add(&mut h, &socket(11, 7777, 40000, &info(60, 0, 0, 0))).unwrap();
        add(&mut h, &socket(12, 22, 50000, &info(60, 0, 2, 0))).unwrap();
        h.finish();
        assert_eq!(h.retransmitted(), 5);
        assert_eq!(h.host().retransmitting, 1);
        assert_eq!(h.tracked(), 2, "only sockets that retransmitted");
        let total = |h: &TcpHealth, d| {
            h.ports()
                .into_iter()
                .find(|(k, _, _)| *k == (d, 7777))
                .map(|(_, _, t)| t)
        };
        assert_eq!(total(&h, Direction::Remote), Some(3));
        assert_eq!(total(&h, Direction::Local), Some(0));
        // Collection 2, retried: socket 10 grew to 7 (+4) and is seen twice;
        // 11 now retransmitted 1; 12 closed.
        for _ in 0..2 {
            h.clear();
            add(&mut h, &socket(10, 40000, 7777, &info(60, 0, 7, 0))).unwrap();
            add(&mut h, &socket(11, 7777, 40000, &info(60, 0, 1, 0))).unwrap();
        }
        h.finish();
        assert_eq!(h.retransmitted(), 10, "5 + 4 + 1, the retry added nothing");
        assert_eq!(h.tracked(), 3, "12 kept for now");
        assert_eq!(total(&h, Direction::Remote), Some(7));
        assert_eq!(total(&h, Direction::Local), Some(1));
        // Collection 3: everything closed; the totals stay. A socket a dump
        // missed and the next one sees adds only its growth.
        h.clear();
        h.finish();
        assert_eq!(h.tracked(), 2, "kept while a dump may have missed them");
        h.clear();
        add(&mut h, &socket(10, 40000, 7777, &info(60, 0, 8, 0))).unwrap();
        h.finish();
        assert_eq!(h.retransmitted(), 11, "+1, not +8");
        for _ in 0..KEEP_UNSEEN {
            h.clear();
            h.finish();
        }
        assert_eq!(h.tracked(), 0);
        assert_eq!(h.retransmitted(), 11);
        assert_eq!(total(&h, Direction::Remote), Some(8));
        assert_eq!(h.host().sockets(), 0);
    }

    #[test]
    fn a_full_table_leaves_sockets_out_until_they_find_room() {
        let mut h = TcpHealth::with_max_tracked(PortSet::default(), 1);
        h.clear();
        add(&mut h, &socket(1, 1, 2, &info(60, 0, 4, 0))).unwrap();
        add(&mut h, &socket(2, 1, 3, &info(60, 0, 6, 0))).unwrap();
        h.finish();
        assert_eq!((h.retransmitted(), h.untracked(), h.tracked()), (4, 1, 1));
        // Socket 1 closes: its entry goes once KEEP_UNSEEN collections
        // missed it...
        for _ in 0..KEEP_UNSEEN {
            h.clear();
            add(&mut h, &socket(2, 1, 3, &info(60, 0, 6, 0))).unwrap();
            h.finish();
            assert_eq!((h.retransmitted(), h.untracked()), (4, 1));
        }
        assert_eq!(h.tracked(), 0);
        // ...so 2 finds room in the next one and adds its whole count.
        h.clear();
        add(&mut h, &socket(2, 1, 3, &info(60, 0, 6, 0))).unwrap();
        h.finish();
        assert_eq!((h.retransmitted(), h.untracked()), (10, 0));
    }

    #[test]
    fn a_short_tcp_info_leaves_out_the_fields_it_lacks() {
        let mut h = TcpHealth::new(PortSet::default());
        h.clear();
        let full = info(300, 1, 2, 500);
        // A 3.x kernel's 104-byte struct: no tcpi_notsent_bytes.
        add(&mut h, &socket(1, 1, 2, &full[..104])).unwrap();
        // Cut inside tcpi_total_retrans: no growth, RTT still counted.
        add(&mut h, &socket(2, 1, 2, &full[..102])).unwrap();
        // Cut before tcpi_rtt: no RTT sample.
        add(&mut h, &socket(3, 1, 2, &full[..40])).unwrap();
        // No INFO at all.
        let mut bare = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 1, 2, 0, 0, 1);
        bare.extend(rtattr(INET_DIAG_SHUTDOWN, &[0]));
        add(&mut h, &bare).unwrap();
        assert_eq!(h.short_info(), 4);
        assert_eq!(h.host().sockets(), 2);
        assert_eq!(h.host().retransmitting, 3);
        assert_eq!(h.host().notsent_bytes, 0, "never read past the end");
        assert_eq!(h.retransmitted(), 2, "only the 104-byte socket");
    }

    #[test]
    fn a_malformed_attribute_area_is_an_error() {
        let mut h = TcpHealth::new(PortSet::default());
        h.clear();
        let mut m = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 1, 2, 0, 0, 1);
        // INFO claiming 252 bytes with 8 present.
        m.extend_from_slice(&[252, 0, 2, 0, 0, 0, 0, 0]);
        assert!(matches!(add(&mut h, &m), Err(ParseError::Attribute(_))));
        assert_eq!(*h.host(), Health::default());
    }

    #[test]
    fn series_cover_host_and_ports_within_the_cap() {
        let mut h = TcpHealth::new(PortSet::parse("80,443").unwrap());
        h.clear();
        add(&mut h, &socket(1, 80, 5000, &info(120, 1, 2, 10))).unwrap();
        h.finish();
        let mut out = Families::default();
        h.families(&mut out, 2000, None);
        let text = out.encode(&[]);
        for line in [
            "sockdiag_tcp_rtt_seconds_bucket{direction=\"all\",port=\"all\",le=\"0.0001\"} 0",
            "sockdiag_tcp_rtt_seconds_bucket{direction=\"all\",port=\"all\",le=\"0.00025\"} 1",
            "sockdiag_tcp_rtt_seconds_count{direction=\"local\",port=\"80\"} 1",
            "sockdiag_tcp_rtt_seconds_count{direction=\"remote\",port=\"443\"} 0",
            "sockdiag_tcp_retransmitted_segments_total{direction=\"local\",port=\"80\"} 2",
            "sockdiag_tcp_retransmitting_sockets{direction=\"all\",port=\"all\"} 1",
            "sockdiag_tcp_notsent_bytes{direction=\"local\",port=\"80\"} 10",
            "sockdiag_series_dropped{metric=\"sockdiag_tcp_rtt_seconds\"} 0",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // Room for one view (21 series) of four: three are cut.
        let mut out = Families::default();
        h.families(&mut out, SERIES_PER_PORT, None);
        let text = out.encode(&[]);
        assert!(text.contains("sockdiag_tcp_rtt_seconds_count{direction=\"local\",port=\"80\"} 1"));
        assert!(!text.contains("port=\"443\""), "{text}");
        let dropped = format!(
            "sockdiag_series_dropped{{metric=\"sockdiag_tcp_rtt_seconds\"}} {}",
            3 * SERIES_PER_PORT
        );
        assert!(text.contains(&dropped), "{text}");
        // With --collector.netns every series has the netns label.
        let mut out = Families::default();
        h.families(&mut out, 2000, Some("pod"));
        let text = out.encode(&[]);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 4 * SERIES_PER_PORT, "{text}");
        for line in samples {
            assert!(line.contains("netns=\"pod\""), "{line}");
        }
    }
}
