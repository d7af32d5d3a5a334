//! The collector driver against scripted transports: which socket each
//! request goes to, failure isolation, the side thread.

use super::tcp::BY_FAMILY;
use super::unix::UnixStats;
use super::*;
use crate::kernel::diag::{TcpState, AF_INET, AF_INET6, NLMSG_DONE, NLMSG_ERROR, TCPDIAG_GETSOCK};
use crate::kernel::dump::{ErrorKind, RECV_BUFFER};
use crate::kernel::parse::tests::{inet_diag_msg, nlmsg, v4};
use std::collections::VecDeque;
use std::io;

use crate::kernel::diag::DumpRequest;

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
                    at += crate::kernel::diag::nlmsg_align(len);
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
            crate::kernel::diag::NLM_F_DUMP_INTR,
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

    let script = Script::default().answer(vec![Err(io::Error::from_raw_os_error(libc::ENOBUFS))]);
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

use crate::kernel::parse::tests::{inet_with_drops, unix_diag_msg};

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

    assert_eq!(c.stats().tcp.total(TcpState::Established), 1);
    assert_eq!(c.stats().listen.listeners().len(), 1);
    assert_eq!(c.stats().udp.sockets[0], [1, 0]);
    assert_eq!(unix_total(c.stats().unix), 1);
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
    assert_eq!(c.stats().tcp.total(TcpState::Established), 1);
    assert_eq!(c.stats().listen.listeners().len(), 1);
    assert_eq!(unix_total(c.stats().unix), 1);
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
    assert_eq!(c.stats().listen.listeners().len(), 1);
    assert_eq!(c.stats().udp.sockets[0], [1, 0]);
    assert_eq!(unix_total(c.stats().unix), 1);
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
        enabled: Kind::ALL[1..].to_vec(),
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

#[test]
fn collect_only_runs_the_named_enabled_collectors_and_keeps_the_others_counts() {
    let me = std::thread::current().id();
    let udp = || {
        Script::default()
            .answer(vec![Ok(udp_sock()), Ok(done(0))])
            .answer(vec![Ok(udp_sock()), Ok(done(0))])
    };
    let mut main = tcp_answer();
    // The second collection finds one udp socket, the first two.
    main.answers.extend(
        Script::default()
            .answer(vec![Ok(udp_sock()), Ok(done(0))])
            .answer(vec![Ok(done(0))])
            .answers,
    );
    let options = Options {
        enabled: vec![Kind::Tcp, Kind::Udp],
        ..all_on(Duration::from_secs(5))
    };
    let mut c = Collector::new(main, options).with_side(udp());
    assert_eq!(kinds(&c.collect()), [Kind::Tcp, Kind::Udp]);
    assert_eq!(c.stats().udp.sockets[0], [2, 0]);
    let udp_requests = [
        DumpRequest::Udp(Family::Ipv4),
        DumpRequest::Udp(Family::Ipv6),
    ];
    assert_eq!(requests(c.side_transport().unwrap()), udp_requests);
    // udp alone (and unix, which the flags disabled): nothing overlaps, so
    // it runs here, through the main transport, and only udp reports.
    let reports = c.collect_only(KindSet::of(&[Kind::Udp, Kind::Unix]));
    assert_eq!(kinds(&reports), [Kind::Udp]);
    assert_eq!(failed(&reports), []);
    let mut want = vec![DumpRequest::Legacy];
    want.extend(udp_requests);
    assert_eq!(requests(c.transport()), want);
    assert_eq!(requests(c.side_transport().unwrap()), udp_requests);
    assert!(c.transport().threads.iter().all(|t| *t == me));
    assert_eq!(c.stats().udp.sockets[0], [1, 0], "udp recounted");
    assert_eq!(
        c.stats().tcp.total(TcpState::Established),
        1,
        "tcp's counts stay from its last collection"
    );
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
    let mut c = Collector::new(tcp_answer(), all_on(Duration::from_secs(5))).with_side(Explodes);
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
        enabled: vec![Kind::Tcp, Kind::Udp],
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
    assert_eq!(c.stats().tcp.total(TcpState::Established), 1);
}
