//! The dump requests we send: which kinds exist ([`DumpRequest`]), their
//! names (logs, errors, fixtures), and their exact bytes, encoded for the
//! kernel and decoded back for the fixture source. The legacy request is
//! laid out by hand, with its offset table next to the code that writes it.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    unix::{ShowFlags, StateFlags as UnixStateFlags, UnixRequest},
    SockDiagMessage,
};

use crate::kernel::diag::states::{Family, AF_UNIX, AF_UNSPEC};
use crate::kernel::diag::tcp_info::INET_DIAG_INFO_EXT;
use crate::kernel::diag::NLMSG_HDRLEN;

/// `TCPDIAG_GETSOCK`: the legacy inet_diag request (`struct inet_diag_req`).
/// With family AF_UNSPEC the kernel walks the TCP hash once for both families.
pub const TCPDIAG_GETSOCK: u16 = 18;
/// `SOCK_DIAG_BY_FAMILY`: the current request (`struct inet_diag_req_v2`).
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// Every TCP state bit from 0 to 11 (`ss` asks for the same). TIME_WAIT (bit 6)
/// is included; request sockets are reported when SYN_RECV (bit 3) is asked
/// for. Bit 12 (NEW_SYN_RECV) is internal and bit 13 (BOUND_INACTIVE, 6.10+)
/// would add sockets that are only bound, so neither is requested.
pub const ALL_TCP_STATES: u32 = 0xFFF;

/// Size of the legacy `struct inet_diag_req`.
pub const INET_DIAG_REQ_LEN: usize = 60;

