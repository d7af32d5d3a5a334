//! Collections: which dump requests each collector sends, driving each dump
//! to its end through a [`Transport`] ([`Dumper`]), and folding the answers
//! into the collector's stats.
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

use std::fmt;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::aggregate::{ListenStats, PortSet, TcpStats, UdpStats, UnixStats};
use crate::diag::{DumpRequest, Family, INET_DIAG_MSG_LEN, UNIX_DIAG_MSG_LEN};
use crate::log::{self, Level};
use crate::parse::{walk_datagram, Expect, ParseError, Progress};
use crate::transport::Transport;

/// Bytes per recv. The kernel fills at most SKB_WITH_OVERHEAD(32768) per
/// dump datagram, so 32 KiB always holds one; MSG_TRUNC catches the rest.
pub const RECV_BUFFER: usize = 32 * 1024;

/// Which requests a collection uses (`--collector.tcp.dump`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpMode {
    /// Legacy first; per-family from the first refusal on.
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

const LEGACY: &[DumpRequest] = &[DumpRequest::Legacy];
const BY_FAMILY: &[DumpRequest] = &[
    DumpRequest::ByFamily(Family::Ipv4),
    DumpRequest::ByFamily(Family::Ipv6),
];
const LISTEN: &[DumpRequest] = &[
    DumpRequest::Listen(Family::Ipv4),
    DumpRequest::Listen(Family::Ipv6),
];
const UDP: &[DumpRequest] = &[
    DumpRequest::Udp(Family::Ipv4),
    DumpRequest::Udp(Family::Ipv6),
];
const UNIX: &[DumpRequest] = &[DumpRequest::Unix];

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

    pub fn enabled(&self, kind: Kind) -> bool {
        match kind {
            Kind::Tcp => self.tcp,
            Kind::Listeners => self.listeners,
            Kind::Udp => self.udp,
            Kind::Unix => self.unix,
        }
    }
}

/// Why a collection failed.
#[derive(Debug)]
pub struct CollectError {
    /// The dump that failed ("legacy", "by-family ipv4", ...).
    pub request: &'static str,
    pub kind: ErrorKind,
}

#[derive(Debug)]
pub enum ErrorKind {
    /// Opening or resetting the netlink socket.
    Open(io::Error),
    Send(io::Error),
    Recv(io::Error),
    /// No complete answer within the deadline.
    Deadline(Duration),
    /// The transport ended before NLMSG_DONE.
    Eof,
    /// A datagram larger than the receive buffer (it was truncated).
    Oversized {
        len: usize,
    },
    Parse(ParseError),
    /// NLM_F_DUMP_INTR on the dump and on its retry.
    Interrupted,
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dump: ", self.request)?;
        match &self.kind {
            ErrorKind::Open(e) => write!(f, "cannot open the NETLINK_SOCK_DIAG socket: {e}"),
            ErrorKind::Send(e) => write!(f, "cannot send the request: {e}"),
            ErrorKind::Recv(e) => write!(f, "cannot receive: {e}"),
            ErrorKind::Deadline(d) => write!(f, "no complete answer within {d:?}"),
            ErrorKind::Eof => write!(f, "the answer ended before NLMSG_DONE"),
            ErrorKind::Oversized { len } => write!(
                f,
                "a {len}-byte datagram did not fit the {RECV_BUFFER}-byte receive buffer"
            ),
            ErrorKind::Parse(e) => write!(f, "{e}"),
            ErrorKind::Interrupted => write!(
                f,
                "the kernel flagged the dump inconsistent (NLM_F_DUMP_INTR) twice in a row"
            ),
        }
    }
}

impl std::error::Error for CollectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Open(e) | ErrorKind::Send(e) | ErrorKind::Recv(e) => Some(e),
            ErrorKind::Parse(e) => Some(e),
            _ => None,
        }
    }
}

/// Where a dump's sockets go: one stats type per collector.
pub trait Sink {
    /// Forgets the previous collection (before the first dump and a retry).
    fn clear(&mut self);
    /// Folds one socket message's payload (struct and attributes) in.
    fn add(&mut self, payload: &[u8]) -> Result<(), ParseError>;
}

macro_rules! sink {
    ($($stats:ty),*) => {$(
        impl Sink for $stats {
            fn clear(&mut self) {
                <$stats>::clear(self)
            }
            #[inline]
            fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
                <$stats>::add(self, payload)
            }
        }
    )*};
}
sink!(TcpStats, ListenStats, UdpStats, UnixStats);

