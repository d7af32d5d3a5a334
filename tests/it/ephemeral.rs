//! Ephemeral port exhaustion per destination, and sockets by remote
//! network, against the kernel: each test narrows `ip_local_port_range` in
//! its own private network namespace (so tiny ranges run out for real),
//! makes connections on loopback, and compares the exporter's
//! `sockdiag_ephemeral_*` series with what `connect()` does (the oracle:
//! EADDRNOTAVAIL) and with `ss`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use crate::support::sockets::{bind, connect, socket};
use crate::support::*;

use sockdiag_exporter::scope::netns_enter::write_sysctl;

fn scrape(args: &[&str]) -> (Exposition, String) {
    let mut full = vec!["--format", "prometheus"];
    full.extend_from_slice(args);
    let text = dump(&full);
    let exp = parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("dump {args:?} does not parse: {e}\n{text}"));
    (exp, text)
}

fn used(exp: &Exposition, local: &str, remote: &str, port: u16) -> Option<u64> {
    exp.get(
        "sockdiag_ephemeral_ports_used",
        &[
            ("local_address", local),
            ("remote_address", remote),
            ("remote_port", &port.to_string()),
        ],
    )
    .map(|v| v as u64)
}

fn gauge(exp: &Exposition, name: &str) -> u64 {
    exp.value(name, &[]) as u64
}

fn listener(port: u16) -> TcpListener {
    TcpListener::bind(("0.0.0.0", port)).expect("listen")
}

/// The setting most tests share: a 10-port range (40000-40009) and two
/// destinations, 127.0.0.1:7001 and :7002, each with its listener.
struct TenPorts {
    l1: TcpListener,
    _l2: TcpListener,
    d1: SocketAddr,
    d2: SocketAddr,
}

fn ten_ports_two_destinations() -> TenPorts {
    write_sysctl("net/ipv4/ip_local_port_range", "40000 40009").unwrap();
    TenPorts {
        l1: listener(7001),
        _l2: listener(7002),
        d1: "127.0.0.1:7001".parse().unwrap(),
        d2: "127.0.0.1:7002".parse().unwrap(),
    }
}

/// Connects to `to` until connect() fails, at most `limit` times; returns
/// the connections and the error.
fn connect_until_failure(to: SocketAddr, limit: usize) -> (Vec<TcpStream>, std::io::Error) {
    let mut kept = Vec::new();
    for _ in 0..limit {
        match TcpStream::connect(to) {
            Ok(s) => kept.push(s),
            Err(e) => return (kept, e),
        }
    }
    panic!("{limit} connects to {to} all succeeded: the range did not run out");
}

fn is_addr_not_avail(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

/// `ss -tanH` in this thread's namespace: non-listening sockets whose
/// local port is in `range`, counted by (local address, peer address, peer
/// port), as ss writes them.
fn ss_counts(range: std::ops::RangeInclusive<u16>) -> BTreeMap<(String, String, u16), u64> {
    let out = Command::new("ss").args(["-tanH"]).output().expect("run ss");
    assert!(out.status.success(), "ss failed");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0] == "LISTEN" {
            continue;
        }
        let split = |a: &str| {
            let (host, port) = a.rsplit_once(':').unwrap();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host.to_string(), port.parse::<u16>().unwrap())
        };
        let (local, lport) = split(f[3]);
        let (peer, pport) = split(f[4]);
        if range.contains(&lport) {
            *counts.entry((local, peer, pport)).or_default() += 1;
        }
    }
    counts
}

