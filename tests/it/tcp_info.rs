//! `--collector.tcp.info` against the kernel: in a private network
//! namespace, nftables drops 10% of the packets to one port (the lossy one)
//! and none to another (the clean one); connections to both move data, and
//! the exporter's RTT histogram, retransmission counter and gauges must
//! match what `ss -tin` (iproute2's own sock_diag parser) shows for the same
//! sockets at the same moment, and what getsockopt(TCP_INFO) says on the
//! test's own sockets: per port and direction and host-wide, the bucket of
//! every socket's RTT, retransmissions on the lossy port and none on the
//! clean one, and a counter that keeps its value when lossy connections
//! close between two scrapes of one server. With `--collector.cgroup` the
//! same health per cgroup, checked against TCP_INFO of sockets made in
//! test cgroups.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sockdiag_exporter::collectors::tcp_health::RTT_BUCKETS_US;

use crate::support::exporter::Server;
use crate::support::netns::require_root_netns;
use crate::support::skips::require_tool;
use crate::support::*;

const LOSSY: u16 = 7777;
const CLEAN: u16 = 8888;

/// Runs `nft` with these arguments in the calling thread's namespace.
fn nft(args: &[&str]) {
    let out = Command::new("nft").args(args).output().expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One established socket as `ss -tin` shows it.
#[derive(Debug, Clone, PartialEq)]
struct SsSocket {
    local: u16,
    peer: u16,
    rtt_us: u32,
    /// `retrans:X/Y`: X outstanding (tcpi_retrans), Y total.
    retrans: u32,
    total_retrans: u32,
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// `ss -tin state established` in this thread's namespace, by (local, peer)
/// port.
fn ss() -> BTreeMap<(u16, u16), SsSocket> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .output()
        .expect("run ss");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut sockets = BTreeMap::new();
    let mut current: Option<(u16, u16)> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // Recv-Q Send-Q Local:Port Peer:Port (no State column with a
            // state filter).
            let f: Vec<&str> = line.split_whitespace().collect();
            current = Some((port_of(f[2]), port_of(f[3])));
            continue;
        }
        let key = current.take().expect("an info line after a socket line");
        let mut s = SsSocket {
            local: key.0,
            peer: key.1,
            rtt_us: 0,
            retrans: 0,
            total_retrans: 0,
        };
        for word in line.split_whitespace() {
            if let Some(v) = word.strip_prefix("rtt:") {
                let ms: f64 = v.split('/').next().unwrap().parse().unwrap();
                s.rtt_us = (ms * 1000.0).round() as u32;
            } else if let Some(v) = word.strip_prefix("retrans:") {
                let (x, y) = v.split_once('/').unwrap();
                s.retrans = x.parse().unwrap();
                s.total_retrans = y.parse().unwrap();
            }
        }
        sockets.insert(key, s);
    }
    sockets
}

/// tcpi_total_retrans of one of the test's own sockets (getsockopt).
fn total_retrans(s: &TcpStream) -> u32 {
    rtt_and_retrans(s).2
}

/// The label sets of the exporter's per-view series: (direction, port),
/// the host-wide one first when `host`.
fn views(host: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if host {
        out.push(("all", "all".to_string()));
    }
    for port in [LOSSY, CLEAN] {
        for d in ["local", "remote"] {
            out.push((d, port.to_string()));
        }
    }
    out
}

/// Whether an `ss` socket belongs to a view.
fn in_view(s: &SsSocket, direction: &str, port: &str) -> bool {
    match direction {
        "all" => true,
        "local" => s.local.to_string() == port,
        _ => s.peer.to_string() == port,
    }
}

