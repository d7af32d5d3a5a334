//! Replays the fuzz corpus (fuzz/corpus/<target>/) and the inputs that once
//! crashed (fuzz/regressions/<target>/) through the same harness functions
//! the libFuzzer targets call (fuzz/harness.rs), without libFuzzer, so every
//! `cargo test` re-checks every input the fuzzers kept.

#[path = "../../fuzz/harness.rs"]
mod harness;
#[path = "../../fuzz/http_harness.rs"]
mod http_harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use sockdiag_exporter::collectors::Kind;

/// A panic's message, if it has one.
fn message(panic: &(dyn std::any::Any + Send)) -> &str {
    match panic.downcast_ref::<String>() {
        Some(text) => text,
        None => panic
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or("(no message)"),
    }
}

/// Runs every file of one target's corpus and regressions through `run`;
/// fails naming each input that panics, with the invariant it broke.
fn replay(target: &str, mut run: impl FnMut(&[u8])) {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        match std::fs::read_dir(&dir) {
            Ok(entries) => files.extend(entries.map(|entry| entry.unwrap().path())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", dir.display()),
        }
    }
    files.sort();
    assert!(files.len() >= 10, "{target}: only {} inputs", files.len());
    let failed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data = match std::fs::read(path) {
                Ok(data) => data,
                // A running fuzzer replaced it (it shrinks its corpus).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            catch_unwind(AssertUnwindSafe(|| run(&data)))
                .err()
                .map(|panic| format!("{}: {}", path.display(), message(&*panic)))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that broke the harness: {failed:#?}"
    );
}

/// Every netlink input passes every invariant, and together they exercise
/// each one: every collector succeeds (counting sockets) and fails
/// somewhere, the legacy and by-family answers get compared, and a DONE
/// for another request fails the collector it reaches.
#[test]
fn netlink_corpus_replays_cleanly() {
    let mut seen = harness::Seen::default();
    replay("netlink", |data| harness::netlink_seen(data, &mut seen));
    for kind in Kind::ALL {
        let k = kind as usize;
        let label = kind.label();
        assert!(seen.succeeded[k] > 0, "{label} never succeeded: {seen:?}");
        assert!(
            seen.sockets[k] > 0,
            "{label} never counted a socket: {seen:?}"
        );
        assert!(seen.failed[k] > 0, "{label} never failed: {seen:?}");
    }
    assert!(
        seen.compared > 0,
        "no legacy/by-family comparison: {seen:?}"
    );
    // --collector.tcp.info's attribute path ran on real tcp_info bytes.
    assert!(
        seen.tcp_info_sockets > 0 && seen.tcp_info_retransmitted > 0,
        "no RTT sample or retransmission read from INET_DIAG_INFO: {seen:?}"
    );
    // ...and booked per cgroup id with --collector.cgroup.
    assert!(
        seen.tcp_info_cgroup_growth > 0,
        "no retransmission booked per cgroup: {seen:?}"
    );
    for kind in [Kind::Tcp, Kind::Listeners, Kind::Udp] {
        assert!(
            seen.foreign_done_failed[kind as usize] > 0,
            "no {} collection was sent a foreign NLMSG_DONE: {seen:?}",
            kind.label()
        );
    }
}

#[test]
fn argv_corpus_replays_cleanly() {
    replay("argv", harness::argv);
}

/// Every http input passes every check, and together they reach every
/// answer and every way of driving the connection: TLS, pipelining, HEAD,
/// scrapes that wait for a collection, a client reading a few bytes at a
/// time.
#[test]
fn http_corpus_replays_cleanly() {
    let mut seen = http_harness::Seen::default();
    replay("http", |data| http_harness::http_seen(data, &mut seen));
    for status in [200, 400, 404, 405, 413, 431, 503] {
        assert!(
            seen.statuses.get(&status).copied().unwrap_or(0) > 0,
            "no {status} answered: {seen:?}"
        );
    }
    assert!(seen.tls > 0, "{seen:?}");
    assert!(seen.head_requests > 0, "{seen:?}");
    assert!(seen.waited > 0, "{seen:?}");
    assert!(seen.kept_alive > 0, "{seen:?}");
    assert!(seen.trickled > 0, "{seen:?}");
    assert!(seen.filtered > 0, "no filtered scrape waited: {seen:?}");
    assert!(seen.refused_filters > 0, "no collect[] refused: {seen:?}");
}

/// The http harness catches what it should: a response that is not well
/// framed, a second response to one request, a kept-alive request body.
#[test]
fn http_harness_flags_bad_responses() {
    let caught = |data: &[u8]| {
        std::panic::catch_unwind(|| http_harness::check_wire(data))
            .err()
            .map(|p| message(&*p).to_string())
    };
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi";
    assert_eq!(caught(ok), None);
    let short = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nhi";
    assert!(caught(short).unwrap().contains("body 2 of 3 bytes"));
    let two =
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    assert!(caught(two).unwrap().contains("2 Content-Length headers"));
    let mut twice = ok.to_vec();
    twice.extend_from_slice(ok);
    assert!(caught(&twice)
        .unwrap()
        .contains("bytes after the last response"));
}

/// The harness itself catches what it should: stats that do not add up.
#[test]
fn harness_flags_inconsistent_stats() {
    use sockdiag_exporter::collectors::{tcp::TcpStats, unix::UnixStats};
    use sockdiag_exporter::kernel::diag::TcpState;
    assert_eq!(harness::check_tcp(&TcpStats::default()), None);
    let mut syn = TcpStats::default();
    syn.sockets[0][TcpState::SynRecv as usize] = 1;
    let broken = harness::check_tcp(&syn).expect("flagged");
    assert!(broken.contains("SYN queues"), "{broken}");
    let mut unix = UnixStats::default();
    unix.sockets[0][0] = 1; // a listening stream socket missing from the table
    let broken = harness::check_unix(&unix).expect("flagged");
    assert!(broken.contains("listener table"), "{broken}");
}

/// The argv harness's first false alarm, kept as a unit test: a value that
/// looks like a dotted flag (`--cache.ttl=--cache.ttl=250ms`) is a value,
/// and stays untranslated.
#[test]
fn flag_lookalike_values_are_left_alone() {
    let args: Vec<String> = ["--cache.ttl=--cache.ttl=250ms", "--log.level", "debug"]
        .map(String::from)
        .to_vec();
    assert_eq!(harness::check_argv(&args), None);
}

/// The argv harness's second false alarm: of a repeated switch only the
/// last counts, so translation may shorten argv.
#[test]
fn repeated_switches_collapse_to_the_last() {
    let args: Vec<String> = [
        "--no-collector.unix",
        "--collector.udp",
        "--no-collector.unix",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(harness::check_argv(&args), None);
    let out = sockdiag_exporter::cli::translate_argv(&args);
    assert_eq!(out, ["--collector-udp", "--no-collector-unix"]);
}

/// The third false alarm: `--no-collector.unix` given before
/// `--collector.unix` is dropped, because the last of the pair counts.
#[test]
fn a_switch_then_its_pair_keeps_the_last() {
    let args: Vec<String> = ["--no-collector.unix", "--collector.unix"]
        .map(String::from)
        .to_vec();
    assert_eq!(harness::check_argv(&args), None);
    let out = sockdiag_exporter::cli::translate_argv(&args);
    assert_eq!(out, ["--collector-unix"]);
}

// -- the per-collection netlink checks, each shown catching what it guards --

use std::time::{Duration, SystemTime};

use harness::{Dump, Script};
use sockdiag_exporter::collectors::tcp::{DumpMode, TcpStats};
use sockdiag_exporter::collectors::{
    listeners::ListenStats, udp::UdpStats, unix::UnixStats, Collector, Options, Report, Stats,
};
use sockdiag_exporter::kernel::diag::{DumpRequest, Family, TcpState, TCPDIAG_GETSOCK};
use sockdiag_exporter::kernel::dump::{CollectError, ErrorKind};

fn report(kind: Kind, failed: Option<&'static str>) -> Report {
    Report {
        kind,
        started: SystemTime::now(),
        duration: Duration::ZERO,
        error: failed.map(|request| CollectError {
            request,
            kind: ErrorKind::Eof,
        }),
    }
}

/// A `struct inet_diag_msg` of `family` in TCP state `state`, all else 0.
fn inet_socket(family: u8, state: u8) -> Vec<u8> {
    let mut payload = vec![0; 72];
    payload[0] = family;
    payload[1] = state;
    payload
}

fn established(n: u64) -> TcpStats {
    let mut tcp = TcpStats::default();
    tcp.sockets[0][TcpState::Established as usize] = n;
    tcp
}

fn check_tcp_alone(tcp: &TcpStats, dumps: &[Dump]) -> Option<String> {
    let (listen, udp, unix, options) = (
        ListenStats::default(),
        UdpStats::default(),
        UnixStats::default(),
        Options::default(),
    );
    let stats = Stats {
        tcp,
        listen: &listen,
        udp: &udp,
        unix: &unix,
        options: &options,
    };
    let reports = [report(Kind::Tcp, None)];
    harness::check_collection(stats, &reports, dumps, &[DumpRequest::Legacy])
}

#[test]
fn success_needs_a_done_with_its_own_sequence_number() {
    let socket = || vec![inet_socket(2, 1)];
    let answered = [Dump::of(DumpRequest::Legacy, 3, socket(), true)];
    assert_eq!(check_tcp_alone(&established(1), &answered), None);
    // The script books a DONE only when its seq is the request's own.
    let mut stale = Dump::of(DumpRequest::Legacy, 3, socket(), false);
    stale.foreign_done = true;
    let broken = check_tcp_alone(&established(1), &[stale]).expect("flagged");
    assert_eq!(
        broken,
        "tcp collector: succeeded, but its legacy dump (seq 3) got no NLMSG_DONE \
         with its own sequence number"
    );
}

#[test]
fn counts_must_be_this_collections_own() {
    let one = |request, seq| Dump::of(request, seq, vec![inet_socket(2, 1)], true);
    // Two counted, one delivered to tcp in this collection (the other went
    // to udp, or to an earlier collection): flagged.
    let dumps = [
        one(DumpRequest::Legacy, 1),
        one(DumpRequest::Udp(Family::Ipv4), 2),
    ];
    let broken = check_tcp_alone(&established(2), &dumps[..1]).expect("flagged");
    assert_eq!(
        broken,
        "tcp collector: 2 sockets counted, but this collection delivered 1 to it"
    );
    // A udp dump from a collector that did not report is flagged too.
    let broken = check_tcp_alone(&established(1), &dumps).expect("flagged");
    assert!(broken.contains("udp ipv4 dump was sent"), "{broken}");
    // An interrupted first attempt does not count: only the last one does.
    let retried = [one(DumpRequest::Legacy, 1), one(DumpRequest::Legacy, 2)];
    assert_eq!(check_tcp_alone(&established(1), &retried), None);
    let broken = check_tcp_alone(&established(2), &retried).expect("flagged");
    assert!(broken.contains("delivered 1"), "{broken}");
}

#[test]
fn a_failed_collector_may_serve_none_of_its_series() {
    let reports = [report(Kind::Tcp, None), report(Kind::Udp, Some("udp ipv4"))];
    let health = "sockdiag_collect_success{collector=\"tcp\"} 1\n\
                  sockdiag_collect_success{collector=\"udp\"} 0\n";
    let tcp = "sockdiag_sockets{family=\"ipv4\",protocol=\"tcp\",state=\"established\"} 2\n";
    let delivered = |kind| u64::from(kind == Kind::Tcp) * 2;
    let clean = format!("{health}{tcp}");
    assert_eq!(harness::check_served(&clean, &reports, delivered), None);

    let stale = format!(
        "{clean}sockdiag_sockets{{family=\"ipv4\",protocol=\"udp\",state=\"connected\"}} 0\n"
    );
    assert_eq!(
        harness::check_served(&stale, &reports, delivered).expect("flagged"),
        "served `sockdiag_sockets{family=\"ipv4\",protocol=\"udp\",state=\"connected\"}` \
         although udp failed"
    );
    let off = format!("{clean}sockdiag_unix_sockets{{state=\"listen\",type=\"stream\"}} 0\n");
    assert!(harness::check_served(&off, &reports, delivered)
        .expect("flagged")
        .ends_with("although unix is off"));
    let short = format!("{health}{}", tcp.replace("} 2", "} 1"));
    assert_eq!(
        harness::check_served(&short, &reports, delivered).expect("flagged"),
        "tcp: sockdiag_sockets serves 1 sockets, its dumps delivered 2"
    );
    let unknown = format!("{clean}sockdiag_new_thing 1\n");
    assert!(harness::check_served(&unknown, &reports, delivered)
        .expect("flagged")
        .contains("cannot attribute"));
}

/// The scripted kernel end to end: a DONE carrying another request's
/// sequence number fails the collection; the same answer with its own
/// number succeeds.
#[test]
fn a_stale_done_fails_the_collection() {
    let socket = inet_socket(2, 1);
    let good = harness::answer(&[&socket], TCPDIAG_GETSOCK);
    let run = |input: &[u8]| {
        let options = Options::tcp_only(DumpMode::Legacy, Duration::from_secs(5));
        let mut collector = Collector::new(Script::new(input, false), options);
        let reports = collector.collect();
        (reports, collector.transport().dumps.clone())
    };
    let (reports, dumps) = run(&good);
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert!(dumps[0].done && !dumps[0].foreign_done);

    // The DONE is the last 20 bytes; its seq sits 8 bytes into it. The
    // first request has seq 1: give the DONE seq 7.
    let mut stale = good.clone();
    let at = stale.len() - 20 + 8;
    stale[at..at + 4].copy_from_slice(&7u32.to_ne_bytes());
    let (reports, dumps) = run(&stale);
    let error = reports[0]
        .error
        .as_ref()
        .expect("a stale DONE ended the dump");
    assert_eq!(
        error.to_string(),
        "legacy dump: netlink message with sequence number 7 while waiting for 1 \
         (stale or foreign dump)"
    );
    assert!(!dumps[0].done && dumps[0].foreign_done);
}

#[test]
fn legacy_and_by_family_answers_are_compared() {
    let (v4, v6) = (inet_socket(2, 1), inet_socket(10, 8));
    let options = Options::tcp_only(DumpMode::Legacy, Duration::from_secs(5));
    let input = harness::answer(&[&v4, &v6, &v4], TCPDIAG_GETSOCK);
    let mut collector = Collector::new(Script::new(&input, false), options.clone());
    assert!(collector.collect()[0].error.is_none());
    let dumps: Vec<&Dump> = collector.transport().dumps.iter().collect();
    let plan = [DumpRequest::Legacy];
    assert_eq!(
        harness::same_answer_both_ways(&options, &plan, &dumps, collector.stats().tcp),
        None
    );
    // Stats that do not match what was delivered are caught.
    let mut other = collector.stats().tcp.clone();
    other.sockets[1][TcpState::CloseWait as usize] -= 1;
    other.sockets[0][TcpState::CloseWait as usize] += 1;
    let broken = harness::same_answer_both_ways(&options, &plan, &dumps, &other).expect("flagged");
    assert!(
        broken.starts_with("[Legacy] and ByFamily dumps of the same sockets differ in sockets: "),
        "{broken}"
    );
}

/// The side-transport seeds really run the side collectors on their own
/// transport: three good collections of every collector, then one where
/// udp fails midway while the others, tcp included, succeed.
#[test]
fn side_transport_seeds_run_every_collector() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/netlink");
    let run = |name: &str| {
        let mut seen = harness::Seen::default();
        harness::netlink_seen(&std::fs::read(corpus.join(name)).unwrap(), &mut seen);
        seen
    };
    let seen = run("seed-side");
    assert_eq!(seen.succeeded, [3; 4], "{seen:?}");
    assert_eq!(seen.compared, 3, "{seen:?}");
    let seen = run("seed-side-udp-fails-midway");
    assert_eq!(seen.succeeded, [3, 3, 2, 3], "{seen:?}");
    assert_eq!(seen.failed, [0, 0, 1, 0], "{seen:?}");
}
