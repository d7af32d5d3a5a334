//! Helpers shared by the black-box integration tests.
//!
//! * `skip` and `require_*` (skips.rs): the one way a test skips; in CI
//!   (strict mode) a skip fails the test instead.
//! * `require_root_netns`: move the calling test thread into a private network
//!   namespace (root only), so the socket mix below is the only thing there.
//! * `SocketMix`: builds an exact, known mix of TCP sockets on loopback and
//!   knows the numbers the exporter must report for it. The expectation is
//!   cross-checked against an independent kernel interface
//!   (`/proc/thread-self/net/tcp{,6}`) and per-socket ioctls before use.
//! * `parse_prometheus`: a tiny text-format (0.0.4) parser.
//! * `http_request` and friends: a tiny HTTP/1.1 client over `TcpStream`.
//! * `Server` and `run_exporter`: spawn the binary, bounded in time, and kill
//!   only the child we started, by PID.
#![allow(dead_code)]

pub mod ns;
pub mod skips;
pub mod sockets;

#[allow(unused_imports)] // each test binary uses some of them
pub use skips::{require_root, require_sys_admin, require_tool, skip};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The TCP states the exporter reports, in the contract's order.
pub const STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

pub const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// Path of the binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sockdiag_exporter");

// ---------------------------------------------------------------------------
// Private network namespace
// ---------------------------------------------------------------------------

/// Moves the calling thread into a fresh private network namespace with `lo`
/// up and `tcp_tw_reuse` off. Returns false after [`skip`] (which fails the
/// test in strict mode) when that is impossible; the caller must then
/// return early.
///
/// Child processes spawned later from this thread inherit the namespace.
pub fn require_root_netns() -> bool {
    if !require_root("create a private network namespace") {
        return false;
    }
    if let Err(e) = sockdiag_exporter::netns::enter_private() {
        skip(format_args!(
            "needs CAP_SYS_ADMIN to enter a private network namespace: {e}"
        ));
        return false;
    }
    // Without this, connect() on loopback may recycle our TIME_WAIT sockets.
    // A failure here would make the TIME_WAIT counts unreliable: that is a
    // broken test environment, not a skip.
    sockdiag_exporter::netns::write_sysctl("net/ipv4/tcp_tw_reuse", "0")
        .expect("set net/ipv4/tcp_tw_reuse=0 in the private namespace");
    true
}

// ---------------------------------------------------------------------------
// Low-level socket helpers (libc)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    pub fn loopback(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
}

fn cvt(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) {
    // SAFETY: fd is an open socket; value is a c_int that outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(ret, what).unwrap();
}

/// Binds a listening TCP socket on the family's loopback address with an exact
/// backlog. `port` 0 picks a free port. Returns the listener and its port.
pub fn make_listener(
    family: Family,
    port: u16,
    backlog: i32,
    reuseport: bool,
    rcvbuf: Option<i32>,
) -> (TcpListener, u16) {
    let domain = match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    };
    // SAFETY: plain socket(2) call.
    let fd = cvt(
        unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )
    .unwrap();
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR");
    if reuseport {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, "SO_REUSEPORT");
    }
    if let Some(size) = rcvbuf {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size, "SO_RCVBUF");
    }
    let ret = match family {
        Family::V4 => {
            // SAFETY: sockaddr_in is plain old data.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            // SAFETY: sa is a valid sockaddr_in of the given length.
            unsafe {
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        Family::V6 => {
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1, "IPV6_V6ONLY");
            // SAFETY: sockaddr_in6 is plain old data.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = port.to_be();
            sa.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
            // SAFETY: sa is a valid sockaddr_in6 of the given length.
            unsafe {
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    cvt(ret, &format!("bind {family:?} port {port}")).unwrap();
    // SAFETY: fd is a bound TCP socket.
    cvt(unsafe { libc::listen(fd, backlog) }, "listen").unwrap();
    let listener = TcpListener::from(owned);
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn ioctl_int(fd: RawFd, request: libc::Ioctl) -> u64 {
    let mut value: libc::c_int = 0;
    // SAFETY: FIONREAD / TIOCOUTQ write one c_int.
    let ret = unsafe { libc::ioctl(fd, request, &mut value as *mut libc::c_int) };
    cvt(ret, "ioctl").unwrap();
    value as u64
}

/// Bytes received and not yet read (FIONREAD / SIOCINQ).
pub fn unread_bytes(fd: RawFd) -> u64 {
    ioctl_int(fd, libc::FIONREAD)
}

/// Bytes written and not yet acknowledged by the peer (SIOCOUTQ / TIOCOUTQ).
pub fn unacked_bytes(fd: RawFd) -> u64 {
    ioctl_int(fd, libc::TIOCOUTQ)
}

/// struct tcp_info's first 32 bytes, as getsockopt(TCP_INFO) fills them.
fn tcp_info_head(fd: RawFd) -> [u8; 32] {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(ret, "getsockopt TCP_INFO").unwrap();
    assert!(len >= 32, "short tcp_info ({len} bytes)");
    buf[..32].try_into().unwrap()
}

/// The kernel's TCP state number for a socket (tcp_info.tcpi_state).
pub fn tcp_state(fd: RawFd) -> u8 {
    tcp_info_head(fd)[0]
}

/// For a listening socket: (accept queue, backlog limit). tcp_get_info puts
/// sk_ack_backlog in tcpi_unacked and sk_max_ack_backlog in tcpi_sacked.
pub fn listener_queue(fd: RawFd) -> (u64, u64) {
    let h = tcp_info_head(fd);
    assert_eq!(h[0], 10, "not a listening socket");
    let u32_at = |o: usize| u32::from_ne_bytes(h[o..o + 4].try_into().unwrap()) as u64;
    (u32_at(24), u32_at(28))
}

/// Duplicates into this process the fd of another process (ours, root) that
/// refers to the socket with inode `inode`, via pidfd_getfd.
pub fn steal_socket_fd(pid: libc::pid_t, inode: u64) -> io::Result<OwnedFd> {
    let want = format!("socket:[{inode}]");
    let mut target = None;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        if std::fs::read_link(entry.path())
            .map(|l| l.to_string_lossy() == want)
            .unwrap_or(false)
        {
            target = entry
                .file_name()
                .to_string_lossy()
                .parse::<libc::c_int>()
                .ok();
        }
    }
    let target =
        target.ok_or_else(|| io::Error::other(format!("pid {pid} has no fd for {want}")))?;
    // SAFETY: raw syscalls with integer arguments only.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd was just returned to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: as above.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_getfd returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Inode of the listening socket on (ip, port) in /proc/thread-self/net.
pub fn listener_inode(family: Family, port: u16) -> Option<u64> {
    let file = match family {
        Family::V4 => "tcp",
        Family::V6 => "tcp6",
    };
    let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (ip, p) = parse_proc_addr(f.get(1)?, family)?;
        (p == port && ip == family.loopback() && *f.get(3)? == "0A")
            .then(|| f.get(9)?.parse().ok())?
    })
}

/// Kernel TCP state number -> the exporter's state label.
pub fn state_label(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "established",
        2 => "syn_sent",
        3 | 12 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        _ => return None,
    })
}

