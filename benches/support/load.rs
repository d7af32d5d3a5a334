//! The socket load generator: a known mix of about N TCP sockets in the
//! calling thread's (private) network namespace.
//!
//! A process may hold at most 20000 fds here, so the client ends live in
//! helper processes (the bench binary re-executed in helper mode `load`), each
//! holding up to `PER_HELPER` connections. The server ends cost no fd at all:
//! nobody accepts them, so each sits as a full socket in its listener's accept
//! queue. Every connection therefore yields two sockets for one fd:
//!
//! - 90%: client ESTABLISHED + server ESTABLISHED (unaccepted);
//!   every 10th client writes 100 bytes nobody reads (receive queue sums);
//! - 10%: the client shuts down its write side right away, giving a client
//!   FIN_WAIT2 (not orphaned, so it never times out) + server CLOSE_WAIT;
//! - 0.5% of N: SYN_SENT, non-blocking connects to a listener whose accept
//!   queue is full (SYNs dropped; tcp_syn_retries 20 keeps them retrying);
//! - about 1% of N: TIME_WAIT, made by the bench itself (connect, accept,
//!   client closes first, then the server): these expire after 60 s, so the
//!   bench makes a new batch between measurements once a batch has expired;
//! - 64 IPv4 listeners on 127.0.0.1, 16 IPv6 listeners on ::1, the IPv4
//!   listener used to make the TIME_WAIT sockets, and the full one (with the
//!   one ESTABLISHED pair that fills it).
//!
//! Next to the TCP load, at every size, two more helpers hold the other
//! protocols' sockets, so that every collector has work:
//!
//! - `UDP_SOCKETS` UDP sockets, each bound to its own port on 127.0.0.1 (every
//!   10th on ::1 when the namespace has IPv6); every 4th is connected to
//!   port 9 (the kernel reports it ESTABLISHED), and every 50th holds one
//!   unread 64-byte datagram (receive-queue sums);
//! - about `UNIX_SOCKETS` unix sockets: `UNIX_LISTENERS` stream listeners
//!   bound to paths in a temporary directory, each with `UNIX_PENDING`
//!   connections nobody accepts (the client end and the server end waiting
//!   in the queue, which has no fd), and socketpairs for the rest (mostly
//!   stream, every third dgram, every 50th seqpacket; every 10th stream pair
//!   holds 100 unread bytes).
//!
//! About 10% of the connections (at most 50000) are IPv6 when the namespace
//! has IPv6. Source addresses are bound explicitly: IPv4 clients use
//! 127.1.a.b with ports 10000..59999 (50000 per address), IPv6 clients use
//! ::1 with the same port range, so 4-tuples, ports and backlogs never run out
//! and no connect() ever searches for a free port. With
//! `BENCH_DISTINCT_DESTINATIONS=1` the IPv4 listeners bind 0.0.0.0 and IPv4
//! connection i goes to its own destination address
//! 127.(2 + i / 65536).(i / 256).(i % 256), so every socket has a
//! destination of its own (the ephemeral-port table's worst case; the
//! namespace's range is 1024-65535, so client and server ends alike hold
//! an ephemeral port). Client sockets carry
//! SO_LINGER {on, 0} so that killing a helper resets its connections at once
//! instead of leaving half a million orphans to time out.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use sockdiag_exporter::scope::netns_enter;

/// Environment variable carrying a load helper's assignment.
pub const LOAD_ENV: &str = "SOCKDIAG_BENCH_LOAD";
/// Connections per helper process (fd limit 20000, keep a margin).
pub const PER_HELPER: u64 = 19_000;
const LISTENERS_V4: u16 = 64;
const LISTENERS_V6: u16 = 16;
const LISTEN_PORT_BASE: u16 = 2000;
const TW_LISTEN_PORT: u16 = 1999;
/// A listener whose accept queue is kept full: SYNs to it are dropped, so
/// its clients stay in SYN_SENT.
const FULL_LISTEN_PORT: u16 = 1998;
const SRC_PORT_BASE: u64 = 10_000;
const SRC_PORTS: u64 = 50_000;
const V6_MAX_CONNS: u64 = SRC_PORTS;
const BACKLOG: i32 = 262_144;
/// Bytes a client writes, unread, on every 10th connection.
const DATA_BYTES: usize = 100;
/// Every SHUT_EVERY-th connection is half-closed by its client.
const SHUT_EVERY: u64 = 10;
/// UDP sockets at every size (one helper process).
pub const UDP_SOCKETS: u64 = 10_000;
/// Unix sockets at every size (one helper process), listeners included.
pub const UNIX_SOCKETS: u64 = 10_000;
pub const UNIX_LISTENERS: u64 = 8;
/// Unaccepted connections per unix listener (each is two sockets).
pub const UNIX_PENDING: u64 = 16;
const UDP_PORT_BASE: u64 = 10_000;
/// Environment variable carrying the unix helper's directory for its paths.
pub const UNIX_DIR_ENV: &str = "SOCKDIAG_BENCH_UNIX_DIR";
/// Helper assignment "families" for the non-TCP helpers.
const JOB_UDP: u8 = 17;
const JOB_UNIX: u8 = 1;

