//! `make soak` (`cargo bench --bench soak`): a million scrapes at full speed
//! against 100k TCP sockets with churn, checking that the exporter's memory,
//! file descriptors and threads stay flat (issue 6 §6). Not part of `make test`.
//!
//! - The bench moves its main thread into a fresh private network namespace
//!   and builds about 100k sockets there with the `collect` bench's load
//!   generator (support/load.rs: helper processes hold the client ends,
//!   unaccepted server ends cost no fd).
//! - Churn: a thread keeps opening, accepting and closing connections on a
//!   listener of its own (about 200 a second), half closed normally (leaving
//!   TIME_WAIT sockets), half reset; the TIME_WAIT batch of the load is
//!   renewed when it expires.
//! - The exporter is the release binary with its default flags (so
//!   `--cache.ttl 1s`: one collection a second at most, every other scrape
//!   answered from the cache, the realistic case) on 127.0.0.1.
//! - SOAK_CLIENTS (default 4) threads scrape over keep-alive connections as
//!   fast as they can, gzip accepted like Prometheus, each reconnecting every
//!   1000 scrapes, until SOAK_SCRAPES (default 1,000,000) scrapes succeeded.
//!   Every 10,000th body is decompressed and checked.
//! - Every SOAK_SAMPLE_SECS (default 5) the exporter's VmRSS, fd count and
//!   thread count go to target/soak/soak.csv.
//! - At the end: RSS within max(+10%, +2 MiB) of the first sample after
//!   warm-up (SOAK_WARMUP_SCRAPES, default 100,000), threads 1 when idle
//!   and at most 2 (the serve loop, plus the side collectors' thread that
//!   lives only while a collection runs), fds within the warm-up count plus
//!   the scraping connections, and back to the idle count once the scrapers
//!   are gone (fds and threads). Exit status 1 if any fails.
//!
//! Needs root; without it, prints why and exits 0. Helper processes are this
//! binary, re-executed with SOCKDIAG_SOAK_HELPER=load.

#[path = "support/load.rs"]
#[allow(dead_code)]
mod load;

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use load::{Load, Plan};
use sockdiag_exporter::netns;

const HELPER_ENV: &str = "SOCKDIAG_SOAK_HELPER";
/// Cargo builds the binary (bench profile = release settings) for benches.
const EXPORTER: &str = env!("CARGO_BIN_EXE_sockdiag_exporter");
/// The churn thread's listener.
const CHURN_PORT: u16 = 3000;
/// The whole run is abandoned (and fails) after this.
const MAX_RUN: Duration = Duration::from_secs(45 * 60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(mode) = std::env::var(HELPER_ENV) {
        let r = match mode.as_str() {
            "load" => load::helper(),
            other => Err(io::Error::other(format!("unknown helper mode {other:?}"))),
        };
        if let Err(e) = r {
            eprintln!("soak helper {mode}: {e}");
            std::process::exit(1);
        }
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "soak: skipped: needs root (it builds a private network namespace with 100k sockets)"
        );
        return;
    }
    match run() {
        Ok(true) => println!("soak: PASS"),
        Ok(false) => {
            println!("soak: FAIL");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("soak: error: {e}");
            std::process::exit(1);
        }
    }
}

/// Threads, fds and resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    threads: u64,
    fds: u64,
    rss_kib: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn stats(pid: u32) -> io::Result<Stats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3, utime 14.
    let after: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        after
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Stats {
        threads: field("Threads:")?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        rss_kib: field("VmRSS:")?,
        cpu_ticks: tick(11) + tick(12),
    })
}

