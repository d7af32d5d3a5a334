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
    let (status, maxrss_kib, cpu) = wait4(pid)?;
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
