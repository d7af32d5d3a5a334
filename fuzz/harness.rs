//! The two fuzz harnesses, shared by the libFuzzer targets in
//! fuzz_targets/ and by `cargo test` (tests/fuzz_corpus.rs), which replays
//! every file under fuzz/corpus/ through these same functions. A harness
//! panics when an invariant breaks; any other outcome is a pass.
//!
//! `netlink`: the input is a scripted kernel. Byte 0 picks a scenario (a
//! collector configuration, see [`SCENARIOS`]); the rest is a stream of
//! recv results fed through `Collector::collect`, the same path a live dump
//! takes, for up to [`COLLECTIONS`] collections in a row.
//!
//! `argv`: the input is argv split at NUL bytes, run through
//! `cli::translate_argv` and `cli::parse`, plus the value parsers.

#![allow(dead_code)] // each user calls only one of the harnesses

use std::io;
use std::time::{Duration, SystemTime};

use sockdiag_exporter::aggregate::TcpStats;
use sockdiag_exporter::cli;
use sockdiag_exporter::collect::{Collector, DumpMode, RECV_BUFFER};
use sockdiag_exporter::diag::{Family, TcpState, INET_DIAG_MSG_LEN, NLMSG_HDRLEN};
use sockdiag_exporter::metrics::{Metrics, Outcome};
use sockdiag_exporter::render;
use sockdiag_exporter::serve::ListenAddr;
use sockdiag_exporter::transport::Transport;

/// Collections run on one input, so state carried between them (fallback,
/// a reset after a failure, sequence numbers) is fuzzed too.
pub const COLLECTIONS: usize = 3;

/// One collector configuration. Byte 0 of a netlink input selects
/// `SCENARIOS[byte0 & 0x0f % len]`; bit 4 turns the netlink port check on.
/// New dump kinds (UDP, unix, ...) get an entry appended here, with a
/// `run` that drives their collector through `transport`.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(Script) -> Option<String>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tcp legacy",
        run: |s| tcp(s, DumpMode::Legacy),
    },
    Scenario {
        name: "tcp by-family",
        run: |s| tcp(s, DumpMode::ByFamily),
    },
    Scenario {
        name: "tcp auto",
        run: |s| tcp(s, DumpMode::Auto),
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
    static METRICS: Metrics = Metrics::new(false);
}

/// Fuzzes netlink answer parsing and aggregation: see the module comment.
pub fn netlink(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let scenario = &SCENARIOS[(selector & 0x0f) as usize % SCENARIOS.len()];
    let script = Script::new(rest, selector & 0x10 != 0);
    if let Some(broken) = (scenario.run)(script) {
        panic!("{}: {broken}", scenario.name);
    }
}

/// Runs TCP collections over the script; returns a broken invariant.
fn tcp(script: Script, mode: DumpMode) -> Option<String> {
    let mut collector = Collector::new(script, mode, Duration::from_secs(60));
    for _ in 0..COLLECTIONS {
        let result = collector.collect().cloned();
        let delivered = collector.transport().delivered;
        match &result {
            Ok(stats) => {
                if let Some(broken) = check_tcp_stats(stats, delivered) {
                    return Some(broken);
                }
            }
            Err(error) => {
                let text = error.to_string();
                if !text.starts_with(&format!("{} dump: ", error.request)) {
                    return Some(format!("error does not name its dump: {text:?}"));
                }
            }
        }
        if let Some(broken) = check_served(result.as_ref().ok()) {
            return Some(broken);
        }
        if collector.transport().rest.is_empty() {
            break;
        }
    }
    None
}

/// Invariants every successful TCP collection keeps.
pub fn check_tcp_stats(stats: &TcpStats, delivered: usize) -> Option<String> {
    let listen = TcpState::Listen as usize;
    let mut total = 0u64;
    for family in Family::ALL {
        let f = family as usize;
        let listeners: u64 = stats
            .listeners()
            .iter()
            .filter(|(k, _)| k.family == family)
            .map(|(_, l)| l.sockets)
            .sum();
        if listeners != stats.sockets[f][listen] {
            return Some(format!(
                "{family:?}: {listeners} sockets in the listener table but {} in LISTEN",
                stats.sockets[f][listen]
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
            if state == TcpState::Listen && (rq, wq) != (0, 0) {
                return Some(format!("{family:?} listen has queue bytes {rq}/{wq}"));
            }
            let most = n.saturating_mul(u64::from(u32::MAX));
            if rq > most || wq > most {
                return Some(format!(
                    "{family:?} {state:?}: {rq}/{wq} queue bytes over {n} sockets"
                ));
            }
        }
    }
    for (key, listener) in stats.listeners() {
        let most = listener.sockets.saturating_mul(u64::from(u32::MAX));
        if listener.sockets == 0 || listener.queue > most || listener.max > most {
            return Some(format!("listener {key:?}: {listener:?}"));
        }
        if key.family == Family::Ipv4 && key.address[4..] != [0; 12] {
            return Some(format!("IPv4 listener with IPv6-sized address: {key:?}"));
        }
    }
    // Every socket is one message of at least header + inet_diag_msg bytes.
    let most = delivered / (NLMSG_HDRLEN + INET_DIAG_MSG_LEN);
    if total > most as u64 {
        return Some(format!(
            "{total} sockets counted from {delivered} bytes (at most {most})"
        ));
    }
    // Rendering must not panic.
    let _ = render::table(stats);
    None
}

/// What a scrape would serve after this outcome: success 1 with every socket
/// series, or success 0 with none (never half-counted numbers).
fn check_served(stats: Option<&TcpStats>) -> Option<String> {
    METRICS.with(|metrics| {
        metrics.record(&Outcome {
            stats,
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
        });
        let text = metrics.encode();
        let success = format!(
            "sockdiag_collect_success{{collector=\"tcp\"}} {}",
            u8::from(stats.is_some())
        );
        if !text.contains(&success) {
            return Some(format!("served text lacks `{success}`"));
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("sockdiag_sockets{"))
            .count();
        let want = if stats.is_some() {
            Family::ALL.len() * TcpState::ALL.len()
        } else {
            0
        };
        (series != want).then(|| format!("{series} sockdiag_sockets series served, want {want}"))
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
    // `--flag=value` becomes two arguments at most; nothing is dropped.
    if out.len() < args.len() || out.len() > 2 * args.len() {
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
    // (a value that looks like a flag, `--cache.ttl=--log.level`, may stay).
    for arg in args.iter().take_while(|a| *a != "--") {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if cli::DOTTED_FLAGS.contains(&name) && !out.contains(&name.replace('.', "-")) {
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
        if let Ok(d) = cli::duration(arg) {
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
