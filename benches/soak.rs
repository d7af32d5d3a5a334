//! `make soak` (`cargo bench --bench soak`): thousands of collections in a
//! row against 100k TCP sockets with churn, checking that the exporter's
//! memory, file descriptors and threads stay flat (issue 6 §6, issue 17 §3).
//! Not part of `make test`.
//!
//! - The bench moves its main thread into a fresh private network namespace
//!   and builds about 100k sockets there with the `collect` bench's load
//!   generator (support/load.rs: helper processes hold the client ends,
//!   unaccepted server ends cost no fd).
//! - Churn: a thread keeps opening, accepting and closing connections on a
//!   listener of its own (about 200 a second), half closed normally (leaving
//!   TIME_WAIT sockets), half reset; the TIME_WAIT batch of the load is
//!   renewed when it expires.
//! - The exporter is the release binary with default flags but
//!   `--cache.ttl 0s`, so the cache's other rule (src/cycle/cache.rs: a snapshot is
//!   served for RATE_FACTOR = 4 x the time its collection took) sets the pace:
//!   a new collection about every 5 collection times, as many as the
//!   exporter allows.
//! - SOAK_CLIENTS (default 4) threads scrape over keep-alive connections as
//!   fast as they can, gzip accepted like Prometheus, each reconnecting every
//!   1000 scrapes. Every 10,000th body is decompressed and checked.
//! - Every SOAK_SAMPLE_MS (default 500) ms a sampler reads the exporter's
//!   VmRSS, fd count and thread count from /proc, and the number of
//!   collections so far (`sockdiag_collections_total{collector="tcp"}`, from
//!   a scrape on its own connection); all go to target/soak/soak.csv.
//! - The run ends when SOAK_COLLECTIONS (default 2000) collections are done.
//! - Leak check: a least-squares line of RSS against the collection count,
//!   over the samples after SOAK_WARMUP_COLLECTIONS (default 200). Its slope
//!   must be at most SOAK_LEAK_BYTES (default 256) bytes per collection, at
//!   least SOAK_MIN_SPAN (default 1000) collections must follow the warm-up
//!   (a 1 KiB-per-collection leak then adds 1 MiB or more), and the slope's
//!   standard error must be small enough that a 1 KiB-per-collection leak
//!   would land above the bound (else the run proves nothing and fails).
//! - Also: threads 1 when idle and at most 2 (the serve loop, plus the side
//!   collectors' thread that lives only while a collection runs); fds at
//!   most idle + 2 per scraping client (old and new connection while it
//!   reconnects) + the sampler's, and back to the idle count once all are
//!   gone; threads back to 1 too. Exit status 1 if
//!   any check fails.
//!
//! Needs root; without it, prints why and exits 0 (1 when `CI` or
//! SOCKDIAG_TEST_STRICT=1 is set). Helper processes are this binary,
//! re-executed with SOCKDIAG_SOAK_HELPER=load.

#[path = "support/load.rs"]
#[allow(dead_code)]
mod load;

/// The same /proc reader as the integration tests'.
#[path = "../tests/it/support/process.rs"]
#[allow(dead_code)]
mod process;

use std::fmt::Write as _;

use process::ProcStats as Stats;
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
use sockdiag_exporter::scope::netns_enter;

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
        println!("SKIP soak: needs root (it builds a private network namespace with 100k sockets)");
        let strict = std::env::var_os("CI")
            .is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
            || std::env::var("SOCKDIAG_TEST_STRICT").is_ok_and(|v| v == "1");
        if strict {
            println!(
                "soak: FAIL: strict mode (CI or SOCKDIAG_TEST_STRICT=1) does not allow the skip"
            );
            std::process::exit(1);
        }
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

