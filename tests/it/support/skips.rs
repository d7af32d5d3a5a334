//! The one way an integration test skips.
//!
//! A test that cannot run here (not root, no CAP_SYS_ADMIN, a tool missing)
//! calls [`skip`] with what it needed, then returns; the `require_*` helpers
//! below check the usual needs and call it for the test.
//!
//! * Strict mode (CI): a skip fails the test instead, naming the need. On
//!   when `SOCKDIAG_TEST_STRICT=1`, or when `CI` is set, non-empty and not
//!   `false` or `0` (CI services set `CI=true`). `SOCKDIAG_TEST_STRICT=0`
//!   turns it off even under `CI`, for a local run that may skip.
//! * Otherwise the skip prints one line `SKIP: <test>: <need>` straight to
//!   fd 2 (libtest captures `eprintln!`, not direct writes, so the line
//!   shows in a passing run) and appends `<test>: <need>` to the file named
//!   by `SOCKDIAG_SKIP_LOG`, if set; `make test` counts that file's lines.

use std::fmt::Display;
use std::io::Write as _;

/// Why strict mode is on (`CI=true`, `SOCKDIAG_TEST_STRICT=1`), or None;
/// Err for a `SOCKDIAG_TEST_STRICT` that is neither 0 nor 1.
pub fn strict_mode(ci: Option<&str>, strict: Option<&str>) -> Result<Option<String>, String> {
    match strict {
        Some("1") => return Ok(Some("SOCKDIAG_TEST_STRICT=1".into())),
        Some("0") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "SOCKDIAG_TEST_STRICT must be 0 or 1, not {other:?}"
            ))
        }
        None => {}
    }
    Ok(match ci {
        Some(v) if !v.is_empty() && v != "false" && v != "0" => Some(format!("CI={v}")),
        _ => None,
    })
}

/// `<binary>::<test>`: the test binary's name without cargo's hash, and
/// libtest's name for the current test (the name of the thread it runs on).
pub fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| match n.rsplit_once('-') {
            Some((stem, hash))
                if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                stem.to_string()
            }
            _ => n,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// The current test cannot run here because it needs `need` (say what and
/// why: "needs `wrk` in PATH: ..."). Strict mode: panics, failing the test.
/// Otherwise prints and logs the skip; the caller then returns.
pub fn skip(need: impl Display) {
    let test = test_name();
    let mode = strict_mode(
        std::env::var("CI").ok().as_deref(),
        std::env::var("SOCKDIAG_TEST_STRICT").ok().as_deref(),
    );
    match mode {
        Err(e) => panic!("{e} ({test} would skip: {need})"),
        Ok(Some(why)) => {
            panic!("strict mode ({why}): {need} (SOCKDIAG_TEST_STRICT=0 skips instead)")
        }
        Ok(None) => {}
    }
    let _ = std::io::stderr().write_all(format!("SKIP: {test}: {need}\n").as_bytes());
    if let Some(path) = std::env::var_os("SOCKDIAG_SKIP_LOG").filter(|p| !p.is_empty()) {
        // One write of one line with O_APPEND: lines of parallel tests and
        // test binaries do not interleave.
        let logged = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{test}: {need}\n").as_bytes()));
        if let Err(e) = logged {
            panic!(
                "cannot log the skip of {test} to SOCKDIAG_SKIP_LOG={}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

/// True when running as root (euid 0); otherwise skips, saying the test
/// needs root to `what`.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        skip(format_args!(
            "needs root (euid 0) to {what}; euid is {euid}"
        ));
        return false;
    }
    true
}

/// The effective capability set of the calling thread (`CapEff:`).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// True when root with CAP_SYS_ADMIN in the effective set (what creating
/// and entering network namespaces takes); otherwise skips.
pub fn require_sys_admin(what: &str) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    if !require_root(what) {
        return false;
    }
    match effective_caps() {
        Some(caps) if caps & (1 << CAP_SYS_ADMIN) != 0 => true,
        caps => {
            skip(format_args!(
                "needs CAP_SYS_ADMIN to {what}: not in the effective capabilities (CapEff {})",
                caps.map_or("unreadable".into(), |c| format!("{c:016x}"))
            ));
            false
        }
    }
}

/// True when `tool` can be started (`tool --version`, output discarded);
/// otherwise skips, naming the tool, `hint` (where it comes from) and the
/// error.
pub fn require_tool(tool: &str, hint: &str) -> bool {
    match std::process::Command::new(tool)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) => {
            skip(format_args!("needs `{tool}` in PATH ({hint}): {e}"));
            false
        }
    }
}
