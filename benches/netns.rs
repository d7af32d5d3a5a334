//! `make bench-netns` (`cargo bench --bench netns`): what `--collector.netns`
//! costs, in two parts (env NETNS_PARTS, default `ss,scale`).
//!
//! Part `ss`: 100 network namespaces holding about 1k TCP sockets each (env
//! NETNS_COUNT, NETNS_CONNECTIONS), next to what an SRE does without it:
//! `ss -tan -N NAME` once per namespace.
//!
//! Setup: NETNS_COUNT named namespaces (`ip netns add sdbench-PID-N`,
//! deleted at the end by a guard, also on panic), each with `lo` up, one
//! listener and NETNS_CONNECTIONS (default 500) connections to it left in
//! its accept queue: 1 LISTEN and 2 x 500 ESTABLISHED sockets per namespace
//! (the server ends have no fd, which keeps the load under the 20k fd
//! limit). Helper processes (this binary, re-executed) hold the sockets, 25
//! namespaces each; they are killed by PID at the end.
//!
//! Measured in interleaved rounds (NETNS_RUNS, default 5, after a warm-up),
//! each a subprocess timed from spawn to wait4 with its rusage:
//! - ours, own namespace: `dump` with TCP only (start-up and the host);
//! - ours, every namespace: `dump --collector.netns`, TCP only and with the
//!   default collectors;
//! - the `ss` loop: `ss -tan -N NAME` for every namespace, back to back
//!   (sums).
//!
//! Target: ours (tcp only) at most 1.0x the ss loop by the median of paired
//! per-round ratios.
//!
//! Part `scale` (issue 16, a Kubernetes node): the host holds about
//! NETNS_HOST_SOCKETS (default 1M) TCP sockets in one private namespace
//! (the collect bench's load generator, support/load.rs, built on a thread
//! of its own so the bench and the exporter stay outside it), and next to
//! it, one scenario after the other:
//! - `empty`: 100 (then 500) named namespaces with nothing in them. Target:
//!   `dump --collector.netns` (default collectors) in at most 1.5 s with 100;
//! - `busy`: 100 named namespaces with one listener and NETNS_BUSY_CONNECTIONS
//!   (default 5) connections each. Target: at most 7 s on this 2-core
//!   machine kind, every namespace present and exact;
//! - peak RSS (wait4's ru_maxrss) at most 12 MiB in every scenario.
//!
//! The server is measured too (an SRE runs it, not `dump`), in the 500
//! empty and the busy scenarios: `sockdiag_exporter --collector.netns` on
//! 127.0.0.1, then NETNS_SERVER_COLLECTIONS (default 3) times a scrape with
//! gzip, one without and the landing page `/`, each time after a new
//! collection; target: its peak RSS (VmHWM in /proc/PID/status) at most
//! 12 MiB after all of them, the plain body exactly the gzip one inflated,
//! and the scenario's counts right. The server is killed by its PID.
//!
//! Each scenario runs NETNS_SCALE_RUNS (default 3) times after a warm-up;
//! wall times are medians, RSS the maximum. The own-namespace `dump` is
//! measured in the same rounds, for scale. A 1M load is heavy: run the
//! bench under `flock /tmp/bench.lock` on a shared machine.
//!
//! Every round's counts are checked (ours per namespace label, ss lines per
//! namespace): a wrong count is a FAIL verdict, as is a missed target, and
//! the bench then exits 1. Needs root; without it, it prints SKIP and exits
//! 0, or 1 in strict mode (CI set, or SOCKDIAG_TEST_STRICT=1).

// The subprocess measurement and the load generator are shared with the
// collect bench.
#[path = "support/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use measure::{median, Spread};

const HELPER_ENV: &str = "SOCKDIAG_NETNS_BENCH_HELPER";
/// Set to "load" in the 1M load's helper processes (support/load.rs).
const LOAD_HELPER_ENV: &str = "SOCKDIAG_NETNS_BENCH_LOAD";
const OURS: &str = env!("CARGO_BIN_EXE_sockdiag_exporter");
/// Namespaces per helper process: 25 x 501 fds stays under the 20k limit.
const PER_HELPER: usize = 25;
const TCP_ONLY: [&str; 5] = [
    "--log.level",
    "error",
    "--no-collector.listeners",
    "--no-collector.udp",
    "--no-collector.unix",
];
/// Issue 16's targets.
const EMPTY_WALL_MAX_S: f64 = 1.5;
const BUSY_WALL_MAX_S: f64 = 7.0;
const RSS_MAX_MIB: f64 = 12.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `CI` set (CI sets CI=true) or SOCKDIAG_TEST_STRICT=1: a skip fails.
fn strict() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
        || std::env::var("SOCKDIAG_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// What became of one check or target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Pass,
    /// Could not be measured: fails in strict mode.
    Skip,
    Fail,
}

