//! `make bench` (`cargo bench --bench collect`): how fast and how small one
//! collection of ours is next to the obvious alternatives, at 10k, 100k and
//! 1M TCP sockets (env BENCH_SIZES, e.g. `BENCH_SIZES=10000,100000`).
//!
//! For each size the bench moves its main thread into a fresh private network
//! namespace, builds a known socket mix there (support::load), then measures
//! in interleaved rounds (BENCH_RUNS, default 5, after one warm-up round):
//!
//! - two-dump netlink loop: the naive lower bound, a helper-mode subprocess;
//! - ours: `sockdiag_exporter dump --collector.tcp.dump auto|legacy|by-family`;
//! - /proc/net/tcp{,6} read and parsed, a helper-mode subprocess;
//! - `ss -tan`, output lines counted;
//! - node_exporter 1.5 tcpstat: scrapes of /metrics over loopback.
//!
//! Subprocess rows: wall time from spawn to wait4, peak RSS from wait4's
//! ru_maxrss. node_exporter: the scrape's wall time, VmHWM for RSS. Needs
//! root (it creates namespaces); without it, prints why and exits 0.
//! Helper processes are this same binary, re-executed with SOCKDIAG_BENCH_HELPER.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sockdiag_exporter::netns;
use support::load::{self, Load, Plan};
use support::measure::{self, median};
use support::nodeexp::{self, NodeExporter};
use support::probes::{self, Mix};

const HELPER_ENV: &str = "SOCKDIAG_BENCH_HELPER";
/// Cargo builds the binary (bench profile = release settings) for benches.
const OURS: &str = env!("CARGO_BIN_EXE_sockdiag_exporter");
const DUMP_MODES: [&str; 3] = ["auto", "legacy", "by-family"];

fn main() {
    if let Ok(mode) = std::env::var(HELPER_ENV) {
        let r = match mode.as_str() {
            "load" => load::helper(),
            "two-dump" => probes::two_dump(),
            "mix" => probes::mix(),
            "proc" => probes::proc_tcp(),
            other => Err(std::io::Error::other(format!(
                "unknown helper mode {other:?}"
            ))),
        };
        if let Err(e) = r {
            eprintln!("bench helper {mode}: {e}");
            std::process::exit(1);
        }
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("bench collect: skipped: needs root (it builds private network namespaces and up to 1M sockets)");
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    let runs_env: Option<usize> = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok());
    // Small sizes are cheap and noisier, so they get more rounds by default.
    let runs_for = |n: u64| -> usize {
        runs_env
            .unwrap_or(match n {
                0..=10_000 => 21,
                10_001..=100_000 => 11,
                _ => 7,
            })
            .max(1)
    };
    let exe = std::env::current_exe().expect("current_exe");
    let target_dir = target_dir(&exe);

    println!("sockdiag_exporter collection benchmark");
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "  {date}, kernel {}, {} CPUs online",
        kernel.trim(),
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
    );
    println!(
        "  sizes {sizes:?}, runs per size {:?} (interleaved, after 1 warm-up round; medians)",
        sizes.iter().map(|&n| runs_for(n)).collect::<Vec<_>>()
    );
    println!("  ours: {OURS}");
    let node_bin = match nodeexp::ensure(&target_dir.join("node_exporter")) {
        Ok(b) => {
            println!("  node_exporter: {}", b.display());
            Some(b)
        }
        Err(why) => {
            println!("  node_exporter: skipped: {why}");
            None
        }
    };
    let have_ss = Command::new("ss").arg("-V").output().is_ok();
    if !have_ss {
        println!("  ss: skipped: not found in PATH");
    }

    let mut reports = Vec::new();
    for &n in &sizes {
        match bench_size(
            n,
            runs_for(n),
            &exe,
            &target_dir,
            node_bin.as_deref(),
            have_ss,
        ) {
            Ok(r) => {
                print!("{}", r.render());
                reports.push(r);
            }
            Err(e) => println!("\nsize {n}: failed: {e}"),
        }
    }
    if reports.len() > 1 {
        println!("\n==== all sizes ====");
        for r in &reports {
            print!("{}", r.render());
        }
    }
}