/// Checks every series of every view (host-wide too when `host`) against
/// the `ss` sockets: the cumulative bucket counts (so the bucket of every
/// RTT), count, sum, the retransmitting sockets, and the counter
/// (`counter(view)`).
fn check_views(
    exp: &Exposition,
    sockets: &BTreeMap<(u16, u16), SsSocket>,
    host: bool,
    counter: impl Fn(&str, &str) -> u64,
) {
    for (direction, port) in views(host) {
        let labels = [("direction", direction), ("port", port.as_str())];
        let mine: Vec<&SsSocket> = sockets
            .values()
            .filter(|s| in_view(s, direction, &port))
            .collect();
        for le in RTT_BUCKETS_US {
            let want = mine.iter().filter(|s| s.rtt_us <= le).count() as f64;
            let le_label = format!("{}", f64::from(le) / 1e6);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le_label));
            assert_eq!(
                exp.value("sockdiag_tcp_rtt_seconds_bucket", &with_le),
                want,
                "{direction} {port} le {le} µs; ss: {mine:?}"
            );
        }
        assert_eq!(
            exp.value("sockdiag_tcp_rtt_seconds_count", &labels),
            mine.len() as f64,
            "{direction} {port}"
        );
        let sum: u64 = mine.iter().map(|s| u64::from(s.rtt_us)).sum();
        let got = exp.value("sockdiag_tcp_rtt_seconds_sum", &labels);
        assert!(
            (got - sum as f64 / 1e6).abs() < 1e-9,
            "{direction} {port}: sum {got} vs ss {sum} µs"
        );
        let retransmitting = mine.iter().filter(|s| s.retrans > 0).count() as f64;
        assert_eq!(
            exp.value("sockdiag_tcp_retransmitting_sockets", &labels),
            retransmitting,
            "{direction} {port}"
        );
        assert_eq!(
            exp.value("sockdiag_tcp_retransmitted_segments_total", &labels),
            counter(direction, &port) as f64,
            "{direction} {port}; ss: {mine:?}"
        );
    }
}

/// A connected pair: the client end and the server end.
struct Pair {
    client: TcpStream,
    server: TcpStream,
}

fn connect(listener: &TcpListener, port: u16) -> Pair {
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_nodelay(true).unwrap();
    let (server, _) = listener.accept().unwrap();
    Pair { client, server }
}

