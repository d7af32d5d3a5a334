//! node_exporter 1.5 (Debian's package) with only its tcpstat collector, the
//! exporter this project is measured against.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN_IN_DEB: &str = "usr/bin/prometheus-node-exporter";
const PORT: u16 = 19100;

/// Finds node_exporter under `dir` (target/node_exporter), or fetches Debian's
/// package there with apt-get download + dpkg -x. Err says why it can't be had.
pub fn ensure(dir: &Path) -> Result<PathBuf, String> {
    let bin = dir.join(BIN_IN_DEB);
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "prometheus-node-exporter"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !download() {
        // The package lists may be missing or stale on a fresh machine.
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !download() {
            return Err("`apt-get download prometheus-node-exporter` failed (no apt, or package not available)".into());
        }
    }
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let ok = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || !bin.is_file() {
        return Err(format!(
            "dpkg -x {} did not give {BIN_IN_DEB}",
            deb.display()
        ));
    }
    Ok(bin)
}

/// A running node_exporter, started in the calling thread's namespace.
pub struct NodeExporter {
    child: Child,
    stopped: bool,
    addr: SocketAddr,
}

impl NodeExporter {
    pub fn start(bin: &Path, log: &Path) -> io::Result<NodeExporter> {
        let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
        let log = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .args(["--collector.disable-defaults", "--collector.tcpstat"])
            .arg("--web.listen-address")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let ne = NodeExporter {
            child,
            stopped: false,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(ne.addr)
            .map(|s| reset_on_close(&s))
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(io::Error::other("node_exporter did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ne)
    }

    /// One GET /metrics over loopback; returns the wall time and the body.
    pub fn scrape(&self) -> io::Result<(Duration, String)> {
        let start = Instant::now();
        let mut s = TcpStream::connect(self.addr)?;
        reset_on_close(&s);
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let took = start.elapsed();
        let text = String::from_utf8_lossy(&resp).into_owned();
        if !text.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!(
                "node_exporter answered {:?}",
                text.lines().next().unwrap_or("")
            )));
        }
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((took, body))
    }

    /// CPU time (user + system) it has used so far, in clock ticks' precision.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the ")" that ends comm: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz
    }

    /// Peak RSS so far (VmHWM), KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Kills it by PID and reaps it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if !self.stopped {
            self.stopped = true;
            // SAFETY: kill(2) on the PID we spawned and have not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SO_LINGER {on, 0}: closing our end resets the connection, so scrapes and
/// probes leave no TIME_WAIT behind in the measured namespace.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: l is a live linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Sum of node_tcp_connection_states over all states in a scrape body.
pub fn connection_states_total(body: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with("node_tcp_connection_states{"))
        // tcpstat also reports queue sums as pseudo-states.
        .filter(|l| !l.contains("queued_bytes"))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