/// The exporter under test; killed by PID when dropped.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Exporter {
    fn start() -> io::Result<Exporter> {
        let mut child = Command::new(EXPORTER)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Drains stderr for the child's whole life, echoing warnings.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains("level=info") {
                    eprintln!("exporter: {line}");
                }
                let _ = tx.send(line);
            }
        });
        let mut exporter = Exporter {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| io::Error::other("the exporter did not log `listening` in 10 s"))?;
            if let Some(addr) = line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("address="))
            {
                exporter.addr = addr
                    .trim_matches('"')
                    .parse()
                    .map_err(|e| io::Error::other(format!("address in {line:?}: {e}")))?;
                return Ok(exporter);
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// One keep-alive scraping connection.
struct Scraper {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    line: String,
    body: Vec<u8>,
}

impl Scraper {
    fn connect(addr: SocketAddr) -> io::Result<Scraper> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Scraper {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            stream,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// One GET /metrics; the body (gzip) stays in `self.body`.
    fn scrape(&mut self) -> io::Result<()> {
        self.stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nAccept-Encoding: gzip\r\n\r\n")?;
        let mut status = 0;
        let mut length = None;
        let mut first = true;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF in the response head",
                ));
            }
            let l = self.line.trim_end();
            if first {
                status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                first = false;
            } else if l.is_empty() {
                break;
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or_else(|| io::Error::other("no Content-Length"))?;
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        if status != 200 {
            return Err(io::Error::other(format!("status {status}")));
        }
        Ok(())
    }

    /// The last body is a good exposition of a successful collection that
    /// saw at least `min_established` established sockets.
    fn check_body(&self, min_established: f64) -> Result<(), String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&self.body[..])
            .read_to_string(&mut text)
            .map_err(|e| format!("body does not gunzip: {e}"))?;
        if !text.contains("sockdiag_collect_success{collector=\"tcp\"} 1") {
            return Err(format!("tcp collection not successful:\n{text:.2000}"));
        }
        let established: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("sockdiag_sockets{")
                    && l.contains("protocol=\"tcp\"")
                    && l.contains("state=\"established\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if established < min_established {
            return Err(format!("only {established} established sockets reported"));
        }
        Ok(())
    }
}

/// Counters shared by the scraping threads.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    connects: AtomicU64,
    checked: AtomicU64,
    bad_bodies: AtomicU64,
}

fn scrape_loop(
    addr: SocketAddr,
    target: u64,
    min_established: f64,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut scraper: Option<Scraper> = None;
    let mut on_connection = 0u64;
    while !stop.load(Ordering::Relaxed) && counts.ok.load(Ordering::Relaxed) < target {
        if scraper.is_none() || on_connection >= 1000 {
            match Scraper::connect(addr) {
                Ok(s) => {
                    counts.connects.fetch_add(1, Ordering::Relaxed);
                    scraper = Some(s);
                    on_connection = 0;
                }
                Err(e) => {
                    if counts.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("soak: connect: {e}");
                    }
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let s = scraper.as_mut().expect("connected");
        match s.scrape() {
            Ok(()) => {
                on_connection += 1;
                let n = counts.ok.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 10_000 == 0 {
                    counts.checked.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = s.check_body(min_established) {
                        if counts.bad_bodies.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("soak: scrape {n}: {e}");
                        }
                    }
                }
            }
            Err(e) => {
                if counts.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("soak: scrape: {e}");
                }
                scraper = None;
            }
        }
    }
}

/// `collector="tcp"` collections run and the last one's duration, from one
/// more scrape.
fn final_view(addr: SocketAddr) -> io::Result<String> {
    let mut s = Scraper::connect(addr)?;
    s.scrape()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&s.body[..]).read_to_string(&mut text)?;
    let value = |name: &str| {
        let prefix = format!("{name}{{collector=\"tcp\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or("?")
            .to_string()
    };
    Ok(format!(
        "tcp collections_total={} last collect_duration_seconds={} body_bytes={} gzip_bytes={}",
        value("sockdiag_collections_total"),
        value("sockdiag_collect_duration_seconds"),
        text.len(),
        s.body.len()
    ))
}

