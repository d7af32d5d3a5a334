//! One TCP collection: which dump requests to send, driving each dump to its
//! end through a [`Transport`], and folding the answers into [`TcpStats`].
//!
//! The default is one legacy TCPDIAG_GETSOCK dump with AF_UNSPEC (the kernel
//! walks its hash tables once for both families), falling back for good to
//! two SOCK_DIAG_BY_FAMILY dumps if the kernel refuses it. Every failure is a
//! [`CollectError`] that says which dump failed and why; a dump flagged
//! NLM_F_DUMP_INTR is retried once.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::aggregate::TcpStats;
use crate::diag::{DumpRequest, Family};
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

/// Sends dumps through a transport and aggregates their answers.
pub struct Collector<T> {
    transport: T,
    buffer: Vec<u8>,
    seq: u32,
    mode: DumpMode,
    /// Auto mode saw the kernel refuse the legacy request.
    legacy_refused: bool,
    deadline: Duration,
    stats: TcpStats,
}

impl<T: Transport> Collector<T> {
    pub fn new(transport: T, mode: DumpMode, deadline: Duration) -> Collector<T> {
        Collector {
            transport,
            buffer: vec![0; RECV_BUFFER],
            seq: 0,
            mode,
            legacy_refused: false,
            deadline,
            stats: TcpStats::default(),
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The requests the next collection sends.
    pub fn plan(&self) -> &'static [DumpRequest] {
        match self.mode {
            DumpMode::Legacy => LEGACY,
            DumpMode::ByFamily => BY_FAMILY,
            DumpMode::Auto if self.legacy_refused => BY_FAMILY,
            DumpMode::Auto => LEGACY,
        }
    }

    /// Runs one full collection. On error the transport is reset, so the
    /// next collection starts from a clean socket.
    pub fn collect(&mut self) -> Result<&TcpStats, CollectError> {
        let result = self.collect_inner();
        if let Err(error) = &result {
            if let Err(e) = self.transport.reset() {
                log::log(
                    Level::Warn,
                    "cannot reset the netlink socket after a failed dump",
                    &[("dump_error", error), ("err", &e)],
                );
            }
        }
        result.map(|()| &self.stats)
    }

    fn collect_inner(&mut self) -> Result<(), CollectError> {
        let mut retried = false;
        loop {
            self.stats.clear();
            let mut interrupted = None;
            for &request in self.plan() {
                match self.dump(request) {
                    Ok(progress) if progress.interrupted => interrupted = Some(request),
                    Ok(_) => {}
                    Err(error) if self.is_legacy_refusal(&error) => {
                        self.legacy_refused = true;
                        log::log(
                            Level::Warn,
                            "the kernel refused the legacy AF_UNSPEC dump; using per-family dumps from now on",
                            &[("err", &error)],
                        );
                        let _ = self.transport.reset();
                        return self.collect_inner();
                    }
                    Err(error) => return Err(error),
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

    /// In auto mode, a kernel error answering the legacy request (before any
    /// socket arrived) means "use the other request", not "fail".
    fn is_legacy_refusal(&self, error: &CollectError) -> bool {
        self.mode == DumpMode::Auto
            && !self.legacy_refused
            && error.request == DumpRequest::Legacy.name()
            && matches!(
                error.kind,
                ErrorKind::Parse(ParseError::KernelError { .. } | ParseError::DoneError { .. })
            )
            && self.stats.sockets == crate::aggregate::ByState::default()
    }

    /// Sends one request and reads its answer to NLMSG_DONE.
    fn dump(&mut self, request: DumpRequest) -> Result<Progress, CollectError> {
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
        };
        let mut progress = Progress::default();
        let started = Instant::now();
        let Collector {
            transport,
            buffer,
            stats,
            ..
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
            walk_datagram(&buffer[..len], &expect, &mut progress, |m| stats.add(m))
                .map_err(|e| fail(ErrorKind::Parse(e)))?;
        }
        Ok(progress)
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
        Collector::new(script, mode, Duration::from_secs(5))
    }

    #[test]
    fn legacy_dump_counts_both_families_in_one_request() {
        let mut datagram = sock(TCPDIAG_GETSOCK, AF_INET, 1, 0);
        datagram.extend(sock(TCPDIAG_GETSOCK, AF_INET6, 1, 0));
        let script = Script::default().answer(vec![Ok(datagram), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Auto);
        let stats = c.collect().unwrap().clone();
        assert_eq!(stats.total(TcpState::Established), 2);
        assert_eq!(c.transport().sent, vec![(DumpRequest::Legacy, 1)]);
    }

    #[test]
    fn by_family_mode_sends_two_dumps() {
        let script = Script::default()
            .answer(vec![Ok(sock(20, AF_INET, 8, 0)), Ok(done(0))])
            .answer(vec![Ok(sock(20, AF_INET6, 8, 0)), Ok(done(0))]);
        let mut c = collector(script, DumpMode::ByFamily);
        let stats = c.collect().unwrap().clone();
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
        assert_eq!(c.collect().unwrap().total(TcpState::Established), 1);
        c.collect().unwrap();
        let sent: Vec<_> = c.transport().sent.iter().map(|s| s.0).collect();
        assert_eq!(sent[0], DumpRequest::Legacy);
        assert_eq!(&sent[1..], [BY_FAMILY, BY_FAMILY].concat());
    }

    #[test]
    fn forced_legacy_reports_the_refusal() {
        let script = Script::default().answer(vec![Ok(error(libc::EOPNOTSUPP))]);
        let mut c = collector(script, DumpMode::Legacy);
        let err = c.collect().unwrap_err();
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
        let err = c.collect().unwrap_err();
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
        assert_eq!(c.collect().unwrap().total(TcpState::Established), 1);

        let script = Script::default()
            .answer(vec![intr(), Ok(done(0))])
            .answer(vec![intr(), Ok(done(0))]);
        let mut c = collector(script, DumpMode::Legacy);
        assert!(matches!(
            c.collect().unwrap_err().kind,
            ErrorKind::Interrupted
        ));
    }

    #[test]
    fn eof_oversize_and_io_errors_are_reported() {
        let script = Script::default().answer(vec![Ok(sock(TCPDIAG_GETSOCK, AF_INET, 1, 0))]);
        let err = collector(script, DumpMode::Legacy).collect().unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Eof), "{err}");

        let script = Script::default().answer(vec![Ok(vec![0; RECV_BUFFER + 4])]);
        let err = collector(script, DumpMode::Legacy).collect().unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Oversized { len } if len == RECV_BUFFER + 4));

        let script =
            Script::default().answer(vec![Err(io::Error::from_raw_os_error(libc::ENOBUFS))]);
        let err = collector(script, DumpMode::Legacy).collect().unwrap_err();
        assert!(err.to_string().contains("No buffer space"), "{err}");

        let script = Script::default().answer(vec![Err(io::ErrorKind::WouldBlock.into())]);
        let err = collector(script, DumpMode::Legacy).collect().unwrap_err();
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
        assert_eq!(c.collect().unwrap().total(TcpState::Established), 1);
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
        assert!(c.collect().is_err());
        let stats = c.collect().unwrap();
        assert_eq!(stats.total(TcpState::Established), 0);
        assert_eq!(stats.total(TcpState::SynSent), 1);
    }
}
