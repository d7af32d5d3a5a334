//! Netlink faults, end to end. Each fixture in tests/fixtures/faults/
//! scripts one fault the kernel's socket can show in the TCP dump (written
//! by make_faults.py there), `times=N` collections in a row, then the
//! recorded good answers of every collector. The real server replays it
//! (`--source.fixture`, the same `Transport` path a live dump takes) and
//! every scrape is checked:
//!
//! * a failed TCP collection serves `sockdiag_collect_success{collector="tcp"} 0`
//!   and none of the TCP series (the "serve none" choice in docs/metrics.md),
//!   never a half-counted number, while the other collectors serve exactly
//!   their recorded numbers;
//! * a persistent fault logs one error line, not one per collection;
//! * the next collection after the fault recovers by itself, with exactly
//!   the numbers of the good dump, and says so once in the log;
//! * a stuck dump fails within `--collector.timeout`.
//!
//! ENOBUFS, EOF and the byte-level faults cannot be forced on a live
//! NETLINK_SOCK_DIAG socket (dumps are paced by our own recv, so its buffer
//! never overflows), so fixtures are the seam for those. Two faults can be
//! made on the real socket, and are tested at the end: a dump that stalls
//! (SO_RCVTIMEO must end it) and a new request on a socket still holding a
//! half-read dump (the kernel's EBUSY / stale answers; reset and retry).

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// `--collector.timeout` for these tests: long enough for a loaded machine
/// to finish the good dump, short enough to keep the stuck-dump tests quick.
const TIMEOUT_MS: u64 = 400;

