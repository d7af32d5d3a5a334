//! Replays the fuzz corpus (fuzz/corpus/<target>/) and the inputs that once
//! crashed (fuzz/regressions/<target>/) through the same harness functions
//! the libFuzzer targets call (fuzz/harness.rs), without libFuzzer, so every
//! `cargo test` re-checks every input the fuzzers kept.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use sockdiag_exporter::collect::Kind;

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

/// The harness itself catches what it should: stats that do not add up.
#[test]
fn harness_flags_inconsistent_stats() {
    use sockdiag_exporter::aggregate::{TcpStats, UnixStats};
    use sockdiag_exporter::diag::TcpState;
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
