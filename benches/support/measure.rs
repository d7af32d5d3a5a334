//! Running one measured subprocess: wall time from spawn to reap, and its peak
//! RSS from wait4's rusage, so every row of the table is measured the same way.

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one run of a subprocess cost, and what it printed.
pub struct Run {
    /// From just before spawn to wait4 returning (includes exec and start-up).
    pub wall: Duration,
    /// ru_maxrss of the reaped child, in KiB.
    pub maxrss_kib: u64,
    /// User + system CPU time of the reaped child.
    pub cpu: Duration,
    /// Exit status as wait4 reported it (raw).
    pub status: i32,
    /// Standard output, unless the caller asked only for a line count.
    pub stdout: Vec<u8>,
    /// Number of '\n' in standard output.
    pub lines: u64,
}

impl Run {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

/// Spawns `cmd`, drains its stdout (kept if `keep_stdout`, else only counted),
/// then reaps it with wait4. Stderr is inherited unless the caller set it.
///
/// The drain happens on this thread while the child runs, as `cmd | wc -l`
/// would, so a child that prints 100 MB (ss at 1M sockets) is not throttled
/// by a full pipe any more than it would be in a shell.
pub fn run(cmd: &mut Command, keep_stdout: bool) -> io::Result<Run> {
    run_reaped(cmd, keep_stdout, wait4)
}

/// Environment variable that starts a bench binary as a measuring
/// trampoline ([`trampoline`]); its value names the file the command's
/// status and rusage are written to.
const TRAMPOLINE_ENV: &str = "SOCKDIAG_BENCH_RUSAGE_TO";

/// As [`run`], but the command is started by a fresh copy of this bench
/// binary (a trampoline), whose wait4 reports the command's rusage.
///
/// Why: a process's ru_maxrss includes the resident memory of the image it
/// replaced at exec, and a child spawned with vfork (std's posix_spawn)
/// replaces its parent's address space: a command spawned by a bench that
/// has held 22 MiB (decompressed scrapes, kept outputs) reports at least
/// 22 MiB, whatever it used itself. The trampoline is a small new process,
/// so the command's peak is its own (or the trampoline's, about 2 MiB).
/// It adds one exec of this binary (about a millisecond) to the wall time:
/// use it for rows that are compared with each other, not with [`run`]'s.
///
/// Every bench binary that uses it calls [`trampoline`] first in `main`.
pub fn run_fresh(cmd: &mut Command, keep_stdout: bool) -> io::Result<Run> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let report =
        std::env::temp_dir().join(format!("sockdiag-bench-rusage-{}-{n}", std::process::id()));
    let mut fresh = Command::new(std::env::current_exe()?);
    fresh.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => fresh.env(key, value),
            None => fresh.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        fresh.current_dir(dir);
    }
    fresh.env(TRAMPOLINE_ENV, &report);
    let run = run_reaped(&mut fresh, keep_stdout, |pid| {
        let (status, _, _) = wait4(pid)?;
        let text = std::fs::read_to_string(&report).map_err(|e| {
            io::Error::other(format!(
                "the trampoline (status {status:#x}) left no report {}: {e}",
                report.display()
            ))
        })?;
        let _ = std::fs::remove_file(&report);
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(|f| f.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| io::Error::other(format!("trampoline report {text:?}: {e}")))?;
        match fields[..] {
            [status, maxrss, cpu_ns] => Ok((status as i32, maxrss, Duration::from_nanos(cpu_ns))),
            _ => Err(io::Error::other(format!("trampoline report {text:?}"))),
        }
    });
    let _ = std::fs::remove_file(&report);
    run
}