/// Meta metrics: they change from collection to collection.
const META: &[&str] = &[
    "sockdiag_collect_duration_seconds",
    "sockdiag_collect_success",
    "sockdiag_collect_timestamp_seconds",
    "sockdiag_collections_total",
    "sockdiag_build_info",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What the good recording yields through `dump`: the numbers a recovered
/// server must serve.
fn good_numbers() -> Exposition {
    let good = fixtures().join("all_legacy.fixture");
    dump_metrics(&[
        "--collector.tcp.dump",
        "legacy",
        "--source.fixture",
        good.to_str().unwrap(),
    ])
}

fn collections(exp: &Exposition) -> f64 {
    exp.value("sockdiag_collections_total", &[("collector", "tcp")])
}

fn success(exp: &Exposition, collector: &str) -> f64 {
    exp.value("sockdiag_collect_success", &[("collector", collector)])
}

/// Every sockdiag_* series but the meta metrics, with its value.
fn numbers(exp: &Exposition) -> Vec<(String, Labels, f64)> {
    exp.samples
        .iter()
        .filter(|((name, _), _)| name.starts_with("sockdiag_") && !META.contains(&name.as_str()))
        .map(|((name, labels), v)| (name.clone(), labels.clone(), *v))
        .collect()
}

/// Whether a series comes from the TCP collector.
fn is_tcp(name: &str, labels: &Labels) -> bool {
    let protocol_tcp = labels.iter().any(|(k, v)| k == "protocol" && v == "tcp");
    match name {
        "sockdiag_sockets" | "sockdiag_receive_queue_bytes" | "sockdiag_send_queue_bytes" => {
            protocol_tcp
        }
        "sockdiag_port_sockets" => protocol_tcp,
        "sockdiag_listen_syn_queue" | "node_tcp_connection_states" => true,
        // From the tcp collector's dump too.
        name if name.starts_with("sockdiag_ephemeral_") => true,
        "sockdiag_remote_network_sockets" => true,
        _ => false,
    }
}

/// Scrapes until the server has run its `n`th collection (scrapes inside
/// the cache window are answered from the cache) and returns that body.
fn scrape_collection(server: &Server, n: f64) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exp = server.scrape();
        let seen = collections(&exp);
        assert!(seen <= n, "collection {n} skipped (at {seen})");
        if seen == n {
            return exp;
        }
        assert!(
            Instant::now() < deadline,
            "no collection {n} within 30 s; stderr:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for the server's stderr to hold `count` lines matching.
fn log_lines(server: &Server, matching: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = server
            .stderr()
            .lines()
            .filter(|l| l.contains(matching))
            .map(String::from)
            .collect();
        if lines.len() >= count || Instant::now() >= deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// TCP failed: success 0, no TCP series; every other collector succeeded
/// with exactly the good numbers.
fn assert_tcp_serves_none(exp: &Exposition, good: &Exposition, context: &str) {
    assert_eq!(success(exp, "tcp"), 0.0, "{context}: tcp success");
    for other in ["listeners", "udp", "unix"] {
        assert_eq!(success(exp, other), 1.0, "{context}: {other} success");
    }
    let served = numbers(exp);
    let tcp: Vec<_> = served.iter().filter(|(n, l, _)| is_tcp(n, l)).collect();
    assert!(
        tcp.is_empty(),
        "{context}: a failed collection served {tcp:?}"
    );
    let want: Vec<_> = numbers(good)
        .into_iter()
        .filter(|(n, l, _)| !is_tcp(n, l))
        .collect();
    assert_eq!(served, want, "{context}: the other collectors' numbers");
}

fn assert_good_numbers(exp: &Exposition, good: &Exposition, context: &str) {
    for collector in ["tcp", "listeners", "udp", "unix"] {
        assert_eq!(
            success(exp, collector),
            1.0,
            "{context}: {collector} success"
        );
    }
    let tcp = numbers(good)
        .iter()
        .filter(|(n, l, _)| is_tcp(n, l))
        .count();
    assert!(tcp >= 22, "the good dump has only {tcp} TCP series");
    assert_eq!(numbers(exp), numbers(good), "{context}");
}

/// The `# Expected error:` line of a fault fixture.
fn expected_error(fixture: &std::path::Path) -> String {
    let text = std::fs::read_to_string(fixture).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# Expected error: "))
        .unwrap_or_else(|| panic!("{}: no `# Expected error:` line", fixture.display()))
        .to_string()
}

/// Replays `faults/NAME.fixture`: `failures` failed TCP collections with
/// the fixture's expected error, then a recovered one. Returns the failed
/// collections' durations.
fn check_fault(name: &str, failures: usize) -> Vec<f64> {
    let fixture = fixtures().join("faults").join(format!("{name}.fixture"));
    let expect = expected_error(&fixture);
    let timeout = format!("{TIMEOUT_MS}ms");
    let server = Server::start(&[
        "--source.fixture",
        fixture.to_str().unwrap(),
        "--collector.tcp.dump",
        "legacy",
        "--collector.timeout",
        &timeout,
        "--cache.ttl",
        "10ms",
    ]);
    let good = good_numbers();
    let mut durations = Vec::new();
    for n in 1..=failures {
        let exp = scrape_collection(&server, n as f64);
        assert_tcp_serves_none(&exp, &good, &format!("{name}, collection {n}"));
        durations.push(exp.value("sockdiag_collect_duration_seconds", &[("collector", "tcp")]));
    }
    let exp = scrape_collection(&server, failures as f64 + 1.0);
    assert_good_numbers(&exp, &good, &format!("{name}, after the fault"));

    let recovered = log_lines(&server, "msg=\"collection recovered\"", 1);
    let errors = log_lines(&server, "level=error", 1);
    let context = format!("{name}: stderr:\n{}", server.stderr());
    assert_eq!(
        errors.len(),
        1,
        "one error line per persistent fault; {context}"
    );
    assert!(
        errors[0].contains("collection failed")
            && errors[0].contains("collector=tcp")
            && errors[0].contains(&expect),
        "the error line names the fault ({expect:?}); {context}"
    );
    assert_eq!(recovered.len(), 1, "recovery is logged once; {context}");
    assert!(recovered[0].contains(&expect), "{context}");
    durations
}

/// A fault that is no fault: the collection succeeds with the good numbers
/// and nothing is logged as an error.
fn check_harmless(name: &str) {
    let fixture = fixtures().join("faults").join(format!("{name}.fixture"));
    assert!(expected_error(&fixture).starts_with("none"));
    let server = Server::start(&[
        "--source.fixture",
        fixture.to_str().unwrap(),
        "--collector.tcp.dump",
        "legacy",
    ]);
    let exp = scrape_collection(&server, 1.0);
    assert_good_numbers(&exp, &good_numbers(), name);
    let errors = log_lines(&server, "level=error", 0);
    assert!(errors.is_empty(), "{name}: {errors:?}");
}

/// Asserts the stuck dumps ended at the deadline, not later. The upper bound
/// is generous (a loaded machine), but well under the 10 s a recv would
/// block without the per-recv timeout.
fn assert_deadline(durations: &[f64]) {
    let timeout = TIMEOUT_MS as f64 / 1000.0;
    for &d in durations {
        assert!(
            d >= timeout * 0.9 && d < timeout + 3.0,
            "a stuck dump took {d} s with --collector.timeout {timeout} s"
        );
    }
}

#[test]
fn enobufs_on_recv_fails_then_recovers() {
    check_fault("enobufs", 3);
}

#[test]
fn eintr_is_retried_not_a_failure() {
    check_harmless("eintr");
}

#[test]
fn endless_eintr_ends_at_the_deadline() {
    let durations = check_fault("eintr_storm", 3);
    assert_deadline(&durations);
}

#[test]
fn dump_intr_twice_fails_then_recovers() {
    // 6 flagged dumps: each collection retries once, so 3 collections fail.
    check_fault("dump_intr", 3);
}

#[test]
fn dump_intr_once_is_retried() {
    check_harmless("dump_intr_once");
}

#[test]
fn nlmsg_error_with_each_common_errno() {
    let cases = [
        ("eperm", "Operation not permitted"),
        ("enoent", "No such file or directory"),
        ("einval", "Invalid argument"),
        ("enobufs", "No buffer space available"),
        ("ebusy", "Device or resource busy"),
        ("enomem", "Cannot allocate memory"),
        ("eopnotsupp", "Operation not supported"),
    ];
    // Servers in parallel: each case waits on its own collections.
    let workers: Vec<_> = cases
        .into_iter()
        .map(|(name, text)| {
            thread::spawn(move || {
                let fixture = fixtures().join(format!("faults/nlmsg_error_{name}.fixture"));
                let expect = expected_error(&fixture);
                assert_eq!(expect, format!("kernel refused the dump request: {text}"));
                check_fault(&format!("nlmsg_error_{name}"), 3);
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("an NLMSG_ERROR case failed");
    }
}

#[test]
fn error_in_nlmsg_done_fails_then_recovers() {
    check_fault("done_error", 3);
}

#[test]
fn truncated_message_fails_then_recovers() {
    check_fault("truncated", 3);
}

#[test]
fn datagram_longer_than_the_buffer_fails_then_recovers() {
    check_fault("oversized", 3);
}

#[test]
fn dump_that_stops_before_done_ends_at_the_deadline() {
    let durations = check_fault("no_done_hang", 3);
    assert_deadline(&durations);
}

#[test]
fn dump_that_never_sends_done_ends_at_the_deadline() {
    let durations = check_fault("no_done_endless", 3);
    assert_deadline(&durations);
}

#[test]
fn eof_before_done_fails_then_recovers() {
    check_fault("eof", 3);
}

/// `dump` exits 1 with the error and prints no numbers for every failing
/// fixture, and each fixture's header names the error it must produce.
#[test]
fn dump_command_reports_each_fault() {
    let dir = fixtures().join("faults");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("fixture") {
            continue;
        }
        let expect = expected_error(&path);
        let timeout = format!("{TIMEOUT_MS}ms");
        let out = run_exporter(
            &[
                "dump",
                "--collector.tcp.dump",
                "legacy",
                "--collector.timeout",
                &timeout,
                "--source.fixture",
                path.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        if expect.starts_with("none") {
            assert_eq!(
                out.code(),
                Some(0),
                "{}: {}",
                path.display(),
                out.describe()
            );
        } else {
            assert_eq!(
                out.code(),
                Some(1),
                "{}: {}",
                path.display(),
                out.describe()
            );
            assert!(out.stdout.is_empty(), "{}: printed numbers", path.display());
            assert!(
                out.stderr.contains(&expect),
                "{}: want {expect:?}\n{}",
                path.display(),
                out.describe()
            );
        }
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} fault fixtures found");
}

// ---------------------------------------------------------------------------
// The real socket
// ---------------------------------------------------------------------------

use sockdiag_exporter::collectors::{tcp::DumpMode, Collector, Options};
use sockdiag_exporter::kernel::diag::DumpRequest;
use sockdiag_exporter::kernel::dump::ErrorKind;
use sockdiag_exporter::kernel::transport::{Netlink, Transport};

/// A real NETLINK_SOCK_DIAG socket whose requests are never sent: the
/// kernel has nothing to answer, so every recv blocks, like a dump that
/// stalls for ever.
struct Unanswered(Netlink);

impl Transport for Unanswered {
    fn send(&mut self, _request: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
    fn set_recv_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.0.set_recv_timeout(timeout)
    }
    fn port(&self) -> u32 {
        self.0.port()
    }
    fn reset(&mut self) -> std::io::Result<()> {
        self.0.reset()
    }
}

#[test]
fn real_socket_stall_ends_at_the_deadline() {
    // The socket's own SO_RCVTIMEO is 10 s: only the per-recv timeout the
    // collector sets from its deadline can end this dump.
    let socket = Netlink::open(Duration::from_secs(10)).expect("open NETLINK_SOCK_DIAG");
    let deadline = Duration::from_millis(TIMEOUT_MS);
    let options = Options::tcp_only(DumpMode::Legacy, deadline);
    let mut collector = Collector::new(Unanswered(socket), options);
    let started = Instant::now();
    let error = collector.collect_tcp().unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error.kind, ErrorKind::Deadline(_)), "{error}");
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(3),
        "stalled dump took {took:?} with a {deadline:?} deadline"
    );
}

#[test]
fn real_socket_with_a_half_read_dump_fails_then_recovers() {
    if !require_root_netns() {
        return;
    }
    // Enough listeners that the answer spans several datagrams.
    const LISTENERS: usize = 600;
    let listeners: Vec<_> = (0..LISTENERS)
        .map(|_| make_listener(Family::V4, 0, 8, false, None))
        .collect();
    let mut socket = Netlink::open(Duration::from_secs(5)).expect("open NETLINK_SOCK_DIAG");
    // A dump we abandon after its first datagram: the socket still holds
    // the rest, and the kernel still runs it.
    socket.send(&DumpRequest::Legacy.encode(999)).unwrap();
    let mut buf = vec![0; sockdiag_exporter::kernel::dump::RECV_BUFFER];
    let first = socket.recv(&mut buf).unwrap();
    assert!(first > 0);
    let options = Options::tcp_only(DumpMode::Legacy, Duration::from_secs(5));
    let mut collector = Collector::new(socket, options);
    // The kernel answers the new request with EBUSY behind the stale data:
    // either way the collection must fail, not count the old dump.
    let error = collector.collect_tcp().unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::Parse(_)),
        "unexpected error: {error}"
    );
    // The failure reset the socket: the next collection is clean and exact.
    let stats = collector.collect_tcp().expect("collection after the reset");
    let listen = sockdiag_exporter::kernel::diag::TcpState::Listen as usize;
    assert_eq!(stats.sockets[0][listen], LISTENERS as u64);
    assert_eq!(stats.sockets[1][listen], 0);
    drop(listeners);
}
