//! The two fuzz harnesses, shared by the libFuzzer targets in
//! fuzz_targets/ and by `cargo test` (tests/it/fuzz_corpus.rs), which replays
//! every file under fuzz/corpus/ through these same functions. A harness
//! panics when an invariant breaks; any other outcome is a pass.
//!
//! `netlink`: the input is a scripted kernel. Byte 0 picks a scenario (a
//! collector or all of them, see [`SCENARIOS`]); the rest is a stream of
//! recv results fed through `Collector`, the same path a live dump takes,
//! for up to [`COLLECTIONS`] collections in a row.
//!
//! `argv`: the input is argv split at NUL bytes, run through
//! `cli::translate_argv` and `cli::parse`, plus the value parsers.

#![allow(dead_code)] // each user calls only one of the harnesses

use std::io;
use std::time::Duration;

use sockdiag_exporter::cli;
use sockdiag_exporter::collectors::tcp::{ByState, DumpMode, TcpStats};
use sockdiag_exporter::collectors::{
    listeners::ListenStats, ports::Direction, tcp_health::Health, udp::UdpStats, unix::UnixStats,
};
use sockdiag_exporter::collectors::{Collector, Kind, Options, Report, Stats};
use sockdiag_exporter::config::{self, ListenAddr, PortSet};
use sockdiag_exporter::export::metrics::{Metrics, Shape};
use sockdiag_exporter::kernel::diag::{
    DumpRequest, Family, TcpState, UdpState, UnixState, UnixType, AF_INET, AF_INET6,
    INET_DIAG_MSG_LEN, NLMSG_DONE, NLMSG_HDRLEN, SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK,
    UNIX_DIAG_MSG_LEN,
};
use sockdiag_exporter::kernel::dump::RECV_BUFFER;
use sockdiag_exporter::kernel::sysctl::LocalPorts;
use sockdiag_exporter::kernel::transport::Transport;

/// Collections run on one input, so state carried between them (fallback,
/// a reset after a failure, sequence numbers) is fuzzed too.
pub const COLLECTIONS: usize = 3;

/// One collector configuration. Byte 0 of a netlink input selects
/// `SCENARIOS[(byte0 & 0x0f) % len]`; bit 4 turns the netlink port check
/// on. A new collector or dump kind gets an entry appended here (appending
/// keeps the meaning of existing corpus files), and its invariants in
/// [`check`].
pub struct Scenario {
    pub name: &'static str,
    pub options: fn() -> Options,
    /// The side collectors get a transport of their own
    /// (`Collector::with_side`), run on a thread while tcp runs, as in the
    /// server. The input after byte 0 is then a little-endian u16 length,
    /// that many bytes for the main transport, and the rest for the side.
    pub side: bool,
}

fn only(kind: Kind) -> Options {
    Options::only(&[kind])
}

fn tcp(mode: DumpMode) -> Options {
    Options {
        tcp_dump: mode,
        ..only(Kind::Tcp)
    }
}

fn ports() -> PortSet {
    PortSet::parse("22,53,80,443,8000-8100,19275").expect("a valid port list")
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tcp legacy",
        options: || tcp(DumpMode::Legacy),
        side: false,
    },
    Scenario {
        name: "tcp by-family",
        options: || tcp(DumpMode::ByFamily),
        side: false,
    },
    Scenario {
        name: "tcp auto",
        options: || tcp(DumpMode::Auto),
        side: false,
    },
    Scenario {
        name: "listeners",
        options: || only(Kind::Listeners),
        side: false,
    },
    Scenario {
        name: "udp",
        options: || only(Kind::Udp),
        side: false,
    },
    Scenario {
        name: "unix",
        options: || only(Kind::Unix),
        side: false,
    },
    Scenario {
        name: "all collectors, per-port views, remote networks",
        options: || Options {
            tcp_ports: ports(),
            udp_ports: ports(),
            remote_networks: config::Networks::parse(
                "127.0.0.0/8,10.0.0.0/8,::1/128,::ffff:0:0/96",
            )
            .unwrap(),
            ephemeral_top: 3,
            ..Options::default()
        },
        side: false,
    },
    Scenario {
        name: "tcp legacy, cgroup counts",
        options: || Options {
            cgroup: true,
            ..tcp(DumpMode::Legacy)
        },
        side: false,
    },
    Scenario {
        name: "all collectors, side transport",
        options: Options::default,
        side: true,
    },
    Scenario {
        name: "tcp auto, tcp_info, per-port views",
        options: || Options {
            tcp_info: true,
            tcp_ports: ports(),
            ..tcp(DumpMode::Auto)
        },
        side: false,
    },
    Scenario {
        name: "tcp legacy, tcp_info, cgroup counts",
        options: || Options {
            tcp_info: true,
            cgroup: true,
            ..tcp(DumpMode::Legacy)
        },
        side: false,
    },
];

/// Frame codes in a netlink input. Each frame starts with a little-endian
/// u16: below `FAULT_BASE` it is a datagram length (cut to what is left),
/// otherwise one of these transport results.
pub const FAULT_BASE: u16 = 0xfff0;
pub const FRAME_ENOBUFS: u16 = 0xfff0;
pub const FRAME_EINTR: u16 = 0xfff1;
/// EAGAIN: what a recv timeout (SO_RCVTIMEO) returns.
pub const FRAME_TIMEOUT: u16 = 0xfff2;
pub const FRAME_EOF: u16 = 0xfff3;
/// A datagram longer than the receive buffer (recv with MSG_TRUNC reports
/// its full length).
pub const FRAME_OVERSIZED: u16 = 0xfff4;
pub const FRAME_ECONNRESET: u16 = 0xfff5;

/// The port id answers carry when the port check is on.
const PORT: u32 = 4242;