/// In a bench binary's `main`, first of all: when started by
/// [`run_fresh`], runs the command in argv (stdin, stdout and stderr
/// inherited), reaps it, writes "status maxrss_kib cpu_ns" to the file
/// named by the environment and exits 0 (127 if it could not be run);
/// otherwise returns at once.
pub fn trampoline() {
    let Some(report) = std::env::var_os(TRAMPOLINE_ENV) else {
        return;
    };
    let mut args = std::env::args_os().skip(1);
    let outcome = match args.next() {
        None => Err(io::Error::other("no command given")),
        Some(program) => Command::new(program)
            .args(args)
            .env_remove(TRAMPOLINE_ENV)
            .spawn()
            .and_then(|child| {
                let reaped = wait4(child.id() as libc::pid_t);
                // Reaped here; std's Child must not wait on it again.
                std::mem::forget(child);
                reaped
            }),
    };
    let written = outcome.and_then(|(status, maxrss, cpu)| {
        std::fs::write(&report, format!("{status} {maxrss} {}", cpu.as_nanos()))
    });
    match written {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("bench trampoline: {e}");
            std::process::exit(127);
        }
    }
}

/// Spawns `cmd` and drains its stdout as [`run`] says; `reap` waits for it
/// and returns its status, ru_maxrss (KiB) and CPU time.
fn run_reaped(
    cmd: &mut Command,
    keep_stdout: bool,
    reap: impl FnOnce(libc::pid_t) -> io::Result<(i32, u64, Duration)>,
) -> io::Result<Run> {
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut kept = Vec::new();
    let mut lines = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        if keep_stdout {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    drop(out);
    let (status, maxrss_kib, cpu) = reap(pid)?;
    let wall = start.elapsed();
    // The child is reaped; std's Child must not wait on it again.
    std::mem::forget(child);
    Ok(Run {
        wall,
        maxrss_kib,
        cpu,
        status,
        stdout: kept,
        lines,
    })
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Reaps `pid`, returning its raw status, ru_maxrss (KiB) and CPU time.
pub fn wait4(pid: libc::pid_t) -> io::Result<(i32, u64, Duration)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for the reaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child; status and ru are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((
                status,
                ru.ru_maxrss as u64,
                tv(ru.ru_utime) + tv(ru.ru_stime),
            ));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Median of a non-empty sample (mean of the middle two for even sizes).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Median over rounds of a[i] / b[i], for rounds where both were measured:
/// interleaved rounds pair up, so slow drifts in machine load cancel out.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    Spread::of_ratios(a, b).map(|s| s.median)
}

/// How a per-round figure is spread over the rounds: median, the 10th and
/// 90th percentiles (nearest rank) and the extremes.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub n: usize,
    pub min: f64,
    pub p10: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Option<Spread> {
        let mut s: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = s.len();
        let rank = |p: f64| s[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Spread {
            n,
            min: s[0],
            p10: rank(0.10),
            median: median(&s),
            p90: rank(0.90),
            max: s[n - 1],
        })
    }

    /// The per-round ratios a[i] / b[i], for rounds where both were measured.
    pub fn of_ratios(a: &[f64], b: &[f64]) -> Option<Spread> {
        let r: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(x, y)| x.is_finite() && y.is_finite() && **y > 0.0)
            .map(|(x, y)| x / y)
            .collect();
        Spread::of(&r)
    }

    /// `1.02x [0.97..1.10]`: median, then min..max over the rounds.
    pub fn ratio_text(&self) -> String {
        format!("{:.2}x [{:.2}..{:.2}]", self.median, self.min, self.max)
    }

    /// `median 1.021x, p10..p90 0.990..1.060, min..max 0.970..1.100, 11 rounds`.
    /// With 10 rounds or more the 10th and 90th percentiles come first.
    pub fn ratio_long(&self) -> String {
        let pct = if self.n >= 10 {
            format!(", p10..p90 {:.3}..{:.3}", self.p10, self.p90)
        } else {
            String::new()
        };
        format!(
            "median {:.3}x{pct}, min..max {:.3}..{:.3}, {} rounds",
            self.median, self.min, self.max, self.n
        )
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
}
