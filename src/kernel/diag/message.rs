//! What the kernel answers with: borrowed, length-checked views of
//! `struct inet_diag_msg` and `struct unix_diag_msg` (offset tables next to
//! their accessors), the `struct rtattr` walk over the attributes after
//! them, and the attributes we read (CGROUP_ID, SKMEMINFO, unix NAME and
//! RQLEN). Zero-copy, and strict: a malformed attribute is an error, never
//! a silently wrong number.

use crate::kernel::diag::nlmsg_align;
use crate::kernel::diag::states::Family;

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

/// Size of `struct inet_diag_msg`.
pub const INET_DIAG_MSG_LEN: usize = 72;

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
    /// idiag_cookie: the socket cookie, unique per boot (`__u32[2]`, the
    /// low word first; sock_diag_save_cookie).
    pub fn cookie(&self) -> u64 {
        u64::from(self.u32_at(44)) | (u64::from(self.u32_at(48)) << 32)
    }

    /// The remote address bytes as sent: IPv4 uses the first 4.
    pub fn remote_address(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.0[24..40]);
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