struct Verdict(Outcome, String);

impl Verdict {
    fn check(pass: bool, text: String) -> Verdict {
        Verdict(if pass { Outcome::Pass } else { Outcome::Fail }, text)
    }
}

fn main() {
    measure::trampoline();
    if std::env::var(LOAD_HELPER_ENV).is_ok() {
        if let Err(e) = load::helper() {
            eprintln!("netns bench load helper: {e}");
            std::process::exit(1);
        }
        return;
    }
    if std::env::var(HELPER_ENV).is_ok() {
        if let Err(e) = helper() {
            eprintln!("netns bench helper: {e}");
            std::process::exit(1);
        }
        return;
    }
    let strict = strict();
    // SAFETY: geteuid has no preconditions.
    let verdicts = if unsafe { libc::geteuid() } != 0 {
        vec![Verdict(
            Outcome::Skip,
            "netns bench: needs root (it creates network namespaces)".into(),
        )]
    } else {
        let parts = std::env::var("NETNS_PARTS").unwrap_or_else(|_| "ss,scale".into());
        let mut verdicts = Vec::new();
        for part in parts.split(',') {
            match part.trim() {
                "ss" => verdicts.extend(against_ss()),
                "scale" => verdicts.extend(scale()),
                "hold" => verdicts.extend(hold()),
                other => verdicts.push(Verdict(
                    Outcome::Fail,
                    format!("unknown part {other:?} in NETNS_PARTS (ss, scale, hold)"),
                )),
            }
        }
        verdicts
    };
    println!();
    let mut failed = false;
    for Verdict(outcome, text) in &verdicts {
        let word = match outcome {
            Outcome::Pass => "PASS",
            Outcome::Skip if strict => "FAIL (a skip, in strict mode)",
            Outcome::Skip => "SKIP",
            Outcome::Fail => "FAIL",
        };
        failed |= *outcome == Outcome::Fail || (*outcome == Outcome::Skip && strict);
        println!("{word}: {text}");
    }
    println!("netns bench: {}", if failed { "FAIL" } else { "PASS" });
    if failed {
        std::process::exit(1);
    }
}

