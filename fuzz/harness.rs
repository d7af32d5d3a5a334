//! The two fuzz harnesses, shared by the libFuzzer targets in
//! fuzz_targets/ and by `cargo test` (tests/fuzz_corpus.rs), which replays
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
use sockdiag_exporter::collectors::{
    listeners::ListenStats, ports::PortSet, tcp::TcpStats, udp::UdpStats, unix::UnixStats,
};
use sockdiag_exporter::collectors::{tcp::DumpMode, Collector, Kind, Options, Report};
use sockdiag_exporter::config::{self, ListenAddr};
use sockdiag_exporter::diag::{
    Family, TcpState, UdpState, UnixState, UnixType, INET_DIAG_MSG_LEN, NLMSG_HDRLEN,
    UNIX_DIAG_MSG_LEN,
};
use sockdiag_exporter::dump::RECV_BUFFER;
use sockdiag_exporter::metrics::{Metrics, Shape};
use sockdiag_exporter::transport::Transport;

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
}

fn only(kind: Kind) -> Options {
    Options {
        tcp: kind == Kind::Tcp,
        listeners: kind == Kind::Listeners,
        udp: kind == Kind::Udp,
        unix: kind == Kind::Unix,
        ..Options::default()
    }
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
    },
    Scenario {
        name: "tcp by-family",
        options: || tcp(DumpMode::ByFamily),
    },
    Scenario {
        name: "tcp auto",
        options: || tcp(DumpMode::Auto),
    },
    Scenario {
        name: "listeners",
        options: || only(Kind::Listeners),
    },
    Scenario {
        name: "udp",
        options: || only(Kind::Udp),
    },
    Scenario {
        name: "unix",
        options: || only(Kind::Unix),
    },
    Scenario {
        name: "all collectors, per-port views",
        options: || Options {
            tcp_ports: ports(),
            udp_ports: ports(),
            ..Options::default()
        },
    },
    Scenario {
        name: "tcp legacy, cgroup counts",
        options: || Options {
            cgroup: true,
            ..tcp(DumpMode::Legacy)
        },
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

/// A kernel scripted by the fuzz input. Answers whose nlmsg_seq is 0 get the
/// sequence number of the request in flight (and nlmsg_pid 0 gets our port),
/// so a corpus entry stays valid whatever sequence the collector is at.
pub struct Script<'a> {
    rest: &'a [u8],
    seq: u32,
    check_port: bool,
    /// Payload bytes handed out so far: a bound on how many sockets can exist.
    delivered: usize,
    pub resets: usize,
}

