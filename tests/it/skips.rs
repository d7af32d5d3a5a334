//! The skip mechanism itself (support/skips.rs): which settings make a
//! skip fail, and what a skip prints and logs. The end-to-end checks run this
//! binary again on `skip_probe`, a test that skips only when asked to.

use std::process::{Command, Output};

use crate::support;
use crate::support::skips::strict_mode;

const PROBE_ENV: &str = "SOCKDIAG_SKIP_PROBE";
const NEED: &str = "needs the probe's imaginary tool";
/// The probe's name as libtest knows it (its path in this binary).
const PROBE: &str = "skips::skip_probe";

/// Not a test on its own: skips when run with SOCKDIAG_SKIP_PROBE=1 (by the
/// tests below); otherwise returns at once.
#[test]
fn skip_probe() {
    if std::env::var_os(PROBE_ENV).is_some() {
        support::skip(NEED);
    }
}

/// This binary on `skip_probe`, with CI and the skip settings given here
/// only (the outer run's values removed).
fn probe(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([PROBE, "--exact", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .env_remove("CI")
        .env_remove("SOCKDIAG_TEST_STRICT")
        .env_remove("SOCKDIAG_SKIP_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the test binary again")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn strict_mode_follows_ci_and_the_override() {
    let on = |why: &str| Ok(Some(why.to_string()));
    for (ci, strict, want) in [
        (None, None, Ok(None)),
        (Some("true"), None, on("CI=true")),
        (Some("1"), None, on("CI=1")),
        (Some("yes"), None, on("CI=yes")),
        (Some(""), None, Ok(None)),
        (Some("false"), None, Ok(None)),
        (Some("0"), None, Ok(None)),
        (None, Some("1"), on("SOCKDIAG_TEST_STRICT=1")),
        (Some("false"), Some("1"), on("SOCKDIAG_TEST_STRICT=1")),
        (Some("true"), Some("0"), Ok(None)),
    ] {
        assert_eq!(strict_mode(ci, strict), want, "CI={ci:?} STRICT={strict:?}");
    }
    let bad = strict_mode(Some("true"), Some("yes")).unwrap_err();
    assert!(bad.contains("must be 0 or 1"), "{bad}");
}

#[test]
fn a_skip_fails_in_strict_mode_naming_the_need() {
    for (env, why) in [
        (vec![("CI", "true")], "CI=true"),
        (
            vec![("SOCKDIAG_TEST_STRICT", "1")],
            "SOCKDIAG_TEST_STRICT=1",
        ),
    ] {
        let out = probe(&env);
        let all = text(&out);
        assert!(!out.status.success(), "{all}");
        assert!(
            all.contains(&format!("strict mode ({why}): {NEED}")),
            "{all}"
        );
        assert!(!all.contains("SKIP: "), "{all}");
    }
}

#[test]
fn a_skip_prints_one_line_and_logs_it() {
    let log = std::env::temp_dir().join(format!("sockdiag-skips-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_str = log.to_str().unwrap();
    for round in 1..=2 {
        let out = probe(&[
            ("CI", "true"),
            ("SOCKDIAG_TEST_STRICT", "0"),
            ("SOCKDIAG_SKIP_LOG", log_str),
        ]);
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        // Shown although libtest captured the test's output.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("SKIP")).collect();
        assert_eq!(lines, [format!("SKIP: it::{PROBE}: {NEED}")], "{all}");
        let logged = std::fs::read_to_string(&log).unwrap();
        let want = format!("it::{PROBE}: {NEED}\n").repeat(round);
        assert_eq!(logged, want, "round {round}");
    }
    std::fs::remove_file(&log).unwrap();
    // Without a log the line is still printed.
    let out = probe(&[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains(&format!("SKIP: it::{PROBE}: {NEED}")), "{all}");
}