/// Which request a dump is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpRequest {
    /// TCPDIAG_GETSOCK with AF_UNSPEC: both families in one walk.
    Legacy,
    /// SOCK_DIAG_BY_FAMILY for one family.
    ByFamily(Family),
    /// [`Legacy`](Self::Legacy) also asking for INET_DIAG_INFO (struct
    /// tcp_info) on every full socket (`--collector.tcp.info`).
    LegacyInfo,
    /// [`ByFamily`](Self::ByFamily) also asking for INET_DIAG_INFO.
    ByFamilyInfo(Family),
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
        DumpRequest::LegacyInfo,
        DumpRequest::ByFamilyInfo(Family::Ipv4),
        DumpRequest::ByFamilyInfo(Family::Ipv6),
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
            DumpRequest::Legacy | DumpRequest::LegacyInfo => TCPDIAG_GETSOCK,
            _ => SOCK_DIAG_BY_FAMILY,
        }
    }

    /// A short name for logs, errors and fixtures.
    pub fn name(self) -> &'static str {
        match self {
            DumpRequest::Legacy => "legacy",
            DumpRequest::ByFamily(Family::Ipv4) => "by-family ipv4",
            DumpRequest::ByFamily(Family::Ipv6) => "by-family ipv6",
            DumpRequest::LegacyInfo => "legacy info",
            DumpRequest::ByFamilyInfo(Family::Ipv4) => "by-family ipv4 info",
            DumpRequest::ByFamilyInfo(Family::Ipv6) => "by-family ipv6 info",
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
            DumpRequest::Legacy => encode_legacy(0, seq),
            DumpRequest::LegacyInfo => encode_legacy(INET_DIAG_INFO_EXT, seq),
            DumpRequest::ByFamily(family) => {
                encode_inet(family, IPPROTO_TCP, ALL_TCP_STATES, Ext::None, seq)
            }
            DumpRequest::ByFamilyInfo(family) => {
                encode_inet(family, IPPROTO_TCP, ALL_TCP_STATES, Ext::Info, seq)
            }
            DumpRequest::Listen(family) => {
                encode_inet(family, IPPROTO_TCP, LISTEN_STATE, Ext::Meminfo, seq)
            }
            DumpRequest::Udp(family) => {
                encode_inet(family, IPPROTO_UDP, ALL_TCP_STATES, Ext::Meminfo, seq)
            }
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
        // idiag_ext: byte 3 of the legacy request, byte 2 of the v2 one.
        let info = |at: usize| {
            msg.get(NLMSG_HDRLEN + at)
                .map(|ext| ext & INET_DIAG_INFO_EXT != 0)
        };
        let request = match kind {
            TCPDIAG_GETSOCK if info(3)? => DumpRequest::LegacyInfo,
            TCPDIAG_GETSOCK => DumpRequest::Legacy,
            SOCK_DIAG_BY_FAMILY if family == AF_UNIX => DumpRequest::Unix,
            SOCK_DIAG_BY_FAMILY => {
                let family = Family::from_kernel(family)?;
                match protocol {
                    IPPROTO_UDP => DumpRequest::Udp(family),
                    IPPROTO_TCP if states == LISTEN_STATE => DumpRequest::Listen(family),
                    IPPROTO_TCP if info(2)? => DumpRequest::ByFamilyInfo(family),
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
/// | 19     | 1    | idiag_ext        | `ext`: 0, or INET_DIAG_INFO's bit (2) |
/// | 20     | 48   | id               | zero: no socket filter         |
/// | 68     | 4    | idiag_states     | ALL_TCP_STATES                 |
/// | 72     | 4    | idiag_dbs        | 0 (unused)                     |
fn encode_legacy(ext: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + INET_DIAG_REQ_LEN;
    let mut buf = vec![0u8; len];
    buf[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    buf[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf[16] = AF_UNSPEC;
    buf[19] = ext;
    buf[68..72].copy_from_slice(&ALL_TCP_STATES.to_ne_bytes());
    buf
}

/// Only TCP_LISTEN (bit 10).
pub const LISTEN_STATE: u32 = 1 << 10;

/// The one extension a request asks for.
#[derive(Clone, Copy)]
enum Ext {
    None,
    /// SKMEMINFO (drops).
    Meminfo,
    /// INFO (struct tcp_info).
    Info,
}

/// `struct inet_diag_req_v2`, built by netlink-packet-sock-diag: one
/// family and protocol, a state mask, and the extension `ext`.
fn encode_inet(family: Family, protocol: u8, states: u32, ext: Ext, seq: u32) -> Vec<u8> {
    let socket_id = match family {
        Family::Ipv4 => SocketId::new_v4(),
        Family::Ipv6 => SocketId::new_v6(),
    };
    let request = InetRequest {
        family: family.af(),
        protocol,
        extensions: match ext {
            Ext::None => ExtensionFlags::empty(),
            Ext::Meminfo => ExtensionFlags::SKMEMINFO,
            Ext::Info => ExtensionFlags::INFO,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn info_requests_set_only_the_info_extension_bit() {
        let buf = DumpRequest::LegacyInfo.encode(3);
        assert_eq!(buf.len(), 76);
        assert_eq!(buf[19], 0x02, "idiag_ext: 1 << (INET_DIAG_INFO - 1)");
        let plain = DumpRequest::Legacy.encode(3);
        let differ: Vec<usize> = (0..76).filter(|&i| buf[i] != plain[i]).collect();
        assert_eq!(differ, vec![19]);
        assert_eq!(
            DumpRequest::decode(&buf),
            Some((DumpRequest::LegacyInfo, 3))
        );
        for family in Family::ALL {
            let buf = DumpRequest::ByFamilyInfo(family).encode(4);
            assert_eq!(buf[18], 0x02);
            assert_eq!(buf[17], libc::IPPROTO_TCP as u8);
            assert_eq!(
                DumpRequest::decode(&buf),
                Some((DumpRequest::ByFamilyInfo(family), 4))
            );
        }
        for request in DumpRequest::ALL {
            assert_eq!(DumpRequest::from_name(request.name()), Some(*request));
            assert_eq!(DumpRequest::decode(&request.encode(5)), Some((*request, 5)));
        }
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
}