/// `BENCH_DISTINCT_DESTINATIONS=1`: one destination address per IPv4
/// connection (see the module comment). Helpers inherit it.
pub fn distinct_destinations() -> bool {
    std::env::var("BENCH_DISTINCT_DESTINATIONS").is_ok_and(|v| v == "1")
}

/// The IPv4 address connection `i` connects to.
fn v4_dst(i: u64) -> [u8; 4] {
    if distinct_destinations() {
        [127, 2 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
    } else {
        [127, 0, 0, 1]
    }
}

/// Per-namespace sysctls for the load (the calling thread's namespace).
pub fn tune_namespace() -> io::Result<()> {
    netns_enter::write_sysctl("net/core/somaxconn", &BACKLOG.to_string())?;
    netns_enter::write_sysctl("net/ipv4/tcp_max_syn_backlog", &BACKLOG.to_string())?;
    netns_enter::write_sysctl("net/ipv4/tcp_max_tw_buckets", "4000000")?;
    // On loopback connects would otherwise recycle TIME_WAIT sockets.
    netns_enter::write_sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    netns_enter::write_sysctl("net/ipv4/ip_local_port_range", "1024 65535")?;
    // SYN_SENT sockets keep retrying for the whole run instead of ~2 min.
    netns_enter::write_sysctl("net/ipv4/tcp_syn_retries", "20")?;
    Ok(())
}

/// How many sockets of each kind a size asks for.
#[derive(Clone, Debug)]
pub struct Plan {
    pub v6: bool,
    pub conns4: u64,
    pub conns6: u64,
    pub time_wait: u64,
    pub syn_sent: u64,
    pub listeners: u64,
    /// UDP sockets (on top of the TCP target).
    pub udp: u64,
    /// Unix sockets (on top of the TCP target).
    pub unix: u64,
}

impl Plan {
    pub fn new(target: u64, v6: bool) -> Plan {
        // 64 (+16 IPv6) load listeners, the TIME_WAIT one and the full one.
        let listeners = LISTENERS_V4 as u64 + 2 + if v6 { LISTENERS_V6 as u64 } else { 0 };
        let time_wait = target / 100;
        let syn_sent = target / 200;
        // 2: the connection that keeps the full listener's queue full.
        let conns = target.saturating_sub(listeners + time_wait + syn_sent + 2) / 2;
        let conns6 = if v6 {
            (conns / 10).min(V6_MAX_CONNS)
        } else {
            0
        };
        Plan {
            v6,
            conns4: conns - conns6,
            conns6,
            time_wait,
            syn_sent,
            listeners,
            udp: UDP_SOCKETS,
            unix: UNIX_SOCKETS,
        }
    }

    pub fn helpers(&self) -> u64 {
        self.conns4.div_ceil(PER_HELPER)
            + self.conns6.div_ceil(PER_HELPER)
            + self.syn_sent.div_ceil(PER_HELPER)
            + u64::from(self.udp > 0)
            + u64::from(self.unix > 0)
    }
}

/// A built load: listeners held here, client ends held by helper processes.
pub struct Load {
    pub plan: Plan,
    listeners: Vec<OwnedFd>,
    helpers: Vec<(Child, ChildStdin)>,
    pub build_time: Duration,
    pub failed_connects: u64,
    tw_listener: Option<OwnedFd>,
    /// When the current TIME_WAIT batch was made, and how many batches so far.
    tw_made: Instant,
    tw_batches: u8,
    /// The unix helper's directory (its listeners' paths), removed at the end.
    unix_dir: Option<std::path::PathBuf>,
}

fn sockaddr_v4(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(ip);
    sa
}

fn sockaddr_v6_loopback(port: u16) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = port.to_be();
    sa.sin6_addr.s6_addr[15] = 1;
    sa
}

