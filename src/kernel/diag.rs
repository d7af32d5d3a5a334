//! The kernel's sock_diag wire format, modelled once: constants, the TCP,
//! UDP and unix state tables, dump requests, zero-copy views of
//! `struct inet_diag_msg` and `struct unix_diag_msg`, and their attributes.
//!
//! Everything here is pure (no syscalls), so the parser and the tests can use
//! it without a kernel. Field meanings follow include/uapi/linux/inet_diag.h
//! and net/ipv4/inet_diag.c.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    unix::{ShowFlags, StateFlags as UnixStateFlags, UnixRequest},
    SockDiagMessage,
};

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Rounds a message length up to the 4-byte boundary the next message starts on.
pub fn nlmsg_align(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// `NLMSG_NOOP`: nothing to do, skip.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: payload is `int error` followed by the offending header.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: end of a dump; payload is `int error` (0 or -errno).
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`: data lost.
pub const NLMSG_OVERRUN: u16 = 4;
/// `NLM_F_DUMP_INTR`: the tables changed during the dump; it may be inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `TCPDIAG_GETSOCK`: the legacy inet_diag request (`struct inet_diag_req`).
/// With family AF_UNSPEC the kernel walks the TCP hash once for both families.
pub const TCPDIAG_GETSOCK: u16 = 18;
/// `SOCK_DIAG_BY_FAMILY`: the current request (`struct inet_diag_req_v2`).
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;

pub const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;
pub const AF_UNIX: u8 = libc::AF_UNIX as u8;

/// `INET_DIAG_SKMEMINFO`: attribute carrying `__u32 meminfo[SK_MEMINFO_VARS]`
/// (requested with bit `1 << (7 - 1)` in idiag_ext).
pub const INET_DIAG_SKMEMINFO: u16 = 7;
/// Index of `SK_MEMINFO_DROPS` in the SKMEMINFO array: packets the socket
/// dropped (`sk_drops`); for TCP listeners raised by `tcp_listendrop()`.
pub const SK_MEMINFO_DROPS: usize = 8;
/// Index of `SK_MEMINFO_RMEM_ALLOC`: receive memory charged to the socket.
pub const SK_MEMINFO_RMEM_ALLOC: usize = 0;
/// `UNIX_DIAG_NAME`: the bound address (`sun_path`; abstract names start with NUL).
pub const UNIX_DIAG_NAME: u16 = 0;
/// `UNIX_DIAG_RQLEN`: `struct unix_diag_rqlen { __u32 udiag_rqueue, udiag_wqueue; }`.
/// Listeners: pending connections and the backlog limit. Others: bytes
/// queued for reading (stream, seqpacket; for dgram the first datagram's
/// length) and send memory in flight (`sk_wmem_alloc`).
pub const UNIX_DIAG_RQLEN: u16 = 4;
/// Size of `struct unix_diag_msg`.
pub const UNIX_DIAG_MSG_LEN: usize = 16;
/// `struct rtattr` header: `__u16 rta_len; __u16 rta_type;`.
pub const RTA_HDRLEN: usize = 4;
/// The bits of `rta_type` that hold the type; the top two are the flags
/// NLA_F_NESTED (0x8000) and NLA_F_NET_BYTEORDER (0x4000).
pub const RTA_TYPE_MASK: u16 = 0x3fff;
/// `INET_DIAG_SHUTDOWN`: one byte, the socket's shutdown state.
pub const INET_DIAG_SHUTDOWN: u16 = 8;
/// `INET_DIAG_PAD`: padding the kernel may put before a 64-bit attribute on
/// architectures without efficient unaligned access; carries nothing.
pub const INET_DIAG_PAD: u16 = 14;
/// `INET_DIAG_MARK`: `__u32` socket mark (only for a CAP_NET_ADMIN asker).
pub const INET_DIAG_MARK: u16 = 15;
/// `INET_DIAG_CGROUP_ID`: `__u64`, the cgroup v2 id of the socket's owner.
/// Sent unasked on every full socket (kernel 5.7+ with
/// CONFIG_SOCK_CGROUP_DATA); TIME_WAIT and request sockets carry none.
pub const INET_DIAG_CGROUP_ID: u16 = 21;
/// `INET_DIAG_SOCKOPT`: `__u16` bitfield of socket options (5.10+).
pub const INET_DIAG_SOCKOPT: u16 = 22;

/// Every TCP state bit from 0 to 11 (`ss` asks for the same). TIME_WAIT (bit 6)
/// is included; request sockets are reported when SYN_RECV (bit 3) is asked
/// for. Bit 12 (NEW_SYN_RECV) is internal and bit 13 (BOUND_INACTIVE, 6.10+)
/// would add sockets that are only bound, so neither is requested.
pub const ALL_TCP_STATES: u32 = 0xFFF;

/// Size of `struct inet_diag_msg`.
pub const INET_DIAG_MSG_LEN: usize = 72;
/// Size of the legacy `struct inet_diag_req`.
pub const INET_DIAG_REQ_LEN: usize = 60;

/// An address family we report, as an index into per-family arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// Maps the kernel's `idiag_family`; anything but AF_INET/AF_INET6 is None.
    pub fn from_kernel(af: u8) -> Option<Family> {
        match af {
            AF_INET => Some(Family::Ipv4),
            AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        }
    }

    /// The `family` label value.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// The TCP states the kernel reports (include/net/tcp_states.h), in kernel
/// order, which is also the order of [`TcpState::ALL`] and of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = 0,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
}

impl TcpState {
    pub const COUNT: usize = 11;
    pub const ALL: [TcpState; TcpState::COUNT] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// Maps the kernel's `idiag_state` (TCP_ESTABLISHED = 1 ... TCP_CLOSING = 11).
    /// TCP_NEW_SYN_RECV (12) is a request socket; the kernel normally reports
    /// those as SYN_RECV already, and so do we. Anything else is None.
    pub fn from_kernel(state: u8) -> Option<TcpState> {
        match state {
            1..=11 => Some(TcpState::ALL[usize::from(state - 1)]),
            12 => Some(TcpState::SynRecv),
            _ => None,
        }
    }

    /// The kernel's number for this state.
    pub fn kernel(self) -> u8 {
        self as u8 + 1
    }

    /// The `state` label value, lowercase as `ss` prints it (with underscores).
    pub fn label(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::FinWait1 => "fin_wait1",
            TcpState::FinWait2 => "fin_wait2",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
        }
    }
}

/// A UDP socket's state. The kernel reuses TCP state numbers: a socket
/// with a default destination (`connect()`) is TCP_ESTABLISHED, any other
/// (bound or not) is TCP_CLOSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UdpState {
    Unconnected = 0,
    Connected = 1,
}

impl UdpState {
    pub const COUNT: usize = 2;
    pub const ALL: [UdpState; 2] = [UdpState::Unconnected, UdpState::Connected];

    pub fn from_kernel(state: u8) -> Option<UdpState> {
        match state {
            7 => Some(UdpState::Unconnected),
            1 => Some(UdpState::Connected),
            _ => None,
        }
    }

    /// The `state` label value.
    pub fn label(self) -> &'static str {
        match self {
            UdpState::Unconnected => "unconnected",
            UdpState::Connected => "connected",
        }
    }
}

/// A unix socket's type (`udiag_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixType {
    Stream = 0,
    Dgram = 1,
    Seqpacket = 2,
}

impl UnixType {
    pub const COUNT: usize = 3;
    pub const ALL: [UnixType; 3] = [UnixType::Stream, UnixType::Dgram, UnixType::Seqpacket];

    pub fn from_kernel(kind: u8) -> Option<UnixType> {
        match i32::from(kind) {
            libc::SOCK_STREAM => Some(UnixType::Stream),
            libc::SOCK_DGRAM => Some(UnixType::Dgram),
            libc::SOCK_SEQPACKET => Some(UnixType::Seqpacket),
            _ => None,
        }
    }

    /// The `type` label value.
    pub fn label(self) -> &'static str {
        match self {
            UnixType::Stream => "stream",
            UnixType::Dgram => "dgram",
            UnixType::Seqpacket => "seqpacket",
        }
    }
}

