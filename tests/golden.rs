//! Golden end-to-end tests: recorded kernel answers (tests/fixtures/*.fixture)
//! go through the real binary (`dump --source.fixture`), and the output must
//! match tests/golden/*.{prom,table} exactly, after removing what changes from
//! run to run (process_* metrics, durations, timestamps, build revision).
//!
//! The fixtures answer every collector's dumps (see tests/fixtures/record.py
//! for the socket mix). `all.prom` / `all.table` have every collector, the
//! per-port views and the node_exporter compat series; `<collector>.prom`
//! has that collector alone.
//!
//! Regenerate the expected files with `make golden` (UPDATE_GOLDEN=1).
//! Re-record the fixtures from a real kernel with `make fixtures` (root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every collector plus the per-port views and compat series.
const ALL: &[&str] = &[
    "--collector.tcp.ports",
    "8080,8082,9000-9100",
    "--collector.udp.ports",
    "5353-5355",
    "--compat.node-exporter",
];

/// Only the TCP collector.
const TCP_ONLY: &[&str] = &[
    "--no-collector.listeners",
    "--no-collector.udp",
    "--no-collector.unix",
];

fn dump_with(fixture: &str, mode: &str, format: &str, flags: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sockdiag_exporter"))
        .args(["dump", "--format", format, "--collector.tcp.dump", mode])
        .args(flags)
        .arg("--source.fixture")
        .arg(root().join("tests/fixtures").join(fixture))
        .output()
        .expect("run sockdiag_exporter")
}

fn dump(fixture: &str, mode: &str, format: &str) -> std::process::Output {
    dump_with(fixture, mode, format, ALL)
}

fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Drops process_* families and zeroes values that differ between runs.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if name.starts_with("process_") {
            continue;
        }
        let line = if line.starts_with("sockdiag_collect_duration_seconds{")
            || line.starts_with("sockdiag_collect_timestamp_seconds{")
        {
            let (series, _) = line.rsplit_once(' ').unwrap();
            format!("{series} 0")
        } else if line.starts_with("sockdiag_build_info{") {
            "sockdiag_build_info{revision=\"REVISION\",version=\"VERSION\"} 1".to_string()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn check_golden(actual: &str, golden: &Path) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, actual).unwrap();
        eprintln!("updated {}", golden.display());
        return;
    }
    let expected = std::fs::read_to_string(golden)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make golden`)", golden.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .take(10)
            .map(|(e, a)| format!("-{e}\n+{a}"))
            .collect();
        panic!(
            "{} differs (run `make golden` if the change is intended):\n{}",
            golden.display(),
            diff.join("\n")
        );
    }
}

#[test]
fn legacy_dump_matches_golden() {
    let text = stdout_of(&dump("all_legacy.fixture", "legacy", "prometheus"));
    check_golden(&normalize(&text), &root().join("tests/golden/all.prom"));
}

#[test]
fn by_family_dump_gives_the_same_numbers() {
    // Same sockets, recorded through two SOCK_DIAG_BY_FAMILY dumps: the
    // output must be identical to the legacy one.
    let text = stdout_of(&dump("all_by_family.fixture", "by-family", "prometheus"));
    check_golden(&normalize(&text), &root().join("tests/golden/all.prom"));
}

#[test]
fn each_collector_alone_matches_its_golden() {
    for kind in ["tcp", "listeners", "udp", "unix"] {
        let mut flags: Vec<String> = ["tcp", "listeners", "udp", "unix"]
            .iter()
            .filter(|k| **k != kind)
            .map(|k| format!("--no-collector.{k}"))
            .collect();
        flags.extend(ALL.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let output = dump_with("all_legacy.fixture", "legacy", "prometheus", &flags);
        let text = normalize(&stdout_of(&output));
        for other in ["tcp", "listeners", "udp", "unix"] {
            assert_eq!(
                text.contains(&format!("collector=\"{other}\"")),
                other == kind,
                "{kind} alone: health series of {other}"
            );
        }
        check_golden(&text, &root().join(format!("tests/golden/{kind}.prom")));
    }
}

#[test]
fn auto_mode_falls_back_when_the_kernel_refuses_legacy() {
    let output = dump_with("legacy_refused.fixture", "auto", "prometheus", TCP_ONLY);
    let fallback = normalize(&stdout_of(&output));
    let direct = dump_with("all_legacy.fixture", "legacy", "prometheus", TCP_ONLY);
    assert_eq!(fallback, normalize(&stdout_of(&direct)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused the legacy AF_UNSPEC dump")
            && stderr.contains("Operation not supported"),
        "{stderr}"
    );
    // Forcing legacy on the same kernel answer is an error, not a fallback.
    let output = dump("legacy_refused.fixture", "legacy", "prometheus");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("legacy dump: kernel refused the dump request"),
        "{stderr}"
    );
}

#[test]
fn table_matches_golden() {
    let text = stdout_of(&dump("all_legacy.fixture", "legacy", "table"));
    // Durations differ from run to run.
    let text: String = text
        .lines()
        .map(|l| match l.rsplit_once("  ") {
            Some((head, d)) if d.trim().ends_with('s') && d.trim().starts_with("0.") => {
                format!("{head}  0.000s\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    check_golden(&text, &root().join("tests/golden/all.table"));
}

#[test]
fn broken_fixtures_fail_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("sockdiag-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recorded =
        std::fs::read_to_string(root().join("tests/fixtures/all_legacy.fixture")).unwrap();
    // Cut the first datagram short: its first message claims more bytes than remain.
    let truncated: String = recorded
        .lines()
        .map(|l| match l.strip_prefix("recv ") {
            Some(hex) if hex.len() > 200 => format!("recv {}", &hex[..200]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cases = [
        (truncated, "claims 124 bytes but only 100 were received"),
        (
            "dump legacy seq=1\n".to_string(),
            "the answer ended before NLMSG_DONE",
        ),
        (
            "dump legacy seq=1\nrecv 12\n".to_string(),
            "truncated netlink message at byte 0",
        ),
        (
            "dump by-family ipv4 seq=1\n".to_string(),
            "no recorded answer for a legacy dump",
        ),
        ("bogus\n".to_string(), "line 1: expected `dump ...`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.fixture"));
        std::fs::write(&path, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sockdiag_exporter"))
            .args(["dump", "--collector.tcp.dump", "legacy"])
            .args(TCP_ONLY)
            .arg("--source.fixture")
            .arg(&path)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "case {i}: {stderr}");
        assert!(stderr.contains(want), "case {i}: want {want:?} in {stderr}");
        assert!(
            output.stdout.is_empty(),
            "case {i}: a failed dump printed numbers"
        );
        assert!(!stderr.contains("panicked"), "case {i}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recording_round_trips() {
    // Replaying a fixture while recording it reproduces the same answers.
    let dir = std::env::temp_dir().join(format!("sockdiag-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("again.fixture");
    let status = Command::new(env!("CARGO_BIN_EXE_sockdiag_exporter"))
        .args(["dump", "--collector.tcp.dump", "legacy"])
        .args(ALL)
        .arg("--source.fixture")
        .arg(root().join("tests/fixtures/all_legacy.fixture"))
        .arg("--record")
        .arg(&copy)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = stdout_of(&dump(copy.to_str().unwrap(), "legacy", "prometheus"));
    check_golden(&normalize(&text), &root().join("tests/golden/all.prom"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `promtool check metrics` on the full output, process_* included.
#[test]
fn promtool_accepts_the_output() {
    let text = stdout_of(&dump("all_legacy.fixture", "legacy", "prometheus"));
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool not runnable ({e}): `make test` installs it (Debian package prometheus)"
        ),
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool complained:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
