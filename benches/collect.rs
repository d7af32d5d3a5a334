//! `make bench` (`cargo bench --bench collect`): how fast and how small one
//! collection of ours is next to the obvious alternatives, at 10k, 100k and
//! 1M TCP sockets (env BENCH_SIZES, e.g. `BENCH_SIZES=10000,100000`), plus
//! 10k UDP and 10k unix sockets at every size; and what each of our
//! collectors costs.
//!
//! For each size the bench moves its main thread into a fresh private network
//! namespace, builds a known socket mix there (support::load), then measures
//! in interleaved rounds (BENCH_RUNS, default 21/11/7 by size, after one
//! warm-up round):
//!
//! - two-dump netlink loop: the naive lower bound, a helper-mode subprocess;
//! - ours, TCP only: `sockdiag_exporter dump --collector.tcp.dump
//!   auto|legacy|by-family --no-collector.listeners --no-collector.udp
//!   --no-collector.unix`;
//! - ours with default flags (all four collectors), each collector alone
//!   (listeners, udp, unix), and no collector at all (start-up floor);
//! - /proc/net/tcp{,6} read and parsed, a helper-mode subprocess;
//! - `ss -tan`, output lines counted;
//! - node_exporter 1.5 tcpstat: scrapes of /metrics over loopback.
//!
//! Our "internal" figure is the collection's time from the collectors' own
//! timers: max(tcp, listeners + udp + unix), since the side collectors run
//! on their own socket and thread while tcp runs.
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
use support::probes::{self, Mix, Other};

