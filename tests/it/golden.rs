//! Golden end-to-end tests: recorded kernel answers (tests/fixtures/*.fixture)
//! go through the real binary (`dump --source.fixture`), and the output must
//! match tests/golden/*.{prom,table} exactly, after removing what changes from
//! run to run (process_* metrics, durations, timestamps, build revision).
//!
//! The fixtures answer every collector's dumps (see tests/fixtures/record.py
//! for the socket mix). `all.prom` / `all.table` / `all.json` have every
//! collector, the per-port views and the node_exporter compat series;
//! `<collector>.prom` has that collector alone. `all.json` is `dump --format
//! json` normalized the same way and pretty-printed by serde_json.
//!
//! Every expected file is also checked the other way round: the by-family
//! recording of the same sockets must give exactly what the legacy one gives,
//! in every mode, regeneration included.
//!
//! Byte counts in the expected files (UDP receive memory, unix send memory)
//! are what the recording kernel charged: each recorded fixture names that
//! kernel (`# kernel: ...`), and a failing comparison says which it was.
//!
//! Regenerate the expected files with `make golden` (UPDATE_GOLDEN=1): each
//! file has one writer, which writes a temporary file and renames it, and
//! writes nothing unless legacy and by-family agree. Re-record the fixtures
//! from a real kernel with `make fixtures` (root): tests/fixtures/record.py
//! checks each recording against /proc and `ss` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every collector plus the per-port views, remote networks and compat
/// series.
const ALL: &[&str] = &[
    "--collector.tcp.ports",
    "8080,8082,9000-9100",
    "--collector.tcp.remote-networks",
    "127.0.0.0/8,127.0.0.1/32,::1/128,10.0.0.0/8",
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

/// The kernel that answered a recorded fixture, from its `# kernel:` line.
fn recorded_kernel(fixture: &str) -> Option<String> {
    let text = std::fs::read_to_string(root().join("tests/fixtures").join(fixture)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("# kernel: "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// The first lines where `b` differs from `a`, and the line counts if they differ.
fn line_diff(a: &str, b: &str) -> String {
    let mut lines: Vec<String> = a
        .lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .take(10)
        .map(|(x, y)| format!("-{x}\n+{y}"))
        .collect();
    let (na, nb) = (a.lines().count(), b.lines().count());
    if na != nb {
        lines.push(format!("({na} lines, then {nb})"));
    }
    lines.join("\n")
}

/// The legacy and by-family recordings of the same sockets must give the
/// same output. Checked in every mode: regeneration must not suspend it.
fn assert_modes_agree(what: &str, legacy: &str, by_family: &str) {
    assert!(
        legacy == by_family,
        "{what}: legacy != by-family (all_legacy.fixture vs all_by_family.fixture); \
         golden files are not regenerated while they differ:\n{}",
        line_diff(legacy, by_family)
    );
}

/// Compares `actual` (replayed from `fixture`) with the expected file, or
/// with UPDATE_GOLDEN set writes it: to a temporary file first, then renamed,
/// so a reader never sees half a file. Each expected file has exactly one
/// test that calls this for it, so writers cannot interleave.
fn check_golden(actual: &str, golden: &Path, fixture: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let name = golden.file_name().unwrap().to_string_lossy();
        let tmp = golden.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
        std::fs::write(&tmp, actual).unwrap();
        std::fs::rename(&tmp, golden).unwrap();
        eprintln!("updated {}", golden.display());
        return;
    }
    let expected = std::fs::read_to_string(golden)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make golden`)", golden.display()));
    if expected != actual {
        let kernel = recorded_kernel(fixture).unwrap_or_else(|| "an unnamed kernel".into());
        panic!(
            "{} differs (run `make golden` if the change is intended; {fixture} was \
             recorded on kernel {kernel}):\n{}",
            golden.display(),
            line_diff(&expected, actual)
        );
    }
}

#[test]
fn legacy_dump_matches_golden() {
    let legacy = normalize(&stdout_of(&dump(
        "all_legacy.fixture",
        "legacy",
        "prometheus",
    )));
    let by_family = normalize(&stdout_of(&dump(
        "all_by_family.fixture",
        "by-family",
        "prometheus",
    )));
    assert_modes_agree("all.prom", &legacy, &by_family);
    check_golden(
        &legacy,
        &root().join("tests/golden/all.prom"),
        "all_legacy.fixture",
    );
}

#[test]
fn by_family_dump_gives_the_same_numbers() {
    // Same sockets, recorded through two SOCK_DIAG_BY_FAMILY dumps: the
    // output must be identical to the legacy one (which all.prom holds).
    let by_family = normalize(&stdout_of(&dump(
        "all_by_family.fixture",
        "by-family",
        "prometheus",
    )));
    let legacy = normalize(&stdout_of(&dump(
        "all_legacy.fixture",
        "legacy",
        "prometheus",
    )));
    assert_modes_agree("by-family dump", &legacy, &by_family);
}

#[test]
fn each_collector_alone_matches_its_golden() {
    // Every collector is checked before any file is compared or written, so
    // a disagreement in one regenerates none.
    let mut outputs = Vec::new();
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
        let by_family = dump_with("all_by_family.fixture", "by-family", "prometheus", &flags);
        assert_modes_agree(
            &format!("{kind}.prom"),
            &text,
            &normalize(&stdout_of(&by_family)),
        );
        outputs.push((kind, text));
    }
    for (kind, text) in outputs {
        check_golden(
            &text,
            &root().join(format!("tests/golden/{kind}.prom")),
            "all_legacy.fixture",
        );
    }
}

/// `--collector.tcp.info` on tests/fixtures/tcp_info_*.fixture (recorded by
/// tests/fixtures/record_tcp_info.py: clean ports 8080 and 8082 [ipv6], a
/// lossy port 9000): the tcp collector alone, with the info metrics.
const TCP_INFO: &[&str] = &[
    "--no-collector.listeners",
    "--no-collector.udp",
    "--no-collector.unix",
    "--collector.tcp.info",
    "--collector.tcp.ports",
    "8080,8082,9000",
];

#[test]
fn tcp_info_matches_golden() {
    let mut outputs = Vec::new();
    for format in ["prometheus", "table"] {
        let run = |fixture, mode| {
            let text = stdout_of(&dump_with(fixture, mode, format, TCP_INFO));
            if format == "table" {
                zero_durations(&text)
            } else {
                normalize(&text)
            }
        };
        let legacy = run("tcp_info_legacy.fixture", "legacy");
        let by_family = run("tcp_info_by_family.fixture", "by-family");
        let ext = if format == "table" { "table" } else { "prom" };
        assert_modes_agree(&format!("tcp_info.{ext}"), &legacy, &by_family);
        outputs.push((ext, legacy));
    }
    let prom = &outputs[0].1;
    for want in [
        "# TYPE sockdiag_tcp_rtt_seconds histogram",
        "sockdiag_tcp_rtt_seconds_count{direction=\"remote\",port=\"9000\"} 4",
        "sockdiag_tcp_rtt_seconds_count{direction=\"local\",port=\"8082\"} 1",
    ] {
        assert!(prom.contains(want), "{want}\n{prom}");
    }
    for (ext, text) in outputs {
        check_golden(
            &text,
            &root().join(format!("tests/golden/tcp_info.{ext}")),
            "tcp_info_legacy.fixture",
        );
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

/// The table output with durations (which differ from run to run) zeroed.
fn table(fixture: &str, mode: &str) -> String {
    zero_durations(&stdout_of(&dump(fixture, mode, "table")))
}

/// A table with its durations zeroed.
fn zero_durations(text: &str) -> String {
    text.lines()
        .map(|l| match l.rsplit_once("  ") {
            Some((head, d)) if d.trim().ends_with('s') && d.trim().starts_with("0.") => {
                format!("{head}  0.000s\n")
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

#[test]
fn table_matches_golden() {
    let legacy = table("all_legacy.fixture", "legacy");
    let by_family = table("all_by_family.fixture", "by-family");
    assert_modes_agree("all.table", &legacy, &by_family);
    check_golden(
        &legacy,
        &root().join("tests/golden/all.table"),
        "all_legacy.fixture",
    );
}

/// `dump --format json` without what changes from run to run, as
/// [`normalize`] does for the text: process_* families dropped, durations
/// and timestamps 0, the build labels fixed. Pretty-printed with sorted keys.
fn normalize_json(text: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("dump --format json is not JSON: {e}\n{text}"));
    let fix = |families: &mut serde_json::Value| {
        let families = families.as_object_mut().expect("families object");
        families.retain(|name, _| !name.starts_with("process_"));
        for (name, family) in families.iter_mut() {
            for series in family["series"].as_array_mut().unwrap() {
                match name.as_str() {
                    "sockdiag_collect_duration_seconds" | "sockdiag_collect_timestamp_seconds" => {
                        series["value"] = 0.into();
                    }
                    "sockdiag_build_info" => {
                        series["labels"]["version"] = "VERSION".into();
                        series["labels"]["revision"] = "REVISION".into();
                    }
                    _ => {}
                }
            }
        }
    };
    for families in value["collectors"]
        .as_object_mut()
        .expect("a collectors object")
        .values_mut()
    {
        fix(families);
    }
    fix(&mut value["other"]);
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

#[test]
fn json_matches_golden() {
    let legacy = normalize_json(&stdout_of(&dump("all_legacy.fixture", "legacy", "json")));
    let by_family = normalize_json(&stdout_of(&dump(
        "all_by_family.fixture",
        "by-family",
        "json",
    )));
    assert_modes_agree("all.json", &legacy, &by_family);
    check_golden(
        &legacy,
        &root().join("tests/golden/all.json"),
        "all_legacy.fixture",
    );
}

#[test]
fn broken_fixtures_fail_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("sockdiag-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recorded =
        std::fs::read_to_string(root().join("tests/fixtures/all_legacy.fixture")).unwrap();
    // Cut the first datagram to half its first message, which then claims
    // more bytes than remain. The message's length (nlmsg_len, little-endian
    // u32) is read from the fixture: it depends on the attributes the
    // recording kernel sends.
    let first = recorded
        .lines()
        .find_map(|l| l.strip_prefix("recv "))
        .expect("a recv line");
    let claimed = u32::from_str_radix(&first[..8], 16).unwrap().swap_bytes() as usize;
    assert!(claimed >= 16 * 2, "first message {claimed} bytes");
    let kept = claimed / 2;
    let truncated: String = recorded
        .lines()
        .map(|l| match l.strip_prefix("recv ") {
            Some(hex) if hex == first => format!("recv {}", &hex[..2 * kept]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let truncated_message = format!("claims {claimed} bytes but only {kept} were received");
    let cases = [
        (truncated, truncated_message.as_str()),
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
    // Compared with the direct replay, not all.prom, which has one writer.
    let again = normalize(&stdout_of(&dump(
        copy.to_str().unwrap(),
        "legacy",
        "prometheus",
    )));
    let direct = normalize(&stdout_of(&dump(
        "all_legacy.fixture",
        "legacy",
        "prometheus",
    )));
    assert!(
        again == direct,
        "the re-recorded fixture replays differently:\n{}",
        line_diff(&direct, &again)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The expected files hold the recording kernel's byte counts, so every
/// recorded fixture must say which kernel that was, and the fixtures behind
/// one expected file must come from the same one.
#[test]
fn recorded_fixtures_name_their_kernel() {
    let kernels: Vec<(&str, Option<String>)> = [
        "all_legacy.fixture",
        "all_by_family.fixture",
        "legacy_refused.fixture",
    ]
    .into_iter()
    .map(|f| (f, recorded_kernel(f)))
    .collect();
    for (fixture, kernel) in &kernels {
        assert!(
            kernel.is_some(),
            "{fixture} does not say which kernel answered (no `# kernel:` line): \
             re-record it with `make fixtures`"
        );
    }
    assert!(
        kernels.iter().all(|(_, k)| *k == kernels[0].1),
        "fixtures recorded on different kernels: {kernels:?}"
    );
    eprintln!(
        "golden byte counts are kernel {}'s",
        kernels[0].1.as_deref().unwrap_or("?")
    );
}

/// `promtool check metrics` on the full output, process_* included.
#[test]
fn promtool_accepts_the_output() {
    let text = stdout_of(&dump("all_legacy.fixture", "legacy", "prometheus"));
    if let Err(complaint) = crate::support::sockets::promtool_check(&text) {
        panic!("promtool complained:\n{complaint}");
    }
}