/// Polls `check` every 50 ms until it returns Ok, for at most `limit`.
/// Returns the last error on timeout.
pub fn poll_until<T>(
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn connect(family: Family, port: u16) -> TcpStream {
    let addr = SocketAddr::new(family.loopback(), port);
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// connect + accept on a listener that has nothing else pending, so the
/// accepted socket is this connection's server side.
fn connected_pair(listener: &TcpListener, family: Family, port: u16) -> (TcpStream, TcpStream) {
    let client = connect(family, port);
    let (server, peer) = listener.accept().expect("accept");
    assert_eq!(
        peer,
        client.local_addr().unwrap(),
        "accepted an unexpected connection"
    );
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (client, server)
}

fn read_eof(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    let n = s
        .read(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: waiting for EOF: {e}"));
    assert_eq!(n, 0, "{what}: expected EOF, got {n} bytes");
}

// ---------------------------------------------------------------------------
// Expected numbers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    pub queue: u64,
    pub max: u64,
    pub sockets: u64,
}

/// Every number the exporter must report for the TCP sockets of a namespace.
/// Keys are label values: (family, state) and (family, address, port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub sockets: BTreeMap<(String, String), u64>,
    pub recv_queue: BTreeMap<(String, String), u64>,
    pub send_queue: BTreeMap<(String, String), u64>,
    pub listeners: BTreeMap<(String, String, u16), ListenerStats>,
}

impl Expected {
    /// All 22 (family, state) keys at zero, no listeners.
    pub fn zero() -> Expected {
        let mut m = BTreeMap::new();
        for f in FAMILIES {
            for s in STATES {
                m.insert((f.to_string(), s.to_string()), 0);
            }
        }
        Expected {
            sockets: m.clone(),
            recv_queue: m.clone(),
            send_queue: m,
            listeners: BTreeMap::new(),
        }
    }

    /// Human-readable differences `self` -> `other` (empty when equal).
    pub fn diff(&self, other: &Expected) -> Vec<String> {
        let mut out = Vec::new();
        for (name, a, b) in [
            ("sockets", &self.sockets, &other.sockets),
            ("recv_queue", &self.recv_queue, &other.recv_queue),
            ("send_queue", &self.send_queue, &other.send_queue),
        ] {
            for (k, v) in a {
                let w = b.get(k).copied().unwrap_or(0);
                if *v != w {
                    out.push(format!("{name}{k:?}: {v} vs {w}"));
                }
            }
        }
        for (k, v) in &self.listeners {
            match other.listeners.get(k) {
                Some(w) if w == v => {}
                w => out.push(format!("listener{k:?}: {v:?} vs {w:?}")),
            }
        }
        for (k, w) in &other.listeners {
            if !self.listeners.contains_key(k) {
                out.push(format!("listener{k:?}: absent vs {w:?}"));
            }
        }
        out
    }

    pub fn count(&self, family: &str, state: &str) -> u64 {
        self.sockets[&(family.to_string(), state.to_string())]
    }

    pub fn add_sockets(&mut self, family: &str, state: &str, n: u64) {
        *self
            .sockets
            .get_mut(&(family.to_string(), state.to_string()))
            .expect("known state") += n;
    }

    pub fn add_queues(&mut self, family: &str, state: &str, recv: u64, send: u64) {
        let key = (family.to_string(), state.to_string());
        *self.recv_queue.get_mut(&key).expect("known state") += recv;
        *self.send_queue.get_mut(&key).expect("known state") += send;
    }

    pub fn add_listener(&mut self, family: &str, address: &str, port: u16, queue: u64, max: u64) {
        let e = self
            .listeners
            .entry((family.to_string(), address.to_string(), port))
            .or_default();
        e.queue += queue;
        e.max += max;
        e.sockets += 1;
        self.add_sockets(family, "listen", 1);
    }

    /// Compares every sockdiag_sockets / queue-bytes / listener series of an
    /// exposition with this expectation, exactly, and panics listing every
    /// difference. Extra or missing series are differences too.
    pub fn assert_matches(&self, exp: &Exposition, context: &str) {
        let mut diffs = Vec::new();
        let tables = [
            ("sockdiag_sockets", &self.sockets),
            ("sockdiag_receive_queue_bytes", &self.recv_queue),
            ("sockdiag_send_queue_bytes", &self.send_queue),
        ];
        for (name, table) in tables {
            let mut seen = 0;
            for (labels, value) in exp.series(name) {
                // Other protocols share these metrics; their own tests check them.
                if labels.iter().any(|(k, v)| k == "protocol" && v != "tcp") {
                    continue;
                }
                seen += 1;
                let Some(get) =
                    tcp_labels(name, &labels, &["family", "protocol", "state"], &mut diffs)
                else {
                    continue;
                };
                let key = (get("family"), get("state"));
                match table.get(&key) {
                    None => diffs.push(format!("{name}{}: unexpected series", fmt_labels(&labels))),
                    Some(want) if *want as f64 != value => diffs.push(format!(
                        "{name}{{family={:?},state={:?}}}: expected {want}, got {value}",
                        key.0, key.1
                    )),
                    Some(_) => {}
                }
            }
            for (fam, state) in table.keys() {
                if exp
                    .get(
                        name,
                        &[("protocol", "tcp"), ("family", fam), ("state", state)],
                    )
                    .is_none()
                {
                    diffs.push(format!("{name}{{family={fam:?},state={state:?}}}: missing"));
                }
            }
            if seen != 22 {
                diffs.push(format!("{name}: expected 22 series, got {seen}"));
            }
        }
        let listener_tables: [(&str, PickStat); 3] = [
            ("sockdiag_listen_queue", |l| l.queue),
            ("sockdiag_listen_queue_max", |l| l.max),
            ("sockdiag_listen_sockets", |l| l.sockets),
        ];
        for (name, pick) in listener_tables {
            let mut got = BTreeMap::new();
            for (labels, value) in exp.series(name) {
                let Some(get) = tcp_labels(
                    name,
                    &labels,
                    &["address", "family", "port", "protocol"],
                    &mut diffs,
                ) else {
                    continue;
                };
                let port: u16 = match get("port").parse() {
                    Ok(p) => p,
                    Err(_) => {
                        diffs.push(format!(
                            "{name}{}: port is not a decimal u16",
                            fmt_labels(&labels)
                        ));
                        continue;
                    }
                };
                got.insert((get("family"), get("address"), port), value);
            }
            for (key, stats) in &self.listeners {
                match got.remove(key) {
                    None => {
                        diffs.push(format!("{name}{key:?}: missing (expected {})", pick(stats)))
                    }
                    Some(v) if v != pick(stats) as f64 => {
                        diffs.push(format!("{name}{key:?}: expected {}, got {v}", pick(stats)))
                    }
                    Some(_) => {}
                }
            }
            for (key, v) in got {
                diffs.push(format!("{name}{key:?}: unexpected series with value {v}"));
            }
        }
        if !diffs.is_empty() {
            panic!(
                "{context}: {} differences from the expected socket mix:\n  {}\nexpected: {self:#?}",
                diffs.len(),
                diffs.join("\n  ")
            );
        }
    }
}

type PickStat = fn(&ListenerStats) -> u64;

/// A getter for one series' labels, if its label names are exactly `keys`
/// and its protocol is tcp; otherwise says why in `diffs`.
fn tcp_labels<'a>(
    name: &str,
    labels: &'a [(String, String)],
    keys: &[&str],
    diffs: &mut Vec<String>,
) -> Option<impl Fn(&str) -> String + 'a> {
    let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
    if names != keys {
        diffs.push(format!(
            "{name}{}: unexpected label set",
            fmt_labels(labels)
        ));
        return None;
    }
    let get = |k: &str| {
        labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if get("protocol") != "tcp" {
        diffs.push(format!("{name}{}: protocol is not tcp", fmt_labels(labels)));
        return None;
    }
    Some(get)
}