/// A unix socket's state (`udiag_state`, TCP numbers): TCP_LISTEN,
/// TCP_ESTABLISHED (connected, accepted, pending in a listener's queue, or
/// a socketpair end) and TCP_CLOSE (not connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixState {
    Listen = 0,
    Connected = 1,
    Unconnected = 2,
}

impl UnixState {
    pub const COUNT: usize = 3;
    pub const ALL: [UnixState; 3] = [
        UnixState::Listen,
        UnixState::Connected,
        UnixState::Unconnected,
    ];

    pub fn from_kernel(state: u8) -> Option<UnixState> {
        match state {
            10 => Some(UnixState::Listen),
            1 => Some(UnixState::Connected),
            7 => Some(UnixState::Unconnected),
            _ => None,
        }
    }

    /// The `state` label value.
    pub fn label(self) -> &'static str {
        match self {
            UnixState::Listen => "listen",
            UnixState::Connected => "connected",
            UnixState::Unconnected => "unconnected",
        }
    }
}

/// Which request a dump is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpRequest {
    /// TCPDIAG_GETSOCK with AF_UNSPEC: both families in one walk.
    Legacy,
    /// SOCK_DIAG_BY_FAMILY for one family.
    ByFamily(Family),
    /// TCP LISTEN sockets only, with SKMEMINFO (drops): the kernel walks
    /// only its listening hash, never the established one.
    Listen(Family),
    /// UDP sockets of one family, with SKMEMINFO (drops).
    Udp(Family),
    /// Unix sockets, with their bound name and queue lengths.
    Unix,
}