/// Part `ss`: ours against `ss -N` per namespace.
fn against_ss() -> Vec<Verdict> {
    let count = env_usize("NETNS_COUNT", 100);
    let connections = env_usize("NETNS_CONNECTIONS", 500);
    let runs = env_usize("NETNS_RUNS", 5);
    let names: Vec<String> = (0..count)
        .map(|i| format!("sdbench-{}-{i}", std::process::id()))
        .collect();
    let guard = Namespaces::add(&names);
    let built = std::time::Instant::now();
    let helpers: Vec<Helper> = names
        .chunks(PER_HELPER)
        .map(|chunk| Helper::spawn(chunk, connections))
        .collect();
    println!(
        "netns bench: {count} namespaces x (1 listener + {connections} connections = {} sockets), built in {:.1}s; {runs} rounds",
        1 + 2 * connections,
        built.elapsed().as_secs_f64()
    );
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("ours, own namespace, tcp only", vec![], vec![]),
        ("ours, --collector.netns, tcp only", vec![], vec![]),
        (
            "ours, --collector.netns, default collectors",
            vec![],
            vec![],
        ),
        ("ss -tan -N NAME, once per namespace", vec![], vec![]),
    ];
    let mut wrong = Vec::new();
    for round in 0..=runs {
        let mut results = Vec::new();
        let own = measure::run(Command::new(OURS).arg("dump").args(TCP_ONLY), true).unwrap();
        if !own.success() {
            wrong.push(format!("round {round}: ours (own) failed"));
        }
        results.push((own.wall, own.cpu));
        for extra in [&TCP_ONLY[..], &TCP_ONLY[..2]] {
            let run = measure::run(
                Command::new(OURS)
                    .args(["dump", "--collector.netns"])
                    .args(extra),
                true,
            )
            .unwrap();
            if !run.success() {
                wrong.push(format!("round {round}: ours (netns) failed"));
            }
            let text = String::from_utf8_lossy(&run.stdout);
            match check_ours(&text, &names, &[("listen", 1), ("established", 2 * connections)]) {
                Ok(collected) if collected != count + 1 && round == 0 => println!(
                    "note: ours collected {collected} namespaces: {} besides the bench's and the own one (other processes' namespaces on this host)",
                    collected.saturating_sub(count + 1)
                ),
                Ok(_) => {}
                Err(e) => wrong.push(format!("round {round}: {e}")),
            }
            results.push((run.wall, run.cpu));
        }
        let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
        for name in &names {
            let run = measure::run(Command::new("ss").args(["-tan", "-N", name]), false).unwrap();
            // A header line, the listener and both ends of each connection.
            if !run.success() || run.lines != 2 + 2 * connections as u64 {
                wrong.push(format!(
                    "round {round}: ss -tan -N {name}: {} lines, want {}",
                    run.lines,
                    2 + 2 * connections
                ));
            }
            wall += run.wall;
            cpu += run.cpu;
        }
        results.push((wall, cpu));
        if !wrong.is_empty() {
            break;
        }
        if round == 0 {
            continue; // warm-up
        }
        for (row, (wall, cpu)) in rows.iter_mut().zip(results) {
            row.1.push(wall.as_secs_f64() * 1e3);
            row.2.push(cpu.as_secs_f64() * 1e3);
        }
    }
    drop(helpers);
    drop(guard);
    if !wrong.is_empty() {
        return vec![Verdict(
            Outcome::Fail,
            format!("part ss: wrong counts: {}", wrong.join("; ")),
        )];
    }
    let ss = median(&rows[3].1);
    println!();
    println!(
        "| tool | wall ms (median) | CPU ms (median) | wall / ss loop | wall ms per namespace |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, wall, cpu) in &rows {
        let w = median(wall);
        println!(
            "| {name} | {w:.1} | {:.1} | {:.2}x | {:.2} |",
            median(cpu),
            w / ss,
            w / count as f64
        );
    }
    let ours = median(&rows[1].1);
    let own = median(&rows[0].1);
    println!();
    println!(
        "--collector.netns adds {:.2} ms per namespace over the own-namespace run (tcp only)",
        (ours - own) / count as f64
    );
    // Paired per round: ours / the ss loop in the same round.
    let Some(r) = Spread::of_ratios(&rows[1].1, &rows[3].1) else {
        return vec![Verdict(Outcome::Skip, "part ss: no round measured".into())];
    };
    vec![Verdict::check(
        r.median <= 1.0,
        format!(
            "part ss: --collector.netns (tcp only) wall / the ss loop <= 1.0x ({})",
            r.ratio_long()
        ),
    )]
}

/// Checks our dump's TCP counts for every namespace in `names`: each state
/// in `want` as given (IPv4). Returns how many namespaces it collected.
fn check_ours(text: &str, names: &[String], want: &[(&str, usize)]) -> Result<usize, String> {
    for name in names {
        for (state, want) in want {
            let series = format!(
                "sockdiag_sockets{{family=\"ipv4\",netns=\"{name}\",protocol=\"tcp\",state=\"{state}\"}} "
            );
            let got = text
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .ok_or_else(|| format!("no {series}in our output"))?;
            if got != want.to_string() {
                return Err(format!("{series}is {got}, want {want}"));
            }
        }
    }
    Ok(text
        .lines()
        .filter(|l| l.starts_with("sockdiag_netns_info{"))
        .count())
}

