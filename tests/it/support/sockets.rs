//! Socket builders and independent kernel views for the collector tests.
//!
//! std has no knob for several things the collector tests need (an exact
//! SO_RCVBUF on a UDP socket, a BPF filter attached before a nonblocking TCP
//! connect, seqpacket pairs), so those sockets are built here with libc. The
//! numbers the exporter reports are checked against interfaces that do not
//! go through sock_diag: getsockopt(SO_MEMINFO), the FIONREAD / SIOCOUTQ
//! ioctls, and `/proc/thread-self/net/{udp,udp6,netstat}`, which show the
//! calling thread's network namespace (`/proc/self/net` shows the main
//! thread's, and libtest runs each test on a thread of its own).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::mix::{cvt, parse_proc_addr, setsockopt_int, Family};

/// socket(2) with SOCK_CLOEXEC, owned.
pub fn socket(domain: libc::c_int, ty: libc::c_int) -> OwnedFd {
    // SAFETY: plain socket(2) call.
    let fd = cvt(
        unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )
    .unwrap();
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn domain(family: Family) -> libc::c_int {
    match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    }
}

/// A sockaddr for `addr`, for bind/connect/sendto.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned
            // for a sockaddr_in.
            let sa = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sa = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

pub fn bind(fd: RawFd, addr: SocketAddr) {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss is a valid sockaddr of length len.
    let ret = unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) };
    cvt(ret, &format!("bind {addr}")).unwrap();
}

/// connect(2); a nonblocking socket's EINPROGRESS comes back as an error.
pub fn connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss is a valid sockaddr of length len.
    let ret = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The local port of a bound socket (getsockname).
pub fn local_port(fd: RawFd) -> u16 {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss is writable for len bytes.
    let ret = unsafe { libc::getsockname(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) };
    cvt(ret, "getsockname").unwrap();
    // sin_port and sin6_port sit at the same offset, right after the family.
    // SAFETY: both layouts start with family then a big-endian port.
    let sa = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
    u16::from_be(sa.sin_port)
}

pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an open fd with integer arguments.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) }, "F_GETFL").unwrap();
    // SAFETY: as above.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    cvt(ret, "F_SETFL").unwrap();
}

/// The socket's memory counters, getsockopt(SOL_SOCKET, SO_MEMINFO): index
/// 0 is sk_rmem_alloc, 8 the drop counter (SK_MEMINFO_DROPS).
pub fn meminfo(fd: RawFd) -> [u32; 9] {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: info is writable for len bytes; the kernel writes at most len.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(ret, "getsockopt SO_MEMINFO").unwrap();
    assert_eq!(
        len as usize,
        std::mem::size_of_val(&info),
        "SO_MEMINFO size"
    );
    info
}

pub const MEMINFO_RMEM_ALLOC: usize = libc::SK_MEMINFO_RMEM_ALLOC as usize;
pub const MEMINFO_DROPS: usize = libc::SK_MEMINFO_DROPS as usize;

/// Attaches a classic BPF socket filter that drops every packet
/// (one instruction: `ret #0`).
pub fn attach_drop_all_filter(fd: RawFd) {
    let mut code = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: prog points at `code`, which outlives the call; the kernel
    // copies the program.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    cvt(ret, "SO_ATTACH_FILTER").unwrap();
}

/// A nonblocking TCP connect to the family's loopback `port`, optionally
/// with a drop-everything filter attached first (the client then never sees
/// the SYN-ACK and stays in SYN_SENT). Returns the socket once the SYN is on
/// its way.
pub fn tcp_connect_nonblocking(family: Family, port: u16, drop_all: bool) -> OwnedFd {
    let fd = socket(domain(family), libc::SOCK_STREAM);
    if drop_all {
        attach_drop_all_filter(fd.as_raw_fd());
    }
    set_nonblocking(fd.as_raw_fd());
    let addr = SocketAddr::new(family.loopback(), port);
    match connect(fd.as_raw_fd(), addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect {addr}: {e}"),
    }
    fd
}

/// A UDP socket.
pub struct Udp {
    pub fd: OwnedFd,
    pub family: Family,
}

impl Udp {
    /// Not bound, not connected.
    pub fn unbound(family: Family) -> Udp {
        let fd = socket(domain(family), libc::SOCK_DGRAM);
        if family == Family::V6 {
            setsockopt_int(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                1,
                "IPV6_V6ONLY",
            );
        }
        Udp { fd, family }
    }