fn fmt_labels(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

// ---------------------------------------------------------------------------
// Independent view: /proc/thread-self/net/tcp{,6}
// ---------------------------------------------------------------------------

fn parse_proc_addr(hex: &str, family: Family) -> Option<(IpAddr, u16)> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match family {
        Family::V4 => {
            let v = u32::from_str_radix(ip, 16).ok()?;
            IpAddr::V4(Ipv4Addr::from(v.to_ne_bytes()))
        }
        Family::V6 => {
            if ip.len() != 32 {
                return None;
            }
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let v = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
    };
    Some((ip, port))
}

/// What the kernel's /proc interface of the calling thread's namespace says,
/// shaped like `Expected`. Non-listening sockets show the same rcv_nxt -
/// copied_seq (rx) and write_seq - snd_una (tx) that inet_diag reports; a
/// listener's rx is its accept queue, but /proc does not show its backlog
/// limit, so every listener's `max` here is 0 (see `listener_queue`).
pub fn proc_view() -> Result<Expected, String> {
    let mut e = Expected::zero();
    for (family, file) in [(Family::V4, "tcp"), (Family::V6, "tcp6")] {
        let path = format!("/proc/thread-self/net/{file}");
        let text = std::fs::read_to_string(&path).map_err(|err| format!("read {path}: {err}"))?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                return Err(format!("{path}: short line {line:?}"));
            }
            let bad = || format!("{path}: cannot parse {line:?}");
            let (ip, port) = parse_proc_addr(f[1], family).ok_or_else(bad)?;
            let st = u8::from_str_radix(f[3], 16).map_err(|_| bad())?;
            let state = state_label(st).ok_or_else(bad)?;
            let (tx, rx) = f[4].split_once(':').ok_or_else(bad)?;
            let tx = u64::from_str_radix(tx, 16).map_err(|_| bad())?;
            let rx = u64::from_str_radix(rx, 16).map_err(|_| bad())?;
            if state == "listen" {
                let _ = tx; // write_seq - snd_una: always 0 for a listener
                e.add_listener(family.label(), &ip.to_string(), port, rx, 0);
            } else {
                e.add_sockets(family.label(), state, 1);
                e.add_queues(family.label(), state, rx, tx);
            }
        }
    }
    Ok(e)
}