/// The sum of every sample of `metric` whose labels contain `netns="LABEL"`.
fn netns_sum(text: &str, metric: &str, label: &str) -> f64 {
    let needle = format!("netns=\"{label}\"");
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// One scale scenario's rounds.
#[derive(Default)]
struct Rounds {
    own_wall: Vec<f64>,
    wall: Vec<f64>,
    cpu: Vec<f64>,
    rss_mib: Vec<f64>,
    wrong: Vec<String>,
}

/// Runs `dump --collector.netns` (default collectors) `runs` times after a
/// warm-up, with the own-namespace `dump` in the same rounds, checking each
/// output with `check`.
fn measure_scale(runs: usize, check: &dyn Fn(&str) -> Result<(), String>) -> Rounds {
    let mut rounds = Rounds::default();
    for round in 0..=runs {
        let own = measure::run_fresh(
            Command::new(OURS).args(["dump", "--log.level", "error"]),
            false,
        )
        .expect("run ours");
        let run = measure::run_fresh(
            // No limit: other sessions' namespaces on a shared host must
            // not push the bench's own out (they are noted below).
            Command::new(OURS).args([
                "dump",
                "--collector.netns",
                "--collector.netns.max=100000",
                "--log.level",
                "error",
            ]),
            true,
        )
        .expect("run ours");
        if !run.success() || !own.success() {
            rounds.wrong.push(format!("round {round}: ours failed"));
            break;
        }
        if round == 0 {
            let collected = String::from_utf8_lossy(&run.stdout)
                .lines()
                .filter(|l| l.starts_with("sockdiag_netns_info{"))
                .count();
            println!("note: {collected} namespaces collected (the bench's, the own one and the host load's; any more are other processes' on this host)");
        }
        // A wrong output fails the scenario, but its times are still
        // shown: a budget that ran out shows as a namespace missing.
        if let Err(e) = check(&String::from_utf8_lossy(&run.stdout)) {
            let pending = String::from_utf8_lossy(&run.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("sockdiag_netns_pending "))
                .unwrap_or("?")
                .to_string();
            rounds.wrong.push(format!(
                "round {round}: {e} ({:.2} s, sockdiag_netns_pending {pending})",
                run.wall.as_secs_f64()
            ));
        }
        if round == 0 {
            continue;
        }
        rounds.own_wall.push(own.wall.as_secs_f64());
        rounds.wall.push(run.wall.as_secs_f64());
        rounds.cpu.push(run.cpu.as_secs_f64());
        rounds.rss_mib.push(run.maxrss_kib as f64 / 1024.0);
    }
    rounds
}

/// The verdicts of one scale scenario: counts, wall (if `wall_max`), RSS.
fn scale_verdicts(name: &str, rounds: &Rounds, wall_max: Option<f64>) -> Vec<Verdict> {
    let mut out = Vec::new();
    if !rounds.wrong.is_empty() {
        out.push(Verdict(
            Outcome::Fail,
            format!("{name}: wrong output: {}", rounds.wrong.join("; ")),
        ));
    }
    if rounds.wall.is_empty() {
        out.push(Verdict(Outcome::Skip, format!("{name}: no round measured")));
        return out;
    }
    let wall = median(&rounds.wall);
    let rss = rounds.rss_mib.iter().cloned().fold(0.0, f64::max);
    println!(
        "| {name} | {:.2} | {wall:.2} [{:.2}..{:.2}] | {:.2} | {rss:.1} |",
        median(&rounds.own_wall),
        measure::min(&rounds.wall),
        measure::max(&rounds.wall),
        median(&rounds.cpu),
    );
    if let Some(max) = wall_max {
        out.push(Verdict::check(
            wall <= max,
            format!(
                "{name}: wall {wall:.2} s (median of {}) <= {max} s",
                rounds.wall.len()
            ),
        ));
    }
    out.push(Verdict::check(
        rss <= RSS_MAX_MIB,
        format!(
            "{name}: peak RSS {rss:.1} MiB (max of {}) <= {RSS_MAX_MIB} MiB",
            rounds.rss_mib.len()
        ),
    ));
    out
}

/// The server, started on 127.0.0.1:0 with `--collector.netns`; killed by
/// its PID on drop.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl ServerProcess {
    fn start() -> Result<ServerProcess, String> {
        let mut child = Command::new(OURS)
            .args([
                "--collector.netns",
                // As for dump: other namespaces on the host must not push
                // the bench's out.
                "--collector.netns.max=100000",
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.level",
                "info",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {OURS}: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Drains stderr for the server's whole life (a full pipe would
        // block it); the listening line says its address.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = ServerProcess {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| "the server did not say it listens within 10 s".to_string())?;
            if !line.contains("msg=\"listening\"") {
                continue;
            }
            let addr = line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("address="))
                .map(|v| v.trim_matches('"').to_string())
                .ok_or_else(|| format!("no address in {line:?}"))?;
            server.addr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
            return Ok(server);
        }
    }

    /// GET `path` (with Accept-Encoding: gzip if `gzip`): the status code
    /// and the body (as sent).
    fn get(&self, path: &str, gzip: bool) -> Result<(u16, Vec<u8>), String> {
        use std::io::Read as _;
        let mut stream = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        let encoding = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: bench\r\n{encoding}Connection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|e| format!("GET {path}: {e}"))?;
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("GET {path}: no end of head"))?;
        let head = String::from_utf8_lossy(&response[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("GET {path}: bad status line in {head:?}"))?;
        Ok((status, response[end + 4..].to_vec()))
    }

    /// VmHWM, the peak resident set, in MiB.
    fn peak_mib(&self) -> Result<f64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("the server's /proc status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| "no VmHWM".to_string())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The netns collection's count in the text (one per collection).
fn collections(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("sockdiag_collections_total{collector=\"netns\",netns=\"\"} "))
        .and_then(|v| v.parse().ok())
}

