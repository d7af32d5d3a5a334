//! The comparison programs, run as helper-mode subprocesses of the bench
//! binary so that their wall time and peak RSS are measured exactly like ours:
//!
//! - `two_dump`: the naive lower bound. SOCK_DIAG_BY_FAMILY for AF_INET, then
//!   AF_INET6, all states, no extensions, a 32 KiB receive buffer, counting
//!   messages only. Raw libc, nothing allocated per socket.
//! - `mix`: the same two dumps, but tallying state and queues per family: how
//!   the bench prints the actual socket mix it built (the fastest way we have).
//! - `proc_tcp`: read and parse /proc/net/tcp and /proc/net/tcp6, counting
//!   states and summing queues, as a /proc-based exporter would.

use std::io::{self, Read, Write};
use std::time::Instant;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// TCP states 0..11 (TCP_ESTABLISHED=1 .. TCP_CLOSING=11); the kernel adds
/// NEW_SYN_RECV itself when SYN_RECV is asked for.
const ALL_STATES: u32 = 0xFFF;
const RECV_BUF: usize = 32 * 1024;

/// State names indexed by the kernel's TCP state number (1..=11).
pub const STATE_NAMES: [&str; 12] = [
    "unknown",
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

/// nlmsghdr + inet_diag_req_v2 (with a zeroed inet_diag_sockid), 72 bytes.
#[repr(C)]
struct DumpRequest {
    nlmsg_len: u32,
    nlmsg_type: u16,
    nlmsg_flags: u16,
    nlmsg_seq: u32,
    nlmsg_pid: u32,
    sdiag_family: u8,
    sdiag_protocol: u8,
    idiag_ext: u8,
    pad: u8,
    idiag_states: u32,
    id: [u8; 48],
}

/// One netlink sock_diag socket, used for one dump per family.
struct DiagSocket {
    fd: libc::c_int,
    buf: Vec<u8>,
}

impl DiagSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DiagSocket {
            fd,
            buf: vec![0u8; RECV_BUF],
        })
    }

    /// Dumps all TCP sockets of `family`, calling `f(payload)` with each
    /// inet_diag_msg payload (the bytes after the nlmsghdr).
    fn dump(&mut self, family: u8, seq: u32, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let req = DumpRequest {
            nlmsg_len: std::mem::size_of::<DumpRequest>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: NLM_F_REQUEST | NLM_F_DUMP,
            nlmsg_seq: seq,
            nlmsg_pid: 0,
            sdiag_family: family,
            sdiag_protocol: libc::IPPROTO_TCP as u8,
            idiag_ext: 0,
            pad: 0,
            idiag_states: ALL_STATES,
            id: [0; 48],
        };
        // SAFETY: sockaddr_nl is plain old data; zero = kernel, no groups.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: req and sa live across the call; lengths are their sizes.
        let r = unsafe {
            libc::sendto(
                self.fd,
                &req as *const DumpRequest as *const libc::c_void,
                std::mem::size_of::<DumpRequest>(),
                0,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            // SAFETY: buf is RECV_BUF bytes long and owned by self.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    RECV_BUF,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            let mut off = 0;
            while off + 16 <= n {
                let b = &self.buf[off..n];
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                if len < 16 || len > b.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad nlmsg length",
                    ));
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => f(&b[16..len]),
                }
                off += (len + 3) & !3;
            }
        }
    }
}

impl Drop for DiagSocket {
    fn drop(&mut self) {
        // SAFETY: fd was opened by open() and is closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Helper mode `two-dump`: prints `messages=N duration_seconds=S`.
pub fn two_dump() -> io::Result<()> {
    let start = Instant::now();
    let mut s = DiagSocket::open()?;
    let mut count = 0u64;
    s.dump(libc::AF_INET as u8, 1, |_| count += 1)?;
    s.dump(libc::AF_INET6 as u8, 2, |_| count += 1)?;
    let secs = start.elapsed().as_secs_f64();
    println!("messages={count} duration_seconds={secs:.6}");
    Ok(())
}

/// Per family (0 = ipv4, 1 = ipv6) and state: count, rqueue sum, wqueue sum.
#[derive(Clone, Default, Debug)]
pub struct Mix {
    pub count: [[u64; 12]; 2],
    pub rq: [[u64; 12]; 2],
    pub wq: [[u64; 12]; 2],
    /// Per family: sum of listeners' accept queues (their rqueue).
    pub listen_queue: [u64; 2],
}

impl Mix {
    pub fn total(&self) -> u64 {
        self.count.iter().flatten().sum()
    }

    pub fn state_total(&self, state: usize) -> u64 {
        self.count[0][state] + self.count[1][state]
    }

    /// `family state count rq wq` lines, the format `mix` prints.
    pub fn to_lines(&self) -> String {
        let mut s = String::new();
        for (fi, fam) in ["ipv4", "ipv6"].iter().enumerate() {
            for (st, name) in STATE_NAMES.iter().enumerate().skip(1) {
                s.push_str(&format!(
                    "{fam} {name} {} {} {}\n",
                    self.count[fi][st], self.rq[fi][st], self.wq[fi][st]
                ));
            }
        }
        s
    }

    /// One line: `established 900 (v4 850, v6 50), ...`, non-zero states only.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (st, name) in STATE_NAMES.iter().enumerate().skip(1) {
            let t = self.state_total(st);
            if t > 0 {
                parts.push(format!(
                    "{name} {t} (v4 {}, v6 {})",
                    self.count[0][st], self.count[1][st]
                ));
            }
        }
        let rq: u64 = self.rq.iter().flatten().sum();
        let wq: u64 = self.wq.iter().flatten().sum();
        let lq: u64 = self.listen_queue.iter().sum();
        format!(
            "{} sockets: {}; queued bytes recv {rq} send {wq}; accept queues hold {lq}",
            self.total(),
            parts.join(", ")
        )
    }
}