    /// Bound to the family's loopback address and `port` (0: any free one),
    /// with SO_RCVBUF set first when given.
    pub fn bound(family: Family, port: u16, rcvbuf: Option<i32>) -> Udp {
        let udp = Udp::unbound(family);
        if let Some(size) = rcvbuf {
            setsockopt_int(
                udp.raw(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                size,
                "SO_RCVBUF",
            );
        }
        bind(udp.raw(), SocketAddr::new(family.loopback(), port));
        udp
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn port(&self) -> u16 {
        local_port(self.raw())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.family.loopback(), self.port())
    }

    pub fn connect(&self, to: SocketAddr) {
        connect(self.raw(), to).unwrap_or_else(|e| panic!("connect UDP to {to}: {e}"));
    }

    /// sendto(2) (to = None: send on a connected socket). Returns the error
    /// rather than panicking so callers can blast a nonblocking socket.
    pub fn send(&self, payload: &[u8], to: Option<SocketAddr>) -> io::Result<usize> {
        let (ss, len) = match to {
            Some(a) => {
                let (ss, len) = sockaddr(a);
                (Some(ss), len)
            }
            None => (None, 0),
        };
        let sa = ss
            .as_ref()
            .map_or(std::ptr::null(), |s| s as *const _ as *const libc::sockaddr);
        // SAFETY: payload is readable for its length; sa is null or a valid
        // sockaddr of length len.
        let ret = unsafe {
            libc::sendto(
                self.raw(),
                payload.as_ptr() as *const libc::c_void,
                payload.len(),
                libc::MSG_DONTWAIT,
                sa,
                len,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }

    pub fn meminfo(&self) -> [u32; 9] {
        meminfo(self.raw())
    }

    /// This socket's row in /proc/thread-self/net/udp{,6} (by local port).
    pub fn proc_row(&self) -> ProcUdp {
        let port = self.port();
        let rows = proc_udp(self.family);
        let mine: Vec<_> = rows.iter().filter(|r| r.local_port == port).collect();
        assert_eq!(
            mine.len(),
            1,
            "want exactly one {:?} UDP socket on port {port} in /proc: {rows:#?}",
            self.family
        );
        mine[0].clone()
    }
}

/// One row of /proc/net/udp{,6}. rx_queue is udp_rqueue_get() (receive
/// memory charged, the same function udp_diag uses), tx_queue is
/// sk_wmem_alloc_get(), drops is the socket's drop counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcUdp {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
    /// Kernel state number: 7 (CLOSE) unconnected, 1 (ESTABLISHED) connected.
    pub state: u8,
    pub tx_queue: u64,
    pub rx_queue: u64,
    pub inode: u64,
    pub drops: u64,
}

/// Every UDP socket of one family in the calling thread's namespace.
pub fn proc_udp(family: Family) -> Vec<ProcUdp> {
    let file = match family {
        Family::V4 => "udp",
        Family::V6 => "udp6",
    };
    let path = format!("/proc/thread-self/net/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .skip(1)
        .map(|line| {
            parse_udp_row(line, family).unwrap_or_else(|| panic!("{path}: cannot parse {line:?}"))
        })
        .collect()
}

fn parse_udp_row(line: &str, family: Family) -> Option<ProcUdp> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 13 {
        return None;
    }
    let (local, local_port) = parse_proc_addr(f[1], family)?;
    let (_, remote_port) = parse_proc_addr(f[2], family)?;
    let (tx, rx) = f[4].split_once(':')?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    Some(ProcUdp {
        local,
        local_port,
        remote_port,
        state: u8::from_str_radix(f[3], 16).ok()?,
        tx_queue: hex(tx)?,
        rx_queue: hex(rx)?,
        inode: f[9].parse().ok()?,
        drops: f[12].parse().ok()?,
    })
}

/// One counter from /proc/thread-self/net/netstat or snmp, e.g.
/// ("TcpExt", "ListenDrops"): the file has pairs of lines, names then values,
/// both starting with "Prefix:".
pub fn netstat(prefix: &str, name: &str) -> u64 {
    for file in ["netstat", "snmp"] {
        let path = format!("/proc/thread-self/net/{file}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.split(':').next() == Some(prefix))
            .collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let names = names.split_whitespace().skip(1);
            let values = values.split_whitespace().skip(1);
            for (n, v) in names.zip(values) {
                if n == name {
                    return v
                        .parse()
                        .unwrap_or_else(|_| panic!("{path}: {prefix}:{name} = {v:?}"));
                }
            }
        }
    }
    panic!("no {prefix}:{name} in /proc/thread-self/net/{{netstat,snmp}}")
}

/// A unix socketpair of the given type (SOCK_STREAM, SOCK_DGRAM,
/// SOCK_SEQPACKET).
pub fn unix_pair(ty: libc::c_int) -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is writable for two ints.
    let ret =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    cvt(ret, "socketpair").unwrap();
    // SAFETY: socketpair returned two new fds that we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// listen(2) again with an exact backlog (a unix or TCP socket that already
/// listens takes the new limit).
pub fn relisten(fd: RawFd, backlog: i32) {
    // SAFETY: listen on an open socket.
    cvt(unsafe { libc::listen(fd, backlog) }, "listen").unwrap();
}

/// write(2) of the whole buffer (sockets here never take less).
pub fn write_all(fd: RawFd, data: &[u8]) {
    // SAFETY: data is readable for its length.
    let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
    assert_eq!(
        n,
        data.len() as isize,
        "write: {}",
        io::Error::last_os_error()
    );
}

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("sockdiag-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `promtool check metrics` on `text`: Ok when it is silent and exits 0.
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool not runnable ({e}): `make test` installs it (Debian package prometheus)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    // promtool reads all of stdin and exits; wait_with_output cannot hang
    // on a full pipe because it drains both.
    let output = child.wait_with_output().unwrap();
    if output.status.success() && output.stdout.is_empty() && output.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