/// The server in this scenario: NETNS_SERVER_COLLECTIONS rounds of a gzip
/// scrape, a plain one and the landing page, each round after a new
/// collection; its peak RSS after each round, the last against
/// RSS_MAX_MIB.
fn measure_server(scenario: &str, check: &dyn Fn(&str) -> Result<(), String>) -> Vec<Verdict> {
    let name = format!("{scenario}, server");
    let rounds = env_usize("NETNS_SERVER_COLLECTIONS", 3).max(1);
    let mut wrong = Vec::new();
    let mut run = || -> Result<Vec<f64>, String> {
        let server = ServerProcess::start()?;
        let mut peaks = Vec::new();
        let mut last = None;
        for round in 0..rounds {
            // A new collection: the cache serves one for 4x its duration.
            let started = std::time::Instant::now();
            let gzip = loop {
                let (status, gzip) = server.get("/metrics", true)?;
                if status != 200 {
                    return Err(format!("round {round}: gzip scrape: status {status}"));
                }
                let mut text = String::new();
                flate2::read::GzDecoder::new(&gzip[..])
                    .read_to_string(&mut text)
                    .map_err(|e| format!("round {round}: the gzip body: {e}"))?;
                let now = collections(&text);
                if now.is_some() && now != last {
                    last = now;
                    break text;
                }
                if started.elapsed() > Duration::from_secs(300) {
                    return Err(format!("round {round}: no new collection in 300 s"));
                }
                std::thread::sleep(Duration::from_secs(1));
            };
            let (status, plain) = server.get("/metrics", false)?;
            if status != 200 || plain != gzip.as_bytes() {
                return Err(format!(
                    "round {round}: the plain scrape (status {status}, {} bytes) differs from the gzip one inflated ({} bytes)",
                    plain.len(),
                    gzip.len()
                ));
            }
            // A wrong count fails the scenario, but the peak is still
            // measured and shown.
            if let Err(e) = check(&gzip) {
                wrong.push(format!("round {round}: {e}"));
            }
            let (status, page) = server.get("/", false)?;
            let page = String::from_utf8_lossy(&page);
            if status != 200 || !page.contains("<h2>Network namespaces</h2>") {
                return Err(format!(
                    "round {round}: landing page status {status}, no overview"
                ));
            }
            peaks.push(server.peak_mib()?);
        }
        Ok(peaks)
    };
    let result = run();
    let mut verdicts = Vec::new();
    if !wrong.is_empty() {
        verdicts.push(Verdict(
            Outcome::Fail,
            format!("{name}: wrong output: {}", wrong.join("; ")),
        ));
    }
    match result {
        Err(e) => verdicts.push(Verdict(Outcome::Fail, format!("{name}: {e}"))),
        Ok(peaks) => {
            let peak = peaks.iter().cloned().fold(0.0, f64::max);
            let each: Vec<String> = peaks.iter().map(|p| format!("{p:.1}")).collect();
            println!(
                "| {name}: peak RSS (VmHWM) after each of {} collections (gzip, plain, /) | {} MiB |",
                peaks.len(),
                each.join(", ")
            );
            verdicts.push(Verdict::check(
                peak <= RSS_MAX_MIB,
                format!(
                    "{name}: peak RSS {peak:.1} MiB after {} collections with gzip, plain and / scrapes <= {RSS_MAX_MIB} MiB",
                    peaks.len()
                ),
            ));
        }
    }
    verdicts
}