/// One dump request as the scripted kernel saw it, and what the script
/// delivered while it was the request in flight: the harness's own account,
/// kept apart from the parser under test.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    /// The request, as `DumpRequest::decode` reads it (None: undecodable).
    pub request: Option<DumpRequest>,
    /// The request's nlmsg_seq.
    pub seq: u32,
    /// Payloads of the socket messages delivered for it: the request's data
    /// type, its own sequence number (and port, when checked), long enough
    /// for the socket struct.
    pub sockets: Vec<Vec<u8>>,
    /// An NLMSG_DONE with the request's own sequence number (and port, when
    /// checked) and no error code was delivered.
    pub done: bool,
    /// An NLMSG_DONE with another sequence number or port was delivered.
    pub foreign_done: bool,
}

impl Dump {
    /// A dump that delivered `sockets` and its own NLMSG_DONE (or not).
    pub fn of(request: DumpRequest, seq: u32, sockets: Vec<Vec<u8>>, done: bool) -> Dump {
        Dump {
            request: Some(request),
            seq,
            sockets,
            done,
            foreign_done: false,
        }
    }
}

/// A kernel scripted by the fuzz input. Answers whose nlmsg_seq is 0 get the
/// sequence number of the request in flight (and nlmsg_pid 0 gets our port),
/// so a corpus entry stays valid whatever sequence the collector is at; any
/// other sequence number is a stale or foreign answer.
pub struct Script<'a> {
    rest: &'a [u8],
    seq: u32,
    check_port: bool,
    /// Every request sent, in order, with what was delivered for it.
    pub dumps: Vec<Dump>,
    pub resets: usize,
}

impl<'a> Script<'a> {
    pub fn new(rest: &'a [u8], check_port: bool) -> Script<'a> {
        Script {
            rest,
            seq: 0,
            check_port,
            dumps: Vec::new(),
            resets: 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }
}

impl Transport for Script<'_> {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        let seq = request
            .get(8..12)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "short request"))?;
        self.seq = u32::from_ne_bytes(seq.try_into().unwrap());
        self.dumps.push(Dump {
            request: DumpRequest::decode(request).map(|(request, _)| request),
            seq: self.seq,
            ..Dump::default()
        });
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rest.is_empty() {
            return Ok(0);
        }
        let code = match self.take(2) {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            single => single.len() as u16,
        };
        let errno = |e| Err(io::Error::from_raw_os_error(e));
        match code {
            FRAME_ENOBUFS => errno(libc::ENOBUFS),
            FRAME_EINTR => errno(libc::EINTR),
            FRAME_TIMEOUT => errno(libc::EAGAIN),
            FRAME_EOF => Ok(0),
            FRAME_OVERSIZED => Ok(RECV_BUFFER + 1),
            FRAME_ECONNRESET => errno(libc::ECONNRESET),
            len => {
                let len = if len >= FAULT_BASE {
                    self.rest.len()
                } else {
                    len as usize
                };
                let datagram = self.take(len);
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                self.fill_in_headers(&mut buf[..n]);
                self.account(&buf[..n]);
                Ok(datagram.len())
            }
        }
    }

    fn port(&self) -> u32 {
        if self.check_port {
            PORT
        } else {
            0
        }
    }

    fn reset(&mut self) -> io::Result<()> {
        self.resets += 1;
        Ok(())
    }

    /// Every port is ephemeral but a reserved few, so every socket of an
    /// input goes through the ephemeral-port table.
    fn local_ports(&mut self) -> io::Result<LocalPorts> {
        Ok(LocalPorts {
            low: 1,
            high: 65535,
            reserved: vec![(80, 80), (8000, 8100)],
        })
    }
}

/// The netlink messages in `buf` as (type, seq, pid, payload), framed the
/// way the kernel frames them (each padded to 4 bytes); stops at the first
/// header that cannot be framed.
fn messages(buf: &[u8]) -> Vec<(u16, u32, u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let word = |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
        let len = word(0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            break;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        out.push((kind, word(8), word(12), &buf[at + NLMSG_HDRLEN..at + len]));
        at += (len + 3) & !3;
    }
    out
}

impl Script<'_> {
    /// Gives seq 0 / pid 0 headers the values of the dump in flight.
    fn fill_in_headers(&self, buf: &mut [u8]) {
        let mut at = 0;
        while at + NLMSG_HDRLEN <= buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            if buf[at + 8..at + 12] == [0; 4] {
                buf[at + 8..at + 12].copy_from_slice(&self.seq.to_ne_bytes());
            }
            if self.check_port && buf[at + 12..at + 16] == [0; 4] {
                buf[at + 12..at + 16].copy_from_slice(&PORT.to_ne_bytes());
            }
            if len < NLMSG_HDRLEN {
                break;
            }
            at = at.saturating_add((len + 3) & !3);
        }
    }

    /// Books what a delivered datagram holds for the request in flight: its
    /// socket messages and whether its own NLMSG_DONE came. Messages with
    /// another sequence number or port belong to no request.
    fn account(&mut self, buf: &[u8]) {
        let port = self.port();
        let Some(dump) = self.dumps.last_mut() else {
            return;
        };
        let Some(request) = dump.request else {
            return;
        };
        let min_payload = match request {
            DumpRequest::Unix => UNIX_DIAG_MSG_LEN,
            _ => INET_DIAG_MSG_LEN,
        };
        for (kind, seq, pid, payload) in messages(buf) {
            if seq != dump.seq || (port != 0 && pid != port) {
                dump.foreign_done |= kind == NLMSG_DONE;
                continue;
            }
            if kind == NLMSG_DONE {
                let code = payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                dump.done |= code >= 0;
            } else if kind == request.response_type() && payload.len() >= min_payload {
                dump.sockets.push(payload.to_vec());
            }
        }
    }
}

thread_local! {
    static METRICS: Metrics = Metrics::new(Shape {
        process: false,
        ..Shape::default()
    });
}