// ---------------------------------------------------------------------------
// The socket mix
// ---------------------------------------------------------------------------

struct Conn {
    stream: TcpStream,
    family: Family,
    state: &'static str,
    /// Bytes this end must show as unread once settled (None: measured live).
    unread: Option<u64>,
    /// Bytes this end must show as unacknowledged once settled (None: measured live).
    unacked: Option<u64>,
    what: String,
}

struct ListenerRec {
    /// Ours, or a duplicate of the exporter's own listening fd.
    sock: OwnedFd,
    family: Family,
    port: u16,
    queue: u64,
    backlog: u64,
}

/// An exact mix of TCP sockets on loopback in the calling thread's (private)
/// namespace. Every fd stays open until the mix is dropped.
pub struct SocketMix {
    listeners: Vec<ListenerRec>,
    conns: Vec<Conn>,
    /// Server sides of never-accepted connections (ESTABLISHED, no fd).
    unaccepted: BTreeMap<Family, u64>,
    time_wait: BTreeMap<Family, u64>,
    /// Last reading of the bulk pair (sender unacked, receiver unread).
    bulk_last: Mutex<Option<(u64, u64)>>,
}

pub const UNACCEPTED_V4: u64 = 3;
pub const UNACCEPTED_V6: u64 = 2;
pub const REUSEPORT_UNACCEPTED: u64 = 5;
pub const TIME_WAIT_V4: u64 = 3;
pub const TIME_WAIT_V6: u64 = 2;
pub const CLOSE_WAIT_V4: u64 = 2;
pub const CLOSE_WAIT_V6: u64 = 1;

