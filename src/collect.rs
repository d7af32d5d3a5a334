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
//! come back in [`Kind::ALL`] order.

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
    #[cfg(any(test, feature = "testing"))]
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

/// What identifies a collector's failure across collections: the dump,
/// the kind of failure and the errno where there is one (offsets and
/// lengths left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorKey {
    request: &'static str,
    kind: std::mem::Discriminant<ErrorKind>,
    parse: Option<std::mem::Discriminant<ParseError>>,
    errno: Option<i32>,
}

impl crate::outcome::Problem for CollectError {
    type Key = ErrorKey;
    fn key(&self) -> ErrorKey {
        let (parse, errno) = match &self.kind {
            ErrorKind::Open(e) | ErrorKind::Send(e) | ErrorKind::Recv(e) => {
                (None, e.raw_os_error())
            }
            ErrorKind::Parse(e) => (
                Some(std::mem::discriminant(e)),
                match e {
                    ParseError::KernelError { errno } | ParseError::DoneError { errno } => {
                        Some(*errno)
                    }
                    _ => None,
                },
            ),
            _ => (None, None),
        };
        ErrorKey {
            request: self.request,
            kind: std::mem::discriminant(&self.kind),
            parse,
            errno,
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
                    Kind::Listeners => dumper.run(LISTEN, self.listen),
                    Kind::Udp => dumper.run(UDP, self.udp),
                    Kind::Unix => dumper.run(UNIX, self.unix),
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

/// The TCP requests for `mode`, once auto mode has (or has not) seen the
/// kernel refuse the legacy request.
fn tcp_plan(mode: DumpMode, legacy_refused: bool) -> &'static [DumpRequest] {
    match mode {
        DumpMode::Legacy => LEGACY,
        DumpMode::ByFamily => BY_FAMILY,
        DumpMode::Auto if legacy_refused => BY_FAMILY,
        DumpMode::Auto => LEGACY,
    }
}

/// The TCP collector: the main dumper, the dump mode, the auto-mode
/// fallback state and the stats, borrowed apart from the side collectors'.
struct TcpPart<'a, T> {
    dumper: &'a mut Dumper<T>,
    mode: DumpMode,
    legacy_refused: &'a mut bool,
    stats: &'a mut TcpStats,
}

impl<T: Transport> TcpPart<'_, T> {
    /// Runs the TCP dumps, falling back from the legacy request in auto
    /// mode.
    fn collect(&mut self) -> Result<(), CollectError> {
        match self
            .dumper
            .run(tcp_plan(self.mode, *self.legacy_refused), self.stats)
        {
            Err(error) if self.is_legacy_refusal(&error) => {
                *self.legacy_refused = true;
                log::log(
                    Level::Warn,
                    "the kernel refused the legacy AF_UNSPEC dump; using per-family dumps from now on",
                    &[("err", &error)],
                );
                self.dumper.run(tcp_plan(self.mode, true), self.stats)
            }
            result => result,
        }
    }