#[test]
fn connect_fails_exactly_when_a_destination_uses_the_whole_range() {
    if !require_root_netns() {
        return;
    }
    let TenPorts { l1, _l2, d1, d2 } = ten_ports_two_destinations();

    // Nine connections: 90%, and the tenth connect() still works.
    let mut first: Vec<TcpStream> = (0..9).map(|_| TcpStream::connect(d1).unwrap()).collect();
    let (exp, text) = scrape(&[]);
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_ports"), 10, "{text}");
    assert_eq!(
        used(&exp, "127.0.0.1", "127.0.0.1", 7001),
        Some(9),
        "{text}"
    );
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_ports_used_max"), 9);
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_ports_used_error"), 0);
    let (more, error) = connect_until_failure(d1, 100);
    assert!(is_addr_not_avail(&error), "{error}");
    assert_eq!(
        more.len(),
        1,
        "exactly one more connect before EADDRNOTAVAIL"
    );
    first.extend(more);
    let (exp, text) = scrape(&[]);
    assert_eq!(
        used(&exp, "127.0.0.1", "127.0.0.1", 7001),
        Some(10),
        "{text}"
    );
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_ports_used_max"), 10);
    // The server ends are on port 7001, outside the range: not counted.
    assert_eq!(
        exp.series("sockdiag_ephemeral_ports_used").len(),
        1,
        "{text}"
    );
    assert_eq!(
        ss_counts(40000..=40009).get(&("127.0.0.1".into(), "127.0.0.1".into(), 7001)),
        Some(&10)
    );

    // Ports are per destination: another port on the same address gets
    // the whole range again.
    let (second, error) = connect_until_failure(d2, 100);
    assert!(is_addr_not_avail(&error), "{error}");
    assert_eq!(second.len(), 10);
    let (exp, _) = scrape(&[]);
    assert_eq!(used(&exp, "127.0.0.1", "127.0.0.1", 7002), Some(10));

    // TIME_WAIT holds the port (tcp_tw_reuse=0 in this namespace): the
    // client closes first, the server after, and d1 stays full.
    let servers: Vec<TcpStream> = (0..10).map(|_| l1.accept().unwrap().0).collect();
    drop(first);
    drop(servers);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (exp, text) = scrape(&[]);
    assert_eq!(
        exp.value(
            "sockdiag_sockets",
            &[
                ("protocol", "tcp"),
                ("family", "ipv4"),
                ("state", "time_wait")
            ]
        ),
        10.0,
        "{text}"
    );
    assert_eq!(
        used(&exp, "127.0.0.1", "127.0.0.1", 7001),
        Some(10),
        "{text}"
    );
    let error = TcpStream::connect(d1).unwrap_err();
    assert!(is_addr_not_avail(&error), "{error}");

    // The table shows the share of the range.
    let table = dump(&["--format", "table"]);
    assert!(
        table.contains("127.0.0.1:7001") && table.contains("100.0%"),
        "{table}"
    );
    // So does the landing page. Its port must be given: bind() to port 0
    // finds the range used up too (EADDRINUSE).
    let server = Server::start(&["--web.listen-address", "127.0.0.1:7500"]);
    // The landing page shows the last collection and never waits for one.
    server.scrape();
    let page = server.get("/").text();
    assert!(
        page.contains("Ephemeral ports")
            && page.contains("127.0.0.1:7001")
            && page.contains("100.0%"),
        "{page}"
    );
}

/// A TCP socket bound to `from` before connecting to `to`;
/// `no_port`: IP_BIND_ADDRESS_NO_PORT, so connect() picks the port.
fn bound_connect(from: SocketAddr, to: SocketAddr, no_port: bool) -> std::io::Result<OwnedFd> {
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM);
    if no_port {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option value.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IP_BIND_ADDRESS_NO_PORT");
    }
    bind(fd.as_raw_fd(), from);
    connect(fd.as_raw_fd(), to)?;
    Ok(fd)
}

/// A second source address has its own ports to the same destination
/// (IP_BIND_ADDRESS_NO_PORT lets connect() pick the port).
#[test]
fn a_second_source_address_has_its_own_ports() {
    if !require_root_netns() {
        return;
    }
    write_sysctl("net/ipv4/ip_local_port_range", "40000 40009").unwrap();
    let _l = listener(7001);
    let d1: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let b: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let (_kept, error) = connect_until_failure(d1, 100);
    assert!(is_addr_not_avail(&error));
    let mut other_source = Vec::new();
    for _ in 0..10 {
        other_source.push(bound_connect(b, d1, true).expect("connect from 127.0.0.2"));
    }
    let error = bound_connect(b, d1, true).unwrap_err();
    assert!(is_addr_not_avail(&error), "{error}");
    let (exp, text) = scrape(&[]);
    assert_eq!(
        used(&exp, "127.0.0.1", "127.0.0.1", 7001),
        Some(10),
        "{text}"
    );
    assert_eq!(
        used(&exp, "127.0.0.2", "127.0.0.1", 7001),
        Some(10),
        "{text}"
    );
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_ports_used_max"), 10);
}