impl SocketMix {
    /// Builds the mix and waits (bounded) until the kernel shows exactly the
    /// designed states and queues, cross-checked with /proc.
    ///
    /// IPv4: listener L4 (backlog 16, 3 unaccepted), a SO_REUSEPORT pair
    /// (backlogs 8 + 6, 5 unaccepted in total), listener P4 (backlog 32) with
    /// two accepted pairs holding 1000 / 3000 unread bytes, 3 TIME_WAIT,
    /// 2 CLOSE_WAIT + 2 FIN_WAIT2.
    /// IPv6: listener L6 (backlog 16, 2 unaccepted), listener P6 (backlog 32)
    /// with pairs holding 777 / 2222 unread bytes, 2 TIME_WAIT, 1 CLOSE_WAIT +
    /// 1 FIN_WAIT2, and a bulk pair (listener backlog 4, small SO_RCVBUF) whose
    /// sender filled its send queue until EAGAIN.
    pub fn build() -> SocketMix {
        let mut mix = SocketMix {
            listeners: Vec::new(),
            conns: Vec::new(),
            unaccepted: BTreeMap::new(),
            time_wait: BTreeMap::new(),
            bulk_last: Mutex::new(None),
        };

        // Listeners whose connections are never accepted.
        for (family, n) in [(Family::V4, UNACCEPTED_V4), (Family::V6, UNACCEPTED_V6)] {
            let (l, port) = make_listener(family, 0, 16, false, None);
            for i in 0..n {
                let c = connect(family, port);
                mix.push_conn(
                    c,
                    family,
                    "established",
                    Some(0),
                    Some(0),
                    format!("unaccepted client {i} {family:?}"),
                );
            }
            *mix.unaccepted.entry(family).or_default() += n;
            mix.listeners.push(ListenerRec {
                sock: l.into(),
                family,
                port,
                queue: n,
                backlog: 16,
            });
        }

        // A SO_REUSEPORT group of two IPv4 listeners on one port.
        let (a, port) = make_listener(Family::V4, 0, 8, true, None);
        let (b, port_b) = make_listener(Family::V4, port, 6, true, None);
        assert_eq!(port, port_b);
        for i in 0..REUSEPORT_UNACCEPTED {
            let c = connect(Family::V4, port);
            mix.push_conn(
                c,
                Family::V4,
                "established",
                Some(0),
                Some(0),
                format!("reuseport client {i}"),
            );
        }
        *mix.unaccepted.entry(Family::V4).or_default() += REUSEPORT_UNACCEPTED;
        // Which member got which connection depends on the 4-tuple hash; the
        // group's queue sum is all that is known (and all that is reported).
        mix.listeners.push(ListenerRec {
            sock: a.into(),
            family: Family::V4,
            port,
            queue: REUSEPORT_UNACCEPTED,
            backlog: 8,
        });
        mix.listeners.push(ListenerRec {
            sock: b.into(),
            family: Family::V4,
            port,
            queue: 0,
            backlog: 6,
        });

        // Accepted pairs: unread bytes, TIME_WAIT, CLOSE_WAIT/FIN_WAIT2.
        for (family, unread_at_server, unread_at_client, tw, cw) in [
            (
                Family::V4,
                1000usize,
                3000usize,
                TIME_WAIT_V4,
                CLOSE_WAIT_V4,
            ),
            (Family::V6, 777usize, 2222usize, TIME_WAIT_V6, CLOSE_WAIT_V6),
        ] {
            let (l, port) = make_listener(family, 0, 32, false, None);

            // Client writes, server never reads.
            let (mut c, s) = connected_pair(&l, family, port);
            c.write_all(&vec![b'c'; unread_at_server]).unwrap();
            mix.push_conn(
                c,
                family,
                "established",
                Some(0),
                Some(0),
                format!("writer client {family:?}"),
            );
            mix.push_conn(
                s,
                family,
                "established",
                Some(unread_at_server as u64),
                Some(0),
                format!("unread server {family:?}"),
            );

            // Server writes, client never reads.
            let (c, mut s) = connected_pair(&l, family, port);
            s.write_all(&vec![b's'; unread_at_client]).unwrap();
            mix.push_conn(
                c,
                family,
                "established",
                Some(unread_at_client as u64),
                Some(0),
                format!("unread client {family:?}"),
            );
            mix.push_conn(
                s,
                family,
                "established",
                Some(0),
                Some(0),
                format!("writer server {family:?}"),
            );

            // TIME_WAIT on the client end: client half-closes, server reads
            // EOF and closes, client reads EOF and closes.
            for i in 0..tw {
                let (mut c, mut s) = connected_pair(&l, family, port);
                c.shutdown(Shutdown::Write).unwrap();
                read_eof(&mut s, "time_wait server");
                drop(s);
                read_eof(&mut c, "time_wait client");
                drop(c);
                let _ = i;
            }
            *mix.time_wait.entry(family).or_default() += tw;

            // CLOSE_WAIT / FIN_WAIT2: client half-closes and keeps its fd; the
            // server consumes the EOF (so its receive queue holds no FIN byte)
            // and never closes.
            for i in 0..cw {
                let (c, mut s) = connected_pair(&l, family, port);
                c.shutdown(Shutdown::Write).unwrap();
                read_eof(&mut s, "close_wait server");
                mix.push_conn(
                    c,
                    family,
                    "fin_wait2",
                    Some(0),
                    Some(0),
                    format!("fin_wait2 client {i} {family:?}"),
                );
                mix.push_conn(
                    s,
                    family,
                    "close_wait",
                    Some(0),
                    Some(0),
                    format!("close_wait server {i} {family:?}"),
                );
            }
            mix.listeners.push(ListenerRec {
                sock: l.into(),
                family,
                port,
                queue: 0,
                backlog: 32,
            });
        }

        // Bulk pair (IPv6): the receiver has a small receive buffer and never
        // reads, the sender writes non-blocking until EAGAIN.
        let (l, port) = make_listener(Family::V6, 0, 4, false, Some(4096));
        let (mut sender, receiver) = connected_pair(&l, Family::V6, port);
        setsockopt_int(
            sender.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            16384,
            "SO_SNDBUF",
        );
        sender.set_nonblocking(true).unwrap();
        let chunk = vec![b'b'; 4096];
        let mut written = 0usize;
        let mut hit_eagain = false;
        for _ in 0..10_000 {
            match sender.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    hit_eagain = true;
                    break;
                }
                Err(e) => panic!("bulk write: {e}"),
            }
        }
        assert!(
            hit_eagain,
            "bulk sender never hit EAGAIN after {written} bytes"
        );
        assert!(written > 0, "bulk sender wrote nothing");
        mix.push_conn(
            sender,
            Family::V6,
            "established",
            Some(0),
            None,
            "bulk sender".into(),
        );
        mix.push_conn(
            receiver,
            Family::V6,
            "established",
            None,
            Some(0),
            "bulk receiver".into(),
        );
        mix.listeners.push(ListenerRec {
            sock: l.into(),
            family: Family::V6,
            port,
            queue: 0,
            backlog: 4,
        });

        mix.settle();
        mix
    }

    /// Adds the listening socket of process `pid` (the exporter) on the
    /// family's loopback address and `port`, with an empty accept queue and
    /// the backlog limit the kernel reports for it (read through a
    /// pidfd_getfd duplicate of its fd).
    pub fn adopt_listener(&mut self, family: Family, port: u16, pid: libc::pid_t) {
        let inode = listener_inode(family, port)
            .unwrap_or_else(|| panic!("no listener on {} port {port} in /proc", family.loopback()));
        let sock = steal_socket_fd(pid, inode)
            .unwrap_or_else(|e| panic!("pidfd_getfd from pid {pid}: {e}"));
        let (_, backlog) = listener_queue(sock.as_raw_fd());
        self.listeners.push(ListenerRec {
            sock,
            family,
            port,
            queue: 0,
            backlog,
        });
    }

    /// After connections that are not part of the mix (scrapes of the
    /// exporter) closed, waits until /proc differs from the design only by
    /// extra IPv4 TIME_WAIT sockets, and adds those to the design.
    pub fn absorb_time_wait_v4(&mut self) {
        let found = poll_until(Duration::from_secs(10), || {
            let mut want = self.expected();
            for l in want.listeners.values_mut() {
                l.max = 0;
            }
            let mut got = proc_view()?;
            let key = ("ipv4".to_string(), "time_wait".to_string());
            let extra = got.sockets[&key]
                .checked_sub(want.sockets[&key])
                .ok_or("fewer TIME_WAIT than designed")?;
            *got.sockets.get_mut(&key).unwrap() -= extra;
            if got == want {
                Ok(extra)
            } else {
                Err(format!(
                    "/proc vs design:\n  {}",
                    got.diff(&want).join("\n  ")
                ))
            }
        })
        .unwrap_or_else(|e| panic!("namespace did not settle after scrapes: {e}"));
        *self.time_wait.entry(Family::V4).or_default() += found;
        // Forget the bulk reading so the next settle re-establishes it.
        *self.bulk_last.lock().unwrap() = None;
    }

    fn push_conn(
        &mut self,
        stream: TcpStream,
        family: Family,
        state: &'static str,
        unread: Option<u64>,
        unacked: Option<u64>,
        what: String,
    ) {
        self.conns.push(Conn {
            stream,
            family,
            state,
            unread,
            unacked,
            what,
        });
    }

    /// The expected exporter numbers, with queue bytes read live from every
    /// fd we hold (FIONREAD / SIOCOUTQ); never-accepted server sides have
    /// nothing queued, TIME_WAIT sockets never have anything queued.
    pub fn expected(&self) -> Expected {
        let mut e = Expected::zero();
        for c in &self.conns {
            let fd = c.stream.as_raw_fd();
            e.add_sockets(c.family.label(), c.state, 1);
            e.add_queues(
                c.family.label(),
                c.state,
                unread_bytes(fd),
                unacked_bytes(fd),
            );
        }
        for (f, n) in &self.unaccepted {
            e.add_sockets(f.label(), "established", *n);
        }
        for (f, n) in &self.time_wait {
            e.add_sockets(f.label(), "time_wait", *n);
        }
        for l in &self.listeners {
            let addr = l.family.loopback().to_string();
            e.add_listener(l.family.label(), &addr, l.port, l.queue, l.backlog);
        }
        e
    }

    /// The bulk pair's queues: (sender's send queue, receiver's receive queue).
    pub fn bulk_queues(&self) -> (u64, u64) {
        let s = self.conns.iter().find(|c| c.what == "bulk sender").unwrap();
        let r = self
            .conns
            .iter()
            .find(|c| c.what == "bulk receiver")
            .unwrap();
        (
            unacked_bytes(s.stream.as_raw_fd()),
            unread_bytes(r.stream.as_raw_fd()),
        )
    }

    /// Ok when every socket is in its designed state with its designed
    /// queues, the bulk pair did not change since the previous call, and
    /// /proc agrees with `expected()` on every number.
    pub fn check_settled(&self) -> Result<(), String> {
        for c in &self.conns {
            let fd = c.stream.as_raw_fd();
            let st = tcp_state(fd);
            if state_label(st) != Some(c.state) {
                return Err(format!(
                    "{}: state {st} ({:?}), want {}",
                    c.what,
                    state_label(st),
                    c.state
                ));
            }
            if let Some(want) = c.unread {
                let got = unread_bytes(fd);
                if got != want {
                    return Err(format!("{}: FIONREAD {got}, want {want}", c.what));
                }
            }
            if let Some(want) = c.unacked {
                let got = unacked_bytes(fd);
                if got != want {
                    return Err(format!("{}: SIOCOUTQ {got}, want {want}", c.what));
                }
            }
        }
        let bulk = self.bulk_queues();
        if bulk.0 == 0 || bulk.1 == 0 {
            return Err(format!(
                "bulk pair: send queue {} / receive queue {}: both must be > 0",
                bulk.0, bulk.1
            ));
        }
        let last = self.bulk_last.lock().unwrap().replace(bulk);
        if last != Some(bulk) {
            return Err(format!("bulk pair still changing: {last:?} -> {bulk:?}"));
        }
        // Listeners: accept queues summed per address, and each backlog limit,
        // from TCP_INFO on the listening fds.
        let mut queues: BTreeMap<(Family, u16), (u64, u64)> = BTreeMap::new();
        for l in &self.listeners {
            let (q, max) = listener_queue(l.sock.as_raw_fd());
            if max != l.backlog {
                return Err(format!(
                    "listener {:?} port {}: backlog {max}, want {}",
                    l.family, l.port, l.backlog
                ));
            }
            let e = queues.entry((l.family, l.port)).or_default();
            e.0 += q;
            e.1 += l.queue;
        }
        for ((f, port), (got, want)) in queues {
            if got != want {
                return Err(format!(
                    "listener {f:?} port {port}: accept queue {got}, want {want}"
                ));
            }
        }
        let mut want = self.expected();
        // /proc does not show backlog limits (checked above instead).
        for l in want.listeners.values_mut() {
            l.max = 0;
        }
        let proc = proc_view()?;
        if proc != want {
            return Err(format!(
                "/proc/thread-self/net disagrees with the design (/proc vs design):\n  {}",
                proc.diff(&want).join("\n  ")
            ));
        }
        Ok(())
    }

    /// Waits (at most 15 s) until `check_settled` passes, else panics.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.check_settled() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("socket mix did not settle in 15 s: {e}")
                }
                Err(_) => thread::sleep(Duration::from_millis(150)),
            }
        }
    }

    /// Runs `f` (which reads the exporter's view) between two settled checks
    /// with identical expectations, so nothing moved under it; retries a few
    /// times if the kernel state changed meanwhile.
    pub fn stable<T>(&self, mut f: impl FnMut() -> T) -> (Expected, T) {
        let mut last_err = String::new();
        for _ in 0..5 {
            self.settle();
            let before = self.expected();
            let out = f();
            // The bulk reading is remembered, so this also fails if it moved.
            match self.check_settled() {
                Ok(()) if self.expected() == before => return (before, out),
                Ok(()) => last_err = "expectation changed during the run".into(),
                Err(e) => last_err = e,
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("socket mix kept changing while the exporter ran: {last_err}");
    }
}

// ---------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------

pub type Labels = Vec<(String, String)>;

/// A parsed exposition: samples keyed by (name, labels sorted by name),
/// plus the `# TYPE` and `# HELP` lines.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    pub samples: BTreeMap<(String, Labels), f64>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Exposition {
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.samples.get(&(name.to_string(), l)).copied()
    }

    /// Like `get`, panicking with the series name when it is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("series {name}{labels:?} missing from the exposition"))
    }

    pub fn series(&self, name: &str) -> Vec<(Labels, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

/// Parses the Prometheus text format 0.0.4. Errors on malformed lines and on
/// duplicate series.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("TYPE ") {
                let mut it = r.splitn(2, ' ');
                let name = it.next().unwrap_or("").to_string();
                let ty = it.next().unwrap_or("").trim().to_string();
                if out.types.insert(name.clone(), ty).is_some() {
                    return Err(format!("line {no}: second TYPE for {name}"));
                }
            } else if let Some(r) = rest.strip_prefix("HELP ") {
                let mut it = r.splitn(2, ' ');
                let name = it.next().unwrap_or("").to_string();
                out.helps.insert(name, it.next().unwrap_or("").to_string());
            }
            continue;
        }
        let (name, labels, rest) =
            parse_sample_head(line).map_err(|e| format!("line {no} {line:?}: {e}"))?;
        let mut parts = rest.split_whitespace();
        let v = parts
            .next()
            .ok_or_else(|| format!("line {no} {line:?}: no value"))?;
        let value = match v {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => v
                .parse::<f64>()
                .map_err(|e| format!("line {no} {line:?}: bad value: {e}"))?,
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|e| format!("line {no} {line:?}: bad timestamp: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("line {no} {line:?}: trailing garbage"));
        }
        if out.samples.insert((name.clone(), labels), value).is_some() {
            return Err(format!("line {no} {line:?}: duplicate series"));
        }
    }
    Ok(out)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_sample_head(line: &str) -> Result<(String, Labels, &str), String> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    if name_end == 0 {
        return Err("no metric name".into());
    }
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            while let Some(&(_, ' ')) = chars.peek() {
                chars.next();
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    rest = &r[i + 1..];
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut lname = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    lname.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if lname.is_empty() || lname.starts_with(|c: char| c.is_ascii_digit()) {
                return Err("bad label name".into());
            }
            if chars.next().map(|x| x.1) != Some('=') {
                return Err(format!("expected '=' after label {lname}"));
            }
            if chars.next().map(|x| x.1) != Some('"') {
                return Err(format!("expected '\"' after {lname}="));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|x| x.1) {
                    None => return Err("unterminated label value".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|x| x.1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if labels.iter().any(|(k, _)| *k == lname) {
                return Err(format!("label {lname} twice"));
            }
            labels.push((lname, value));
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    rest = &r[i + 1..];
                    break;
                }
                _ => return Err("expected ',' or '}' after a label".into()),
            }
        }
    }
    if !rest.starts_with(' ') && !rest.starts_with('\t') {
        return Err("expected whitespace before the value".into());
    }
    labels.sort();
    Ok((name, labels, rest))
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as sent on the wire (after de-chunking, before gunzip).
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when Content-Encoding says gzip, as UTF-8.
    pub fn text(&self) -> String {
        let raw = if self
            .header("content-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        {
            gunzip(&self.body).expect("gzip body decodes")
        } else {
            self.body.clone()
        };
        String::from_utf8(raw).expect("body is UTF-8")
    }
}