enum Addr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl Addr {
    fn family(&self) -> libc::c_int {
        match self {
            Addr::V4(_) => libc::AF_INET,
            Addr::V6(_) => libc::AF_INET6,
        }
    }
    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            Addr::V4(a) => (
                a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            Addr::V6(a) => (
                a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn tcp_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the returned OwnedFd.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh, open descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points to a live T of the given size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn bind(fd: &OwnedFd, a: &Addr) -> io::Result<()> {
    let (p, l) = a.as_ptr();
    // SAFETY: p/l describe a live sockaddr.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), p, l) }).map(drop)
}

fn connect(fd: &OwnedFd, a: &Addr) -> io::Result<()> {
    let (p, l) = a.as_ptr();
    loop {
        // SAFETY: p/l describe a live sockaddr.
        let r = unsafe { libc::connect(fd.as_raw_fd(), p, l) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn listener(a: Addr) -> io::Result<OwnedFd> {
    listener_with_backlog(&a, BACKLOG)
}

fn listener_with_backlog(a: &Addr, backlog: i32) -> io::Result<OwnedFd> {
    let fd = tcp_socket(a.family())?;
    if let Addr::V6(_) = a {
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &1i32)?;
    }
    bind(&fd, a)?;
    // SAFETY: fd is a bound stream socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// IPv4 client source for connection `i` of a group: 127.<group>.a.b, port.
fn v4_src(group: u8, i: u64) -> Addr {
    let k = i / SRC_PORTS;
    let ip = [127, group, (k / 250) as u8, (k % 250 + 1) as u8];
    Addr::V4(sockaddr_v4(ip, (SRC_PORT_BASE + i % SRC_PORTS) as u16))
}

/// Whether the calling thread's namespace can bind ::1.
pub fn have_ipv6() -> bool {
    listener(Addr::V6(sockaddr_v6_loopback(LISTEN_PORT_BASE - 2))).is_ok()
}

impl Load {
    /// Builds the load for `plan` in the calling thread's namespace, using
    /// `exe` (the bench binary) re-executed in helper mode for client ends.
    pub fn build(plan: Plan, exe: &Path, helper_env: &str) -> io::Result<Load> {
        let start = Instant::now();
        let mut load = Load {
            plan: plan.clone(),
            listeners: Vec::new(),
            helpers: Vec::new(),
            build_time: Duration::ZERO,
            failed_connects: 0,
            tw_listener: None,
            tw_made: Instant::now(),
            tw_batches: 0,
            unix_dir: None,
        };
        for j in 0..LISTENERS_V4 {
            let any = if distinct_destinations() {
                [0, 0, 0, 0]
            } else {
                [127, 0, 0, 1]
            };
            load.listeners
                .push(listener(Addr::V4(sockaddr_v4(any, LISTEN_PORT_BASE + j)))?);
        }
        if plan.v6 {
            for j in 0..LISTENERS_V6 {
                load.listeners.push(listener(Addr::V6(sockaddr_v6_loopback(
                    LISTEN_PORT_BASE + j,
                )))?);
            }
        }
        let tw_listener = listener(Addr::V4(sockaddr_v4([127, 0, 0, 1], TW_LISTEN_PORT)))?;
        // Backlog 0 holds one connection; we make it, and every later SYN
        // is dropped (LISTENOVERFLOWS), leaving its client in SYN_SENT.
        let full = Addr::V4(sockaddr_v4([127, 0, 0, 1], FULL_LISTEN_PORT));
        let full_listener = listener_with_backlog(&full, 0)?;
        let filler = tcp_socket(libc::AF_INET)?;
        connect(&filler, &full)?;
        load.listeners.push(full_listener);
        load.listeners.push(filler);

        // Helper assignments: (family, first index, count).
        let mut jobs = Vec::new();
        // Family 0: SYN_SENT clients (IPv4).
        for (fam, total) in [(4u8, plan.conns4), (6u8, plan.conns6), (0u8, plan.syn_sent)] {
            let mut first = 0;
            while first < total {
                let count = PER_HELPER.min(total - first);
                jobs.push((fam, first, count));
                first += count;
            }
        }
        // The other protocols: one helper each (both fit one fd budget).
        if plan.udp > 0 {
            jobs.push((JOB_UDP, 0, plan.udp.min(PER_HELPER)));
        }
        if plan.unix > 0 {
            jobs.push((JOB_UNIX, 0, plan.unix.min(PER_HELPER)));
            let dir = std::env::temp_dir().join(format!(
                "sockdiag-bench-unix-{}-{}",
                std::process::id(),
                plan.conns4
            ));
            std::fs::create_dir_all(&dir)?;
            load.unix_dir = Some(dir);
        }
        // At most WAVE helpers connect at once: two cores are shared.
        const WAVE: usize = 4;
        for wave in jobs.chunks(WAVE) {
            let mut started = Vec::new();
            for &(fam, first, count) in wave {
                let mut cmd = Command::new(exe);
                if let Some(dir) = &load.unix_dir {
                    cmd.env(UNIX_DIR_ENV, dir);
                }
                let mut child = cmd
                    .env(helper_env, "load")
                    .env(LOAD_ENV, format!("{fam} {first} {count}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()?;
                let stdin = child.stdin.take().expect("piped stdin");
                started.push((child, stdin));
            }
            for (mut child, stdin) in started {
                let mut line = String::new();
                let out = child.stdout.take().expect("piped stdout");
                BufReader::new(out).read_line(&mut line)?;
                // "ready ok=N failed=M"
                let failed = line
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("failed="))
                    .and_then(|v| v.parse::<u64>().ok());
                load.helpers.push((child, stdin));
                match failed {
                    Some(f) => load.failed_connects += f,
                    None => {
                        return Err(io::Error::other(format!(
                            "load helper did not report ready: {line:?}"
                        )))
                    }
                }
            }
        }

        load.tw_listener = Some(tw_listener);
        load.make_time_wait()?;
        load.build_time = start.elapsed();
        Ok(load)
    }

    /// TIME_WAIT sockets: connect, accept, close the client first, then the
    /// server end; the client side lingers in TIME_WAIT (60 s).
    fn make_time_wait(&mut self) -> io::Result<()> {
        let tw_listener = self.tw_listener.as_ref().expect("TIME_WAIT listener");
        // Each batch binds a fresh source group: the last batch's TIME_WAIT
        // sockets may still hold their (address, port) pairs.
        let group = 3 + self.tw_batches % 100;
        self.tw_batches = self.tw_batches.wrapping_add(1);
        let dst = Addr::V4(sockaddr_v4([127, 0, 0, 1], TW_LISTEN_PORT));
        let mut done = 0;
        while done < self.plan.time_wait {
            let batch = 2000.min(self.plan.time_wait - done);
            let mut clients = Vec::with_capacity(batch as usize);
            for i in done..done + batch {
                let fd = tcp_socket(libc::AF_INET)?;
                bind(&fd, &v4_src(group, i))?;
                connect(&fd, &dst)?;
                clients.push(fd);
            }
            let mut servers = Vec::with_capacity(batch as usize);
            for _ in 0..batch {
                // SAFETY: accept on a listening socket; null peer address.
                let fd = cvt(unsafe {
                    libc::accept4(
                        tw_listener.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                })?;
                // SAFETY: fd is a fresh, open descriptor.
                servers.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            drop(clients);
            std::thread::sleep(Duration::from_millis(5));
            drop(servers);
            done += batch;
        }
        std::thread::sleep(Duration::from_millis(20));
        self.tw_made = Instant::now();
        Ok(())
    }

    /// TIME_WAIT lasts 60 s, shorter than a 1M run: once the batch has
    /// expired, make a new one so later rounds see the same mix. Call between
    /// measurements; returns whether it made a batch.
    pub fn keep_time_wait(&mut self) -> io::Result<bool> {
        if self.plan.time_wait == 0 || self.tw_made.elapsed() < Duration::from_secs(61) {
            return Ok(false);
        }
        self.make_time_wait()?;
        Ok(true)
    }

    /// Kills the helper processes this load started (by PID) and reaps them,
    /// then closes the listeners; the unaccepted server ends go with them.
    pub fn teardown(mut self) {
        for (child, _) in &self.helpers {
            // SAFETY: kill(2) on a PID we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        }
        for (mut child, stdin) in self.helpers.drain(..) {
            drop(stdin);
            let _ = child.wait();
        }
        self.listeners.clear();
        self.tw_listener = None;
        if let Some(dir) = self.unix_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // On an early return or panic: the same teardown, by PID only.
        for (child, _) in &mut self.helpers {
            // SAFETY: kill(2) on a PID we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
        if let Some(dir) = self.unix_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Helper mode `load`: opens the assigned connections, reports
/// `ready ok=N failed=M`, then holds them until stdin closes or it is killed.
pub fn helper() -> io::Result<()> {
    let spec = std::env::var(LOAD_ENV).map_err(|_| io::Error::other("no load assignment"))?;
    let v: Vec<u64> = spec
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let [fam, first, count] = v[..] else {
        return Err(io::Error::other(format!("bad load assignment {spec:?}")));
    };
    match fam as u8 {
        JOB_UDP => {
            let (held, failed) = udp_sockets(count)?;
            return hold(held, failed);
        }
        JOB_UNIX => {
            let (held, failed) = unix_sockets(count)?;
            return hold(held, failed);
        }
        _ => {}
    }
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let timeout = libc::timeval {
        tv_sec: 3,
        tv_usec: 0,
    };
    let mut held = Vec::with_capacity(count as usize);
    let mut failed = 0u64;
    for i in first..first + count {
        if fam == 0 {
            // SYN_SENT: a non-blocking connect to the full listener.
            let fd = tcp_socket(libc::AF_INET)?;
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
            // SAFETY: fcntl on an open fd.
            cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
            let dst = Addr::V4(sockaddr_v4([127, 0, 0, 1], FULL_LISTEN_PORT));
            match bind(&fd, &v4_src(2, i)).and_then(|_| connect(&fd, &dst)) {
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => held.push(fd),
                other => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("load helper: SYN_SENT connection {i}: {other:?}");
                    }
                }
            }
            continue;
        }
        let (src, dst) = if fam == 6 {
            let s = sockaddr_v6_loopback((SRC_PORT_BASE + i % SRC_PORTS) as u16);
            (
                Addr::V6(s),
                Addr::V6(sockaddr_v6_loopback(
                    LISTEN_PORT_BASE + (i % LISTENERS_V6 as u64) as u16,
                )),
            )
        } else {
            (
                v4_src(1, i),
                Addr::V4(sockaddr_v4(
                    v4_dst(i),
                    LISTEN_PORT_BASE + (i % LISTENERS_V4 as u64) as u16,
                )),
            )
        };
        let fd = tcp_socket(src.family())?;
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
        // Bounds a connect whose SYN is dropped (full backlog) to 3 s.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
        if let Err(e) = bind(&fd, &src).and_then(|_| connect(&fd, &dst)) {
            failed += 1;
            if failed <= 3 {
                eprintln!("load helper: connection {i} (family {fam}): {e}");
            }
            if failed > 100 {
                break;
            }
            continue;
        }
        if i % 20 == 0 || i % 20 == 5 {
            // Unread data for the queue sums: it sits in the unaccepted
            // server end's receive queue (ESTABLISHED, or CLOSE_WAIT below).
            let data = [b'x'; DATA_BYTES];
            // SAFETY: data is a live buffer of DATA_BYTES bytes.
            unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    DATA_BYTES,
                    0,
                )
            };
        }
        if i % SHUT_EVERY == 0 {
            // SAFETY: shutdown(2) on an open, connected socket.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
        }
        held.push(fd);
    }
    hold(held, failed)
}

/// Reports `ready ok=N failed=M`, then holds `held` until the bench closes
/// our stdin or kills us.
fn hold(held: Vec<OwnedFd>, failed: u64) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "ready ok={} failed={failed}", held.len())?;
    out.flush()?;
    drop(out);
    // Hold everything until the bench closes our stdin or kills us.
    let mut sink = [0u8; 64];
    while io::stdin().read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    drop(held);
    Ok(())
}

fn udp_addr(v6: bool, port: u16) -> Addr {
    if v6 {
        Addr::V6(sockaddr_v6_loopback(port))
    } else {
        Addr::V4(sockaddr_v4([127, 0, 0, 1], port))
    }
}

/// The UDP part of the load (see the module comment): `count` sockets.
fn udp_sockets(count: u64) -> io::Result<(Vec<OwnedFd>, u64)> {
    let count = count.min(SRC_PORTS);
    // A namespace without IPv6 gets IPv4 sockets only.
    let v6 = {
        // SAFETY: plain socket(2); closed right away by OwnedFd.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: fd is a fresh, open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        bind(&fd, &udp_addr(true, 0)).is_ok()
    };
    let mut held: Vec<Option<OwnedFd>> = Vec::with_capacity(count as usize);
    let mut failed = 0u64;
    for i in 0..count {
        let is_v6 = v6 && i % 10 == 9;
        let port = (UDP_PORT_BASE + i) as u16;
        let family = if is_v6 { libc::AF_INET6 } else { libc::AF_INET };
        let made = (|| {
            // SAFETY: plain socket(2); the fd is owned by the OwnedFd below.
            let fd =
                cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
            // SAFETY: fd is a fresh, open descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            bind(&fd, &udp_addr(is_v6, port))?;
            if i % 4 == 3 {
                connect(&fd, &udp_addr(is_v6, 9))?;
            }
            Ok::<_, io::Error>(fd)
        })();
        match made {
            Ok(fd) => held.push(Some(fd)),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("load helper: UDP socket {i}: {e}");
                }
                held.push(None);
            }
        }
    }
    // Every 50th socket (IPv4, unconnected) gets one datagram from the next
    // one (also IPv4 and unconnected), which nobody reads.
    let data = [b'u'; 64];
    for i in (0..count.saturating_sub(1)).step_by(50) {
        let (Some(Some(from)), Some(Some(_))) = (held.get(i as usize + 1), held.get(i as usize))
        else {
            continue;
        };
        let to = udp_addr(false, (UDP_PORT_BASE + i) as u16);
        let (p, l) = to.as_ptr();
        // SAFETY: data is a live buffer; p/l describe a live sockaddr.
        unsafe {
            libc::sendto(
                from.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                0,
                p,
                l,
            )
        };
    }
    Ok((held.into_iter().flatten().collect(), failed))
}

fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= sa.sun_path.len() {
        return Err(io::Error::other(format!(
            "unix path too long: {}",
            path.display()
        )));
    }
    for (d, &b) in sa.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((sa, len as libc::socklen_t))
}

fn unix_socket(ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the returned OwnedFd.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh, open descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The unix part of the load (see the module comment): about `count` sockets.
fn unix_sockets(count: u64) -> io::Result<(Vec<OwnedFd>, u64)> {
    let dir = std::env::var_os(UNIX_DIR_ENV)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("{UNIX_DIR_ENV} not set")))?;
    let mut held = Vec::with_capacity(count as usize);
    let mut failed = 0u64;
    for j in 0..UNIX_LISTENERS {
        let (sa, len) = sockaddr_un(&dir.join(format!("l{j}")))?;
        let l = unix_socket(libc::SOCK_STREAM)?;
        // SAFETY: sa/len describe a live sockaddr_un.
        cvt(unsafe { libc::bind(l.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, len) })?;
        // SAFETY: l is a bound stream socket.
        cvt(unsafe { libc::listen(l.as_raw_fd(), 128) })?;
        held.push(l);
        for _ in 0..UNIX_PENDING {
            let c = unix_socket(libc::SOCK_STREAM)?;
            // SAFETY: sa/len describe a live sockaddr_un.
            match cvt(unsafe {
                libc::connect(c.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, len)
            }) {
                Ok(_) => held.push(c),
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("load helper: unix connect to listener {j}: {e}");
                    }
                }
            }
        }
    }
    // Listeners, and two sockets per pending connection; pairs for the rest.
    let pairs = count.saturating_sub(UNIX_LISTENERS * (1 + 2 * UNIX_PENDING)) / 2;
    for k in 0..pairs {
        let ty = if k % 50 == 49 {
            libc::SOCK_SEQPACKET
        } else if k % 3 == 2 {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_STREAM
        };
        let mut fds = [0; 2];
        // SAFETY: fds is a live array of two ints.
        if let Err(e) = cvt(unsafe {
            libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
        }) {
            failed += 1;
            if failed <= 3 {
                eprintln!("load helper: unix socketpair {k}: {e}");
            }
            continue;
        }
        // SAFETY: socketpair returned two fresh, open descriptors.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if ty == libc::SOCK_STREAM && k % 10 == 0 {
            let data = [b'x'; DATA_BYTES];
            // SAFETY: data is a live buffer of DATA_BYTES bytes.
            unsafe {
                libc::send(
                    a.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    DATA_BYTES,
                    0,
                )
            };
        }
        held.push(a);
        held.push(b);
    }
    Ok((held, failed))
}