/// A port given by bind() before connect() is skipped by connect() for
/// every destination. The dump cannot tell it from a port connect() chose,
/// so it counts only for its own destination, and another destination runs
/// out one port early (docs/metrics.md says so).
#[test]
fn bind_before_connect_holds_its_port_for_every_destination() {
    if !require_root_netns() {
        return;
    }
    // Bound, not `..`: the listeners must stay open.
    let TenPorts {
        l1: _l1,
        _l2,
        d1,
        d2,
    } = ten_ports_two_destinations();
    let _pinned = bound_connect("127.0.0.1:40003".parse().unwrap(), d1, false).unwrap();
    let (_to_d1, error) = connect_until_failure(d1, 100);
    assert!(is_addr_not_avail(&error));
    let (to_d2, error) = connect_until_failure(d2, 100);
    assert!(is_addr_not_avail(&error));
    assert_eq!(to_d2.len(), 9, "the explicitly bound port is skipped");
    let (exp, text) = scrape(&[]);
    assert_eq!(
        used(&exp, "127.0.0.1", "127.0.0.1", 7001),
        Some(10),
        "{text}"
    );
    assert_eq!(
        used(&exp, "127.0.0.1", "127.0.0.1", 7002),
        Some(9),
        "{text}"
    );
}

/// Distinct loopback destinations, one TIME_WAIT socket each (no fds
/// held), plus two busy destinations: exact while they fit the table,
/// bounded and never below the truth beyond it.
#[test]
fn thousands_of_destinations_stay_exact_then_bounded() {
    if !require_root_netns() {
        return;
    }
    write_sysctl("net/ipv4/ip_local_port_range", "40000 40999").unwrap();
    let l = listener(7001);
    let busy1: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let busy2: SocketAddr = "127.0.0.2:7001".parse().unwrap();
    let mut open: Vec<TcpStream> = Vec::new();
    for (to, n) in [(busy1, 300), (busy2, 200)] {
        for _ in 0..n {
            open.push(TcpStream::connect(to).unwrap());
            open.push(l.accept().unwrap().0);
        }
    }
    // One connection each to 127.1.x.y, closed client first: TIME_WAIT.
    let single =
        |i: u32| -> SocketAddr { SocketAddr::from((Ipv4Addr::from(0x7f01_0000 + i), 7001)) };
    let make_singles = |from: u32, to: u32| {
        for i in from..to {
            let c = TcpStream::connect(single(i)).unwrap();
            let (s, _) = l.accept().unwrap();
            drop(c);
            drop(s);
        }
    };
    make_singles(0, 5000);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (exp, text) = scrape(&["--collector.tcp.ephemeral.top", "3"]);
    let ss = ss_counts(40000..=40999);
    assert_eq!(ss.len(), 5002, "ss sees every destination");
    assert_eq!(
        gauge(&exp, "sockdiag_ephemeral_ports_used_error"),
        0,
        "{text}"
    );
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_destinations_evicted"), 0);
    assert_eq!(gauge(&exp, "sockdiag_ephemeral_ports_used_max"), 300);
    let series = exp.series("sockdiag_ephemeral_ports_used");
    assert_eq!(series.len(), 3, "{text}");
    for (labels, v) in &series {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).unwrap().1.clone();
        let key = (
            get("local_address"),
            get("remote_address"),
            get("remote_port").parse().unwrap(),
        );
        assert_eq!(ss.get(&key).copied(), Some(*v as u64), "{key:?}");
    }
    assert_eq!(used(&exp, "127.0.0.1", "127.0.0.1", 7001), Some(300));
    assert_eq!(used(&exp, "127.0.0.1", "127.0.0.2", 7001), Some(200));

    // 15,000 more: 20,002 destinations, more than the table's 8192.
    make_singles(5000, 20_000);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (exp, text) = scrape(&["--collector.tcp.ephemeral.top", "2"]);
    let counted: u64 = ss_counts(40000..=40999).values().sum();
    let error = gauge(&exp, "sockdiag_ephemeral_ports_used_error");
    assert!(
        error >= 1 && error <= counted / 8193,
        "error {error} for {counted} sockets\n{text}"
    );
    assert!(gauge(&exp, "sockdiag_ephemeral_destinations_evicted") > 0);
    let busy = used(&exp, "127.0.0.1", "127.0.0.1", 7001).expect("the busiest is still on top");
    assert!((300..=300 + error).contains(&busy), "{busy} {error}");
    let second = used(&exp, "127.0.0.1", "127.0.0.2", 7001).expect("the second is still there");
    assert!((200..=200 + error).contains(&second), "{second} {error}");
    let max = gauge(&exp, "sockdiag_ephemeral_ports_used_max");
    assert!((300..=300 + error).contains(&max));
    drop(open);
}

