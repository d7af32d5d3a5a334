//! The comparison programs, run as helper-mode subprocesses of the bench
//! binary so that their wall time and peak RSS are measured exactly like ours:
//!
//! - `one_dump`: the floor, the bench's main baseline. One legacy
//!   TCPDIAG_GETSOCK (nlmsg type 18) dump with family AF_UNSPEC, so the
//!   kernel walks its TCP hash tables once for both families; all states, no
//!   extensions, a 32 KiB receive buffer, reading and walking the messages
//!   only. Raw libc, nothing allocated per socket. This is the same kernel
//!   work our `tcp` collector asks for, with nothing done per socket.
//! - `two_dump`: the naive loop. SOCK_DIAG_BY_FAMILY for AF_INET, then
//!   AF_INET6, all states, no extensions, a 32 KiB receive buffer, counting
//!   messages only. Raw libc, nothing allocated per socket. The kernel walks
//!   its tables twice, once per family.
//! - `mix`: the same two dumps, but tallying state and queues per family: how
//!   the bench prints the actual socket mix it built (the fastest way we have).
//! - `count_other`: UDP (per family) and unix dumps tallying state, the
//!   independent count of the load's UDP and unix sockets;
//! - `proc_tcp`: read and parse /proc/net/tcp and /proc/net/tcp6, counting
//!   states and summing queues, as a /proc-based exporter would.

use std::io::{self, Read, Write};
use std::time::Instant;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The legacy inet_diag request type for TCP (linux/inet_diag.h).
const TCPDIAG_GETSOCK: u16 = 18;
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

/// nlmsghdr + the legacy inet_diag_req (family, src_len, dst_len, ext,
/// inet_diag_sockid, states, dbs), 76 bytes.
#[repr(C)]
struct LegacyDumpRequest {
    nlmsg_len: u32,
    nlmsg_type: u16,
    nlmsg_flags: u16,
    nlmsg_seq: u32,
    nlmsg_pid: u32,
    idiag_family: u8,
    idiag_src_len: u8,
    idiag_dst_len: u8,
    idiag_ext: u8,
    id: [u8; 48],
    idiag_states: u32,
    idiag_dbs: u32,
}

/// nlmsghdr + unix_diag_req, 40 bytes.
#[repr(C)]
struct UnixDumpRequest {
    nlmsg_len: u32,
    nlmsg_type: u16,
    nlmsg_flags: u16,
    nlmsg_seq: u32,
    nlmsg_pid: u32,
    sdiag_family: u8,
    sdiag_protocol: u8,
    pad: u16,
    udiag_states: u32,
    udiag_ino: u32,
    udiag_show: u32,
    udiag_cookie: [u32; 2],
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
    fn dump(&mut self, family: u8, seq: u32, f: impl FnMut(&[u8])) -> io::Result<()> {
        self.dump_inet(family, libc::IPPROTO_TCP as u8, 0, seq, f)
    }