/// Part `scale`: the issue 16 scenarios next to a big host namespace.
fn scale() -> Vec<Verdict> {
    let host = env_usize("NETNS_HOST_SOCKETS", 1_000_000) as u64;
    let runs = env_usize("NETNS_SCALE_RUNS", 3);
    let busy_connections = env_usize("NETNS_BUSY_CONNECTIONS", 5);
    let (host_load, host_label) = match build_host_load(host) {
        Ok(built) => built,
        Err(e) => return vec![Verdict(Outcome::Fail, e)],
    };
    let big_present = |text: &str| -> Result<(), String> {
        let tcp = netns_sum(text, "sockdiag_sockets", &host_label);
        // The load's TIME_WAIT batch (1%) may have expired meanwhile.
        if tcp < host as f64 * 0.9 {
            return Err(format!(
                "{host_label} shows {tcp} sockets, want about {host}"
            ));
        }
        Ok(())
    };
    println!();
    println!("| scenario ({host} TCP sockets in one namespace, plus) | own namespace only, wall s | --collector.netns wall s (median [min..max]) | CPU s | peak RSS MiB (max) |");
    println!("|---|---:|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for (count, wall_max) in [(100, Some(EMPTY_WALL_MAX_S)), (500, None)] {
        let names: Vec<String> = (0..count)
            .map(|i| format!("sdscale-{}-e{i}", std::process::id()))
            .collect();
        let guard = Namespaces::add(&names);
        let check = |text: &str| -> Result<(), String> {
            big_present(text)?;
            for name in &names {
                let info = format!("netns=\"{name}\"");
                if !text
                    .lines()
                    .any(|l| l.starts_with("sockdiag_netns_info{") && l.contains(&info))
                {
                    return Err(format!("{name} missing"));
                }
                for metric in ["sockdiag_sockets", "sockdiag_unix_sockets"] {
                    let n = netns_sum(text, metric, name);
                    if n != 0.0 {
                        return Err(format!("{name}: {metric} sums to {n}, want 0"));
                    }
                }
                if netns_sum(text, "sockdiag_collect_success", name) != 4.0 {
                    return Err(format!("{name}: a collector failed"));
                }
            }
            Ok(())
        };
        let rounds = measure_scale(runs, &check);
        let scenario = format!("{count} empty namespaces");
        verdicts.extend(scale_verdicts(&scenario, &rounds, wall_max));
        if count == 500 {
            verdicts.extend(measure_server(&scenario, &check));
        }
        drop(guard);
    }
    {
        let count = 100;
        let busy = Busy::add("sdscale", count, busy_connections);
        let names = &busy.names;
        let check = |text: &str| -> Result<(), String> {
            big_present(text)?;
            check_ours(
                text,
                names,
                &[
                    ("listen", 1),
                    ("established", 2 * busy_connections),
                    ("time_wait", 0),
                ],
            )
            .map(|_| ())
        };
        let rounds = measure_scale(runs, &check);
        let scenario =
            format!("{count} namespaces with 1 listener + {busy_connections} connections");
        verdicts.extend(scale_verdicts(&scenario, &rounds, Some(BUSY_WALL_MAX_S)));
        verdicts.extend(measure_server(&scenario, &check));
        drop(busy);
    }
    host_load.teardown();
    println!(
        "(numbers taken on a shared machine: {} CPUs usable)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    verdicts
}

/// Builds the 1M host load in a private namespace; returns it and the
/// namespace's label in our output (`ino:N`).
fn build_host_load(host: u64) -> Result<(load::Load, String), String> {
    let exe = std::env::current_exe().expect("own path");
    println!(
        "\n---- scale: building the host load ({host} TCP sockets in a private namespace) ----"
    );
    // On a thread of its own: it enters the private namespace, builds the
    // load (its helper processes start in that namespace) and ends; the
    // sockets and helpers keep the namespace alive.
    let built = std::thread::spawn(move || -> io::Result<(load::Load, u64)> {
        sockdiag_exporter::scope::netns_enter::enter_private()?;
        load::tune_namespace()?;
        let plan = load::Plan::new(host, load::have_ipv6());
        let ino = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
        Ok((load::Load::build(plan, &exe, LOAD_HELPER_ENV)?, ino))
    })
    .join()
    .expect("load thread");
    let (host_load, host_ino) =
        built.map_err(|e| format!("scale: cannot build the host load: {e}"))?;
    let host_label = format!("ino:{host_ino}");
    println!(
        "host load built in {:.1} s ({} failed connects), namespace {host_label}",
        host_load.build_time.as_secs_f64(),
        host_load.failed_connects
    );
    Ok((host_load, host_label))
}

/// Part `hold`, for profiling by hand: builds the `scale` host load and the
/// busy scenario's 100 namespaces, prints how to measure, and holds them
/// until stdin reaches end of file or a line (at most NETNS_HOLD_SECONDS,
/// default 3600), then tears everything down.
fn hold() -> Vec<Verdict> {
    let host = env_usize("NETNS_HOST_SOCKETS", 1_000_000) as u64;
    let busy = env_usize("NETNS_BUSY_COUNT", 100);
    let connections = env_usize("NETNS_BUSY_CONNECTIONS", 5);
    let seconds = env_usize("NETNS_HOLD_SECONDS", 3600) as u64;
    let (host_load, host_label) = match build_host_load(host) {
        Ok(built) => built,
        Err(e) => return vec![Verdict(Outcome::Fail, e)],
    };
    let held = Busy::add("sdhold", busy, connections);
    println!(
        "holding {host_label} ({host} TCP sockets) and {busy} namespaces sdhold-{}-b* (1 listener + {connections} connections each) for at most {seconds} s; press Enter to end",
        std::process::id()
    );
    println!("e.g. {OURS} dump --collector.netns --log.level error");
    // stdin is read on a thread; the wait is bounded either way.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(seconds));
    drop(held);
    host_load.teardown();
    vec![Verdict(
        Outcome::Pass,
        "hold: load held and torn down".into(),
    )]
}

/// The busy scenario's namespaces (`PREFIX-PID-bN`), each with a listener
/// and `connections` connections held by helper processes; on drop the
/// helpers are killed, then the namespaces deleted.
struct Busy {
    names: Vec<String>,
    _helpers: Vec<Helper>,
    _guard: Namespaces,
}

impl Busy {
    fn add(prefix: &str, count: usize, connections: usize) -> Busy {
        let names: Vec<String> = (0..count)
            .map(|i| format!("{prefix}-{}-b{i}", std::process::id()))
            .collect();
        let guard = Namespaces::add(&names);
        let helpers = names
            .chunks(PER_HELPER)
            .map(|chunk| Helper::spawn(chunk, connections))
            .collect();
        Busy {
            names,
            _helpers: helpers,
            _guard: guard,
        }
    }
}

/// Named namespaces, deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(names: &[String]) -> Namespaces {
        let mut guard = Namespaces(Vec::new());
        for name in names {
            let ok = Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip netns add {name}");
            guard.0.push(name.clone());
        }
        guard
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A helper process holding the sockets of some namespaces; killed on drop.
struct Helper(Child);

impl Helper {
    fn spawn(names: &[String], connections: usize) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(HELPER_ENV, names.join(","))
            .env("NETNS_CONNECTIONS", connections.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "helper failed");
        Helper(child)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own unreaped child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Helper mode: for each namespace named in the environment, enter it, open
/// the load, and keep it until stdin closes.
fn helper() -> io::Result<()> {
    let names = std::env::var(HELPER_ENV).unwrap_or_default();
    let connections = env_usize("NETNS_CONNECTIONS", 500);
    let mut held: Vec<(TcpListener, Vec<TcpStream>)> = Vec::new();
    for name in names.split(',') {
        let file = std::fs::File::open(format!("/run/netns/{name}"))?;
        // SAFETY: setns on an open namespace fd; affects this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        sockdiag_exporter::scope::netns_enter::set_link_up("lo")?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // Re-listen with a backlog that holds every connection unaccepted.
        // SAFETY: listen(2) on our own bound socket.
        if unsafe { libc::listen(listener.as_raw_fd(), (connections + 16) as libc::c_int) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let addr = listener.local_addr()?;
        let clients = (0..connections)
            .map(|_| TcpStream::connect(addr))
            .collect::<io::Result<Vec<_>>>()?;
        held.push((listener, clients));
    }
    println!("READY");
    io::stdout().flush()?;
    let mut sink = String::new();
    let _ = io::stdin().read_line(&mut sink);
    drop(held);
    Ok(())
}