pub fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Sends one request (with `Connection: close`) and reads the response.
/// Every step is bounded by a 10 s socket timeout.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    read_response(&mut s, method == "HEAD")
}

/// Reads one response. For HEAD, any bytes that arrive after the header
/// (before EOF or a 2 s quiet period) are returned as the body, so a caller
/// can assert there are none.
pub fn read_response(s: &mut TcpStream, head: bool) -> io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let header_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF before the end of the response header ({} bytes read)",
                    buf.len()
                ),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("response header larger than 1 MiB"));
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut sp = status_line.splitn(3, ' ');
    let version = sp.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::other(format!("bad status line {status_line:?}")));
    }
    let status: u16 = sp
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut rest = buf[header_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if head {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        loop {
            match s.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
            if rest.len() > 1 << 24 {
                break;
            }
        }
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(s, rest)?
    } else if let Some(cl) = get("content-length") {
        let cl: usize = cl
            .parse()
            .map_err(|_| io::Error::other(format!("bad Content-Length {cl:?}")))?;
        while rest.len() < cl {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside the body",
                ));
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        rest.truncate(cl);
        rest
    } else {
        s.read_to_end(&mut rest)?;
        rest
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn read_chunked(s: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut tmp = [0u8; 16384];
    let mut pos = 0;
    let mut fill = |buf: &mut Vec<u8>| -> io::Result<()> {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF inside a chunked body",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        Ok(())
    };
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            fill(&mut buf)?;
        };
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    if i == 0 {
                        return Ok(body);
                    }
                    pos += i + 2;
                } else {
                    fill(&mut buf)?;
                }
            }
        }
        while buf.len() < pos + size + 2 {
            fill(&mut buf)?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

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

/// Parses `dump --format table` into state -> (ipv4, ipv6, total) for the
/// TCP sockets section (the rows after the `TCP sockets` header up to the
/// first line that is not a state row).
pub fn parse_table_states(text: &str) -> Result<Vec<(String, [u64; 3])>, String> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("TCP sockets"));
    let header = lines.next().ok_or("no `TCP sockets` header line")?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    if cols != ["TCP", "sockets", "ipv4", "ipv6", "total"] {
        return Err(format!("unexpected header {header:?}"));
    }
    let mut rows = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 4 || !STATES.contains(&f[0]) {
            break;
        }
        let mut nums = [0u64; 3];
        for i in 0..3 {
            nums[i] = f[i + 1]
                .parse()
                .map_err(|_| format!("bad number in row {l:?}"))?;
        }
        rows.push((f[0].to_string(), nums));
    }
    Ok(rows)
}

