//! `make bench-netns` (`cargo bench --bench netns`): what `--collector.netns`
//! costs with 100 network namespaces holding about 1k TCP sockets each (env
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
//! Every round's counts are checked: ours per namespace label, ss lines
//! per namespace (a wrong count panics, exit 101). The target, ours at
//! most 1.0x the ss loop by the median of paired per-round ratios, exits 1
//! when missed. Needs root; without it, prints why and exits 0.

// Only the subprocess measurement is shared with the collect bench.
#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use measure::{median, Spread};

const HELPER_ENV: &str = "SOCKDIAG_NETNS_BENCH_HELPER";
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

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var(HELPER_ENV).is_ok() {
        if let Err(e) = helper() {
            eprintln!("netns bench helper: {e}");
            std::process::exit(1);
        }
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("netns bench: needs root (it creates network namespaces); skipped");
        return;
    }
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
    for round in 0..=runs {
        let mut results = Vec::new();
        let own = measure::run(Command::new(OURS).arg("dump").args(TCP_ONLY), true).unwrap();
        assert!(own.success(), "ours (own) failed");
        results.push((own.wall, own.cpu));
        for extra in [&TCP_ONLY[..], &TCP_ONLY[..2]] {
            let run = measure::run(
                Command::new(OURS)
                    .args(["dump", "--collector.netns"])
                    .args(extra),
                true,
            )
            .unwrap();
            assert!(run.success(), "ours (netns) failed");
            let collected = check_ours(&String::from_utf8_lossy(&run.stdout), &names, connections);
            if collected != count + 1 && round == 0 {
                println!(
                    "note: ours collected {collected} namespaces: {} besides the bench's and the own one (other processes' namespaces on this host)",
                    collected - count - 1
                );
            }
            results.push((run.wall, run.cpu));
        }
        let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
        for name in &names {
            let run = measure::run(Command::new("ss").args(["-tan", "-N", name]), false).unwrap();
            assert!(run.success(), "ss -N {name} failed");
            // A header line, the listener and both ends of each connection.
            assert_eq!(run.lines, 2 + 2 * connections as u64, "ss -N {name}");
            wall += run.wall;
            cpu += run.cpu;
        }
        results.push((wall, cpu));
        if round == 0 {
            continue; // warm-up
        }
        for (row, (wall, cpu)) in rows.iter_mut().zip(results) {
            row.1.push(wall.as_secs_f64() * 1e3);
            row.2.push(cpu.as_secs_f64() * 1e3);
        }
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
    let r = Spread::of_ratios(&rows[1].1, &rows[3].1).expect("at least one round");
    let pass = r.median <= 1.0;
    println!(
        "target: --collector.netns (tcp only) wall / the ss loop <= 1.0x: {} ({})",
        if pass { "PASS" } else { "FAIL" },
        r.ratio_long()
    );
    drop(helpers);
    drop(guard);
    if !pass {
        println!("netns bench: FAIL");
        std::process::exit(1);
    }
}

/// Asserts our dump has exact TCP counts for every bench namespace; returns
/// how many namespaces it collected.
fn check_ours(text: &str, names: &[String], connections: usize) -> usize {
    for name in names {
        for (state, want) in [("listen", 1), ("established", 2 * connections)] {
            let series = format!(
                "sockdiag_sockets{{family=\"ipv4\",netns=\"{name}\",protocol=\"tcp\",state=\"{state}\"}} "
            );
            let got = text
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series}in our output"));
            assert_eq!(got, want.to_string(), "{series}");
        }
    }
    text.lines()
        .filter(|l| l.starts_with("sockdiag_netns_info{"))
        .count()
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