/// Drives dumps through one transport: sequence numbers, the receive
/// buffer, deadlines, DUMP_INTR retries, and a reset after any failure.
pub struct Dumper<T> {
    transport: T,
    buffer: Vec<u8>,
    seq: u32,
    deadline: Duration,
}

impl<T: Transport> Dumper<T> {
    pub fn new(transport: T, deadline: Duration) -> Dumper<T> {
        Dumper {
            transport,
            buffer: vec![0; RECV_BUFFER],
            seq: 0,
            deadline,
        }
    }

    /// Runs every request of `plan` into `sink` (cleared first). If a dump
    /// was flagged NLM_F_DUMP_INTR the whole plan runs once more. On error
    /// the transport is reset, so the next collection starts from a clean
    /// socket.
    pub fn run<S: Sink>(&mut self, plan: &[DumpRequest], sink: &mut S) -> Result<(), CollectError> {
        let result = self.run_inner(plan, sink);
        if let Err(error) = &result {
            self.reset(error);
        }
        result
    }

    fn reset(&mut self, error: &CollectError) {
        if let Err(e) = self.transport.reset() {
            log::log(
                Level::Warn,
                "cannot reset the netlink socket after a failed dump",
                &[("dump_error", error), ("err", &e)],
            );
        }
    }

    fn run_inner<S: Sink>(
        &mut self,
        plan: &[DumpRequest],
        sink: &mut S,
    ) -> Result<(), CollectError> {
        let mut retried = false;
        loop {
            sink.clear();
            let mut interrupted = None;
            for &request in plan {
                if self.dump(request, sink)?.interrupted {
                    interrupted = Some(request);
                }
            }
            match interrupted {
                None => return Ok(()),
                Some(request) if retried => {
                    return Err(CollectError {
                        request: request.name(),
                        kind: ErrorKind::Interrupted,
                    })
                }
                Some(request) => {
                    log::log(
                        Level::Debug,
                        "dump interrupted by table changes (NLM_F_DUMP_INTR); retrying once",
                        &[("dump", &request.name())],
                    );
                    retried = true;
                }
            }
        }
    }

    /// Sends one request and reads its answer to NLMSG_DONE.
    fn dump<S: Sink>(
        &mut self,
        request: DumpRequest,
        sink: &mut S,
    ) -> Result<Progress, CollectError> {
        let fail = |kind| CollectError {
            request: request.name(),
            kind,
        };
        self.seq = self.seq.wrapping_add(1).max(1);
        self.transport
            .send(&request.encode(self.seq))
            .map_err(|e| fail(ErrorKind::Send(e)))?;
        let expect = Expect {
            seq: self.seq,
            port: self.transport.port(),
            data_type: request.response_type(),
            min_payload: match request {
                DumpRequest::Unix => UNIX_DIAG_MSG_LEN,
                _ => INET_DIAG_MSG_LEN,
            },
        };
        let mut progress = Progress::default();
        let started = Instant::now();
        let Dumper {
            transport, buffer, ..
        } = self;
        while !progress.done {
            // Each recv may block only for what is left of the deadline, so
            // a dump that stalls late still ends on time.
            let left = self.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(fail(ErrorKind::Deadline(self.deadline)));
            }
            transport
                .set_recv_timeout(left)
                .map_err(|e| fail(ErrorKind::Recv(e)))?;
            let len = match transport.recv(buffer) {
                Ok(0) => return Err(fail(ErrorKind::Eof)),
                Ok(len) if len > buffer.len() => return Err(fail(ErrorKind::Oversized { len })),
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(fail(ErrorKind::Deadline(self.deadline)))
                }
                Err(e) => return Err(fail(ErrorKind::Recv(e))),
            };
            walk_datagram(&buffer[..len], &expect, &mut progress, |m| sink.add(m))
                .map_err(|e| fail(ErrorKind::Parse(e)))?;
        }
        Ok(progress)
    }
}

/// Borrowed stats of every collector, for the metrics and the table.
#[derive(Clone, Copy)]
pub struct Stats<'a> {
    pub tcp: &'a TcpStats,
    pub listen: &'a ListenStats,
    pub udp: &'a UdpStats,
    pub unix: &'a UnixStats,
}

/// Owned stats of every collector, for tests that build stats by hand.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct OwnedStats {
    pub tcp: TcpStats,
    pub listen: ListenStats,
    pub udp: UdpStats,
    pub unix: UnixStats,
}