impl DumpRequest {
    /// Every request kind, for parsing names back (fixtures).
    pub const ALL: &'static [DumpRequest] = &[
        DumpRequest::Legacy,
        DumpRequest::ByFamily(Family::Ipv4),
        DumpRequest::ByFamily(Family::Ipv6),
        DumpRequest::Listen(Family::Ipv4),
        DumpRequest::Listen(Family::Ipv6),
        DumpRequest::Udp(Family::Ipv4),
        DumpRequest::Udp(Family::Ipv6),
        DumpRequest::Unix,
    ];

    /// The request whose [`name`](Self::name) is `name`.
    pub fn from_name(name: &str) -> Option<DumpRequest> {
        DumpRequest::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The nlmsg_type the kernel answers this request's data messages with.
    pub fn response_type(self) -> u16 {
        match self {
            DumpRequest::Legacy => TCPDIAG_GETSOCK,
            _ => SOCK_DIAG_BY_FAMILY,
        }
    }

    /// A short name for logs, errors and fixtures.
    pub fn name(self) -> &'static str {
        match self {
            DumpRequest::Legacy => "legacy",
            DumpRequest::ByFamily(Family::Ipv4) => "by-family ipv4",
            DumpRequest::ByFamily(Family::Ipv6) => "by-family ipv6",
            DumpRequest::Listen(Family::Ipv4) => "listen ipv4",
            DumpRequest::Listen(Family::Ipv6) => "listen ipv6",
            DumpRequest::Udp(Family::Ipv4) => "udp ipv4",
            DumpRequest::Udp(Family::Ipv6) => "udp ipv6",
            DumpRequest::Unix => "unix",
        }
    }

    /// Serializes the whole netlink request (header included) for `seq`.
    pub fn encode(self, seq: u32) -> Vec<u8> {
        match self {
            DumpRequest::Legacy => encode_legacy(seq),
            DumpRequest::ByFamily(family) => {
                encode_inet(family, IPPROTO_TCP, ALL_TCP_STATES, false, seq)
            }
            DumpRequest::Listen(family) => {
                encode_inet(family, IPPROTO_TCP, LISTEN_STATE, true, seq)
            }
            DumpRequest::Udp(family) => encode_inet(family, IPPROTO_UDP, ALL_TCP_STATES, true, seq),
            DumpRequest::Unix => encode_unix(seq),
        }
    }

    /// Recognises an encoded request: its kind and sequence number. Used by
    /// the fixture source to answer like the kernel would.
    pub fn decode(msg: &[u8]) -> Option<(DumpRequest, u32)> {
        if msg.len() < NLMSG_HDRLEN + 1 {
            return None;
        }
        let kind = u16::from_ne_bytes([msg[4], msg[5]]);
        let seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
        let family = msg[NLMSG_HDRLEN];
        let protocol = *msg.get(NLMSG_HDRLEN + 1)?;
        let states = msg.get(NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8)?;
        let states = u32::from_ne_bytes(states.try_into().ok()?);
        let request = match kind {
            TCPDIAG_GETSOCK => DumpRequest::Legacy,
            SOCK_DIAG_BY_FAMILY if family == AF_UNIX => DumpRequest::Unix,
            SOCK_DIAG_BY_FAMILY => {
                let family = Family::from_kernel(family)?;
                match protocol {
                    IPPROTO_UDP => DumpRequest::Udp(family),
                    IPPROTO_TCP if states == LISTEN_STATE => DumpRequest::Listen(family),
                    IPPROTO_TCP => DumpRequest::ByFamily(family),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some((request, seq))
    }
}

/// `struct inet_diag_req` after a `struct nlmsghdr`. The netlink crates only
/// build `inet_diag_req_v2`, so this one is laid out by hand:
///
/// | offset | size | field            | value                          |
/// |--------|------|------------------|--------------------------------|
/// | 0      | 4    | nlmsg_len        | 76                             |
/// | 4      | 2    | nlmsg_type       | TCPDIAG_GETSOCK (18)           |
/// | 6      | 2    | nlmsg_flags      | NLM_F_REQUEST \| NLM_F_DUMP    |
/// | 8      | 4    | nlmsg_seq        | seq                            |
/// | 12     | 4    | nlmsg_pid        | 0 (the kernel)                 |
/// | 16     | 1    | idiag_family     | AF_UNSPEC: both families       |
/// | 17     | 1    | idiag_src_len    | 0                              |
/// | 18     | 1    | idiag_dst_len    | 0                              |
/// | 19     | 1    | idiag_ext        | 0: no extensions               |
/// | 20     | 48   | id               | zero: no socket filter         |
/// | 68     | 4    | idiag_states     | ALL_TCP_STATES                 |
/// | 72     | 4    | idiag_dbs        | 0 (unused)                     |
fn encode_legacy(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + INET_DIAG_REQ_LEN;
    let mut buf = vec![0u8; len];
    buf[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    buf[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf[16] = AF_UNSPEC;
    buf[68..72].copy_from_slice(&ALL_TCP_STATES.to_ne_bytes());
    buf
}

/// Only TCP_LISTEN (bit 10).
pub const LISTEN_STATE: u32 = 1 << 10;

/// `struct inet_diag_req_v2`, built by netlink-packet-sock-diag: one
/// family and protocol, a state mask, and SKMEMINFO when `meminfo`.
fn encode_inet(family: Family, protocol: u8, states: u32, meminfo: bool, seq: u32) -> Vec<u8> {
    let socket_id = match family {
        Family::Ipv4 => SocketId::new_v4(),
        Family::Ipv6 => SocketId::new_v6(),
    };
    let request = InetRequest {
        family: family.af(),
        protocol,
        extensions: if meminfo {
            ExtensionFlags::SKMEMINFO
        } else {
            ExtensionFlags::empty()
        },
        states: StateFlags::from_bits_retain(states),
        socket_id,
    };
    finish(SockDiagMessage::InetRequest(request), seq)
}

/// `struct unix_diag_req`: every state, with UDIAG_SHOW_NAME (listener
/// paths) and UDIAG_SHOW_RQLEN (queues).
fn encode_unix(seq: u32) -> Vec<u8> {
    let request = UnixRequest {
        state_flags: UnixStateFlags::from_bits_retain(ALL_TCP_STATES),
        inode: 0,
        show_flags: ShowFlags::NAME | ShowFlags::RQLEN,
        cookie: [0xff; 8],
    };
    finish(SockDiagMessage::UnixRequest(request), seq)
}

/// Wraps a request in a dump header and serializes it.
fn finish(request: SockDiagMessage, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, request.into());
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// A borrowed, length-checked `struct inet_diag_msg`:
///
/// | offset | size | field          | meaning                                         |
/// |--------|------|----------------|-------------------------------------------------|
/// | 0      | 1    | idiag_family   | AF_INET or AF_INET6                              |
/// | 1      | 1    | idiag_state    | TCP state (TIME_WAIT: tw_substate; requests: SYN_RECV) |
/// | 2      | 1    | idiag_timer    | pending timer                                   |
/// | 3      | 1    | idiag_retrans  | retransmits                                     |
/// | 4      | 2    | idiag_sport    | local port, big-endian                          |
/// | 6      | 2    | idiag_dport    | remote port, big-endian                         |
/// | 8      | 16   | idiag_src      | local address (IPv4 in the first 4 bytes)       |
/// | 24     | 16   | idiag_dst      | remote address                                  |
/// | 40     | 4    | idiag_if       | bound interface index                           |
/// | 44     | 8    | idiag_cookie   | socket cookie                                   |
/// | 52     | 4    | idiag_expires  | timer expiry, ms                                |
/// | 56     | 4    | idiag_rqueue   | bytes unread; LISTEN: accept queue length        |
/// | 60     | 4    | idiag_wqueue   | bytes unacked; LISTEN: accept backlog limit      |
/// | 64     | 4    | idiag_uid      | owner uid                                       |
/// | 68     | 4    | idiag_inode    | inode of the socket (0 without a file)          |
///
/// Multi-byte fields other than ports and addresses are host byte order.
#[derive(Clone, Copy)]
pub struct InetDiagMsg<'a>(&'a [u8; INET_DIAG_MSG_LEN]);

impl<'a> InetDiagMsg<'a> {
    /// Views the start of a netlink payload; None if it is too short.
    pub fn new(payload: &'a [u8]) -> Option<InetDiagMsg<'a>> {
        payload
            .get(..INET_DIAG_MSG_LEN)?
            .try_into()
            .ok()
            .map(InetDiagMsg)
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    pub fn family(&self) -> u8 {
        self.0[0]
    }
    pub fn state(&self) -> u8 {
        self.0[1]
    }
    /// idiag_timer: 3 only on TIME_WAIT sockets (whatever their substate).
    pub fn timer(&self) -> u8 {
        self.0[2]
    }
    pub fn local_port(&self) -> u16 {
        u16::from_be_bytes([self.0[4], self.0[5]])
    }
    pub fn remote_port(&self) -> u16 {
        u16::from_be_bytes([self.0[6], self.0[7]])
    }
    /// The 16 address bytes as sent: IPv4 uses the first 4.
    pub fn local_address(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.0[8..24]);
        out
    }
    pub fn rqueue(&self) -> u32 {
        self.u32_at(56)
    }
    pub fn wqueue(&self) -> u32 {
        self.u32_at(60)
    }
    pub fn inode(&self) -> u32 {
        self.u32_at(68)
    }
}

/// A borrowed, length-checked `struct unix_diag_msg`:
///
/// | offset | size | field         | meaning                                  |
/// |--------|------|---------------|------------------------------------------|
/// | 0      | 1    | udiag_family  | AF_UNIX                                  |
/// | 1      | 1    | udiag_type    | SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET |
/// | 2      | 1    | udiag_state   | TCP_LISTEN, TCP_ESTABLISHED or TCP_CLOSE |
/// | 3      | 1    | pad           |                                          |
/// | 4      | 4    | udiag_ino     | inode of the socket                      |
/// | 8      | 8    | udiag_cookie  | socket cookie                            |
///
/// Attributes (`UNIX_DIAG_*`) follow.
#[derive(Clone, Copy)]
pub struct UnixDiagMsg<'a>(&'a [u8; UNIX_DIAG_MSG_LEN]);

impl<'a> UnixDiagMsg<'a> {
    /// Views the start of a netlink payload; None if it is too short.
    pub fn new(payload: &'a [u8]) -> Option<UnixDiagMsg<'a>> {
        payload
            .get(..UNIX_DIAG_MSG_LEN)?
            .try_into()
            .ok()
            .map(UnixDiagMsg)
    }
    pub fn family(&self) -> u8 {
        self.0[0]
    }
    pub fn kind(&self) -> u8 {
        self.0[1]
    }
    pub fn state(&self) -> u8 {
        self.0[2]
    }
}

/// A malformed `struct rtattr` after a socket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadAttribute {
    /// Offset within the attribute area.
    pub offset: usize,
    /// rta_len as sent.
    pub len: u16,
    /// Bytes left from `offset`.
    pub left: usize,
}

/// Iterates the `(rta_type, payload)` pairs of an attribute area: each is
/// `__u16 rta_len` (header included), `__u16 rta_type`, payload, padding to
/// 4 bytes. Without copying or allocating:
///
/// | offset | size      | field    | meaning                                        |
/// |--------|-----------|----------|------------------------------------------------|
/// | 0      | 2         | rta_len  | header + payload, without the trailing padding |
/// | 2      | 2         | rta_type | low 14 bits (RTA_TYPE_MASK); the flag bits are dropped |
/// | 4      | rta_len-4 | payload  |                                                |
///
/// The next attribute starts at `rta_len` rounded up to 4; the last one may
/// lack its padding. A length below the header or past the end (or 1 to 3
/// stray bytes) is an error, never skipped, because a skipped attribute would
/// be a silently wrong number: the walk yields one `Err` and ends.
#[derive(Clone)]
pub struct Attributes<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Attributes<'a> {
    pub fn new(bytes: &'a [u8]) -> Attributes<'a> {
        Attributes { bytes, offset: 0 }
    }

    /// The payload of the first attribute of type `kind`, or None; an error
    /// if the area is malformed before it is found.
    pub fn find(self, kind: u16) -> Result<Option<&'a [u8]>, BadAttribute> {
        for attribute in self {
            let (k, payload) = attribute?;
            if k == kind {
                return Ok(Some(payload));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), BadAttribute>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let len = if rest.len() < RTA_HDRLEN {
            0
        } else {
            u16::from_ne_bytes([rest[0], rest[1]])
        };
        if usize::from(len) < RTA_HDRLEN || usize::from(len) > rest.len() {
            let error = BadAttribute {
                offset: self.offset,
                len,
                left: rest.len(),
            };
            self.offset = self.bytes.len();
            return Some(Err(error));
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & RTA_TYPE_MASK;
        let payload = &rest[RTA_HDRLEN..usize::from(len)];
        self.offset += nlmsg_align(usize::from(len));
        Some(Ok((kind, payload)))
    }
}

/// The INET_DIAG_CGROUP_ID in the attributes after a `struct inet_diag_msg`
/// (`attributes` starts right after its 72 bytes): Ok(None) when the kernel
/// sent none (TIME_WAIT and request sockets, kernels before 5.7). A CGROUP_ID
/// whose payload is not exactly 8 bytes is an error at that attribute, as is
/// a malformed area before it.
pub fn cgroup_id(attributes: &[u8]) -> Result<Option<u64>, BadAttribute> {
    let mut walk = Attributes::new(attributes);
    loop {
        let offset = walk.offset;
        match walk.next() {
            None => return Ok(None),
            Some(Err(error)) => return Err(error),
            Some(Ok((INET_DIAG_CGROUP_ID, payload))) => {
                return match <[u8; 8]>::try_from(payload) {
                    Ok(bytes) => Ok(Some(u64::from_ne_bytes(bytes))),
                    Err(_) => Err(BadAttribute {
                        offset,
                        len: (RTA_HDRLEN + payload.len()) as u16,
                        left: attributes.len() - offset,
                    }),
                };
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Reads `meminfo[index]` from an SKMEMINFO payload (an array of `__u32`).
pub fn meminfo(payload: &[u8], index: usize) -> Option<u32> {
    let b = payload.get(index * 4..index * 4 + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Formats an address from a dump for a label: dotted IPv4, RFC 5952 IPv6.
pub fn format_address(family: Family, raw: &[u8; 16]) -> String {
    match family {
        Family::Ipv4 => std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string(),
        Family::Ipv6 => std::net::Ipv6Addr::from(*raw).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse::tests::rtattr;

    #[test]
    fn states_round_trip_in_kernel_order() {
        for (i, state) in TcpState::ALL.iter().enumerate() {
            assert_eq!(state.kernel() as usize, i + 1);
            assert_eq!(TcpState::from_kernel(state.kernel()), Some(*state));
        }
        assert_eq!(TcpState::from_kernel(12), Some(TcpState::SynRecv));
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn legacy_request_layout() {
        let buf = DumpRequest::Legacy.encode(7);
        assert_eq!(buf.len(), 76);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 76);
        assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 18);
        assert_eq!(u16::from_ne_bytes(buf[6..8].try_into().unwrap()), 0x301);
        assert_eq!(buf[16], 0, "AF_UNSPEC");
        assert_eq!(u32::from_ne_bytes(buf[68..72].try_into().unwrap()), 0xFFF);
        assert_eq!(DumpRequest::decode(&buf), Some((DumpRequest::Legacy, 7)));
    }

    #[test]
    fn by_family_request_layout() {
        for family in Family::ALL {
            let buf = DumpRequest::ByFamily(family).encode(9);
            // nlmsghdr + inet_diag_req_v2 (family, protocol, ext, pad, states, id).
            assert_eq!(buf.len(), 16 + 56);
            assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 20);
            assert_eq!(buf[16], family.af());
            assert_eq!(buf[17], libc::IPPROTO_TCP as u8);
            assert_eq!(buf[18], 0, "no extensions");
            assert_eq!(u32::from_ne_bytes(buf[20..24].try_into().unwrap()), 0xFFF);
            assert_eq!(
                DumpRequest::decode(&buf),
                Some((DumpRequest::ByFamily(family), 9))
            );
        }
    }

    fn walk(bytes: &[u8]) -> Vec<Result<(u16, Vec<u8>), BadAttribute>> {
        Attributes::new(bytes)
            .map(|r| r.map(|(kind, payload)| (kind, payload.to_vec())))
            .collect()
    }

    #[test]
    fn walks_a_kernel_like_attribute_area() {
        // What a 6.18 kernel appends to a full TCP socket when no extension
        // was asked for (MARK only for a CAP_NET_ADMIN asker), annotated byte
        // by byte (x86-64, little endian).
        #[rustfmt::skip]
        let bytes: Vec<u8> = [
            // SHUTDOWN: rta_len 5, rta_type 8, one byte, 3 bytes padding
            &[0x05, 0x00, 0x08, 0x00, 0x00, 0, 0, 0][..],
            // MARK: rta_len 8, rta_type 15, u32 0
            &[0x08, 0x00, 0x0f, 0x00, 0, 0, 0, 0],
            // CGROUP_ID: rta_len 12, rta_type 21, u64 0x1234
            &[0x0c, 0x00, 0x15, 0x00, 0x34, 0x12, 0, 0, 0, 0, 0, 0],
            // SOCKOPT: rta_len 6, rta_type 22, u16 bitfield, 2 bytes padding
            &[0x06, 0x00, 0x16, 0x00, 0x01, 0x00, 0, 0],
        ]
        .concat();
        assert_eq!(
            walk(&bytes),
            vec![
                Ok((INET_DIAG_SHUTDOWN, vec![0])),
                Ok((INET_DIAG_MARK, vec![0; 4])),
                Ok((INET_DIAG_CGROUP_ID, 0x1234u64.to_ne_bytes().to_vec())),
                Ok((INET_DIAG_SOCKOPT, vec![1, 0])),
            ]
        );
        assert_eq!(cgroup_id(&bytes), Ok(Some(0x1234)));
        assert_eq!(Attributes::new(&bytes).find(INET_DIAG_SKMEMINFO), Ok(None));
        assert_eq!(
            Attributes::new(&bytes).find(INET_DIAG_SOCKOPT),
            Ok(Some(&[1u8, 0][..]))
        );
    }

    #[test]
    fn empty_area_has_no_attributes() {
        assert!(walk(&[]).is_empty());
        assert_eq!(cgroup_id(&[]), Ok(None));
    }

    #[test]
    fn masks_the_flag_bits_of_the_type() {
        // rta_type 0xc015: NLA_F_NESTED | NLA_F_NET_BYTEORDER | CGROUP_ID.
        let bytes = rtattr(0x8000 | 0x4000 | INET_DIAG_CGROUP_ID, &9u64.to_ne_bytes());
        assert_eq!(walk(&bytes)[0].as_ref().unwrap().0, INET_DIAG_CGROUP_ID);
        assert_eq!(cgroup_id(&bytes), Ok(Some(9)));
    }

    #[test]
    fn last_attribute_may_lack_its_padding() {
        // rta_len 5, rta_type 8, and the datagram ends right after the byte.
        let bytes = [0x05, 0x00, 0x08, 0x00, 0x07];
        assert_eq!(walk(&bytes), vec![Ok((8, vec![7]))]);
    }

    #[test]
    fn pad_attribute_before_a_u64_is_skipped() {
        // PAD: rta_len 4, rta_type 14, no payload; then CGROUP_ID.
        let mut bytes = rtattr(INET_DIAG_PAD, &[]);
        bytes.extend(rtattr(INET_DIAG_CGROUP_ID, &7u64.to_ne_bytes()));
        assert_eq!(walk(&bytes)[0], Ok((INET_DIAG_PAD, vec![])));
        assert_eq!(cgroup_id(&bytes), Ok(Some(7)));
    }

    #[test]
    fn malformed_areas_are_errors_with_offsets() {
        let good = rtattr(INET_DIAG_SHUTDOWN, &[0]); // 8 bytes
        let cases: Vec<(Vec<u8>, BadAttribute)> = vec![
            // 2 stray bytes after a good attribute: no room for a header.
            (
                [&good[..], &[0x01, 0x02]].concat(),
                BadAttribute {
                    offset: 8,
                    len: 0,
                    left: 2,
                },
            ),
            // rta_len 0 would loop forever if accepted.
            (
                vec![0, 0, 8, 0],
                BadAttribute {
                    offset: 0,
                    len: 0,
                    left: 4,
                },
            ),
            // rta_len 3 is inside its own header.
            (
                vec![3, 0, 8, 0],
                BadAttribute {
                    offset: 0,
                    len: 3,
                    left: 4,
                },
            ),
            // A CGROUP_ID claiming 12 bytes, 8 present.
            (
                [&good[..], &[12, 0, 21, 0, 1, 2, 3, 4]].concat(),
                BadAttribute {
                    offset: 8,
                    len: 12,
                    left: 8,
                },
            ),
        ];
        for (bytes, want) in cases {
            let got = walk(&bytes);
            assert_eq!(got.last(), Some(&Err(want)), "{bytes:?}");
            // Exactly one error, then the walk ends.
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
            assert_eq!(Attributes::new(&bytes).find(999), Err(want));
            assert_eq!(cgroup_id(&bytes), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn cgroup_id_payload_must_be_a_u64() {
        // SHUTDOWN (8 bytes), then CGROUP_ID with a 4-byte payload: the
        // error names the CGROUP_ID attribute (offset 8, rta_len 8).
        let mut bytes = rtattr(INET_DIAG_SHUTDOWN, &[0]);
        bytes.extend(rtattr(INET_DIAG_CGROUP_ID, &[1, 2, 3, 4]));
        assert_eq!(
            cgroup_id(&bytes),
            Err(BadAttribute {
                offset: 8,
                len: 8,
                left: 8
            })
        );
        // 12 bytes is not a u64 either (newer kernels would need a new type).
        let long = rtattr(INET_DIAG_CGROUP_ID, &[0; 12]);
        assert!(cgroup_id(&long).is_err());
        // Only the first CGROUP_ID counts.
        let mut two = rtattr(INET_DIAG_CGROUP_ID, &5u64.to_ne_bytes());
        two.extend(rtattr(INET_DIAG_CGROUP_ID, &6u64.to_ne_bytes()));
        assert_eq!(cgroup_id(&two), Ok(Some(5)));
    }

    #[test]
    fn formats_addresses() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(format_address(Family::Ipv4, &raw), "127.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(format_address(Family::Ipv6, &v6), "::1");
        assert_eq!(format_address(Family::Ipv6, &[0; 16]), "::");
    }
}