    /// Dumps all sockets of `family` and `protocol` (TCP or UDP), all states,
    /// with the extensions `ext` (idiag_ext bits; 0 for none).
    fn dump_inet(
        &mut self,
        family: u8,
        protocol: u8,
        ext: u8,
        seq: u32,
        f: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let req = DumpRequest {
            nlmsg_len: std::mem::size_of::<DumpRequest>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: NLM_F_REQUEST | NLM_F_DUMP,
            nlmsg_seq: seq,
            nlmsg_pid: 0,
            sdiag_family: family,
            sdiag_protocol: protocol,
            idiag_ext: ext,
            pad: 0,
            idiag_states: ALL_STATES,
            id: [0; 48],
        };
        // SAFETY: DumpRequest is repr(C) plain old data without padding holes
        // the kernel reads (all fields are initialised).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &req as *const DumpRequest as *const u8,
                std::mem::size_of::<DumpRequest>(),
            )
        };
        self.dump_raw(bytes, f)
    }

    /// One legacy TCPDIAG_GETSOCK dump with family AF_UNSPEC: every TCP
    /// socket of both families in one walk of the kernel's tables.
    fn dump_legacy_unspec(&mut self, seq: u32, f: impl FnMut(&[u8])) -> io::Result<()> {
        let req = LegacyDumpRequest {
            nlmsg_len: std::mem::size_of::<LegacyDumpRequest>() as u32,
            nlmsg_type: TCPDIAG_GETSOCK,
            nlmsg_flags: NLM_F_REQUEST | NLM_F_DUMP,
            nlmsg_seq: seq,
            nlmsg_pid: 0,
            idiag_family: libc::AF_UNSPEC as u8,
            idiag_src_len: 0,
            idiag_dst_len: 0,
            idiag_ext: 0,
            id: [0; 48],
            idiag_states: ALL_STATES,
            idiag_dbs: 0,
        };
        // SAFETY: as for dump_inet: repr(C), every field initialised, no
        // padding (76 bytes of u8/u16/u32 fields in 4-byte order).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &req as *const LegacyDumpRequest as *const u8,
                std::mem::size_of::<LegacyDumpRequest>(),
            )
        };
        self.dump_raw(bytes, f)
    }

    /// Dumps all unix sockets (unix_diag, all states, no show flags), calling
    /// `f(payload)` with each unix_diag_msg payload.
    fn dump_unix(&mut self, seq: u32, f: impl FnMut(&[u8])) -> io::Result<()> {
        let req = UnixDumpRequest {
            nlmsg_len: std::mem::size_of::<UnixDumpRequest>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: NLM_F_REQUEST | NLM_F_DUMP,
            nlmsg_seq: seq,
            nlmsg_pid: 0,
            sdiag_family: libc::AF_UNIX as u8,
            sdiag_protocol: 0,
            pad: 0,
            udiag_states: ALL_STATES,
            udiag_ino: 0,
            udiag_show: 0,
            udiag_cookie: [0; 2],
        };
        // SAFETY: as for dump_inet: repr(C), every field initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &req as *const UnixDumpRequest as *const u8,
                std::mem::size_of::<UnixDumpRequest>(),
            )
        };
        self.dump_raw(bytes, f)
    }

    /// Sends one dump request (nlmsghdr included) and walks the answer to
    /// NLMSG_DONE, calling `f` with each message's payload.
    fn dump_raw(&mut self, req: &[u8], mut f: impl FnMut(&[u8])) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; zero = kernel, no groups.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: req and sa live across the call; lengths are their sizes.
        let r = unsafe {
            libc::sendto(
                self.fd,
                req.as_ptr() as *const libc::c_void,
                req.len(),
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

/// Helper mode `one-dump` (the floor): prints `messages=N duration_seconds=S`.
pub fn one_dump() -> io::Result<()> {
    let start = Instant::now();
    let mut s = DiagSocket::open()?;
    let mut count = 0u64;
    s.dump_legacy_unspec(1, |_| count += 1)?;
    let secs = start.elapsed().as_secs_f64();
    println!("messages={count} duration_seconds={secs:.6}");
    Ok(())
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

/// idiag_ext bit asking for INET_DIAG_INFO (struct tcp_info).
const EXT_INFO: u8 = 1 << (2 - 1);

/// Helper mode `two-dump-info`: the two-dump loop also asking for
/// INET_DIAG_INFO on every socket (the kernel work `--collector.tcp.info`
/// asks for, done naively), touching each message's attributes' first
/// byte. Prints `messages=N duration_seconds=S`.
pub fn two_dump_info() -> io::Result<()> {
    let start = Instant::now();
    let mut s = DiagSocket::open()?;
    let mut count = 0u64;
    let mut touched = 0u64;
    let mut each = |p: &[u8]| {
        count += 1;
        touched += u64::from(p.get(72).copied().unwrap_or(0));
    };
    s.dump_inet(
        libc::AF_INET as u8,
        libc::IPPROTO_TCP as u8,
        EXT_INFO,
        1,
        &mut each,
    )?;
    s.dump_inet(
        libc::AF_INET6 as u8,
        libc::IPPROTO_TCP as u8,
        EXT_INFO,
        2,
        &mut each,
    )?;
    let secs = start.elapsed().as_secs_f64();
    println!("messages={count} duration_seconds={secs:.6} touched={touched}");
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

/// UDP and unix sockets of the current namespace, counted independently of
/// our binary: UDP per family (0 = ipv4, 1 = ipv6) and state (0 =
/// unconnected, kernel TCP_CLOSE; 1 = connected, TCP_ESTABLISHED) with
/// receive-queue sums; unix per type (stream, dgram, seqpacket) and state
/// (listen, connected, unconnected).
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Other {
    pub udp: [[u64; 2]; 2],
    pub udp_rq: [[u64; 2]; 2],
    pub unix: [[u64; 3]; 3],
}

pub const UDP_STATE_NAMES: [&str; 2] = ["unconnected", "connected"];
pub const UNIX_TYPE_NAMES: [&str; 3] = ["stream", "dgram", "seqpacket"];
pub const UNIX_STATE_NAMES: [&str; 3] = ["listen", "connected", "unconnected"];

impl Other {
    pub fn udp_total(&self) -> u64 {
        self.udp.iter().flatten().sum()
    }

    pub fn unix_total(&self) -> u64 {
        self.unix.iter().flatten().sum()
    }

    /// One line: `udp 10000 (unconnected 7500, connected 2500; v6 1000; rq 6400 B), unix 10000 (...)`.
    pub fn summary(&self) -> String {
        let unc = self.udp[0][0] + self.udp[1][0];
        let con = self.udp[0][1] + self.udp[1][1];
        let v6: u64 = self.udp[1].iter().sum();
        let rq: u64 = self.udp_rq.iter().flatten().sum();
        let mut unix = Vec::new();
        for (t, tn) in UNIX_TYPE_NAMES.iter().enumerate() {
            for (s, sn) in UNIX_STATE_NAMES.iter().enumerate() {
                if self.unix[t][s] > 0 {
                    unix.push(format!("{tn} {sn} {}", self.unix[t][s]));
                }
            }
        }
        format!(
            "udp {} (unconnected {unc}, connected {con}; ipv6 {v6}; receive queues {rq} B), unix {} ({})",
            self.udp_total(),
            self.unix_total(),
            unix.join(", ")
        )
    }
}

/// Counts the UDP and unix sockets of the current namespace (three dumps).
pub fn count_other() -> io::Result<Other> {
    let mut s = DiagSocket::open()?;
    let mut o = Other::default();
    for (fi, family) in [libc::AF_INET, libc::AF_INET6].into_iter().enumerate() {
        s.dump_inet(
            family as u8,
            libc::IPPROTO_UDP as u8,
            0,
            10 + fi as u32,
            |p| {
                if p.len() < 64 {
                    return;
                }
                let st = match p[1] {
                    7 => 0,
                    1 => 1,
                    _ => return,
                };
                o.udp[fi][st] += 1;
                o.udp_rq[fi][st] += u32::from_ne_bytes([p[56], p[57], p[58], p[59]]) as u64;
            },
        )?;
    }
    s.dump_unix(12, |p| {
        // unix_diag_msg: family, type, state, pad, ino, cookie[2].
        if p.len() < 16 {
            return;
        }
        let t = match p[1] as i32 {
            libc::SOCK_STREAM => 0,
            libc::SOCK_DGRAM => 1,
            libc::SOCK_SEQPACKET => 2,
            _ => return,
        };
        let st = match p[2] {
            10 => 0,
            1 => 1,
            7 => 2,
            _ => return,
        };
        o.unix[t][st] += 1;
    })?;
    Ok(o)
}