#[cfg(test)]
impl OwnedStats {
    pub fn stats(&self) -> Stats<'_> {
        Stats {
            tcp: &self.tcp,
            listen: &self.listen,
            udp: &self.udp,
            unix: &self.unix,
        }
    }
}

/// Errnos with which a kernel refuses a request it does not support.
fn is_unsupported(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT)
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

/// The enabled collectors, sharing one netlink socket, and their latest
/// stats (valid for the collectors whose last report has no error).
pub struct Collector<T> {
    dumper: Dumper<T>,
    options: Options,
    /// Auto mode saw the kernel refuse the legacy request.
    legacy_refused: bool,
    pub tcp: TcpStats,
    pub listen: ListenStats,
    pub udp: UdpStats,
    pub unix: UnixStats,
}

impl<T: Transport> Collector<T> {
    pub fn new(transport: T, options: Options) -> Collector<T> {
        Collector {
            dumper: Dumper::new(transport, options.deadline),
            tcp: TcpStats::new(options.tcp_ports.clone()).with_cgroups(options.cgroup),
            udp: UdpStats::new(options.udp_ports.clone()),
            listen: ListenStats::default(),
            unix: UnixStats::default(),
            options,
            legacy_refused: false,
        }
    }

    pub fn transport(&self) -> &T {
        &self.dumper.transport
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The TCP requests the next collection sends.
    pub fn plan(&self) -> &'static [DumpRequest] {
        match self.options.tcp_dump {
            DumpMode::Legacy => LEGACY,
            DumpMode::ByFamily => BY_FAMILY,
            DumpMode::Auto if self.legacy_refused => BY_FAMILY,
            DumpMode::Auto => LEGACY,
        }
    }

