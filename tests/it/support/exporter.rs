//! The binary under test: `run_exporter` and `dump` (one shot, bounded in
//! time) and `Server` (a running exporter, killed by PID on drop).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the binary to completion with a time limit; on timeout, kills it (by
/// PID) and panics.
pub fn run_exporter(args: &[&str], limit: Duration) -> RunOutput {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the PID of the child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            let so = String::from_utf8_lossy(&t_out.join().unwrap()).to_string();
            let se = String::from_utf8_lossy(&t_err.join().unwrap()).to_string();
            panic!(
                "{BIN} {args:?} still running after {limit:?}; killed.\nstdout: {so}\nstderr: {se}"
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    RunOutput {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).to_string(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).to_string(),
    }
}

/// Runs `dump` with extra args; asserts exit 0 and returns stdout.
pub fn dump(args: &[&str]) -> String {
    let mut full = vec!["dump"];
    full.extend_from_slice(args);
    let out = run_exporter(&full, Duration::from_secs(30));
    assert_eq!(
        out.code(),
        Some(0),
        "{BIN} {full:?} failed:\n{}",
        out.describe()
    );
    out.stdout
}

/// Runs `dump` (prometheus format) and parses it.
pub fn dump_metrics(args: &[&str]) -> Exposition {
    let text = dump(args);
    parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("dump {args:?} output does not parse: {e}\n{text}"))
}

/// A running server. Dropping it kills the child by PID and reaps it.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub telemetry_path: String,
    pub listening_line: String,
    stderr_lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on 127.0.0.1:0 (unless `args` names a listen
    /// address) and waits at most 10 s for its `msg="listening"` line.
    pub fn start(args: &[&str]) -> Server {
        let mut full: Vec<&str> = Vec::new();
        if !args.iter().any(|a| a.starts_with("--web.listen-address")) {
            full.extend(["--web.listen-address", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        let mut child = Command::new(BIN)
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let lines2 = Arc::clone(&lines);
        // Drains stderr for the child's whole life so it never blocks on a
        // full pipe; ends at EOF when the child exits.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            telemetry_path: String::new(),
            listening_line: String::new(),
            stderr_lines: lines,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("msg=\"listening\"") => {
                    let field = |k: &str| {
                        line.split_whitespace()
                            .find_map(|t| t.strip_prefix(k))
                            .map(|v| v.trim_matches('"').to_string())
                    };
                    let addr = field("address=")
                        .unwrap_or_else(|| panic!("no address= in the listening line {line:?}"));
                    server.addr = addr
                        .parse()
                        .unwrap_or_else(|e| panic!("address {addr:?} in {line:?}: {e}"));
                    server.telemetry_path = field("telemetry_path=").unwrap_or_default();
                    server.listening_line = line;
                    return server;
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no msg=\"listening\" line within 10 s; stderr:\n{}",
                        server.stderr()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = server.child.as_mut().unwrap().wait().ok();
                    panic!(
                        "server exited ({st:?}) before listening; stderr:\n{}",
                        server.stderr()
                    )
                }
            }
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("child still owned").id() as libc::pid_t
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(self.addr, method, path, headers).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {}: {e}\nserver stderr:\n{}",
                self.addr,
                self.stderr()
            )
        })
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// GET the telemetry path, assert 200, parse.
    pub fn scrape(&self) -> Exposition {
        let r = self.get(&self.telemetry_path);
        assert_eq!(
            r.status,
            200,
            "scrape status; body: {}",
            String::from_utf8_lossy(&r.body)
        );
        let text = r.text();
        parse_prometheus(&text).unwrap_or_else(|e| panic!("scrape does not parse: {e}\n{text}"))
    }

    /// Sends `sig` to the child (by PID) and waits at most `limit` for it to
    /// exit. Returns None (after killing it) if it did not.
    pub fn signal_and_wait(&mut self, sig: libc::c_int, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("child still owned");
        // SAFETY: kill(2) on the PID of our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None; // Drop kills it.
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: kill(2) on the PID of our own unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
}