/// A blocking TCP connection whose receive buffer is set small before
/// connect (so the window it advertises stays small), for clients that
/// stop reading.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call.
    let fd = cvt(
        unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )
    .unwrap();
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf, "SO_RCVBUF");
    let ret = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain old data.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: valid sockaddr_in of the given length.
            unsafe {
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain old data.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: valid sockaddr_in6 of the given length.
            unsafe {
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    cvt(ret, &format!("connect {addr}")).unwrap();
    let s = TcpStream::from(owned);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

// ---------------------------------------------------------------------------
// TLS: certificates made at test time, and a rustls client
// ---------------------------------------------------------------------------

/// A throwaway PKI in a fresh temp directory (removed on drop): a CA, a
/// server certificate for `localhost` and 127.0.0.1 signed by it, a client
/// certificate signed by it, and a "rogue" client certificate signed by
/// another CA. All PEM files; nothing is checked in.
pub struct Pki {
    pub dir: std::path::PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!(
            "sockdiag-pki-{name}-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, pem: String| std::fs::write(dir.join(file), pem).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>,
                    cn: &str,
                    names: Vec<String>,
                    eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![eku];
            let cert = params.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (ca_cert, ca_issuer) = ca("sockdiag test CA");
        write("ca.pem", ca_cert.pem());
        let (cert, key) = leaf(
            &ca_issuer,
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.pem", cert);
        write("server.key", key);
        let (cert, key) = leaf(
            &ca_issuer,
            "scraper",
            vec!["scraper".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("client.pem", cert);
        write("client.key", key);
        let (rogue_ca, rogue_issuer) = ca("someone else's CA");
        write("rogue-ca.pem", rogue_ca.pem());
        let (cert, key) = leaf(
            &rogue_issuer,
            "rogue",
            vec!["rogue".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("rogue.pem", cert);
        write("rogue.key", key);
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }

    /// Writes a web config file into the PKI directory; returns its path.
    pub fn web_config(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which client certificate a test client presents.
#[derive(Clone, Copy, Debug)]
pub enum ClientCert {
    None,
    /// Signed by the test CA.
    Good,
    /// Signed by another CA.
    Rogue,
}

/// A rustls client that trusts the test CA, with the given protocol
/// versions and client certificate.
pub fn tls_client(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    cert: ClientCert,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let pair = |c: &str, k: &str| {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path(c))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (certs, PrivateKeyDer::from_pem_file(pki.path(k)).unwrap())
    };
    let config = match cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Good => {
            let (c, k) = pair("client.pem", "client.key");
            builder.with_client_auth_cert(c, k).unwrap()
        }
        ClientCert::Rogue => {
            let (c, k) = pair("rogue.pem", "rogue.key");
            builder.with_client_auth_cert(c, k).unwrap()
        }
    };
    Arc::new(config)
}

/// One HTTPS request (`Connection: close`) to `addr` as `localhost`; every
/// step bounded by 10 s socket timeouts. A refused handshake is an Err.
pub fn tls_request(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes())?;
    tls.flush()?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)?;
    parse_response_bytes(&raw)
}

/// Parses a complete `Content-Length` response held in memory.
pub fn parse_response_bytes(raw: &[u8]) -> io::Result<HttpResponse> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("no complete response head in {} bytes", raw.len()),
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some((_, cl)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let cl: usize = cl.parse().map_err(io::Error::other)?;
        if body.len() < cl {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body {} of {cl} bytes", body.len()),
            ));
        }
        body.truncate(cl);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A bcrypt hash of `password` (cost 4: quick, and the server treats every
/// cost alike).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// `Authorization: Basic ...` for user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

// ---------------------------------------------------------------------------
// Process resource figures (hostile-client tests)
// ---------------------------------------------------------------------------

/// Threads, open file descriptors and resident memory of a process, as
/// /proc shows them (`Threads:` and `VmRSS:` in status, entries in fd/).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    pub threads: u64,
    pub fds: u64,
    pub rss_kib: u64,
}

impl ProcStats {
    pub fn read(pid: libc::pid_t) -> io::Result<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
        Ok(ProcStats {
            threads: field("Threads:")?,
            fds,
            rss_kib: field("VmRSS:")?,
        })
    }

    /// The larger of each figure.
    pub fn max(self, other: ProcStats) -> ProcStats {
        ProcStats {
            threads: self.threads.max(other.threads),
            fds: self.fds.max(other.fds),
            rss_kib: self.rss_kib.max(other.rss_kib),
        }
    }
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub samples: u64,
    /// Each figure's maximum over all samples.
    pub max: ProcStats,
    /// Samples that failed (the process was gone).
    pub failed: u64,
}

/// Samples a process's [`ProcStats`] on its own thread at a fixed interval,
/// keeping the peaks, until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<thread::JoinHandle<Peaks>>,
}

impl Sampler {
    pub fn start(pid: libc::pid_t, every: Duration) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match ProcStats::read(pid) {
                    Ok(s) => {
                        peaks.samples += 1;
                        peaks.max = peaks.max.max(s);
                    }
                    Err(_) => peaks.failed += 1,
                }
                thread::sleep(every);
            }
            peaks
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .expect("finished once")
            .join()
            .expect("sampler thread")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A scrape the way Prometheus makes one (new connection, gzip accepted),
/// timed from connect to the last body byte.
pub fn timed_scrape(addr: SocketAddr, path: &str) -> io::Result<(Duration, HttpResponse)> {
    let started = Instant::now();
    let response = http_request(addr, "GET", path, &[("Accept-Encoding", "gzip")])?;
    Ok((started.elapsed(), response))
}