    /// In auto mode, a kernel error answering the legacy request (before any
    /// socket arrived) that says "not supported" means "use the other
    /// request", not "fail". Transient errors (EBUSY, ENOMEM, ENOBUFS, ...)
    /// fail this collection and leave the legacy request in use.
    fn is_legacy_refusal(&self, error: &CollectError) -> bool {
        self.mode == DumpMode::Auto
            && !*self.legacy_refused
            && error.request == DumpRequest::Legacy.name()
            && matches!(
                error.kind,
                ErrorKind::Parse(
                    ParseError::KernelError { errno } | ParseError::DoneError { errno }
                ) if is_unsupported(errno)
            )
            && self.stats.sockets == crate::aggregate::ByState::default()
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
        /// The thread each request was sent from.
        threads: Vec<std::thread::ThreadId>,
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
            self.threads.push(std::thread::current().id());
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

    // -- side transport ----------------------------------------------------

    use crate::parse::tests::{inet_with_drops, unix_diag_msg};

    const SIDE_REQUESTS: [DumpRequest; 5] = [
        DumpRequest::Listen(Family::Ipv4),
        DumpRequest::Listen(Family::Ipv6),
        DumpRequest::Udp(Family::Ipv4),
        DumpRequest::Udp(Family::Ipv6),
        DumpRequest::Unix,
    ];

    fn listener() -> Vec<u8> {
        let body = inet_with_drops(AF_INET, 10, v4([127, 0, 0, 1]), 22, 0, 0, 128, 3);
        nlmsg(20, 2, 0, 0, &body)
    }

    fn udp_sock() -> Vec<u8> {
        let body = inet_with_drops(AF_INET, 7, v4([127, 0, 0, 1]), 53, 0, 0, 0, 1);
        nlmsg(20, 2, 0, 0, &body)
    }

    fn unix_sock() -> Vec<u8> {
        nlmsg(20, 2, 0, 0, &unix_diag_msg(1, 1, None, 0, 0))
    }

    fn tcp_answer() -> Script {
        Script::default().answer(vec![Ok(sock(TCPDIAG_GETSOCK, AF_INET, 1, 0)), Ok(done(0))])
    }

    /// Good answers for listeners (v4, v6), udp (v4, v6) and unix, in order.
    fn side_answers() -> Script {
        Script::default()
            .answer(vec![Ok(listener()), Ok(done(0))])
            .answer(vec![Ok(done(0))])
            .answer(vec![Ok(udp_sock()), Ok(done(0))])
            .answer(vec![Ok(done(0))])
            .answer(vec![Ok(unix_sock()), Ok(done(0))])
    }

    fn all_on(deadline: Duration) -> Options {
        Options {
            tcp_dump: DumpMode::Legacy,
            deadline,
            ..Options::default()
        }
    }

    fn requests(script: &Script) -> Vec<DumpRequest> {
        script.sent.iter().map(|s| s.0).collect()
    }

    fn kinds(reports: &[Report]) -> Vec<Kind> {
        reports.iter().map(|r| r.kind).collect()
    }

    fn failed(reports: &[Report]) -> Vec<Kind> {
        reports
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.kind)
            .collect()
    }

    fn unix_total(stats: &UnixStats) -> u64 {
        stats.sockets.iter().flatten().sum()
    }

    #[test]
    fn side_collectors_run_on_the_side_transport_on_another_thread() {
        let mut c =
            Collector::new(tcp_answer(), all_on(Duration::from_secs(5))).with_side(side_answers());
        let reports = c.collect();
        assert_eq!(kinds(&reports), Kind::ALL);
        assert_eq!(failed(&reports), []);

        let me = std::thread::current().id();
        let main = c.transport();
        let side = c.side_transport().unwrap();
        assert_eq!(requests(main), [DumpRequest::Legacy]);
        assert_eq!(requests(side), SIDE_REQUESTS);
        assert_eq!(main.threads, [me]);
        assert!(side.threads.iter().all(|t| *t != me), "side ran here");
        assert!(side.threads.windows(2).all(|w| w[0] == w[1]));

        assert_eq!(c.tcp.total(TcpState::Established), 1);
        assert_eq!(c.listen.listeners().len(), 1);
        assert_eq!(c.udp.sockets[0], [1, 0]);
        assert_eq!(unix_total(&c.unix), 1);
    }

    #[test]
    fn a_failing_side_collector_does_not_blank_tcp_or_the_others() {
        let side = Script::default()
            .answer(vec![Ok(listener()), Ok(done(0))])
            .answer(vec![Ok(done(0))])
            .answer(vec![Ok(error(libc::EBUSY))])
            .answer(vec![Ok(unix_sock()), Ok(done(0))]);
        let mut c = Collector::new(tcp_answer(), all_on(Duration::from_secs(5))).with_side(side);
        let reports = c.collect();
        assert_eq!(kinds(&reports), Kind::ALL);
        assert_eq!(failed(&reports), [Kind::Udp]);
        let error = reports[2].error.as_ref().unwrap();
        assert_eq!(error.request, DumpRequest::Udp(Family::Ipv4).name());
        assert_eq!(c.tcp.total(TcpState::Established), 1);
        assert_eq!(c.listen.listeners().len(), 1);
        assert_eq!(unix_total(&c.unix), 1);
        // The failure reset the side transport only.
        assert_eq!(c.side_transport().unwrap().resets, 1);
        assert_eq!(c.transport().resets, 0);
    }