/// Connections opened and closed continuously on a listener of our own:
/// about 200 a second, half closed normally, half reset.
fn churn(stop: Arc<AtomicBool>, made: Arc<AtomicU64>) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", CHURN_PORT))?;
    let addr = listener.local_addr()?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now() + Duration::from_millis(100);
        let mut pairs = Vec::with_capacity(20);
        for _ in 0..20 {
            let client = TcpStream::connect(addr)?;
            let (server, _) = listener.accept()?;
            pairs.push((client, server));
        }
        for (i, (client, server)) in pairs.into_iter().enumerate() {
            if (round + i as u64) % 2 == 0 {
                // SAFETY: a valid struct linger on an open socket.
                unsafe {
                    libc::setsockopt(
                        client.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
            }
            drop(client);
            drop(server);
        }
        made.fetch_add(20, Ordering::Relaxed);
        round += 1;
        thread::sleep(tick.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

fn target_dir(exe: &Path) -> PathBuf {
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Counts TCP sockets in the calling thread's namespace by state, from
/// /proc/thread-self/net/tcp{,6} (a cross-check of the load, cheap at 100k).
fn socket_total() -> u64 {
    ["tcp", "tcp6"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                .map(|t| t.lines().count().saturating_sub(1) as u64)
                .unwrap_or(0)
        })
        .sum()
}

fn run() -> io::Result<bool> {
    let scrapes: u64 = env_or("SOAK_SCRAPES", 1_000_000);
    let warmup: u64 = env_or("SOAK_WARMUP_SCRAPES", 100_000u64).min(scrapes / 2);
    let clients: u64 = env_or("SOAK_CLIENTS", 4);
    let sockets: u64 = env_or("SOAK_SOCKETS", 100_000);
    let every = Duration::from_secs(env_or("SOAK_SAMPLE_SECS", 5));
    let exe = std::env::current_exe()?;
    let out_dir = target_dir(&exe).join("soak");
    std::fs::create_dir_all(&out_dir)?;
    let csv_path = out_dir.join("soak.csv");

    netns::enter_private()?;
    load::tune_namespace()?;
    let plan = Plan::new(sockets, load::have_ipv6());
    println!(
        "soak: building {sockets} sockets: {} IPv4 + {} IPv6 connections ({} helpers), {} TIME_WAIT, {} SYN_SENT",
        plan.conns4,
        plan.conns6,
        plan.helpers(),
        plan.time_wait,
        plan.syn_sent
    );
    let mut load = Load::build(plan, &exe, HELPER_ENV)?;
    println!(
        "soak: load built in {:.1} s ({} failed connects); {} TCP sockets in the namespace",
        load.build_time.as_secs_f64(),
        load.failed_connects,
        socket_total()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churn_thread = {
        let (stop, churned) = (Arc::clone(&stop), Arc::clone(&churned));
        thread::spawn(move || churn(stop, churned))
    };

    let exporter = Exporter::start()?;
    let pid = exporter.pid();
    thread::sleep(Duration::from_millis(500));
    let idle = stats(pid)?;
    println!(
        "soak: exporter pid {pid} on {}; idle: threads={} fds={} rss_kib={}",
        exporter.addr, idle.threads, idle.fds, idle.rss_kib
    );

    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            let addr = exporter.addr;
            // The load makes about 88% of its sockets ESTABLISHED.
            let min_established = sockets as f64 * 0.8;
            thread::spawn(move || scrape_loop(addr, scrapes, min_established, counts, stop))
        })
        .collect();

    let mut csv = String::from(
        "elapsed_s,scrapes,scrapes_per_s,rss_kib,fds,threads,cpu_s,churned_connections,tcp_sockets\n",
    );
    let mut samples: Vec<(u64, Stats)> = Vec::new();
    let mut warm: Option<Stats> = None;
    let mut last_ok = 0u64;
    let mut last_at = started;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let mut timed_out = false;
    loop {
        let next = last_at + every;
        let finished = || workers.iter().all(|w| w.is_finished());
        while Instant::now() < next && !finished() {
            thread::sleep(Duration::from_millis(100));
        }
        let done = finished();
        let now = Instant::now();
        let ok = counts.ok.load(Ordering::Relaxed);
        let s = stats(pid)?;
        let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64();
        let total = socket_total();
        let _ = writeln!(
            csv,
            "{:.1},{ok},{rate:.0},{},{},{},{:.2},{},{total}",
            now.duration_since(started).as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.threads,
            s.cpu_ticks as f64 / ticks_per_s,
            churned.load(Ordering::Relaxed),
        );
        std::fs::write(&csv_path, &csv)?;
        println!(
            "soak: {:>6.0} s  scrapes {ok:>8} ({rate:>6.0}/s)  rss_kib {}  fds {}  threads {}  sockets {total}",
            now.duration_since(started).as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.threads
        );
        samples.push((ok, s));
        if warm.is_none() && ok >= warmup {
            warm = Some(s);
        }
        last_ok = ok;
        last_at = now;
        if let Err(e) = load.keep_time_wait() {
            eprintln!("soak: renewing TIME_WAIT sockets: {e}");
        }
        if done || ok >= scrapes {
            break;
        }
        if started.elapsed() > MAX_RUN {
            timed_out = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    let final_stats = stats(pid)?;
    // The exporter's own view: collections run and the last one's duration.
    let own = final_view(exporter.addr).unwrap_or_else(|e| format!("(final scrape failed: {e})"));
    // The scrapers are gone: the exporter's fds go back to idle once it
    // sees the closes.
    thread::sleep(Duration::from_millis(500));
    let after = stats(pid)?;
    match churn_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("soak: churn thread: {e}"),
        Err(_) => eprintln!("soak: churn thread panicked"),
    }
    drop(exporter);
    load.teardown();

    let ok = counts.ok.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let bad = counts.bad_bodies.load(Ordering::Relaxed);
    let warm = warm.unwrap_or(final_stats);
    let rss_limit = (warm.rss_kib + warm.rss_kib / 10).max(warm.rss_kib + 2048);
    let after_warm: Vec<&Stats> = samples
        .iter()
        .filter(|(n, _)| *n >= warmup)
        .map(|(_, s)| s)
        .collect();
    let rss_max = after_warm.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let fds_min = after_warm.iter().map(|s| s.fds).min().unwrap_or(0);
    let fds_max = after_warm.iter().map(|s| s.fds).max().unwrap_or(0);
    let threads_max = samples.iter().map(|(_, s)| s.threads).max().unwrap_or(0);
    let cpu_s = (final_stats.cpu_ticks - idle.cpu_ticks) as f64 / ticks_per_s;

    println!("soak: ---- summary ----");
    println!(
        "soak: {ok} scrapes in {:.1} s = {:.0} scrapes/s over {} connections ({clients} clients); {errors} errors, {} bodies checked, {bad} bad",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        counts.connects.load(Ordering::Relaxed),
        counts.checked.load(Ordering::Relaxed),
    );
    println!(
        "soak: exporter CPU {cpu_s:.1} s ({:.0} µs per scrape); churned connections {}",
        cpu_s * 1e6 / ok.max(1) as f64,
        churned.load(Ordering::Relaxed)
    );
    println!(
        "soak: rss_kib idle {} warm {} max {} end {} (limit {rss_limit}); fds idle {} warm {} range {fds_min}..{fds_max} end {} after {}; threads max {threads_max}",
        idle.rss_kib,
        warm.rss_kib,
        rss_max,
        final_stats.rss_kib,
        idle.fds,
        warm.fds,
        final_stats.fds,
        after.fds
    );
    println!("soak: exporter's view at the end: {own}");
    println!("soak: samples in {}", csv_path.display());

    let mut pass = true;
    let mut fail = |why: String| {
        println!("soak: FAILED CHECK: {why}");
        pass = false;
    };
    if timed_out {
        fail(format!("did not finish within {MAX_RUN:?}"));
    }
    if ok < scrapes {
        fail(format!("only {ok} of {scrapes} scrapes succeeded"));
    }
    if errors > 0 || bad > 0 {
        fail(format!("{errors} scrape errors, {bad} bad bodies"));
    }
    if rss_max > rss_limit || final_stats.rss_kib > rss_limit {
        fail(format!(
            "RSS grew: max {rss_max} KiB, end {} KiB, limit {rss_limit} KiB",
            final_stats.rss_kib
        ));
    }
    // The serve loop, and the side collectors' scoped thread while a
    // collection runs: a sample may catch it.
    if threads_max > 2 {
        fail(format!("threads reached {threads_max}"));
    }
    if idle.threads != 1 || after.threads != 1 {
        fail(format!(
            "threads idle {} and after the scrapers left {}, want 1",
            idle.threads, after.threads
        ));
    }
    // Each scraping connection is one fd; a reconnect may be caught between
    // close and connect, so the count may dip, never exceed.
    if fds_max > idle.fds + clients {
        fail(format!(
            "fds reached {fds_max}, idle {} + {clients} clients",
            idle.fds
        ));
    }
    if after.fds != idle.fds {
        fail(format!(
            "fds after the scrapers left: {} (idle {})",
            after.fds, idle.fds
        ));
    }
    Ok(pass)
}