/// What the checks saw over one or more inputs, indexed like
/// [`Kind::ALL`], so that a replay can show they did not pass vacuously.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Successful collections, per collector.
    pub succeeded: [u64; 4],
    /// Failed collections, per collector.
    pub failed: [u64; 4],
    /// Sockets counted by successful collections, per collector.
    pub sockets: [u64; 4],
    /// Failed collections of a collector that was sent an NLMSG_DONE with
    /// another request's sequence number or another port.
    pub foreign_done_failed: [u64; 4],
    /// Successful tcp collections replayed the other way (legacy or
    /// by-family) and compared.
    pub compared: u64,
    /// RTT samples and retransmitted segments counted from tcp_info by
    /// successful tcp collections (`--collector.tcp.info`).
    pub tcp_info_sockets: u64,
    pub tcp_info_retransmitted: u64,
    /// Retransmitted segments booked per cgroup id and found to add up to
    /// the host counter's growth (`--collector.tcp.info --collector.cgroup`).
    pub tcp_info_cgroup_growth: u64,
}

/// Fuzzes netlink answer parsing and aggregation: see the module comment.
pub fn netlink(data: &[u8]) {
    netlink_seen(data, &mut Seen::default());
}

/// [`netlink`], adding what the checks saw to `seen`.
pub fn netlink_seen(data: &[u8], seen: &mut Seen) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let scenario = &SCENARIOS[(selector & 0x0f) as usize % SCENARIOS.len()];
    let check_port = selector & 0x10 != 0;
    let options = Options {
        deadline: Duration::from_secs(60),
        max_listeners: 4,
        max_unix_listeners: 4,
        max_port_series: 16,
        ..(scenario.options)()
    };
    if scenario.side {
        let (main, side) = match rest {
            [lo, hi, rest @ ..] => {
                rest.split_at(usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len()))
            }
            _ => (rest, &[][..]),
        };
        let collector = Collector::new(Script::new(main, check_port), options)
            .with_side(Script::new(side, check_port));
        run(scenario, collector, seen);
    } else {
        run(
            scenario,
            Collector::new(Script::new(rest, check_port), options),
            seen,
        );
    }
}

/// What a transport booked ([`Script`]'s log), for either transport type.
pub trait Booked {
    /// Every dump request sent through it, with what it delivered.
    fn booked(&self) -> &[Dump];
    /// The script has nothing left to deliver.
    fn exhausted(&self) -> bool;
}

impl Booked for Script<'_> {
    fn booked(&self) -> &[Dump] {
        &self.dumps
    }
    fn exhausted(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The side transport of a collector that has none.
impl Booked for Box<dyn Transport + Send> {
    fn booked(&self) -> &[Dump] {
        &[]
    }
    fn exhausted(&self) -> bool {
        true
    }
}

/// How many dumps each transport of `collector` has booked so far.
fn booked_so_far<S: Transport + Send + Booked>(collector: &Collector<Script, S>) -> (usize, usize) {
    let side = collector.side_transport().map_or(0, |s| s.booked().len());
    (collector.transport().dumps.len(), side)
}

/// The dumps booked on both transports since `first` ([`booked_so_far`]).
fn booked_since<S: Transport + Send + Booked>(
    collector: &Collector<Script, S>,
    first: (usize, usize),
) -> Vec<Dump> {
    let mut dumps = collector.transport().dumps[first.0..].to_vec();
    if let Some(side) = collector.side_transport() {
        dumps.extend_from_slice(&side.booked()[first.1..]);
    }
    dumps
}

/// Runs up to [`COLLECTIONS`] collections, checking each.
fn run<S: Transport + Send + Booked>(
    scenario: &Scenario,
    mut collector: Collector<Script, S>,
    seen: &mut Seen,
) {
    let mut retransmitted = 0;
    let mut at_success = 0;
    for n in 1..=COLLECTIONS {
        let first = booked_so_far(&collector);
        let reports = collector.collect();
        let dumps = booked_since(&collector, first);
        let broken = check(&collector, &reports, &dumps).or_else(|| {
            // The retransmission counters never fall, whatever the answers.
            let health = collector.stats().tcp.health()?;
            let now = health.retransmitted();
            if now < retransmitted {
                return Some(format!("retransmitted fell from {retransmitted} to {now}"));
            }
            retransmitted = now;
            None
        });
        let broken = broken.or_else(|| {
            let tcp_ok = reports
                .iter()
                .any(|r| r.kind == Kind::Tcp && r.error.is_none());
            if !tcp_ok {
                return None;
            }
            seen.compared += 1;
            let tcp = collector.stats().tcp;
            match per_cgroup_sums(tcp, &mut at_success) {
                Some(Err(broken)) => return Some(broken),
                Some(Ok(growth)) => seen.tcp_info_cgroup_growth += growth,
                None => {}
            }
            let delivered = final_attempt(&dumps, Kind::Tcp, collector.plan());
            same_answer_both_ways(
                collector.options(),
                collector.plan(),
                &delivered,
                collector.stats().tcp,
            )
        });
        if let Some(broken) = broken {
            panic!("{} (collection {n}): {broken}", scenario.name);
        }
        for report in &reports {
            let k = report.kind as usize;
            if report.error.is_none() {
                seen.succeeded[k] += 1;
                seen.sockets[k] += counted(report.kind, collector.stats());
                if let (Kind::Tcp, Some(health)) = (report.kind, collector.stats().tcp.health()) {
                    seen.tcp_info_sockets += health.host().sockets();
                    seen.tcp_info_retransmitted =
                        seen.tcp_info_retransmitted.max(health.retransmitted());
                }
            } else {
                seen.failed[k] += 1;
                let foreign = dumps
                    .iter()
                    .any(|d| d.foreign_done && d.request.map(kind_of) == Some(report.kind));
                seen.foreign_done_failed[k] += u64::from(foreign);
            }
        }
        let side_done = collector.side_transport().map_or(true, Booked::exhausted);
        if collector.transport().exhausted() && side_done {
            break;
        }
    }
}

/// With tcp_info and cgroup counting, after a successful tcp collection:
/// the per-cgroup-id health adds up to the host's, and the growth booked
/// to ids is exactly what the host counter gained since the last
/// successful collection (`at_success`, updated): none lost to a retried
/// or failed collection, none counted twice. Ok: the growth checked.
fn per_cgroup_sums(
    tcp: &sockdiag_exporter::collectors::tcp::TcpStats,
    at_success: &mut u64,
) -> Option<Result<u64, String>> {
    let health = tcp.health()?;
    if !tcp.has_cgroup(None) {
        return None;
    }
    let mut ids: Vec<Option<u64>> = tcp.by_cgroup().map(|(id, _)| id).collect();
    ids.extend(health.cgroups_with_growth());
    ids.sort_unstable();
    ids.dedup();
    let (mut sockets, mut growth) = (0, 0);
    for id in ids {
        let (h, g) = health.cgroup(id);
        sockets += h.sockets();
        growth += g;
    }
    let gained = health.retransmitted() - *at_success;
    *at_success = health.retransmitted();
    if sockets != health.host().sockets() {
        return Some(Err(format!(
            "cgroup RTT samples {sockets} != host {}",
            health.host().sockets()
        )));
    }
    if growth != gained {
        return Some(Err(format!(
            "growth booked to cgroups {growth} != host counter gained {gained}"
        )));
    }
    Some(Ok(growth))
}

/// The collector a dump request belongs to.
pub fn kind_of(request: DumpRequest) -> Kind {
    match request {
        DumpRequest::Legacy
        | DumpRequest::ByFamily(_)
        | DumpRequest::LegacyInfo
        | DumpRequest::ByFamilyInfo(_) => Kind::Tcp,
        DumpRequest::Listen(_) => Kind::Listeners,
        DumpRequest::Udp(_) => Kind::Udp,
        DumpRequest::Unix => Kind::Unix,
    }
}

/// The requests one complete, successful collection of `kind` ends with
/// (`tcp_plan`: what the tcp collector uses now, legacy or by-family).
pub fn plan_of(kind: Kind, tcp_plan: &[DumpRequest]) -> Vec<DumpRequest> {
    match kind {
        Kind::Tcp => tcp_plan.to_vec(),
        Kind::Listeners => Family::ALL.map(DumpRequest::Listen).to_vec(),
        Kind::Udp => Family::ALL.map(DumpRequest::Udp).to_vec(),
        Kind::Unix => vec![DumpRequest::Unix],
    }
}

/// The last `plan.len()` dumps `kind` sent in `dumps` (one collection's):
/// the attempt whose sockets a successful collection counts (an earlier
/// attempt, interrupted or refused, was cleared away).
fn final_attempt<'d>(dumps: &'d [Dump], kind: Kind, tcp_plan: &[DumpRequest]) -> Vec<&'d Dump> {
    let mine: Vec<&Dump> = dumps
        .iter()
        .filter(|d| d.request.map(kind_of) == Some(kind))
        .collect();
    let n = plan_of(kind, tcp_plan).len().min(mine.len());
    mine[mine.len() - n..].to_vec()
}

