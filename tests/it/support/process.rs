//! Process resource figures (threads, fds, RSS, CPU) of a running
//! exporter, sampled in the background (hostile-client tests), and read by
//! the soak benchmark too (`benches/soak.rs` includes this file).

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Threads, open file descriptors and resident memory of a process, as
/// /proc shows them (`Threads:` and `VmRSS:` in status, entries in fd/).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    pub threads: u64,
    pub fds: u64,
    pub rss_kib: u64,
    /// CPU time used so far (utime + stime in /proc/PID/stat), in clock
    /// ticks.
    pub cpu_ticks: u64,
}

impl ProcStats {
    pub fn read(pid: libc::pid_t) -> io::Result<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command: state is field 3, utime 14.
        let after: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let tick = |i: usize| after.get(i).and_then(|v| v.parse::<u64>().ok());
        let cpu_ticks = tick(11)
            .zip(tick(12))
            .map(|(user, system)| user + system)
            .ok_or_else(|| io::Error::other(format!("no utime/stime in /proc/{pid}/stat")))?;
        Ok(ProcStats {
            threads: field("Threads:")?,
            fds,
            rss_kib: field("VmRSS:")?,
            cpu_ticks,
        })
    }

    /// The larger of each figure.
    pub fn max(self, other: ProcStats) -> ProcStats {
        ProcStats {
            threads: self.threads.max(other.threads),
            fds: self.fds.max(other.fds),
            rss_kib: self.rss_kib.max(other.rss_kib),
            cpu_ticks: self.cpu_ticks.max(other.cpu_ticks),
        }
    }
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub samples: u64,
    /// Each figure's maximum over all samples.
    pub max: ProcStats,
    /// Samples that failed (the process was gone).
    pub failed: u64,
}

/// Samples a process's [`ProcStats`] on its own thread at a fixed interval,
/// keeping the peaks, until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<thread::JoinHandle<Peaks>>,
}

impl Sampler {
    pub fn start(pid: libc::pid_t, every: Duration) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match ProcStats::read(pid) {
                    Ok(s) => {
                        peaks.samples += 1;
                        peaks.max = peaks.max.max(s);
                    }
                    Err(_) => peaks.failed += 1,
                }
                thread::sleep(every);
            }
            peaks
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .expect("finished once")
            .join()
            .expect("sampler thread")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
