//! Replays the fuzz corpus (fuzz/corpus/<target>/) and the inputs that once
//! crashed (fuzz/regressions/<target>/) through the same harness functions
//! the libFuzzer targets call (fuzz/harness.rs), without libFuzzer, so every
//! `cargo test` re-checks every input the fuzzers kept.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Runs every file of one target's corpus and regressions through `run`;
/// fails naming each input that panics.
fn replay(target: &str, run: fn(&[u8])) {
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
        .filter(|path| {
            let data = match std::fs::read(path) {
                Ok(data) => data,
                // A running fuzzer replaced it (it shrinks its corpus).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that broke the harness: {failed:#?}"
    );
}

#[test]
fn netlink_corpus_replays_cleanly() {
    replay("netlink", harness::netlink);
}

#[test]
fn argv_corpus_replays_cleanly() {
    replay("argv", harness::argv);
}

/// The harness itself catches what it should: stats that do not add up.
#[test]
fn harness_flags_inconsistent_stats() {
    use sockdiag_exporter::collectors::{tcp::TcpStats, unix::UnixStats};
    use sockdiag_exporter::diag::TcpState;
    assert_eq!(harness::check_tcp(&TcpStats::default(), 0), None);
    let mut syn = TcpStats::default();
    syn.sockets[0][TcpState::SynRecv as usize] = 1;
    let broken = harness::check_tcp(&syn, 1000).expect("flagged");
    assert!(broken.contains("SYN queues"), "{broken}");
    let mut invented = TcpStats::default();
    invented.sockets[1][0] = 5;
    let broken = harness::check_tcp(&invented, 100).expect("flagged");
    assert!(
        broken.contains("5 sockets counted from 100 bytes"),
        "{broken}"
    );
    let mut unix = UnixStats::default();
    unix.sockets[0][0] = 1; // a listening stream socket missing from the table
    let broken = harness::check_unix(&unix, 1000).expect("flagged");
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
