//! The kernel's sock_diag wire format, modelled once, in four parts: the
//! netlink framing every message shares (here), the kernel's numbers for
//! families, states and socket types ([`states`]), the dump requests we send
//! ([`request`]) and the socket messages and attributes the kernel answers
//! with ([`message`]). Requests and answers change for different reasons (a
//! new dump kind vs a new attribute), so each side keeps its own layout
//! tables next to the code that reads or writes them.
//!
//! Everything here is pure (no syscalls), so the parser and the tests can use
//! it without a kernel. Field meanings follow include/uapi/linux/inet_diag.h
//! and net/ipv4/inet_diag.c. Users import from `kernel::diag` itself: the
//! parts' public items are re-exported below.

pub mod message;
pub mod request;
pub mod states;
pub mod tcp_info;

pub use self::message::{
    cgroup_id, format_address, meminfo, Attributes, BadAttribute, InetDiagMsg, UnixDiagMsg,
    INET_DIAG_CGROUP_ID, INET_DIAG_MARK, INET_DIAG_MSG_LEN, INET_DIAG_PAD, INET_DIAG_SHUTDOWN,
    INET_DIAG_SKMEMINFO, INET_DIAG_SOCKOPT, RTA_HDRLEN, RTA_TYPE_MASK, SK_MEMINFO_DROPS,
    SK_MEMINFO_RMEM_ALLOC, UNIX_DIAG_MSG_LEN, UNIX_DIAG_NAME, UNIX_DIAG_RQLEN,
};
pub use self::request::{
    DumpRequest, ALL_TCP_STATES, INET_DIAG_REQ_LEN, LISTEN_STATE, SOCK_DIAG_BY_FAMILY,
    TCPDIAG_GETSOCK,
};
pub use self::states::{
    Family, TcpState, UdpState, UnixState, UnixType, AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC,
};
pub use self::tcp_info::{TcpInfo, INET_DIAG_INFO, INET_DIAG_INFO_EXT};

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