/// The exporter under test; killed by PID when dropped.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Exporter {
    fn start() -> io::Result<Exporter> {
        let mut child = Command::new(EXPORTER)
            // TTL 0: only the 4x rule spaces collections.
            .args(["--web.listen-address", "127.0.0.1:0", "--cache.ttl", "0s"])
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

fn scrape_loop(addr: SocketAddr, min_established: f64, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let mut scraper: Option<Scraper> = None;
    let mut on_connection = 0u64;
    while !stop.load(Ordering::Relaxed) {
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

/// The value of `name{collector="tcp"}` in an exposition.
fn tcp_value(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{collector=\"tcp\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// The sampler's own connection: collections so far, from one scrape.
fn collections(s: &mut Scraper) -> io::Result<u64> {
    s.scrape()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&s.body[..]).read_to_string(&mut text)?;
    tcp_value(&text, "sockdiag_collections_total")
        .map(|v| v as u64)
        .ok_or_else(|| io::Error::other("no sockdiag_collections_total{collector=\"tcp\"}"))
}

/// Least-squares slope of y against x, and its standard error.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let icept = my - slope * mx;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - icept - slope * p.0).powi(2))
        .sum();
    let se = (sse / (n - 2.0) / sxx).sqrt();
    Some((slope, se))
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
    let target: u64 = env_or("SOAK_COLLECTIONS", 2000);
    let warmup: u64 = env_or("SOAK_WARMUP_COLLECTIONS", 200u64).min(target / 2);
    let min_span: u64 = env_or("SOAK_MIN_SPAN", 1000);
    let leak_bound: f64 = env_or("SOAK_LEAK_BYTES", 256.0);
    let clients: u64 = env_or("SOAK_CLIENTS", 4);
    let sockets: u64 = env_or("SOAK_SOCKETS", 100_000);
    let every = Duration::from_millis(env_or("SOAK_SAMPLE_MS", 500));
    let exe = std::env::current_exe()?;
    let out_dir = target_dir(&exe).join("soak");
    std::fs::create_dir_all(&out_dir)?;
    let csv_path = out_dir.join("soak.csv");

    netns_enter::enter_private()?;
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
    let idle = Stats::read(pid as libc::pid_t)?;
    println!(
        "soak: exporter pid {pid} on {} with --cache.ttl 0s; idle: threads={} fds={} rss_kib={}",
        exporter.addr, idle.threads, idle.fds, idle.rss_kib
    );
    println!("soak: until {target} collections; leak fit after {warmup}; sampling every {every:?}");

    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            let addr = exporter.addr;
            // The load makes about 88% of its sockets ESTABLISHED.
            let min_established = sockets as f64 * 0.8;
            thread::spawn(move || scrape_loop(addr, min_established, counts, stop))
        })
        .collect();
    let mut sampler = Scraper::connect(exporter.addr)?;

    let mut csv = String::from(
        "elapsed_s,collections,scrapes,rss_kib,fds,threads,cpu_s,churned_connections\n",
    );
    // (collections, stats) per sample.
    let mut samples: Vec<(u64, Stats)> = Vec::new();
    let mut sampler_errors = 0u64;
    let mut last_print = started;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let mut timed_out = false;
    let mut done: u64;
    loop {
        thread::sleep(every);
        // /proc first, then the scrape: the scrape may start a collection,
        // whose buffers the RSS sample should not catch every time.
        let s = Stats::read(pid as libc::pid_t)?;
        match collections(&mut sampler) {
            Ok(c) => done = c,
            Err(e) => {
                sampler_errors += 1;
                eprintln!("soak: sampler scrape: {e}");
                sampler = Scraper::connect(exporter.addr)?;
                continue;
            }
        }
        let ok = counts.ok.load(Ordering::Relaxed);
        let now = Instant::now();
        let _ = writeln!(
            csv,
            "{:.2},{done},{ok},{},{},{},{:.2},{}",
            now.duration_since(started).as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.threads,
            s.cpu_ticks as f64 / ticks_per_s,
            churned.load(Ordering::Relaxed),
        );
        samples.push((done, s));
        if now.duration_since(last_print) >= Duration::from_secs(10) {
            last_print = now;
            std::fs::write(&csv_path, &csv)?;
            println!(
                "soak: {:>6.0} s  collections {done:>6}  scrapes {ok:>9}  rss_kib {}  fds {}  threads {}  sockets {}",
                now.duration_since(started).as_secs_f64(),
                s.rss_kib,
                s.fds,
                s.threads,
                socket_total()
            );
            if let Err(e) = load.keep_time_wait() {
                eprintln!("soak: renewing TIME_WAIT sockets: {e}");
            }
        }
        if done >= target {
            break;
        }
        if started.elapsed() > MAX_RUN {
            timed_out = true;
            break;
        }
    }
    std::fs::write(&csv_path, &csv)?;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    let final_stats = Stats::read(pid as libc::pid_t)?;
    // The exporter's own view: collections run and the last one's duration.
    let own = final_view(exporter.addr).unwrap_or_else(|e| format!("(final scrape failed: {e})"));
    drop(sampler);
    // The scrapers are gone: the exporter's fds go back to idle once it
    // sees the closes.
    thread::sleep(Duration::from_millis(500));
    let after = Stats::read(pid as libc::pid_t)?;
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
    let after_warm: Vec<&(u64, Stats)> = samples.iter().filter(|(c, _)| *c >= warmup).collect();
    let points: Vec<(f64, f64)> = after_warm
        .iter()
        .map(|(c, s)| (*c as f64, s.rss_kib as f64 * 1024.0))
        .collect();
    let span = match (after_warm.first(), after_warm.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0,
    };
    let rss_first = after_warm.first().map(|(_, s)| s.rss_kib).unwrap_or(0);
    let rss_min = after_warm.iter().map(|(_, s)| s.rss_kib).min().unwrap_or(0);
    let rss_max = after_warm.iter().map(|(_, s)| s.rss_kib).max().unwrap_or(0);
    let fds_max = samples.iter().map(|(_, s)| s.fds).max().unwrap_or(0);
    let threads_max = samples.iter().map(|(_, s)| s.threads).max().unwrap_or(0);
    let cpu_s = (final_stats.cpu_ticks - idle.cpu_ticks) as f64 / ticks_per_s;
    let fitted = fit(&points);

    println!("soak: ---- summary ----");
    println!(
        "soak: {done} collections ({:.1}/s) and {ok} scrapes ({:.0}/s) in {:.1} s over {} connections ({clients} clients); {errors} errors, {} bodies checked, {bad} bad; {} samples ({sampler_errors} sampler errors)",
        done as f64 / elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        counts.connects.load(Ordering::Relaxed),
        counts.checked.load(Ordering::Relaxed),
        samples.len(),
    );
    println!(
        "soak: exporter CPU {cpu_s:.1} s ({:.1} ms per collection); churned connections {}",
        cpu_s * 1e3 / done.max(1) as f64,
        churned.load(Ordering::Relaxed)
    );
    println!(
        "soak: rss_kib idle {} first-after-warm-up {rss_first} range {rss_min}..{rss_max} end {}; fds idle {} max {fds_max} end {} after {}; threads max {threads_max} after {}",
        idle.rss_kib,
        final_stats.rss_kib,
        idle.fds,
        final_stats.fds,
        after.fds,
        after.threads
    );
    match fitted {
        Some((slope, se)) => println!(
            "soak: RSS against collections after {warmup}: slope {slope:+.1} B/collection (standard error {se:.1}) over {} samples spanning {span} collections; bound {leak_bound:.0} B/collection",
            points.len()
        ),
        None => println!("soak: RSS against collections: too few samples to fit"),
    }
    println!("soak: exporter's view at the end: {own}");
    println!("soak: samples in {}", csv_path.display());

    let mut pass = true;
    let mut fail = |why: String| {
        println!("soak: FAILED CHECK: {why}");
        pass = false;
    };
    if timed_out {
        fail(format!(
            "did not reach {target} collections within {MAX_RUN:?} (got {done})"
        ));
    }
    if errors > 0 || bad > 0 || sampler_errors > 0 {
        fail(format!(
            "{errors} scrape errors, {bad} bad bodies, {sampler_errors} sampler errors"
        ));
    }
    if span < min_span {
        fail(format!(
            "only {span} collections after the warm-up, want at least {min_span} so that a 1 KiB-per-collection leak adds {min_span} KiB"
        ));
    }
    match fitted {
        None => fail("RSS: too few samples after the warm-up to fit a line".into()),
        Some((slope, se)) => {
            if slope > leak_bound {
                fail(format!(
                    "RSS grows {slope:.0} B per collection (standard error {se:.0}), bound {leak_bound:.0}: from {rss_first} KiB after {warmup} collections to {} KiB after {done}",
                    final_stats.rss_kib
                ));
            }
            // A 1 KiB leak must land above the bound by 3 standard errors,
            // or this run could not have seen it.
            if 1024.0 - 3.0 * se <= leak_bound {
                fail(format!(
                    "RSS too noisy to bound a leak: slope standard error {se:.0} B/collection; a 1 KiB-per-collection leak could pass the {leak_bound:.0} B bound (more collections or a quieter machine)"
                ));
            }
        }
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
    // Each scraping connection and the sampler's is one fd. A client that
    // reconnects (every 1000 scrapes) may have its new connection accepted
    // before the exporter has seen the old one's close, so up to two per
    // client; a leak shows in the count after everyone has left.
    if fds_max > idle.fds + 2 * clients + 1 {
        fail(format!(
            "fds reached {fds_max}, idle {} + 2 x {clients} clients (old and new connection while reconnecting) + the sampler",
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