/// target/ from target/release/deps/collect-HASH.
fn target_dir(exe: &Path) -> PathBuf {
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    TwoDump,
    Ours(&'static str),
    Proc,
    Ss,
    Node,
}

impl Tool {
    fn name(self) -> String {
        match self {
            Tool::TwoDump => "two-dump netlink loop (baseline)".into(),
            Tool::Ours(m) => format!("ours: dump --collector.tcp.dump {m}"),
            Tool::Proc => "/proc/net/tcp{,6} read + parse".into(),
            Tool::Ss => "ss -tan".into(),
            Tool::Node => "node_exporter 1.5 tcpstat scrape".into(),
        }
    }
}

/// One tool's measurements at one size. `wall` and `cpu` have one entry per
/// round (NaN where that round failed), so ratios can pair rounds.
#[derive(Default, Clone)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    internal: Vec<f64>,
    rss_kib: Vec<f64>,
    seen: Vec<f64>,
    errors: Vec<String>,
}

struct SizeReport {
    target: u64,
    mix_before: Mix,
    mix_after: Mix,
    build_secs: f64,
    failed_connects: u64,
    notes: Vec<String>,
    rows: Vec<(Tool, Samples)>,
    runs: usize,
}

fn bench_size(
    n: u64,
    runs: usize,
    exe: &Path,
    target_dir: &Path,
    node_bin: Option<&Path>,
    have_ss: bool,
) -> std::io::Result<SizeReport> {
    println!("\n---- size {n}: building the load ----");
    // ~2.7 KB of slab per socket; keep a wide margin for the others on this box.
    let need_kib = n * 5 + (1 << 20);
    let avail = mem_available_kib();
    if avail < need_kib {
        return Err(std::io::Error::other(format!(
            "skipped: needs about {} MiB free, MemAvailable is {} MiB",
            need_kib >> 10,
            avail >> 10
        )));
    }
    netns::enter_private()?;
    load::tune_namespace()?;
    let plan = Plan::new(n, load::have_ipv6());
    println!(
        "plan: {} IPv4 + {} IPv6 connections ({} helper processes), {} TIME_WAIT, {} SYN_SENT, {} listeners",
        plan.conns4,
        plan.conns6,
        plan.helpers(),
        plan.time_wait,
        plan.syn_sent,
        plan.listeners
    );
    let mut load = Load::build(plan, exe, HELPER_ENV)?;
    let mut tw_refreshed = 0;
    let mix_before = settled_mix()?;
    println!(
        "built in {:.1} s ({} failed connects); mix: {}",
        load.build_time.as_secs_f64(),
        load.failed_connects,
        mix_before.summary()
    );

    let mut notes = Vec::new();
    let mut tools = vec![Tool::TwoDump];
    match check_ours(&mix_before) {
        Ok(check) => {
            for c in &check {
                println!("{c}");
            }
            notes.extend(check);
            tools.extend(DUMP_MODES.iter().map(|&m| Tool::Ours(m)));
        }
        Err(why) => {
            println!("ours: skipped: {why}");
            notes.push(format!("ours skipped: {why}"));
        }
    }
    tools.push(Tool::Proc);
    if have_ss {
        tools.push(Tool::Ss);
    }
    let node = match node_bin {
        Some(bin) => match NodeExporter::start(bin, &target_dir.join("node_exporter/bench.log")) {
            Ok(ne) => {
                tools.push(Tool::Node);
                Some(ne)
            }
            Err(e) => {
                notes.push(format!("node_exporter skipped: {e}"));
                None
            }
        },
        None => None,
    };

    let mut samples: Vec<Samples> = vec![Samples::default(); tools.len()];
    let load_before = loadavg();
    let started = Instant::now();
    for round in 0..=runs {
        for k in 0..tools.len() {
            // Rotate the order each round so no tool always runs first.
            let i = (k + round) % tools.len();
            if load.keep_time_wait()? {
                tw_refreshed += 1;
            }
            let s = measure_once(tools[i], exe, node.as_ref());
            if round == 0 {
                continue; // warm-up: page cache, slab, CPU frequency
            }
            match s {
                Ok(Measured {
                    wall,
                    cpu,
                    internal,
                    rss,
                    seen,
                }) => {
                    let t = &mut samples[i];
                    t.wall.push(wall);
                    t.cpu.push(cpu);
                    if let Some(x) = internal {
                        t.internal.push(x);
                    }
                    if let Some(r) = rss {
                        t.rss_kib.push(r as f64);
                    }
                    t.seen.push(seen as f64);
                }
                Err(e) => {
                    samples[i].wall.push(f64::NAN);
                    samples[i].cpu.push(f64::NAN);
                    samples[i].errors.push(e);
                }
            }
        }
    }
    let measured = format!(
        "measured {runs} rounds in {:.1} s; load average (1/5/15 min) {load_before} before, {} after",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    println!("{measured}");
    notes.push(measured);
    if tw_refreshed > 0 {
        notes.push(format!(
            "TIME_WAIT batch re-made {tw_refreshed} time(s) between measurements after the previous one expired (60 s)"
        ));
    }
    if let Some(ne) = node {
        // VmHWM covers every scrape this node_exporter served at this size.
        let hwm = ne.vm_hwm_kib() as f64;
        if let Some(pos) = tools.iter().position(|&t| t == Tool::Node) {
            samples[pos].rss_kib = vec![hwm];
        }
        ne.stop();
    }
    let mix_after = probes::count_mix()?;
    let build_secs = load.build_time.as_secs_f64();
    let failed_connects = load.failed_connects;
    load.teardown();
    Ok(SizeReport {
        target: n,
        mix_before,
        mix_after,
        build_secs,
        failed_connects,
        notes,
        rows: tools.into_iter().zip(samples).collect(),
        runs,
    })
}

/// The mix once it stops changing (FINs and ACKs of the last helpers may
/// still be in flight right after the build): two equal counts 200 ms apart.
fn settled_mix() -> std::io::Result<Mix> {
    let mut last = probes::count_mix()?;
    for _ in 0..25 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = probes::count_mix()?;
        if now.count == last.count && now.rq == last.rq && now.wq == last.wq {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Our binary is usable once `dump` prints the collect duration metric.
/// Each dump mode is run once and its per-family, per-state counts and queue
/// sums are compared with the two-dump mix taken just before: any difference
/// is returned as a note (the load is static apart from TIME_WAIT expiry).
fn check_ours(mix: &Mix) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for mode in DUMP_MODES {
        let out = Command::new(OURS)
            .args(["dump", "--collector.tcp.dump", mode])
            .output()
            .map_err(|e| format!("cannot run {OURS}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "`dump --collector.tcp.dump {mode}` exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if metric_value(&text, "sockdiag_collect_duration_seconds{").is_none() {
            return Err(
                "`dump` printed no sockdiag_collect_duration_seconds (binary still a stub?)".into(),
            );
        }
        let mut diffs = Vec::new();
        for (metric, table) in [
            ("sockdiag_sockets{", &mix.count),
            ("sockdiag_receive_queue_bytes{", &mix.rq),
            ("sockdiag_send_queue_bytes{", &mix.wq),
        ] {
            for (fi, fam) in ["ipv4", "ipv6"].iter().enumerate() {
                for (st, name) in probes::STATE_NAMES.iter().enumerate().skip(1) {
                    let ours = labelled_value(&text, metric, fam, name);
                    let want = table[fi][st] as f64;
                    if ours != Some(want) {
                        diffs.push(format!(
                            "{metric}{fam},{name}}} ours {} vs {want}",
                            ours.map(|v| v.to_string()).unwrap_or("missing".into())
                        ));
                    }
                }
            }
        }
        for (fi, fam) in ["ipv4", "ipv6"].iter().enumerate() {
            let label = format!("family=\"{fam}\"");
            let ours: f64 = text
                .lines()
                .filter(|l| l.starts_with("sockdiag_listen_queue{") && l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next())
                .filter_map(|v| v.parse::<f64>().ok())
                .sum();
            let want = mix.listen_queue[fi] as f64;
            if ours != want {
                diffs.push(format!(
                    "sum of sockdiag_listen_queue{{{fam}}} ours {ours} vs {want}"
                ));
            }
        }
        if !diffs.is_empty() {
            notes.push(format!(
                "CHECK ours ({mode}) differs from the two-dump mix in {} series: {}",
                diffs.len(),
                diffs.iter().take(6).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    if notes.is_empty() {
        notes.push("check: all three dump modes match the two-dump mix (counts and queue sums per family and state, accept queues summed per family)".into());
    }
    Ok(notes)
}

/// Value of `metric{...family="F"...state="S"...}`.
fn labelled_value(text: &str, metric: &str, family: &str, state: &str) -> Option<f64> {
    let fam = format!("family=\"{family}\"");
    let st = format!("state=\"{state}\"");
    text.lines()
        .filter(|l| l.starts_with(metric))
        .find(|l| {
            let labels = l.split('}').next().unwrap_or("");
            labels.contains(&fam) && labels.contains(&st)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// First sample value of a series whose line starts with `prefix`.
fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

fn kv(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|t| t.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// One measurement: (wall s, internal s, peak RSS KiB, sockets the tool saw).
struct Measured {
    /// Wall time, s: spawn to reap, or the scrape's request to last byte.
    wall: f64,
    /// User + system CPU, s.
    cpu: f64,
    /// The tool's own duration figure, if it reports one.
    internal: Option<f64>,
    /// Peak RSS, KiB (node_exporter: read once at the end instead).
    rss: Option<u64>,
    /// Sockets the tool counted.
    seen: u64,
}

fn measure_once(tool: Tool, exe: &Path, node: Option<&NodeExporter>) -> Result<Measured, String> {
    let helper = |mode: &str| {
        let mut c = Command::new(exe);
        c.env(HELPER_ENV, mode);
        c
    };
    let (mut cmd, keep) = match tool {
        Tool::Node => {
            let ne = node.ok_or("no node_exporter")?;
            let cpu_before = ne.cpu_seconds();
            let (took, body) = ne.scrape().map_err(|e| e.to_string())?;
            let cpu = ne.cpu_seconds() - cpu_before;
            let internal = metric_value(
                &body,
                "node_scrape_collector_duration_seconds{collector=\"tcpstat\"}",
            );
            if metric_value(
                &body,
                "node_scrape_collector_success{collector=\"tcpstat\"}",
            ) != Some(1.0)
            {
                return Err("tcpstat collector did not succeed".into());
            }
            return Ok(Measured {
                wall: took.as_secs_f64(),
                cpu,
                internal,
                rss: None,
                seen: nodeexp::connection_states_total(&body),
            });
        }
        Tool::TwoDump => (helper("two-dump"), true),
        Tool::Proc => (helper("proc"), true),
        Tool::Ss => {
            let mut c = Command::new("ss");
            c.arg("-tan");
            (c, false)
        }
        Tool::Ours(mode) => {
            let mut c = Command::new(OURS);
            c.args(["dump", "--collector.tcp.dump", mode]);
            (c, true)
        }
    };
    let run = measure::run(&mut cmd, keep).map_err(|e| format!("{}: {e}", tool.name()))?;
    if !run.success() {
        return Err(format!(
            "{} exited with status {:#x}",
            tool.name(),
            run.status
        ));
    }
    let out = String::from_utf8_lossy(&run.stdout);
    let wall = run.wall.as_secs_f64();
    let (internal, seen) = match tool {
        Tool::TwoDump => (kv(&out, "duration_seconds="), kv(&out, "messages=")),
        Tool::Proc => (kv(&out, "duration_seconds="), kv(&out, "sockets=")),
        Tool::Ss => (None, Some(run.lines.saturating_sub(1) as f64)),
        Tool::Ours(_) => (
            metric_value(&out, "sockdiag_collect_duration_seconds{"),
            Some(metric_sum(&out, "sockdiag_sockets{")),
        ),
        Tool::Node => unreachable!(),
    };
    Ok(Measured {
        wall,
        cpu: run.cpu.as_secs_f64(),
        internal,
        rss: Some(run.maxrss_kib),
        seen: seen.unwrap_or(0.0) as u64,
    })
}

fn finite(v: &[f64]) -> Vec<f64> {
    v.iter().cloned().filter(|x| x.is_finite()).collect()
}

fn ms(v: &[f64]) -> String {
    let v = finite(v);
    if v.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", median(&v) * 1e3)
    }
}

fn mib(v: &[f64]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", measure::max(v) / 1024.0)
    }
}

fn ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    measure::paired_ratio(a, b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into())
}

impl SizeReport {
    fn row(&self, t: Tool) -> Option<&Samples> {
        self.rows.iter().find(|(x, _)| *x == t).map(|(_, s)| s)
    }

    fn render(&self) -> String {
        let mut o = String::new();
        o.push_str(&format!(
            "\n### {} sockets (target {}), {} runs\n\n",
            self.mix_before.total(),
            self.target,
            self.runs
        ));
        o.push_str(&format!(
            "- load built in {:.1} s, {} failed connects\n",
            self.build_secs, self.failed_connects
        ));
        o.push_str(&format!("- mix before: {}\n", self.mix_before.summary()));
        o.push_str(&format!("- mix after:  {}\n", self.mix_after.summary()));
        for n in &self.notes {
            o.push_str(&format!("- {n}\n"));
        }
        o.push('\n');
        o.push_str("| tool | wall ms (median) | wall ms (min..max) | CPU ms (median) | internal ms (median) | peak RSS MiB | wall / baseline | RSS / baseline | sockets seen |\n");
        o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let base = self.row(Tool::TwoDump);
        for (t, s) in &self.rows {
            let wall = finite(&s.wall);
            if wall.is_empty() {
                o.push_str(&format!(
                    "| {} | failed: {} | | | | | | | |\n",
                    t.name(),
                    s.errors.join("; ")
                ));
                continue;
            }
            o.push_str(&format!(
                "| {} | {} | {:.1}..{:.1} | {} | {} | {} | {} | {} | {:.0} |\n",
                t.name(),
                ms(&wall),
                measure::min(&wall) * 1e3,
                measure::max(&wall) * 1e3,
                ms(&s.cpu),
                ms(&s.internal),
                mib(&s.rss_kib),
                fmt_ratio(base.and_then(|b| ratio(&s.wall, &b.wall))),
                fmt_ratio(base.and_then(|b| {
                    if s.rss_kib.is_empty() || b.rss_kib.is_empty() {
                        None
                    } else {
                        Some(measure::max(&s.rss_kib) / measure::max(&b.rss_kib))
                    }
                })),
                median(&s.seen),
            ));
            if !s.errors.is_empty() {
                o.push_str(&format!(
                    "|   ({} failed runs: {}) | | | | | | | | |\n",
                    s.errors.len(),
                    s.errors.join("; ")
                ));
            }
        }
        o.push('\n');
        o.push_str(&self.targets());
        o
    }

    /// The targets (stated for 1M sockets; shown at every size).
    fn targets(&self) -> String {
        let mut o = String::new();
        let official = if self.target == 1_000_000 {
            ""
        } else {
            " (targets are set for 1M; informational here)"
        };
        o.push_str(&format!("targets{official}:\n"));
        let base = self.row(Tool::TwoDump);
        let node = self.row(Tool::Node);
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let mut any = false;
        for m in DUMP_MODES {
            let Some(s) = self
                .row(Tool::Ours(m))
                .filter(|s| !finite(&s.wall).is_empty())
            else {
                continue;
            };
            any = true;
            if let Some(r) = base.and_then(|b| ratio(&s.wall, &b.wall)) {
                o.push_str(&format!(
                    "- {m}: wall {r:.2}x of the two-dump loop (<= 0.90x): {}\n",
                    verdict(r <= 0.90)
                ));
            }
            match node.and_then(|nd| ratio(&nd.wall, &s.wall)) {
                Some(r) => o.push_str(&format!(
                    "- {m}: node_exporter tcpstat takes {r:.2}x our wall time (>= 2.5x): {}\n",
                    verdict(r >= 2.5)
                )),
                None => o.push_str(&format!("- {m}: node_exporter comparison: not measured\n")),
            }
            let rss = measure::max(&s.rss_kib) / 1024.0;
            o.push_str(&format!(
                "- {m}: peak RSS {rss:.1} MiB (<= 10 MiB): {}\n",
                verdict(rss <= 10.0)
            ));
        }
        if !any {
            o.push_str("- not evaluated: our binary was not measured\n");
        }
        o
    }
}