impl<'a> Script<'a> {
    pub fn new(rest: &'a [u8], check_port: bool) -> Script<'a> {
        Script {
            rest,
            seq: 0,
            check_port,
            delivered: 0,
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
                self.delivered += n;
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
}

thread_local! {
    static METRICS: Metrics = Metrics::new(Shape {
        process: false,
        ..Shape::default()
    });
}

/// Fuzzes netlink answer parsing and aggregation: see the module comment.
pub fn netlink(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let scenario = &SCENARIOS[(selector & 0x0f) as usize % SCENARIOS.len()];
    let script = Script::new(rest, selector & 0x10 != 0);
    let options = Options {
        deadline: Duration::from_secs(60),
        max_listeners: 4,
        max_unix_listeners: 4,
        max_port_series: 16,
        ..(scenario.options)()
    };
    let mut collector = Collector::new(script, options);
    for _ in 0..COLLECTIONS {
        let reports = collector.collect();
        if let Some(broken) = check(&collector, &reports) {
            panic!("{}: {broken}", scenario.name);
        }
        if collector.transport().rest.is_empty() {
            break;
        }
    }
}

/// Checks one collection; returns a broken invariant.
fn check(collector: &Collector<Script>, reports: &[Report]) -> Option<String> {
    let stats = collector.stats();
    let delivered = collector.transport().delivered;
    for report in reports {
        let result = match (&report.error, report.kind) {
            (Some(error), _) => {
                let text = error.to_string();
                (!text.starts_with(&format!("{} dump: ", error.request)))
                    .then(|| format!("error does not name its dump: {text:?}"))
            }
            (None, Kind::Tcp) => check_tcp(stats.tcp, delivered),
            (None, Kind::Listeners) => check_listeners(stats.listen, delivered),
            (None, Kind::Udp) => check_udp(stats.udp, delivered),
            (None, Kind::Unix) => check_unix(stats.unix, delivered),
        };
        if let Some(broken) = result {
            return Some(format!("{} collector: {broken}", report.kind.label()));
        }
    }
    // Rendering must not panic.
    let _ = sockdiag_exporter::render::table(stats, reports);
    check_served(collector, reports)
}

/// At most this many sockets fit in `delivered` bytes of messages whose
/// payload is at least `payload` bytes.
fn most_sockets(delivered: usize, payload: usize) -> u64 {
    (delivered / (NLMSG_HDRLEN + payload)) as u64
}

/// `sum` over `n` sockets of one u32 field each.
fn fits_u32s(sum: u64, n: u64) -> bool {
    sum <= n.saturating_mul(u64::from(u32::MAX))
}

/// Invariants of a successful TCP collection.
pub fn check_tcp(stats: &TcpStats, delivered: usize) -> Option<String> {
    let mut total = 0u64;
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
            total += n;
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
    (total > most_sockets(delivered, INET_DIAG_MSG_LEN))
        .then(|| format!("{total} sockets counted from {delivered} bytes"))
}

/// Invariants of a successful listeners collection.
pub fn check_listeners(stats: &ListenStats, delivered: usize) -> Option<String> {
    let mut total = 0;
    for (key, l) in stats.listeners() {
        total += l.sockets;
        if l.sockets == 0 || !fits_u32s(l.queue, l.sockets) || !fits_u32s(l.max, l.sockets) {
            return Some(format!("listener {key:?}: {l:?}"));
        }
        if key.family == Family::Ipv4 && key.address[4..] != [0; 12] {
            return Some(format!("IPv4 listener with an IPv6-sized address: {key:?}"));
        }
    }
    (total > most_sockets(delivered, INET_DIAG_MSG_LEN))
        .then(|| format!("{total} listeners counted from {delivered} bytes"))
}

/// Invariants of a successful UDP collection.
pub fn check_udp(stats: &UdpStats, delivered: usize) -> Option<String> {
    let mut total = 0u64;
    for family in Family::ALL {
        let f = family as usize;
        let n: u64 = stats.sockets[f].iter().sum();
        total += n;
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
    (total > most_sockets(delivered, INET_DIAG_MSG_LEN))
        .then(|| format!("{total} sockets counted from {delivered} bytes"))
}

/// Invariants of a successful unix collection.
pub fn check_unix(stats: &UnixStats, delivered: usize) -> Option<String> {
    let listen = UnixState::Listen as usize;
    let mut total = 0u64;
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
            total += n;
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
    (total > most_sockets(delivered, UNIX_DIAG_MSG_LEN))
        .then(|| format!("{total} sockets counted from {delivered} bytes"))
}

/// What a scrape would serve after these reports: for each collector,
/// success 1 with its series, or success 0 and none of them (never
/// half-counted numbers).
fn check_served(collector: &Collector<Script>, reports: &[Report]) -> Option<String> {
    METRICS.with(|metrics| {
        metrics.record(collector.stats(), reports);
        let text = metrics.encode();
        for report in reports {
            let label = report.kind.label();
            let ok = report.error.is_none();
            let success = format!(
                "sockdiag_collect_success{{collector=\"{label}\"}} {}",
                u8::from(ok)
            );
            if !text.contains(&success) {
                return Some(format!("served text lacks `{success}`"));
            }
            // A series only this collector serves, and always when it works.
            let marker = match report.kind {
                Kind::Tcp => "sockdiag_sockets{family=\"ipv4\",protocol=\"tcp\"",
                Kind::Udp => "sockdiag_sockets{family=\"ipv4\",protocol=\"udp\"",
                Kind::Unix => "sockdiag_unix_sockets{",
                Kind::Listeners => "sockdiag_series_dropped{metric=\"sockdiag_listen_queue\"}",
            };
            if text.contains(marker) != ok {
                return Some(format!(
                    "{label}: success {ok} but `{marker}` served: {}",
                    !ok
                ));
            }
        }
        None
    })
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
        if !cli::DOTTED_FLAGS.contains(&name) {
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
            let (_options, _shape) = (parsed.options(), parsed.shape());
            if parsed.web_max_connections == 0 || parsed.web_max_header_bytes == 0 {
                return Some(format!("a zero limit was accepted: {parsed:?}"));
            }
            let path = &parsed.web_telemetry_path;
            if !path.starts_with('/') || path == "/" {
                return Some(format!("bad telemetry path accepted: {path:?}"));
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