fn tally(m: &mut Mix, fi: usize, p: &[u8]) {
    if p.len() < 64 {
        return;
    }
    // inet_diag_msg: family, state, timer, retrans, id[48], expires, rqueue, wqueue, ...
    let st = p[1] as usize;
    let st = if st == 12 { 3 } else { st }; // NEW_SYN_RECV counts as syn_recv
    if st >= 12 {
        return;
    }
    m.count[fi][st] += 1;
    let rq = u32::from_ne_bytes([p[56], p[57], p[58], p[59]]) as u64;
    if st != 10 {
        m.rq[fi][st] += rq;
        m.wq[fi][st] += u32::from_ne_bytes([p[60], p[61], p[62], p[63]]) as u64;
    } else {
        m.listen_queue[fi] += rq;
    }
}

/// Counts the socket mix of the current namespace with two dumps.
pub fn count_mix() -> io::Result<Mix> {
    let mut s = DiagSocket::open()?;
    let mut m = Mix::default();
    s.dump(libc::AF_INET as u8, 1, |p| tally(&mut m, 0, p))?;
    s.dump(libc::AF_INET6 as u8, 2, |p| tally(&mut m, 1, p))?;
    Ok(m)
}

/// Helper mode `mix`: prints the mix as `family state count rq wq` lines.
pub fn mix() -> io::Result<()> {
    let m = count_mix()?;
    io::stdout().write_all(m.to_lines().as_bytes())
}

fn hex(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        v = v * 16 + d as u64;
    }
    v
}

/// Parses one /proc/net/tcp data line into the mix.
fn parse_proc_line(m: &mut Mix, fi: usize, line: &[u8]) {
    // "  sl  local_address rem_address   st tx_queue:rx_queue ..."
    let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
    let (Some(_sl), Some(_l), Some(_r), Some(st), Some(q)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return;
    };
    let st = hex(st) as usize;
    let st = if st == 12 { 3 } else { st };
    if st == 0 || st >= 12 {
        return;
    }
    m.count[fi][st] += 1;
    if st != 10 {
        if let Some(colon) = q.iter().position(|&c| c == b':') {
            m.wq[fi][st] += hex(&q[..colon]);
            m.rq[fi][st] += hex(&q[colon + 1..]);
        }
    }
}

fn parse_proc_file(m: &mut Mix, fi: usize, path: &str) -> io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut header = true;
    loop {
        let n = f.read(&mut buf[filled..])?;
        let end = filled + n;
        let mut start = 0;
        while let Some(nl) = buf[start..end].iter().position(|&c| c == b'\n') {
            if header {
                header = false;
            } else {
                parse_proc_line(m, fi, &buf[start..start + nl]);
            }
            start += nl + 1;
        }
        if n == 0 {
            break;
        }
        buf.copy_within(start..end, 0);
        filled = end - start;
        if filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "line longer than 1 MiB",
            ));
        }
    }
    Ok(())
}

/// Helper mode `proc`: parse /proc/net/tcp{,6}, print the total and duration.
pub fn proc_tcp() -> io::Result<()> {
    let start = Instant::now();
    let mut m = Mix::default();
    parse_proc_file(&mut m, 0, "/proc/net/tcp")?;
    // A kernel without IPv6 has no tcp6 file: that is zero sockets, not an error.
    match parse_proc_file(&mut m, 1, "/proc/net/tcp6") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        r => r?,
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sockets={} duration_seconds={secs:.6}", m.total());
    Ok(())
}