#[test]
fn sockets_by_remote_network() {
    if !require_root_netns() {
        return;
    }
    let l = listener(7001);
    let mut kept = Vec::new();
    // 3 to 127.0.0.1, 2 to 127.1.0.0/16, 1 to 127.2.0.1 (only 127.0.0.0/8).
    for (addr, n) in [
        ("127.0.0.1", 3),
        ("127.1.0.5", 1),
        ("127.1.9.9", 1),
        ("127.2.0.1", 1),
    ] {
        for _ in 0..n {
            kept.push(TcpStream::connect((addr, 7001)).unwrap());
            kept.push(l.accept().unwrap().0);
        }
    }
    let (exp, text) = scrape(&[
        "--collector.tcp.remote-networks",
        "127.0.0.0/8,127.1.0.0/16,127.0.0.1/32,10.0.0.0/8,2001:db8::/32",
    ]);
    let count = |network: &str| {
        exp.value(
            "sockdiag_remote_network_sockets",
            &[("network", network), ("state", "established")],
        ) as u64
    };
    // Client ends have remote 127.x:7001; server ends have remote
    // 127.0.0.1 (the clients' source address): 3 + 6.
    assert_eq!(count("127.0.0.1/32"), 9, "{text}");
    assert_eq!(count("127.1.0.0/16"), 2, "{text}");
    assert_eq!(count("127.0.0.0/8"), 1, "{text}");
    assert_eq!(count("10.0.0.0/8"), 0, "{text}");
    assert_eq!(count("2001:db8::/32"), 0, "{text}");
    assert_eq!(count("other"), 0, "{text}");
    // Listeners have no remote end and are not counted.
    assert!(exp
        .series("sockdiag_remote_network_sockets")
        .iter()
        .all(|(l, _)| l.iter().all(|(k, v)| k != "state" || v != "listen")));
    let table = dump(&[
        "--format",
        "table",
        "--collector.tcp.remote-networks",
        "127.1.0.0/16",
    ]);
    assert!(
        table.contains("Remote network") && table.contains("127.1.0.0/16"),
        "{table}"
    );
}

/// The range is per network namespace: with --collector.netns each
/// namespace reports its own, read inside it.
#[test]
fn each_namespace_reports_its_own_range() {
    if !require_root_netns() || !require_tool("ip", "iproute2 (make deps)") {
        return;
    }
    write_sysctl("net/ipv4/ip_local_port_range", "40000 40009").unwrap();
    let named = crate::support::netns::NamedNs::add(&format!("sdtest-{}-eph", std::process::id()))
        .expect("ip netns add");
    for (key, value) in [
        ("net.ipv4.ip_local_port_range", "50000 50099"),
        ("net.ipv4.ip_local_reserved_ports", "50000-50009,8080"),
    ] {
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                &named.name,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ])
            .status()
            .expect("ip netns exec sysctl");
        assert!(status.success());
    }
    let (exp, text) = scrape(&["--collector.netns"]);
    let ranges: BTreeMap<String, u64> = exp
        .series("sockdiag_ephemeral_ports")
        .into_iter()
        .map(|(l, v)| {
            let ns = l.iter().find(|(k, _)| k == "netns").unwrap().1.clone();
            (ns, v as u64)
        })
        .collect();
    assert_eq!(ranges.get(&named.name), Some(&90), "{text}");
    assert_eq!(
        ranges.values().filter(|v| **v == 10).count(),
        1,
        "own namespace: {ranges:?}"
    );
}