/// Checks one collection (`dumps`: what both transports booked during it);
/// returns a broken invariant.
fn check<S: Transport + Send>(
    collector: &Collector<Script, S>,
    reports: &[Report],
    dumps: &[Dump],
) -> Option<String> {
    check_collection(collector.stats(), reports, dumps, collector.plan()).or_else(|| {
        // Rendering must not panic; a failed collector shows only its error.
        let table = sockdiag_exporter::export::render::table(collector.stats(), reports);
        for report in reports {
            let failed_line = format!("{} collection failed: ", report.kind.label());
            let failed = report.error.is_some();
            if table.contains(&failed_line) != failed {
                return Some(format!(
                    "table: `{failed_line}` shown {}, collector failed {failed}",
                    !failed
                ));
            }
        }
        METRICS.with(|metrics| {
            metrics.record(collector.stats(), reports);
            check_served(&metrics.encode(), reports, |kind| {
                final_attempt(dumps, kind, collector.plan())
                    .iter()
                    .map(|d| d.sockets.len() as u64)
                    .sum()
            })
        })
    })
}

/// Sockets in the stats of one collector.
pub fn counted(kind: Kind, stats: Stats<'_>) -> u64 {
    match kind {
        Kind::Tcp => stats.tcp.sockets.iter().flatten().sum(),
        Kind::Listeners => stats
            .listen
            .listeners()
            .iter()
            .map(|(_, l)| l.sockets)
            .sum(),
        Kind::Udp => stats.udp.sockets.iter().flatten().sum(),
        Kind::Unix => stats.unix.sockets.iter().flatten().sum(),
    }
}

/// The invariants of one collection, given the dumps the script saw in it
/// (`dumps`) and the tcp plan now in use. Per collector:
/// - only enabled collectors (those with a report) send dumps;
/// - a failed collector's error names its dump;
/// - a successful one ended with exactly its plan's requests, each answered
///   by an NLMSG_DONE with its own sequence number, and counted exactly the
///   sockets those dumps delivered (none from another collection, another
///   collector or an earlier attempt);
/// - its stats are consistent in themselves ([`check_tcp`] and the others).
pub fn check_collection(
    stats: Stats<'_>,
    reports: &[Report],
    dumps: &[Dump],
    tcp_plan: &[DumpRequest],
) -> Option<String> {
    for dump in dumps {
        let Some(request) = dump.request else {
            return Some(format!(
                "sent a request no collector sends (seq {})",
                dump.seq
            ));
        };
        if !reports.iter().any(|r| r.kind == kind_of(request)) {
            return Some(format!(
                "a {} dump was sent, but {} did not report",
                request.name(),
                kind_of(request).label()
            ));
        }
    }
    for report in reports {
        let result = match &report.error {
            Some(error) => {
                let text = error.to_string();
                (!text.starts_with(&format!("{} dump: ", error.request)))
                    .then(|| format!("error does not name its dump: {text:?}"))
            }
            None => check_success(report.kind, stats, dumps, tcp_plan),
        };
        if let Some(broken) = result {
            return Some(format!("{} collector: {broken}", report.kind.label()));
        }
    }
    None
}