const HELPER_ENV: &str = "SOCKDIAG_BENCH_HELPER";
/// Cargo builds the binary (bench profile = release settings) for benches.
const OURS: &str = env!("CARGO_BIN_EXE_sockdiag_exporter");
const DUMP_MODES: [&str; 3] = ["auto", "legacy", "by-family"];
/// The collectors besides tcp, each also measured alone.
const OTHER_COLLECTORS: [&str; 3] = ["listeners", "udp", "unix"];
const ALL_COLLECTORS: [&str; 4] = ["tcp", "listeners", "udp", "unix"];
/// Default flags may take at most this much more wall time (what a scrape
/// waits for) than TCP only. The CPU ratio is printed next to it but not
/// bounded: the side collectors' kernel work is real CPU, which running them
/// on their own socket and thread overlaps with tcp's but cannot remove.
const DEFAULT_OVER_TCP_MAX: f64 = 1.10;

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
    /// TCP collector only, in this dump mode.
    Ours(&'static str),
    /// Default flags: every collector on, dump mode auto.
    OursDefault,
    /// This one collector alone (tcp off too).
    OursOnly(&'static str),
    /// Every collector off: process start, render, exit.
    OursNone,
    Proc,
    Ss,
    Node,
}

impl Tool {
    /// `dump` and its flags, for our rows.
    fn ours_args(self) -> Option<Vec<String>> {
        let no = |k: &str| format!("--no-collector.{k}");
        let mut args = vec!["dump".to_string()];
        match self {
            Tool::Ours(m) => {
                args.extend(["--collector.tcp.dump".into(), m.into()]);
                args.extend(OTHER_COLLECTORS.iter().map(|k| no(k)));
            }
            Tool::OursDefault => {}
            Tool::OursOnly(only) => {
                args.extend(ALL_COLLECTORS.iter().filter(|&&k| k != only).map(|k| no(k)));
            }
            Tool::OursNone => args.extend(ALL_COLLECTORS.iter().map(|k| no(k))),
            _ => return None,
        }
        Some(args)
    }

    fn name(self) -> String {
        match self {
            Tool::TwoDump => "two-dump netlink loop (baseline)".into(),
            Tool::Ours(m) => format!("ours, tcp only: --collector.tcp.dump {m}"),
            Tool::OursDefault => "ours, default flags (tcp+listeners+udp+unix)".into(),
            Tool::OursOnly(k) => format!("ours, {k} only"),
            Tool::OursNone => "ours, no collector (start-up floor)".into(),
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
    /// Ours: each collector's own sockdiag_collect_duration_seconds, s.
    per_collector: std::collections::BTreeMap<String, Vec<f64>>,
}

struct SizeReport {
    target: u64,
    mix_before: Mix,
    mix_after: Mix,
    other_before: Other,
    other_after: Other,
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
        "plan: {} IPv4 + {} IPv6 connections, {} TIME_WAIT, {} SYN_SENT, {} listeners; {} UDP, about {} unix ({} helper processes)",
        plan.conns4,
        plan.conns6,
        plan.time_wait,
        plan.syn_sent,
        plan.listeners,
        plan.udp,
        plan.unix,
        plan.helpers(),
    );
    let mut load = Load::build(plan, exe, HELPER_ENV)?;
    let mut tw_refreshed = 0;
    let mix_before = settled_mix()?;
    let other_before = probes::count_other()?;
    println!(
        "built in {:.1} s ({} failed connects); mix: {}; {}",
        load.build_time.as_secs_f64(),
        load.failed_connects,
        mix_before.summary(),
        other_before.summary()
    );

    let mut notes = Vec::new();
    let mut tools = vec![Tool::TwoDump];
    match check_ours(&mix_before, &other_before) {
        Ok(check) => {
            for c in &check {
                println!("{c}");
            }
            notes.extend(check);
            tools.extend(DUMP_MODES.iter().map(|&m| Tool::Ours(m)));
            tools.push(Tool::OursDefault);
            tools.extend(OTHER_COLLECTORS.iter().map(|&k| Tool::OursOnly(k)));
            tools.push(Tool::OursNone);
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
                    per_collector,
                }) => {
                    let t = &mut samples[i];
                    for (k, v) in per_collector {
                        t.per_collector.entry(k).or_default().push(v);
                    }
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
    let other_after = probes::count_other()?;
    let build_secs = load.build_time.as_secs_f64();
    let failed_connects = load.failed_connects;
    load.teardown();
    Ok(SizeReport {
        target: n,
        mix_before,
        mix_after,
        other_before,
        other_after,
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
/// Each TCP-only dump mode, and the default flags, are run once, and their
/// TCP series (per family and state: counts, queue sums; with the listeners
/// collector on, accept queues summed per family) are compared with the
/// two-dump mix taken just before;
/// the default run's UDP counts and receive queues per family and state,
/// and unix counts per type and state, with the independent UDP and unix
/// dumps. Any difference is returned as a note (the load is static apart
/// from TIME_WAIT expiry).
fn check_ours(mix: &Mix, other: &Other) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let runs: Vec<Tool> = DUMP_MODES
        .iter()
        .map(|&m| Tool::Ours(m))
        .chain([Tool::OursDefault])
        .collect();
    for tool in runs {
        let args = tool.ours_args().expect("our row");
        let out = Command::new(OURS)
            .args(&args)
            .output()
            .map_err(|e| format!("cannot run {OURS}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "`{}` exited {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if metric_value(&text, "sockdiag_collect_duration_seconds{").is_none() {
            return Err(
                "`dump` printed no sockdiag_collect_duration_seconds (binary still a stub?)".into(),
            );
        }
        for k in ALL_COLLECTORS {
            let success = format!("sockdiag_collect_success{{collector=\"{k}\"}}");
            if let Some(v) = metric_value(&text, &success) {
                if v != 1.0 {
                    return Err(format!("`{}`: collector {k} failed", args.join(" ")));
                }
            }
        }
        let mut diffs = Vec::new();
        let mut want = |metric: &str, labels: &[String], want: u64, what: String| {
            let ours = labelled_value(&text, metric, labels);
            if ours != Some(want as f64) {
                diffs.push(format!(
                    "{what} ours {} vs {want}",
                    ours.map(|v| v.to_string()).unwrap_or("missing".into())
                ));
            }
        };
        let l = |k: &str, v: &str| format!("{k}=\"{v}\"");
        for (metric, table) in [
            ("sockdiag_sockets{", &mix.count),
            ("sockdiag_receive_queue_bytes{", &mix.rq),
            ("sockdiag_send_queue_bytes{", &mix.wq),
        ] {
            for (fi, fam) in ["ipv4", "ipv6"].iter().enumerate() {
                for (st, name) in probes::STATE_NAMES.iter().enumerate().skip(1) {
                    want(
                        metric,
                        &[l("protocol", "tcp"), l("family", fam), l("state", name)],
                        table[fi][st],
                        format!("{metric}tcp,{fam},{name}}}"),
                    );
                }
            }
        }
        if tool == Tool::OursDefault {
            for (fi, fam) in ["ipv4", "ipv6"].iter().enumerate() {
                for (st, name) in probes::UDP_STATE_NAMES.iter().enumerate() {
                    let labels = [l("protocol", "udp"), l("family", fam), l("state", name)];
                    want(
                        "sockdiag_sockets{",
                        &labels,
                        other.udp[fi][st],
                        format!("sockdiag_sockets{{udp,{fam},{name}}}"),
                    );
                    want(
                        "sockdiag_receive_queue_bytes{",
                        &labels,
                        other.udp_rq[fi][st],
                        format!("sockdiag_receive_queue_bytes{{udp,{fam},{name}}}"),
                    );
                }
            }
            for (ti, ty) in probes::UNIX_TYPE_NAMES.iter().enumerate() {
                for (st, name) in probes::UNIX_STATE_NAMES.iter().enumerate() {
                    want(
                        "sockdiag_unix_sockets{",
                        &[l("type", ty), l("state", name)],
                        other.unix[ti][st],
                        format!("sockdiag_unix_sockets{{{ty},{name}}}"),
                    );
                }
            }
        }
        // Accept queues are the listeners collector's series.
        let listeners_on = tool == Tool::OursDefault;
        for (fi, fam) in ["ipv4", "ipv6"].iter().enumerate().filter(|_| listeners_on) {
            let label = format!("family=\"{fam}\"");
            let tcp = "protocol=\"tcp\"";
            let ours: f64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("sockdiag_listen_queue{") && l.contains(&label) && l.contains(tcp)
                })
                .filter_map(|l| l.rsplit(' ').next())
                .filter_map(|v| v.parse::<f64>().ok())
                .sum();
            let want = mix.listen_queue[fi] as f64;
            if ours != want {
                diffs.push(format!(
                    "sum of sockdiag_listen_queue{{tcp,{fam}}} ours {ours} vs {want}"
                ));
            }
        }
        if !diffs.is_empty() {
            notes.push(format!(
                "CHECK {} differs from the independent count in {} series: {}",
                tool.name(),
                diffs.len(),
                diffs.iter().take(6).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    if notes.is_empty() {
        notes.push("check: all three TCP-only dump modes and the default flags match the two-dump mix (TCP counts and queue sums per family and state); the default flags also match the accept queues summed per family, and match the independent UDP (counts and receive queues per family and state) and unix (counts per type and state) dumps".into());
    }
    Ok(notes)
}

/// Value of the first `metric{...}` series whose labels include every one
/// of `labels` (each `key="value"`).
fn labelled_value(text: &str, metric: &str, labels: &[String]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric))
        .find(|l| {
            let have = l.split('}').next().unwrap_or("");
            labels.iter().all(|want| have.contains(want.as_str()))
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
    /// Ours: (collector, its own collect duration in s).
    per_collector: Vec<(String, f64)>,
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
                per_collector: Vec::new(),
            });
        }
        Tool::TwoDump => (helper("two-dump"), true),
        Tool::Proc => (helper("proc"), true),
        Tool::Ss => {
            let mut c = Command::new("ss");
            c.arg("-tan");
            (c, false)
        }
        Tool::Ours(_) | Tool::OursDefault | Tool::OursOnly(_) | Tool::OursNone => {
            let mut c = Command::new(OURS);
            c.args(tool.ours_args().expect("our row"));
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
    let per_collector: Vec<(String, f64)> = ALL_COLLECTORS
        .iter()
        .filter_map(|k| {
            let series = format!("sockdiag_collect_duration_seconds{{collector=\"{k}\"}}");
            metric_value(&out, &series).map(|v| (k.to_string(), v))
        })
        .collect();
    let (internal, seen) = match tool {
        Tool::TwoDump => (kv(&out, "duration_seconds="), kv(&out, "messages=")),
        Tool::Proc => (kv(&out, "duration_seconds="), kv(&out, "sockets=")),
        Tool::Ss => (None, Some(run.lines.saturating_sub(1) as f64)),
        Tool::Ours(_) | Tool::OursDefault | Tool::OursOnly(_) | Tool::OursNone => (
            // The whole collection from the collectors' own timers: tcp
            // runs while listeners, udp and unix run one after another on
            // the side socket, so it is max(tcp, the side ones' sum).
            (!per_collector.is_empty()).then(|| {
                let tcp = per_collector
                    .iter()
                    .find(|(k, _)| k == "tcp")
                    .map(|(_, v)| *v);
                let side: f64 = per_collector
                    .iter()
                    .filter(|(k, _)| k != "tcp")
                    .map(|(_, v)| v)
                    .sum();
                tcp.map_or(side, |tcp| tcp.max(side))
            }),
            Some(
                metric_sum(&out, "sockdiag_sockets{") + metric_sum(&out, "sockdiag_unix_sockets{"),
            ),
        ),
        Tool::Node => unreachable!(),
    };
    Ok(Measured {
        wall,
        cpu: run.cpu.as_secs_f64(),
        internal,
        rss: Some(run.maxrss_kib),
        seen: seen.unwrap_or(0.0) as u64,
        per_collector,
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

/// Median over rounds of a[i] - b[i], for rounds where both were measured.
fn paired_diff(a: &[f64], b: &[f64]) -> Option<f64> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| x - y)
        .collect();
    (!d.is_empty()).then(|| median(&d))
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
            "\n### {} TCP sockets (target {}) + {} UDP + {} unix, {} runs\n\n",
            self.mix_before.total(),
            self.target,
            self.other_before.udp_total(),
            self.other_before.unix_total(),
            self.runs
        ));
        o.push_str(&format!(
            "- load built in {:.1} s, {} failed connects\n",
            self.build_secs, self.failed_connects
        ));
        o.push_str(&format!("- mix before: {}\n", self.mix_before.summary()));
        o.push_str(&format!("- mix after:  {}\n", self.mix_after.summary()));
        o.push_str(&format!(
            "- other before: {}\n",
            self.other_before.summary()
        ));
        o.push_str(&format!("- other after:  {}\n", self.other_after.summary()));
        for n in &self.notes {
            o.push_str(&format!("- {n}\n"));
        }
        o.push('\n');
        o.push_str("| tool | wall ms (median) | wall ms (min..max) | CPU ms (median) | internal ms (median) | peak RSS MiB | wall / baseline | wall / tcp only | RSS / baseline | sockets seen |\n");
        o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let base = self.row(Tool::TwoDump);
        let tcp = self.row(Tool::Ours("auto"));
        for (t, s) in &self.rows {
            let wall = finite(&s.wall);
            if wall.is_empty() {
                o.push_str(&format!(
                    "| {} | failed: {} | | | | | | | | |\n",
                    t.name(),
                    s.errors.join("; ")
                ));
                continue;
            }
            let is_ours = t.ours_args().is_some();
            o.push_str(&format!(
                "| {} | {} | {:.1}..{:.1} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
                t.name(),
                ms(&wall),
                measure::min(&wall) * 1e3,
                measure::max(&wall) * 1e3,
                ms(&s.cpu),
                ms(&s.internal),
                mib(&s.rss_kib),
                fmt_ratio(base.and_then(|b| ratio(&s.wall, &b.wall))),
                if is_ours {
                    fmt_ratio(tcp.and_then(|b| ratio(&s.wall, &b.wall)))
                } else {
                    "-".into()
                },
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
                    "|   ({} failed runs: {}) | | | | | | | | | |\n",
                    s.errors.len(),
                    s.errors.join("; ")
                ));
            }
        }
        o.push('\n');
        o.push_str(&self.collector_costs());
        o.push('\n');
        o.push_str(&self.targets());
        o
    }

    /// What each collector costs: its own timer inside the default-flags run,
    /// and its process alone; the default run's extra over TCP only.
    fn collector_costs(&self) -> String {
        let mut o = String::new();
        let (Some(def), Some(tcp)) = (self.row(Tool::OursDefault), self.row(Tool::Ours("auto")))
        else {
            return o;
        };
        let none = self.row(Tool::OursNone);
        o.push_str("collector costs (dump mode auto; \"internal\" = the collector's own sockdiag_collect_duration_seconds, median over rounds):\n\n");
        o.push_str("| collector | internal ms in the default run | share of the default run's internal | alone: wall ms | alone: internal ms | alone: wall / tcp only |\n");
        o.push_str("|---|---:|---:|---:|---:|---:|\n");
        let def_total = finite(&def.internal);
        let def_total = if def_total.is_empty() {
            f64::NAN
        } else {
            median(&def_total)
        };
        for k in ALL_COLLECTORS {
            let inside = def
                .per_collector
                .get(k)
                .map(|v| median(v))
                .unwrap_or(f64::NAN);
            let alone = if k == "tcp" {
                Some(tcp)
            } else {
                self.row(Tool::OursOnly(k))
            };
            let alone_internal = alone
                .and_then(|a| a.per_collector.get(k))
                .map(|v| median(v));
            o.push_str(&format!(
                "| {k} | {:.2} | {:.1}% | {} | {} | {} |\n",
                inside * 1e3,
                inside / def_total * 100.0,
                alone.map(|a| ms(&a.wall)).unwrap_or("-".into()),
                alone_internal
                    .map(|v| format!("{:.2}", v * 1e3))
                    .unwrap_or("-".into()),
                alone
                    .and_then(|a| ratio(&a.wall, &tcp.wall))
                    .map(|r| format!("{r:.3}x"))
                    .unwrap_or("-".into()),
            ));
        }
        o.push('\n');
        let extra_wall = paired_diff(&def.wall, &tcp.wall);
        let extra_cpu = paired_diff(&def.cpu, &tcp.cpu);
        let extra_internal = paired_diff(&def.internal, &tcp.internal);
        let three = |r: Option<f64>| fmt_ratio(r.map(|r| (r * 1000.0).round() / 1000.0));
        o.push_str(&format!(
            "- default flags over tcp only, per round (median): wall {} ms, CPU {} ms, internal {} ms; ratios: wall {}, CPU {}, internal {}\n",
            extra_wall.map(|v| format!("{:+.2}", v * 1e3)).unwrap_or("-".into()),
            extra_cpu.map(|v| format!("{:+.2}", v * 1e3)).unwrap_or("-".into()),
            extra_internal.map(|v| format!("{:+.2}", v * 1e3)).unwrap_or("-".into()),
            three(ratio(&def.wall, &tcp.wall)),
            three(ratio(&def.cpu, &tcp.cpu)),
            three(ratio(&def.internal, &tcp.internal)),
        ));
        o.push_str("- the side collectors run on their own socket and thread while tcp runs: their kernel work overlaps tcp's in wall time, and adds to the CPU time\n");
        if let Some(n) = none {
            o.push_str(&format!(
                "- start-up floor (no collector: start, render, exit): wall {} ms, peak RSS {} MiB\n",
                ms(&n.wall),
                mib(&n.rss_kib)
            ));
        }
        if let (Some(l), Some(t)) = (
            def.per_collector.get("listeners"),
            tcp.per_collector.get("tcp"),
        ) {
            let l = median(l);
            let t = median(t);
            o.push_str(&format!(
                "- listener collector (LISTEN-only dumps with SKMEMINFO) inside the default run: {:.3} ms, {:.2}% of the TCP collector's {:.1} ms\n",
                l * 1e3,
                l / t * 100.0,
                t * 1e3
            ));
        }
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
                    "- tcp only {m}: wall {r:.2}x of the two-dump loop (<= 0.90x): {}\n",
                    verdict(r <= 0.90)
                ));
            }
            match node.and_then(|nd| ratio(&nd.wall, &s.wall)) {
                Some(r) => o.push_str(&format!(
                    "- tcp only {m}: node_exporter tcpstat takes {r:.2}x our wall time (>= 2.5x): {}\n",
                    verdict(r >= 2.5)
                )),
                None => o.push_str(&format!(
                    "- tcp only {m}: node_exporter comparison: not measured\n"
                )),
            }
            let rss = measure::max(&s.rss_kib) / 1024.0;
            o.push_str(&format!(
                "- tcp only {m}: peak RSS {rss:.1} MiB (<= 10 MiB): {}\n",
                verdict(rss <= 10.0)
            ));
        }
        if let (Some(def), Some(tcp)) = (
            self.row(Tool::OursDefault)
                .filter(|s| !finite(&s.wall).is_empty()),
            self.row(Tool::Ours("auto")),
        ) {
            let official = if matches!(self.target, 100_000 | 1_000_000) {
                ""
            } else {
                " (set for 100k and 1M; informational here)"
            };
            if let Some(r) = ratio(&def.wall, &tcp.wall) {
                o.push_str(&format!(
                    "- default flags: wall {r:.3}x of tcp only (auto) (<= {DEFAULT_OVER_TCP_MAX:.2}x){official}: {}\n",
                    verdict(r <= DEFAULT_OVER_TCP_MAX)
                ));
            }
            if let Some(r) = ratio(&def.cpu, &tcp.cpu) {
                o.push_str(&format!(
                    "- default flags: CPU {r:.3}x of tcp only (auto) (information, not a target: the side sockets' kernel work, overlapped in wall time)\n"
                ));
            }
            if let Some(r) = base.and_then(|b| ratio(&def.wall, &b.wall)) {
                o.push_str(&format!(
                    "- default flags: wall {r:.2}x of the two-dump loop (information)\n"
                ));
            }
            let rss = measure::max(&def.rss_kib) / 1024.0;
            o.push_str(&format!(
                "- default flags: peak RSS {rss:.1} MiB (<= 10 MiB): {}\n",
                verdict(rss <= 10.0)
            ));
        }
        if !any {
            o.push_str("- not evaluated: our binary was not measured\n");
        }
        o
    }
}