    #[test]
    fn a_failing_tcp_collector_does_not_blank_the_side_ones() {
        let main = Script::default().answer(vec![Ok(error(libc::EBUSY))]);
        let mut c = Collector::new(main, all_on(Duration::from_secs(5))).with_side(side_answers());
        let reports = c.collect();
        assert_eq!(kinds(&reports), Kind::ALL);
        assert_eq!(failed(&reports), [Kind::Tcp]);
        assert_eq!(c.listen.listeners().len(), 1);
        assert_eq!(c.udp.sockets[0], [1, 0]);
        assert_eq!(unix_total(&c.unix), 1);
        assert_eq!(c.transport().resets, 1);
        assert_eq!(c.side_transport().unwrap().resets, 0);
    }

    #[test]
    fn no_thread_and_no_side_transport_when_nothing_overlaps() {
        let me = std::thread::current().id();

        // tcp alone: the side transport stays unused.
        let options = Options::tcp_only(DumpMode::Legacy, Duration::from_secs(5));
        assert!(!options.wants_side());
        let mut c = Collector::new(tcp_answer(), options).with_side(Script::default());
        assert_eq!(kinds(&c.collect()), [Kind::Tcp]);
        assert_eq!(c.transport().threads, [me]);
        assert!(c.side_transport().unwrap().sent.is_empty());

        // No tcp: the side collectors run here, on the main transport.
        let options = Options {
            tcp: false,
            ..all_on(Duration::from_secs(5))
        };
        assert!(!options.wants_side());
        let mut c = Collector::new(side_answers(), options).with_side(Script::default());
        let reports = c.collect();
        assert_eq!(kinds(&reports), &Kind::ALL[1..]);
        assert_eq!(failed(&reports), []);
        assert_eq!(requests(c.transport()), SIDE_REQUESTS);
        assert!(c.transport().threads.iter().all(|t| *t == me));
        assert!(c.side_transport().unwrap().sent.is_empty());
    }

    #[test]
    fn without_a_side_transport_everything_runs_in_order_here() {
        let mut main = tcp_answer();
        main.answers.extend(side_answers().answers);
        let mut c = Collector::new(main, all_on(Duration::from_secs(5)));
        assert!(c.side_transport().is_none());
        let reports = c.collect();
        assert_eq!(kinds(&reports), Kind::ALL);
        assert_eq!(failed(&reports), []);
        let mut want = vec![DumpRequest::Legacy];
        want.extend(SIDE_REQUESTS);
        assert_eq!(requests(c.transport()), want);
        let me = std::thread::current().id();
        assert!(c.transport().threads.iter().all(|t| *t == me));
    }

    /// A transport that panics when asked anything.
    struct Explodes;

    impl Transport for Explodes {
        fn send(&mut self, _request: &[u8]) -> io::Result<()> {
            panic!("side transport exploded");
        }
        fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
        fn port(&self) -> u32 {
            0
        }
        fn reset(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_on_the_side_thread_reaches_the_caller() {
        let mut c =
            Collector::new(tcp_answer(), all_on(Duration::from_secs(5))).with_side(Explodes);
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.collect()))
            .expect_err("the side thread's panic was swallowed");
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"side transport exploded")
        );
    }

    /// A transport whose dumps never answer: each recv blocks for the
    /// timeout it was given, then fails like SO_RCVTIMEO does.
    #[derive(Default)]
    struct Stalls {
        timeout: Duration,
    }

    impl Transport for Stalls {
        fn send(&mut self, _request: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.timeout);
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
            self.timeout = timeout;
            Ok(())
        }
        fn port(&self) -> u32 {
            0
        }
        fn reset(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_side_dump_ends_at_the_deadline_and_tcp_still_succeeds() {
        let deadline = Duration::from_millis(100);
        let options = Options {
            listeners: false,
            unix: false,
            ..all_on(deadline)
        };
        let mut c = Collector::new(tcp_answer(), options).with_side(Stalls::default());
        let reports = c.collect();
        assert_eq!(kinds(&reports), [Kind::Tcp, Kind::Udp]);
        assert_eq!(failed(&reports), [Kind::Udp]);
        let udp = &reports[1];
        assert!(
            matches!(udp.error.as_ref().unwrap().kind, ErrorKind::Deadline(d) if d == deadline),
            "{:?}",
            udp.error
        );
        assert!(udp.duration >= deadline, "{:?}", udp.duration);
        assert_eq!(c.tcp.total(TcpState::Established), 1);
    }
}