/// The invariants of one successful collector in one collection.
fn check_success(
    kind: Kind,
    stats: Stats<'_>,
    dumps: &[Dump],
    tcp_plan: &[DumpRequest],
) -> Option<String> {
    let plan = plan_of(kind, tcp_plan);
    let last = final_attempt(dumps, kind, tcp_plan);
    let sent: Vec<_> = last.iter().filter_map(|d| d.request).collect();
    if sent != plan {
        return Some(format!(
            "succeeded, but its last dumps were {sent:?}, not its plan {plan:?}"
        ));
    }
    if let Some(dump) = last.iter().find(|d| !d.done) {
        return Some(format!(
            "succeeded, but its {} dump (seq {}) got no NLMSG_DONE with its own sequence number",
            dump.request.map_or("?", DumpRequest::name),
            dump.seq
        ));
    }
    let delivered: u64 = last.iter().map(|d| d.sockets.len() as u64).sum();
    let counted = counted(kind, stats);
    if counted != delivered {
        return Some(format!(
            "{counted} sockets counted, but this collection delivered {delivered} to it"
        ));
    }
    match kind {
        Kind::Tcp => check_tcp(stats.tcp),
        Kind::Listeners => check_listeners(stats.listen),
        Kind::Udp => check_udp(stats.udp),
        Kind::Unix => check_unix(stats.unix),
    }
}

/// `sum` over `n` sockets of one u32 field each.
fn fits_u32s(sum: u64, n: u64) -> bool {
    sum <= n.saturating_mul(u64::from(u32::MAX))
}

/// Invariants of a successful TCP collection's stats.
pub fn check_tcp(stats: &TcpStats) -> Option<String> {
    for family in Family::ALL {
        let f = family as usize;
        let syn: u64 = stats
            .syn_queue()
            .iter()
            .filter(|((fam, _), _)| *fam == family)
            .map(|(_, n)| n)
            .sum();
        let syn_recv = stats.sockets[f][TcpState::SynRecv as usize];
        if syn != syn_recv {
            return Some(format!(
                "{family:?}: {syn} in the SYN queues but {syn_recv} in SYN_RECV"
            ));
        }
        for state in TcpState::ALL {
            let s = state as usize;
            let n = stats.sockets[f][s];
            let (rq, wq) = (
                stats.receive_queue_bytes[f][s],
                stats.send_queue_bytes[f][s],
            );
            if matches!(state, TcpState::Listen | TcpState::SynRecv) && (rq, wq) != (0, 0) {
                return Some(format!("{family:?} {state:?} has queue bytes {rq}/{wq}"));
            }
            if !fits_u32s(rq, n) || !fits_u32s(wq, n) {
                return Some(format!(
                    "{family:?} {state:?}: {rq}/{wq} bytes over {n} sockets"
                ));
            }
        }
    }
    for ((direction, port), counts) in stats.ports.series() {
        for state in TcpState::ALL {
            if counts[state as usize] > stats.total(state) {
                return Some(format!(
                    "port {direction:?} {port}: more {state:?} than in all"
                ));
            }
        }
    }
    if let Some(health) = stats.health() {
        let established = stats.total(TcpState::Established);
        let host = health.host();
        if host.sockets() > established || host.retransmitting > established {
            return Some(format!(
                "tcp_info: {} RTT samples, {} retransmitting, of {established} established",
                host.sockets(),
                host.retransmitting
            ));
        }
        if !fits_u32s(host.notsent_bytes, established) {
            return Some(format!("tcp_info: {} notsent bytes", host.notsent_bytes));
        }
        for ((direction, port), h, total) in health.ports() {
            if h.sockets() > host.sockets()
                || h.retransmitting > host.retransmitting
                || total > health.retransmitted()
            {
                return Some(format!(
                    "tcp_info: port {direction:?} {port} has more than the host: {h:?} {total}"
                ));
            }
        }
    }
    if stats.counts_cgroups() {
        for state in TcpState::ALL {
            let by_cgroup: u64 = stats.by_cgroup().map(|(_, c)| c[state as usize]).sum();
            if by_cgroup != stats.total(state) {
                return Some(format!(
                    "{state:?}: {by_cgroup} by cgroup but {} in all",
                    stats.total(state)
                ));
            }
        }
    }
    None
}

/// Invariants of a successful listeners collection's stats.
pub fn check_listeners(stats: &ListenStats) -> Option<String> {
    for (key, l) in stats.listeners() {
        if l.sockets == 0 || !fits_u32s(l.queue, l.sockets) || !fits_u32s(l.max, l.sockets) {
            return Some(format!("listener {key:?}: {l:?}"));
        }
        if key.family == Family::Ipv4 && key.address[4..] != [0; 12] {
            return Some(format!("IPv4 listener with an IPv6-sized address: {key:?}"));
        }
    }
    None
}

/// Invariants of a successful UDP collection's stats.
pub fn check_udp(stats: &UdpStats) -> Option<String> {
    for family in Family::ALL {
        let f = family as usize;
        let n: u64 = stats.sockets[f].iter().sum();
        if !fits_u32s(stats.drops[f], n) {
            return Some(format!(
                "{family:?}: {} drops over {n} sockets",
                stats.drops[f]
            ));
        }
        for state in UdpState::ALL {
            let s = state as usize;
            let n = stats.sockets[f][s];
            let (rq, wq) = (
                stats.receive_queue_bytes[f][s],
                stats.send_queue_bytes[f][s],
            );
            if !fits_u32s(rq, n) || !fits_u32s(wq, n) {
                return Some(format!(
                    "{family:?} {state:?}: {rq}/{wq} bytes over {n} sockets"
                ));
            }
        }
    }
    let port_drops: u64 = stats.port_drops().iter().map(|(_, d)| d).sum();
    if port_drops > stats.drops.iter().sum() {
        return Some(format!(
            "{port_drops} port drops, more than all drops {:?}",
            stats.drops
        ));
    }
    None
}

