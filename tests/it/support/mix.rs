//! The exact socket mix on loopback (`SocketMix`) and the numbers the
//! exporter must report for it (`Expected`), cross-checked against
//! `/proc/thread-self/net/tcp{,6}` and per-socket ioctls; and the libc
//! socket helpers it is built with (`Family`, `make_listener`, ioctls,
//! `steal_socket_fd`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

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

pub(super) fn cvt(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

pub(super) fn setsockopt_int(
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

pub(super) fn parse_proc_addr(hex: &str, family: Family) -> Option<(IpAddr, u16)> {
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