/// Sends `chunks` writes of 1000 bytes from each client (no Nagle: one
/// segment each) while a thread per pair reads them all, then waits until
/// every byte is acknowledged and no retransmission is outstanding, so the
/// sockets hold still for the comparison.
fn traffic(pairs: &[Pair], chunks: usize) {
    let readers: Vec<_> = pairs
        .iter()
        .map(|p| {
            let mut server = p.server.try_clone().unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            thread::spawn(move || {
                let mut left = chunks * 1000;
                let mut buf = [0u8; 65536];
                while left > 0 {
                    let n = server.read(&mut buf).expect("read");
                    assert!(n > 0, "EOF with {left} bytes to go");
                    left -= n.min(left);
                }
            })
        })
        .collect();
    for _ in 0..chunks {
        for p in pairs {
            (&p.client).write_all(&[7u8; 1000]).unwrap();
        }
    }
    for r in readers {
        r.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let idle = pairs
            .iter()
            .all(|p| mix::unacked_bytes(p.client.as_raw_fd()) == 0);
        let settled = idle && ss().values().all(|s| s.retrans == 0);
        if settled {
            return;
        }
        assert!(Instant::now() < deadline, "traffic did not settle in 60 s");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `ss` twice around `f`, until both readings agree (the sockets held still
/// while `f` read them).
fn stable<T>(mut f: impl FnMut() -> T) -> (BTreeMap<(u16, u16), SsSocket>, T) {
    for _ in 0..20 {
        let before = ss();
        let got = f();
        if ss() == before {
            return (before, got);
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("the sockets never held still around a scrape");
}

#[test]
fn rtt_and_retransmissions_match_ss_per_port_and_survive_closes() {
    if !require_root_netns() || !require_tool("nft", "Debian package nftables; make deps") {
        return;
    }
    nft(&["add", "table", "inet", "sdtest"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "sdtest",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    nft(&[
        "add",
        "rule",
        "inet",
        "sdtest",
        "in",
        "tcp",
        "dport",
        &LOSSY.to_string(),
        "numgen",
        "random",
        "mod",
        "10",
        "0",
        "drop",
    ]);
    let lossy_listener = TcpListener::bind(("0.0.0.0", LOSSY)).unwrap();
    let clean_listener = TcpListener::bind(("0.0.0.0", CLEAN)).unwrap();
    let mut lossy: Vec<Pair> = (0..6).map(|_| connect(&lossy_listener, LOSSY)).collect();
    let clean: Vec<Pair> = (0..4).map(|_| connect(&clean_listener, CLEAN)).collect();
    traffic(&lossy, 300);
    traffic(&clean, 300);

    let flags = [
        "--collector.tcp.info",
        "--collector.tcp.ports",
        &format!("{LOSSY},{CLEAN}"),
        "--no-collector.udp",
        "--no-collector.unix",
        "--no-collector.listeners",
    ];
    let total_of = |sockets: &BTreeMap<(u16, u16), SsSocket>, d: &str, port: &str| -> u64 {
        sockets
            .values()
            .filter(|s| in_view(s, d, port))
            .map(|s| u64::from(s.total_retrans))
            .sum()
    };
    let host = [("direction", "all"), ("port", "all")];
    let lossy_remote = [("direction", "remote"), ("port", "7777")];

    // One-shot dump: no connection of its own, so every view, host-wide
    // included, is exactly what ss shows; its one collection counts every
    // live socket's whole count.
    // Both requests: the legacy AF_UNSPEC dump and the by-family ones, and
    // the default (auto).
    let mut last = None;
    for mode in ["by-family", "legacy", "auto"] {
        let mut args = vec!["--format", "prometheus", "--collector.tcp.dump", mode];
        args.extend_from_slice(&flags);
        let (sockets, exp) = stable(|| exporter::dump_metrics(&args));
        assert_eq!(sockets.len(), 20, "10 pairs: {sockets:?}");
        check_views(&exp, &sockets, true, |d, p| total_of(&sockets, d, p));
        last = Some(exp);
    }
    let exp = last.unwrap();
    let lossy_total: u64 = lossy
        .iter()
        .map(|p| u64::from(total_retrans(&p.client)))
        .sum();
    assert!(
        lossy_total > 0,
        "10% loss on {LOSSY} made no retransmission"
    );
    assert_eq!(
        exp.value("sockdiag_tcp_retransmitted_segments_total", &lossy_remote),
        lossy_total as f64,
        "the clients' retransmissions, by getsockopt(TCP_INFO), are under direction remote"
    );
    for p in &clean {
        assert_eq!(total_retrans(&p.client), 0);
        assert_eq!(total_retrans(&p.server), 0);
    }
    for view in [("remote", CLEAN), ("local", CLEAN)] {
        let labels = [("direction", view.0), ("port", &view.1.to_string())];
        assert_eq!(
            exp.value("sockdiag_tcp_retransmitted_segments_total", &labels),
            0.0
        );
    }

    // A server keeps its counters between scrapes. Its scrape connection
    // is established too (on a port neither view covers), so from here on
    // the host-wide view is checked for its counter only.
    let server = Server::start(&[&flags[..], &["--cache.ttl", "0s"]].concat());
    let (sockets, exp) = stable(|| server.scrape());
    let own = server.addr.port();
    let without_own = |mut m: BTreeMap<(u16, u16), SsSocket>| {
        m.retain(|k, _| k.0 != own && k.1 != own);
        m
    };
    let sockets = without_own(sockets);
    check_views(&exp, &sockets, false, |d, p| total_of(&sockets, d, p));
    let host_first = exp.value("sockdiag_tcp_retransmitted_segments_total", &host) as u64;
    assert!(host_first >= total_of(&sockets, "all", "all"));

    // Close half of the lossy connections (they leave ESTABLISHED), and
    // make the rest retransmit more: each counter keeps what the closed
    // ones counted and adds only the survivors' growth.
    let closed: Vec<Pair> = lossy.drain(..3).collect();
    drop(closed);
    traffic(&lossy, 300);
    let (sockets2, exp2) = stable(|| server.scrape());
    let sockets2 = without_own(sockets2);
    assert_eq!(sockets2.len(), 14, "7 pairs left: {sockets2:?}");
    let growth = |d: &str, p: &str| -> u64 {
        sockets2
            .values()
            .filter(|s| in_view(s, d, p))
            .map(|s| {
                let before = sockets
                    .get(&(s.local, s.peer))
                    .map_or(0, |b| b.total_retrans);
                u64::from(s.total_retrans - before)
            })
            .sum()
    };
    check_views(&exp2, &sockets2, false, |d, p| {
        total_of(&sockets, d, p) + growth(d, p)
    });
    let host_second = exp2.value("sockdiag_tcp_retransmitted_segments_total", &host) as u64;
    assert!(
        host_second >= host_first + growth("all", "all"),
        "host counter {host_first} -> {host_second}, growth {}",
        growth("all", "all")
    );
    // The closed sockets' retransmissions are still in: the counter is
    // above what the live sockets alone have.
    let closed_counted = total_of(&sockets, "remote", "7777") - {
        let live: Vec<_> = sockets2.keys().collect();
        sockets
            .iter()
            .filter(|(k, s)| live.contains(k) && in_view(s, "remote", "7777"))
            .map(|(_, s)| u64::from(s.total_retrans))
            .sum::<u64>()
    };
    let counter_now = exp2.value("sockdiag_tcp_retransmitted_segments_total", &lossy_remote);
    assert_eq!(
        counter_now,
        (total_of(&sockets2, "remote", "7777") + closed_counted) as f64,
        "closed connections' retransmissions kept"
    );
    assert_eq!(exp2.value("sockdiag_tcp_info_untracked_sockets", &[]), 0.0);
    assert_eq!(exp2.value("sockdiag_tcp_info_incomplete_sockets", &[]), 0.0);
    drop(server);
    nft(&["delete", "table", "inet", "sdtest"]);
}

/// (tcpi_rtt µs, tcpi_retrans, tcpi_total_retrans) of one of the test's
/// own sockets (getsockopt TCP_INFO).
fn rtt_and_retrans(s: &TcpStream) -> (u32, u32, u32) {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len.
    let ret = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(ret, 0, "getsockopt TCP_INFO");
    assert!(len >= 104);
    let at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
    (at(68), at(36), at(100))
}

/// The connected TCP sockets of helper `pid`, duplicated into this process
/// (pidfd_getfd): they keep the helper's cgroup.
fn helper_sockets(pid: u32) -> Vec<TcpStream> {
    use std::os::fd::FromRawFd;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let link = std::fs::read_link(entry.unwrap().path()).unwrap_or_default();
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        else {
            continue;
        };
        let fd = mix::steal_socket_fd(pid as libc::pid_t, inode.parse().unwrap()).unwrap();
        // SAFETY: a socket fd we own, from pidfd_getfd.
        let s = unsafe { TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        if s.peer_addr().is_ok() {
            out.push(s);
        }
    }
    out
}

/// Per-cgroup health: the clients of a lossy port live in test cgroup
/// `a` (made by helper processes there, then duplicated into this process
/// to move data), the clients of a clean port in `b`, the server ends in
/// this process's own cgroup. Each cgroup's histogram (the bucket of every
/// socket's RTT), retransmitting sockets and counter must match
/// getsockopt(TCP_INFO) on those very sockets; the rows of all cgroups add
/// up to the host-wide series; and a server's counter for `a` adds the
/// growth between two scrapes.
#[test]
fn health_is_booked_to_the_cgroup_of_each_socket() {
    use crate::support::netns::{Helper, HelperSpec, TestCgroup, ENTRY};
    use sockdiag_exporter::scope::cgroup_mount;
    if !require_sys_admin("create cgroups and move processes") {
        return;
    }
    let mount = match cgroup_mount::detect() {
        Ok(m) => m,
        Err(e) => {
            skip(format_args!("needs a cgroup2 mount: {e}"));
            return;
        }
    };
    if !require_root_netns() || !require_tool("nft", "Debian package nftables; make deps") {
        return;
    }
    let top_name = format!("sockdiag-health-{}", std::process::id());
    let top = match TestCgroup::create(&mount.mount_point, &top_name) {
        Ok(t) => t,
        Err(e) => {
            skip(format_args!(
                "needs a writable cgroup2 at {}: {e}",
                mount.mount_point.display()
            ));
            return;
        }
    };
    let cg_a = TestCgroup::create(&top.path, "a").unwrap();
    let cg_b = TestCgroup::create(&top.path, "b").unwrap();
    nft(&["add", "table", "inet", "sdtest"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "sdtest",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    let lossy_rule = [
        "add", "rule", "inet", "sdtest", "in", "tcp", "dport", "7777", "numgen", "random", "mod",
        "10", "0", "drop",
    ];
    nft(&lossy_rule);
    let lossy_listener = TcpListener::bind(("0.0.0.0", LOSSY)).unwrap();
    let clean_listener = TcpListener::bind(("0.0.0.0", CLEAN)).unwrap();
    let spawn = |port: u16, cgroup: &TestCgroup| {
        Helper::spawn(
            ENTRY,
            &HelperSpec {
                connect_to: Some(port),
                cgroup: Some(cgroup.path.clone()),
                ..Default::default()
            },
        )
    };
    let helpers_a = [spawn(LOSSY, &cg_a), spawn(LOSSY, &cg_a)];
    let helper_b = spawn(CLEAN, &cg_b);
    // The helpers' clients, each with its server end (accepted in whatever
    // order the connections completed).
    let pairs = |listener: &TcpListener, helpers: &[&Helper]| -> Vec<Pair> {
        let clients: Vec<TcpStream> = helpers
            .iter()
            .map(|h| {
                let mut clients = helper_sockets(h.pid);
                assert_eq!(clients.len(), 1, "helper {} has one connection", h.pid);
                clients.pop().unwrap()
            })
            .collect();
        let mut servers: Vec<TcpStream> = clients
            .iter()
            .map(|_| listener.accept().unwrap().0)
            .collect();
        clients
            .into_iter()
            .map(|client| {
                client.set_nodelay(true).unwrap();
                let me = client.local_addr().unwrap();
                let at = servers
                    .iter()
                    .position(|s| s.peer_addr().unwrap() == me)
                    .expect("the server end of a helper's connection");
                let server = servers.swap_remove(at);
                Pair { client, server }
            })
            .collect()
    };
    let a = pairs(&lossy_listener, &[&helpers_a[0], &helpers_a[1]]);
    let b = pairs(&clean_listener, &[&helper_b]);
    traffic(&a, 300);
    traffic(&b, 300);

    let label_a = format!("/{top_name}/a");
    let label_b = format!("/{top_name}/b");
    let flags = [
        "--collector.tcp.info",
        "--collector.cgroup",
        "--no-collector.udp",
        "--no-collector.unix",
        "--no-collector.listeners",
    ];
    // TCP_INFO of a cgroup's clients around `scrape`, until they held still.
    let observed = |pairs: &[Pair]| -> Vec<(u32, u32, u32)> {
        pairs.iter().map(|p| rtt_and_retrans(&p.client)).collect()
    };
    let still = |a: &[Pair], b: &[Pair], scrape: &dyn Fn() -> Exposition| {
        for _ in 0..20 {
            let before = (observed(a), observed(b));
            let exp = scrape();
            if (observed(a), observed(b)) == before {
                return (before, exp);
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("the sockets never held still around a scrape");
    };
    // Checks one cgroup's series against its clients' TCP_INFO; the
    // counter against `counter`.
    let check = |exp: &Exposition, label: &str, info: &[(u32, u32, u32)], counter: u64| {
        let labels = [("cgroup", label)];
        for le in RTT_BUCKETS_US {
            let want = info.iter().filter(|i| i.0 <= le).count() as f64;
            let le_label = format!("{}", f64::from(le) / 1e6);
            assert_eq!(
                exp.value(
                    "sockdiag_cgroup_tcp_rtt_seconds_bucket",
                    &[("cgroup", label), ("le", &le_label)]
                ),
                want,
                "{label} le {le} µs; TCP_INFO {info:?}"
            );
        }
        assert_eq!(
            exp.value("sockdiag_cgroup_tcp_rtt_seconds_count", &labels),
            info.len() as f64
        );
        let sum: u64 = info.iter().map(|i| u64::from(i.0)).sum();
        let got = exp.value("sockdiag_cgroup_tcp_rtt_seconds_sum", &labels);
        assert!(
            (got - sum as f64 / 1e6).abs() < 1e-9,
            "{label}: {got} vs {sum} µs"
        );
        assert_eq!(
            exp.value("sockdiag_cgroup_tcp_retransmitting_sockets", &labels),
            info.iter().filter(|i| i.1 > 0).count() as f64
        );
        assert_eq!(
            exp.value("sockdiag_cgroup_tcp_retransmitted_segments_total", &labels),
            counter as f64,
            "{label}: TCP_INFO {info:?}"
        );
    };
    let total = |info: &[(u32, u32, u32)]| info.iter().map(|i| u64::from(i.2)).sum::<u64>();

    // One-shot dump: its one collection counts every socket's whole count.
    let ((info_a, info_b), exp) = still(&a, &b, &|| exporter::dump_metrics(&flags));
    let text = exporter::dump(&flags);
    assert!(
        text.contains("sockdiag_cgroup_tcp_rtt_seconds_bucket"),
        "{text}"
    );
    if let Err(e) = crate::support::sockets::promtool_check(&text) {
        panic!("promtool check metrics failed: {e}\n{text}");
    }
    assert!(
        total(&info_a) > 0,
        "10% loss on {LOSSY} made no retransmission"
    );
    assert_eq!(total(&info_b), 0);
    check(&exp, &label_a, &info_a, total(&info_a));
    check(&exp, &label_b, &info_b, 0);
    // Every established socket is in one cgroup row: the server ends, in
    // this process's cgroup, make up the rest of the host.
    let host = [("direction", "all"), ("port", "all")];
    let rows = exp.series("sockdiag_cgroup_tcp_rtt_seconds_count");
    let in_rows: f64 = rows.iter().map(|(_, v)| v).sum();
    assert_eq!(in_rows, exp.value("sockdiag_tcp_rtt_seconds_count", &host));
    assert_eq!(in_rows, 6.0, "3 pairs: {rows:?}");
    let counters = exp.series("sockdiag_cgroup_tcp_retransmitted_segments_total");
    let counted: f64 = counters.iter().map(|(_, v)| v).sum();
    assert_eq!(
        counted,
        exp.value("sockdiag_tcp_retransmitted_segments_total", &host)
    );
    assert_eq!(
        exp.value(
            "sockdiag_series_dropped",
            &[("metric", "sockdiag_cgroup_tcp_rtt_seconds")]
        ),
        0.0
    );

    // A server: the counter of `a` keeps what a closed connection counted
    // and adds the survivor's growth between two scrapes. (Its own scrape
    // connection is in this process's cgroup, not a's.)
    let server = Server::start(&[&flags[..], &["--cache.ttl", "0s"]].concat());
    // A scrape of a collection started after the call (the cache may
    // serve one up to 4x a collection's duration old).
    let fresh = || {
        let asked = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        for _ in 0..100 {
            let exp = server.scrape();
            let at = exp.value(
                "sockdiag_collect_timestamp_seconds",
                &[("collector", "tcp")],
            );
            if at >= asked {
                return exp;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("no fresh collection in 100 scrapes");
    };
    let ((first_a, _), exp) = still(&a, &b, &fresh);
    check(&exp, &label_a, &first_a, total(&first_a));
    // Close a's second connection: every fd of its client (the helper's
    // and ours) and the server end.
    let [helper_a0, helper_a1] = helpers_a;
    let mut a = a;
    drop((a.pop(), helper_a1));
    // Until the survivor retransmits again (loopback segments are large, so
    // a busy machine may send 300 writes in few of them): bounded.
    for _ in 0..20 {
        traffic(&a, 300);
        if rtt_and_retrans(&a[0].client).2 > first_a[0].2 {
            break;
        }
    }
    let ((second_a, second_b), exp) = still(&a, &b, &fresh);
    assert_eq!(second_a.len(), 1);
    let growth = u64::from(second_a[0].2 - first_a[0].2);
    assert!(growth > 0, "more loss, more retransmissions");
    check(&exp, &label_a, &second_a, total(&first_a) + growth);
    check(&exp, &label_b, &second_b, 0);
    drop(server);
    nft(&["delete", "table", "inet", "sdtest"]);
    drop((a, b, helper_a0, helper_b));
}