/// Invariants of a successful unix collection's stats.
pub fn check_unix(stats: &UnixStats) -> Option<String> {
    let listen = UnixState::Listen as usize;
    let mut listening = 0u64;
    for kind in UnixType::ALL {
        let t = kind as usize;
        listening += stats.sockets[t][listen];
        if (
            stats.receive_queue_bytes[t][listen],
            stats.send_queue_bytes[t][listen],
        ) != (0, 0)
        {
            return Some(format!("{kind:?} listeners have queue bytes"));
        }
        for state in UnixState::ALL {
            let s = state as usize;
            let n = stats.sockets[t][s];
            let (rq, wq) = (
                stats.receive_queue_bytes[t][s],
                stats.send_queue_bytes[t][s],
            );
            if !fits_u32s(rq, n) || !fits_u32s(wq, n) {
                return Some(format!(
                    "{kind:?} {state:?}: {rq}/{wq} bytes over {n} sockets"
                ));
            }
        }
    }
    let named: u64 = stats.listeners().iter().map(|(_, l)| l.sockets).sum();
    if named != listening {
        return Some(format!(
            "{named} sockets in the listener table, {listening} listening"
        ));
    }
    None
}

/// The collectors whose data a served series comes from (any one of them
/// succeeding may serve it); empty for the collection's own health series.
/// None for a series the harness does not know: add it here.
pub fn owners(name: &str, labels: &str) -> Option<&'static [Kind]> {
    let protocol = |tcp, udp| {
        if labels.contains("protocol=\"tcp\"") {
            Some(tcp)
        } else if labels.contains("protocol=\"udp\"") {
            Some(udp)
        } else {
            None
        }
    };
    const TCP: &[Kind] = &[Kind::Tcp];
    const LISTENERS: &[Kind] = &[Kind::Listeners];
    const UDP: &[Kind] = &[Kind::Udp];
    const UNIX: &[Kind] = &[Kind::Unix];
    match name {
        "sockdiag_collect_duration_seconds"
        | "sockdiag_collect_success"
        | "sockdiag_collect_timestamp_seconds"
        | "sockdiag_collections_total"
        | "sockdiag_build_info" => Some(&[]),
        "sockdiag_sockets"
        | "sockdiag_receive_queue_bytes"
        | "sockdiag_send_queue_bytes"
        | "sockdiag_port_sockets" => protocol(TCP, UDP),
        "sockdiag_listen_syn_queue"
        | "node_tcp_connection_states"
        | "sockdiag_cgroup_sockets"
        | "sockdiag_ephemeral_ports"
        | "sockdiag_ephemeral_ports_used"
        | "sockdiag_ephemeral_ports_used_max"
        | "sockdiag_ephemeral_ports_used_error"
        | "sockdiag_ephemeral_destinations_evicted"
        | "sockdiag_remote_network_sockets"
        | "sockdiag_tcp_rtt_seconds_bucket"
        | "sockdiag_tcp_rtt_seconds_sum"
        | "sockdiag_tcp_rtt_seconds_count"
        | "sockdiag_tcp_retransmitted_segments_total"
        | "sockdiag_tcp_retransmitting_sockets"
        | "sockdiag_tcp_notsent_bytes"
        | "sockdiag_tcp_info_untracked_sockets"
        | "sockdiag_tcp_info_incomplete_sockets" => Some(TCP),
        "sockdiag_listen_queue"
        | "sockdiag_listen_queue_max"
        | "sockdiag_listen_sockets"
        | "sockdiag_listen_drops_total" => Some(LISTENERS),
        "sockdiag_udp_receive_drops" | "sockdiag_port_receive_drops" => Some(UDP),
        "sockdiag_unix_sockets"
        | "sockdiag_unix_receive_queue_bytes"
        | "sockdiag_unix_send_queue_bytes"
        | "sockdiag_unix_listen_queue"
        | "sockdiag_unix_listen_queue_max" => Some(UNIX),
        "sockdiag_series_dropped" => {
            let metric = labels
                .strip_prefix("{metric=\"")
                .and_then(|l| l.strip_suffix("\"}"))?;
            match metric {
                "sockdiag_listen_queue" => Some(LISTENERS),
                "sockdiag_unix_listen_queue" => Some(UNIX),
                "sockdiag_port_receive_drops" => Some(UDP),
                "sockdiag_port_sockets" => Some(&[Kind::Tcp, Kind::Udp]),
                "sockdiag_cgroup_sockets" | "sockdiag_tcp_rtt_seconds" => Some(TCP),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The served series of an exposition: (name, labels with braces, value).
fn series(text: &str) -> Vec<(&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let split = head.find('{').unwrap_or(head.len());
            let (name, labels) = head.split_at(split);
            Some((name, labels, value.parse().ok()?))
        })
        .collect()
}

/// What a scrape serves after these reports (`text`): for each collector,
/// success 1 and series that add up to the sockets its own final dumps
/// delivered (`delivered`), or success 0 and none of its series: never a
/// stale or half-counted number. A collector without a report (disabled)
/// serves nothing at all.
pub fn check_served(
    text: &str,
    reports: &[Report],
    delivered: impl Fn(Kind) -> u64,
) -> Option<String> {
    let ok = |kind: Kind| reports.iter().any(|r| r.kind == kind && r.error.is_none());
    let served = series(text);
    for &(name, labels, _) in &served {
        let Some(owners) = owners(name, labels) else {
            return Some(format!(
                "served `{name}{labels}`, which the harness cannot attribute to a collector"
            ));
        };
        if !owners.is_empty() && !owners.iter().copied().any(ok) {
            let states: Vec<String> = owners
                .iter()
                .map(|k| match reports.iter().find(|r| r.kind == *k) {
                    Some(r) if r.error.is_some() => format!("{} failed", k.label()),
                    Some(_) => format!("{} succeeded", k.label()),
                    None => format!("{} is off", k.label()),
                })
                .collect();
            return Some(format!(
                "served `{name}{labels}` although {}",
                states.join(" and ")
            ));
        }
    }
    let sum = |metric: &str, filter: &str| -> u64 {
        served
            .iter()
            .filter(|(n, l, _)| *n == metric && l.contains(filter))
            .map(|(_, _, v)| *v as u64)
            .sum()
    };
    let has_networks = served
        .iter()
        .any(|(n, _, _)| *n == "sockdiag_remote_network_sockets");
    for kind in Kind::ALL {
        let label = kind.label();
        let success = served
            .iter()
            .find(|(n, l, _)| {
                *n == "sockdiag_collect_success" && *l == format!("{{collector=\"{label}\"}}")
            })
            .map(|s| s.2);
        let report = reports.iter().find(|r| r.kind == kind);
        let want = report.map(|r| f64::from(u8::from(r.error.is_none())));
        if success != want {
            return Some(format!(
                "{label}: sockdiag_collect_success is {success:?}, the report says {want:?}"
            ));
        }
        if !ok(kind) {
            continue;
        }
        let delivered = delivered(kind);
        let (metric, served) = match kind {
            Kind::Tcp => (
                "sockdiag_sockets",
                sum("sockdiag_sockets", "protocol=\"tcp\""),
            ),
            Kind::Udp => (
                "sockdiag_sockets",
                sum("sockdiag_sockets", "protocol=\"udp\""),
            ),
            Kind::Unix => ("sockdiag_unix_sockets", sum("sockdiag_unix_sockets", "")),
            Kind::Listeners => (
                "sockdiag_listen_sockets",
                sum("sockdiag_listen_sockets", ""),
            ),
        };
        // Listeners beyond the cap are left out, and counted as dropped.
        let capped = kind == Kind::Listeners
            && sum(
                "sockdiag_series_dropped",
                "metric=\"sockdiag_listen_queue\"",
            ) > 0;
        if served > delivered || (!capped && served != delivered) {
            return Some(format!(
                "{label}: {metric} serves {served} sockets, its dumps delivered {delivered}"
            ));
        }
        // Every TCP socket but listeners is under exactly one network.
        let by_network = sum("sockdiag_remote_network_sockets", "");
        let listening = sum("sockdiag_sockets", "protocol=\"tcp\",state=\"listen\"");
        if kind == Kind::Tcp && has_networks && by_network + listening != served {
            return Some(format!(
                "tcp: sockdiag_remote_network_sockets serves {by_network} sockets, not the {served} - {listening} listeners"
            ));
        }
    }
    None
}

/// tcp_info sums per (direction, port) view.
pub type PortHealth = Vec<((Direction, u16), Health)>;

/// The TCP stats that must not depend on how the sockets were dumped.
#[derive(Debug, PartialEq)]
pub struct TcpView {
    pub sockets: ByState,
    pub receive_queue_bytes: ByState,
    pub send_queue_bytes: ByState,
    pub syn_queue: Vec<((Family, u16), u64)>,
    pub ports: Vec<((Direction, u16), [u64; TcpState::COUNT])>,
    pub cgroups: Vec<(Option<u64>, [u64; TcpState::COUNT])>,
    pub full_sockets_without_cgroup_id: u64,
    /// tcp_info sums of this collection: host-wide, then per view (the
    /// retransmission totals depend on earlier collections, so they are not
    /// compared).
    pub health: Option<(Health, PortHealth)>,
    pub short_info: u64,
}

impl TcpView {
    pub fn of(stats: &TcpStats) -> TcpView {
        let mut cgroups: Vec<_> = stats.by_cgroup().map(|(id, c)| (id, *c)).collect();
        cgroups.sort_unstable();
        TcpView {
            sockets: stats.sockets,
            receive_queue_bytes: stats.receive_queue_bytes,
            send_queue_bytes: stats.send_queue_bytes,
            syn_queue: stats.syn_queue(),
            ports: stats.ports.series(),
            cgroups,
            full_sockets_without_cgroup_id: stats.full_sockets_without_cgroup_id(),
            health: stats.health().map(|h| {
                let ports = h.ports().into_iter().map(|(k, v, _)| (k, v)).collect();
                (*h.host(), ports)
            }),
            short_info: stats.health().map_or(0, |h| h.short_info()),
        }
    }

    /// The first field that differs, with both values.
    pub fn difference(&self, other: &TcpView) -> Option<String> {
        macro_rules! fields {
            ($($f:ident),*) => {$(
                if self.$f != other.$f {
                    return Some(format!(
                        "{}: {:?} vs {:?}",
                        stringify!($f),
                        self.$f,
                        other.$f
                    ));
                }
            )*};
        }
        fields!(
            sockets,
            receive_queue_bytes,
            send_queue_bytes,
            syn_queue,
            ports,
            cgroups,
            full_sockets_without_cgroup_id,
            health,
            short_info
        );
        None
    }
}

/// Frames the answer to one dump: `payloads` as `data_type` messages, then
/// NLMSG_DONE, packed into datagrams of at most [`RECV_BUFFER`] bytes
/// (a message whose length is not a multiple of 4 ends its datagram, as the
/// parser requires). Headers get seq 0 and pid 0, filled in by [`Script`].
pub fn answer(payloads: &[&[u8]], data_type: u16) -> Vec<u8> {
    let done = 0i32.to_ne_bytes();
    let messages = payloads
        .iter()
        .map(|p| (data_type, *p))
        .chain(std::iter::once((NLMSG_DONE, &done[..])));
    let mut datagrams: Vec<Vec<u8>> = vec![Vec::new()];
    for (kind, payload) in messages {
        let len = NLMSG_HDRLEN + payload.len();
        let padded = (len + 3) & !3;
        let current = datagrams.last_mut().unwrap();
        let fits = current.len() + padded <= RECV_BUFFER && current.len() % 4 == 0;
        if !fits && !current.is_empty() {
            datagrams.push(Vec::new());
        }
        let current = datagrams.last_mut().unwrap();
        current.extend_from_slice(&(len as u32).to_ne_bytes());
        current.extend_from_slice(&kind.to_ne_bytes());
        current.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        current.extend_from_slice(&[0; 8]); // seq, pid: filled in
        current.extend_from_slice(payload);
        if len % 4 == 0 {
            continue;
        }
        // Unpadded: nothing may follow it in this datagram.
        datagrams.push(Vec::new());
    }
    datagrams
        .iter()
        .filter(|d| !d.is_empty())
        .flat_map(|d| {
            let mut frame = (d.len() as u16).to_le_bytes().to_vec();
            frame.extend_from_slice(d);
            frame
        })
        .collect()
}

/// Legacy and by-family dumps of the same sockets must give the same TCP
/// stats. `delivered`: the final dumps of a successful tcp collection that
/// used `plan`; `stats`: what it counted. The same socket messages are
/// delivered the other way (one legacy answer with both families, or one
/// by-family answer per family) to a fresh collector with the same options;
/// it must succeed, pass [`check_collection`], and count the same.
pub fn same_answer_both_ways(
    options: &Options,
    plan: &[DumpRequest],
    delivered: &[&Dump],
    stats: &TcpStats,
) -> Option<String> {
    let payloads: Vec<&[u8]> = delivered
        .iter()
        .flat_map(|d| d.sockets.iter().map(Vec::as_slice))
        .collect();
    let legacy = plan == [DumpRequest::Legacy] || plan == [DumpRequest::LegacyInfo];
    let (mode, input) = if legacy {
        let family = |af: u8| -> Vec<&[u8]> {
            payloads
                .iter()
                .copied()
                .filter(|p| (p[0] == AF_INET6) == (af == AF_INET6))
                .collect()
        };
        let mut input = answer(&family(AF_INET), SOCK_DIAG_BY_FAMILY);
        input.extend(answer(&family(AF_INET6), SOCK_DIAG_BY_FAMILY));
        (DumpMode::ByFamily, input)
    } else {
        (DumpMode::Legacy, answer(&payloads, TCPDIAG_GETSOCK))
    };
    let other = Options {
        enabled: vec![Kind::Tcp],
        tcp_dump: mode,
        ..options.clone()
    };
    let mut collector = Collector::new(Script::new(&input, false), other);
    let reports = collector.collect();
    let way = format!("{mode:?}");
    if let Some(error) = &reports[0].error {
        return Some(format!(
            "the same {} sockets dumped {way} failed: {error}",
            payloads.len()
        ));
    }
    if let Some(broken) = check(&collector, &reports, &collector.transport().dumps) {
        return Some(format!("the same sockets dumped {way}: {broken}"));
    }
    TcpView::of(stats)
        .difference(&TcpView::of(collector.stats().tcp))
        .map(|d| format!("{plan:?} and {way} dumps of the same sockets differ in {d}"))
}

/// Fuzzes flag parsing: see the module comment.
pub fn argv(data: &[u8]) {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .take(64)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if let Some(broken) = check_argv(&args) {
        panic!("argv {args:?}: {broken}");
    }
}

/// Invariants of argv translation and parsing; returns a broken one.
pub fn check_argv(args: &[String]) -> Option<String> {
    let out = cli::translate_argv(args);
    // `--flag=value` becomes two arguments at most. (Arguments may be
    // dropped: of repeated `--[no-]collector.X` switches only the last one
    // counts.)
    if out.len() > 2 * args.len() {
        return Some(format!("translated to {} arguments: {out:?}", out.len()));
    }
    // Everything after `--` passes through untouched.
    if let Some(k) = args.iter().position(|a| a == "--") {
        let tail = &args[k..];
        if out.len() < tail.len() || out[out.len() - tail.len()..] != *tail {
            return Some(format!("arguments after `--` changed: {out:?}"));
        }
    }
    // Before `--`, every dotted flag name is translated to argh's dashed one
    // (a value that looks like a flag, `--cache.ttl=--log.level`, may stay;
    // of `--collector.X` and `--no-collector.X` only the last one given
    // stays).
    for arg in args.iter().take_while(|a| *a != "--") {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if !cli::dotted_flags().iter().any(|f| f == name) {
            continue;
        }
        let dashed = name.replace('.', "-");
        let pair = match dashed.strip_prefix("--no-") {
            Some(rest) => format!("--{rest}"),
            None => format!("--no-{}", &dashed[2..]),
        };
        if !out.contains(&dashed) && !out.contains(&pair) {
            return Some(format!("{arg:?} was not translated: {out:?}"));
        }
    }

    let mut argv = vec!["sockdiag_exporter".to_string()];
    argv.extend_from_slice(args);
    match cli::parse(&argv) {
        Ok(parsed) => {
            if parsed.web_max_connections == 0 || parsed.web_max_header_bytes == 0 {
                return Some(format!("a zero limit was accepted: {parsed:?}"));
            }
            let path = &parsed.web_telemetry_path;
            if !path.starts_with('/') || path == "/" {
                return Some(format!("bad telemetry path accepted: {path:?}"));
            }
            // Resolving never panics: flags that cannot be combined are a
            // clear error.
            if let Err(e) = cli::Config::from_args(parsed) {
                if !e.contains("cannot be combined") {
                    return Some(format!("unclear refusal: {e}"));
                }
            }
        }
        Err(exit) => match exit.status {
            0 => {}
            2 => {
                if exit.output.lines().count() != 1
                    || !exit.output.starts_with("sockdiag_exporter: ")
                {
                    return Some(format!("error is not one named line: {:?}", exit.output));
                }
            }
            status => return Some(format!("exit status {status}")),
        },
    }

    for arg in args {
        if let Ok(d) = config::duration(arg) {
            if arg.is_empty() || !arg.is_ascii() || d.as_millis() > u128::from(u64::MAX) {
                return Some(format!("duration {arg:?} parsed as {d:?}"));
            }
        }
        if let Ok(ListenAddr::Host(host, _)) = ListenAddr::parse(arg) {
            if host.is_empty() || host.chars().any(char::is_whitespace) {
                return Some(format!("address {arg:?} gave host {host:?}"));
            }
        }
    }
    None
}