    /// The latest stats of every collector.
    pub fn stats(&self) -> Stats<'_> {
        Stats {
            tcp: &self.tcp,
            listen: &self.listen,
            udp: &self.udp,
            unix: &self.unix,
        }
    }

    /// Runs every enabled collector once, each to its own outcome.
    pub fn collect(&mut self) -> Vec<Report> {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|kind| self.options.enabled(*kind))
            .collect();
        kinds
            .into_iter()
            .map(|kind| {
                let started = SystemTime::now();
                let clock = Instant::now();
                let error = self.collect_one(kind).err();
                Report {
                    kind,
                    started,
                    duration: clock.elapsed(),
                    error,
                }
            })
            .collect()
    }

    /// Runs one collector.
    pub fn collect_one(&mut self, kind: Kind) -> Result<(), CollectError> {
        match kind {
            Kind::Tcp => self.collect_tcp().map(|_| ()),
            Kind::Listeners => self.dumper.run(LISTEN, &mut self.listen),
            Kind::Udp => self.dumper.run(UDP, &mut self.udp),
            Kind::Unix => self.dumper.run(UNIX, &mut self.unix),
        }
    }

    /// Runs the TCP collector, falling back from the legacy request in auto
    /// mode.
    pub fn collect_tcp(&mut self) -> Result<&TcpStats, CollectError> {
        match self.dumper.run(self.plan(), &mut self.tcp) {
            Err(error) if self.is_legacy_refusal(&error) => {
                self.legacy_refused = true;
                log::log(
                    Level::Warn,
                    "the kernel refused the legacy AF_UNSPEC dump; using per-family dumps from now on",
                    &[("err", &error)],
                );
                self.dumper.run(self.plan(), &mut self.tcp)?;
            }
            result => result?,
        }
        Ok(&self.tcp)
    }

    /// In auto mode, a kernel error answering the legacy request (before any
    /// socket arrived) that says "not supported" means "use the other
    /// request", not "fail". Transient errors (EBUSY, ENOMEM, ENOBUFS, ...)
    /// fail this collection and leave the legacy request in use.
    fn is_legacy_refusal(&self, error: &CollectError) -> bool {
        self.options.tcp_dump == DumpMode::Auto
            && !self.legacy_refused
            && error.request == DumpRequest::Legacy.name()
            && matches!(
                error.kind,
                ErrorKind::Parse(
                    ParseError::KernelError { errno } | ParseError::DoneError { errno }
                ) if is_unsupported(errno)
            )
            && self.tcp.sockets == crate::aggregate::ByState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{TcpState, AF_INET, AF_INET6, NLMSG_DONE, NLMSG_ERROR, TCPDIAG_GETSOCK};
    use crate::parse::tests::{inet_diag_msg, nlmsg, v4};
    use std::collections::VecDeque;

    /// A scripted kernel: for each request, a list of answers; records what
    /// was asked.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<Vec<io::Result<Vec<u8>>>>,
        current: VecDeque<io::Result<Vec<u8>>>,
        sent: Vec<(DumpRequest, u32)>,
        resets: usize,
    }

    impl Script {
        fn answer(mut self, datagrams: Vec<io::Result<Vec<u8>>>) -> Self {
            self.answers.push_back(datagrams);
            self
        }
    }

    impl Transport for Script {
        fn send(&mut self, request: &[u8]) -> io::Result<()> {
            self.sent.push(DumpRequest::decode(request).unwrap());
            self.current = self.answers.pop_front().unwrap_or_default().into();
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let seq = self.sent.last().unwrap().1;
            match self.current.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut d)) => {
                    // Answer with the request's sequence number, like the kernel.
                    let mut at = 0;
                    while at + 16 <= d.len() {
                        d[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
                        let len = u32::from_ne_bytes(d[at..at + 4].try_into().unwrap()) as usize;
                        if len < 16 {
                            break;
                        }
                        at += crate::diag::nlmsg_align(len);
                    }
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    Ok(d.len())
                }
            }
        }
        fn port(&self) -> u32 {
            0
        }
        fn reset(&mut self) -> io::Result<()> {
            self.resets += 1;
            self.current.clear();
            Ok(())
        }
    }

    fn sock(kind: u16, family: u8, state: u8, flags: u16) -> Vec<u8> {
        let body = inet_diag_msg(family, state, v4([127, 0, 0, 1]), 22, 999, 5, 6, 1);
        nlmsg(kind, 2 | flags, 0, 0, &body)
    }

    fn done(code: i32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, 2, 0, 0, &code.to_ne_bytes())
    }

    fn error(errno: i32) -> Vec<u8> {
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        nlmsg(NLMSG_ERROR, 0, 0, 0, &payload)
    }

    fn collector(script: Script, mode: DumpMode) -> Collector<Script> {
        Collector::new(script, Options::tcp_only(mode, Duration::from_secs(5)))
    }

    #[test]
    fn legacy_dump_counts_both_families_in_one_request() {
        let mut datagram = sock(TCPDIAG_GETSOCK, AF_INET, 1, 0);
        datagram.extend(sock(TCPDIAG_GETSOCK, AF_INET6, 1, 0));
        let script = Script::default().answer(vec![Ok(datagram), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Auto);
        let stats = c.collect_tcp().unwrap().clone();
        assert_eq!(stats.total(TcpState::Established), 2);
        assert_eq!(c.transport().sent, vec![(DumpRequest::Legacy, 1)]);
    }

    #[test]
    fn by_family_mode_sends_two_dumps() {
        let script = Script::default()
            .answer(vec![Ok(sock(20, AF_INET, 8, 0)), Ok(done(0))])
            .answer(vec![Ok(sock(20, AF_INET6, 8, 0)), Ok(done(0))]);
        let mut c = collector(script, DumpMode::ByFamily);
        let stats = c.collect_tcp().unwrap().clone();
        assert_eq!(stats.total(TcpState::CloseWait), 2);
        let sent: Vec<_> = c.transport().sent.iter().map(|s| s.0).collect();
        assert_eq!(sent, BY_FAMILY);
    }

    #[test]
    fn auto_falls_back_for_good_when_legacy_is_refused() {
        let script = Script::default()
            .answer(vec![Ok(error(libc::EOPNOTSUPP))])
            .answer(vec![Ok(sock(20, AF_INET, 1, 0)), Ok(done(0))])
            .answer(vec![Ok(done(0))])
            .answer(vec![Ok(done(0))])
            .answer(vec![Ok(done(0))]);
        let mut c = collector(script, DumpMode::Auto);
        assert_eq!(c.collect_tcp().unwrap().total(TcpState::Established), 1);
        c.collect_tcp().unwrap();
        let sent: Vec<_> = c.transport().sent.iter().map(|s| s.0).collect();
        assert_eq!(sent[0], DumpRequest::Legacy);
        assert_eq!(&sent[1..], [BY_FAMILY, BY_FAMILY].concat());
    }

    #[test]
    fn auto_keeps_legacy_after_a_transient_error() {
        let script = Script::default()
            .answer(vec![Ok(error(libc::EBUSY))])
            .answer(vec![Ok(sock(18, AF_INET, 1, 0)), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Auto);
        let err = c.collect_tcp().unwrap_err();
        assert!(err.to_string().contains("busy"), "{err}");
        assert_eq!(c.collect_tcp().unwrap().total(TcpState::Established), 1);
        let sent: Vec<_> = c.transport().sent.iter().map(|s| s.0).collect();
        assert_eq!(sent, [DumpRequest::Legacy, DumpRequest::Legacy]);
    }

    #[test]
    fn forced_legacy_reports_the_refusal() {
        let script = Script::default().answer(vec![Ok(error(libc::EOPNOTSUPP))]);
        let mut c = collector(script, DumpMode::Legacy);
        let err = c.collect_tcp().unwrap_err();
        assert_eq!(err.request, "legacy");
        assert!(
            err.to_string().starts_with("legacy dump: kernel refused"),
            "{err}"
        );
        assert_eq!(c.transport().resets, 1);
    }

    #[test]
    fn done_error_fails_the_collection() {
        let script =
            Script::default().answer(vec![Ok(sock(20, AF_INET, 1, 0)), Ok(done(-libc::ENOENT))]);
        let mut c = collector(script, DumpMode::ByFamily);
        let err = c.collect_tcp().unwrap_err();
        assert!(matches!(
            err.kind,
            ErrorKind::Parse(ParseError::DoneError { errno: 2 })
        ));
    }

    #[test]
    fn interrupted_dump_is_retried_once_then_reported() {
        let intr = || {
            Ok(sock(
                TCPDIAG_GETSOCK,
                AF_INET,
                1,
                crate::diag::NLM_F_DUMP_INTR,
            ))
        };
        let script = Script::default()
            .answer(vec![intr(), Ok(done(0))])
            .answer(vec![Ok(sock(TCPDIAG_GETSOCK, AF_INET, 1, 0)), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Legacy);
        // The retry's count replaces the interrupted one: 1, not 2.
        assert_eq!(c.collect_tcp().unwrap().total(TcpState::Established), 1);

        let script = Script::default()
            .answer(vec![intr(), Ok(done(0))])
            .answer(vec![intr(), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Legacy);
        assert!(matches!(
            c.collect_tcp().unwrap_err().kind,
            ErrorKind::Interrupted
        ));
    }

    #[test]
    fn eof_oversize_and_io_errors_are_reported() {
        let script = Script::default().answer(vec![Ok(sock(TCPDIAG_GETSOCK, AF_INET, 1, 0))]);
        let err = collector(script, DumpMode::Legacy)
            .collect_tcp()
            .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Eof), "{err}");

        let script = Script::default().answer(vec![Ok(vec![0; RECV_BUFFER + 4])]);
        let err = collector(script, DumpMode::Legacy)
            .collect_tcp()
            .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Oversized { len } if len == RECV_BUFFER + 4));

        let script =
            Script::default().answer(vec![Err(io::Error::from_raw_os_error(libc::ENOBUFS))]);
        let err = collector(script, DumpMode::Legacy)
            .collect_tcp()
            .unwrap_err();
        assert!(err.to_string().contains("No buffer space"), "{err}");

        let script = Script::default().answer(vec![Err(io::ErrorKind::WouldBlock.into())]);
        let err = collector(script, DumpMode::Legacy)
            .collect_tcp()
            .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Deadline(_)), "{err}");
    }

    #[test]
    fn eintr_is_retried() {
        let script = Script::default().answer(vec![
            Err(io::Error::from_raw_os_error(libc::EINTR)),
            Ok(sock(TCPDIAG_GETSOCK, AF_INET, 1, 0)),
            Ok(done(0)),
        ]);
        let mut c = collector(script, DumpMode::Legacy);
        assert_eq!(c.collect_tcp().unwrap().total(TcpState::Established), 1);
    }

    #[test]
    fn a_failed_collection_does_not_leak_into_the_next() {
        let script = Script::default()
            .answer(vec![
                Ok(sock(TCPDIAG_GETSOCK, AF_INET, 1, 0)),
                Ok(vec![1, 2, 3]),
            ])
            .answer(vec![Ok(sock(TCPDIAG_GETSOCK, AF_INET, 2, 0)), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Legacy);
        assert!(c.collect_tcp().is_err());
        let stats = c.collect_tcp().unwrap();
        assert_eq!(stats.total(TcpState::Established), 0);
        assert_eq!(stats.total(TcpState::SynSent), 1);
    }
}
