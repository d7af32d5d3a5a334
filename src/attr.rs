//! Netlink attributes (`struct rtattr` / `struct nlattr`) after a fixed
//! header, such as the ones inet_diag appends to each `struct inet_diag_msg`.
//!
//! The crate's parser hands on only the fixed 72-byte socket message; the
//! extensions the kernel appends (SKMEMINFO, CGROUP_ID, SOCKOPT, ...) follow
//! it as type-length-value records. This module walks them without copying
//! or allocating: [`Attrs`] yields `(type, payload)` pairs and stops with an
//! error at the first malformed record, because a silently skipped attribute
//! would be a silently wrong number (a socket counted without its cgroup).
//!
//! Wire layout of one attribute (host byte order):
//!
//! | offset | size | field   | meaning                                        |
//! |--------|------|---------|------------------------------------------------|
//! | 0      | 2    | len     | header + payload, without the trailing padding |
//! | 2      | 2    | type    | low 14 bits; 0x8000 NESTED, 0x4000 BYTEORDER   |
//! | 4      | len-4| payload |                                                |
//!
//! The next attribute starts at `len` rounded up to a multiple of 4. Pure: no
//! syscalls, so it is tested with annotated byte fixtures.

use std::fmt;

use crate::diag::INET_DIAG_MSG_LEN;

/// Size of the attribute header (`struct rtattr` / `struct nlattr`).
pub const ATTR_HDRLEN: usize = 4;
/// Bits of the type field that hold flags, not the type (NLA_F_NESTED,
/// NLA_F_NET_BYTEORDER).
pub const ATTR_TYPE_MASK: u16 = 0x3fff;

/// inet_diag attribute types (include/uapi/linux/inet_diag.h, `INET_DIAG_*`).
pub mod inet_diag {
    pub const MEMINFO: u16 = 1;
    pub const INFO: u16 = 2;
    pub const CONG: u16 = 4;
    pub const TOS: u16 = 5;
    pub const TCLASS: u16 = 6;
    /// `u32 sk_meminfo[SK_MEMINFO_VARS]`; index 8 is SK_MEMINFO_DROPS.
    pub const SKMEMINFO: u16 = 7;
    pub const SHUTDOWN: u16 = 8;
    pub const PROTOCOL: u16 = 10;
    pub const SKV6ONLY: u16 = 11;
    /// Padding the kernel may insert before a 64-bit attribute on
    /// architectures without efficient unaligned access; carries nothing.
    pub const PAD: u16 = 14;
    pub const MARK: u16 = 15;
    pub const CLASS_ID: u16 = 17;
    /// `u64`: the cgroup v2 id of the socket's owner (full sockets only).
    pub const CGROUP_ID: u16 = 21;
    pub const SOCKOPT: u16 = 22;
}

/// Rounds an attribute length up to where the next one starts.
pub fn attr_align(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// One attribute: its type (flags masked off), the raw type field, and the
/// payload bytes (padding excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The type with NLA_F_NESTED / NLA_F_NET_BYTEORDER removed.
    pub kind: u16,
    /// The type field as sent.
    pub raw_kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The payload as a host-order u64; an error unless it is exactly 8 bytes.
    pub fn u64(&self) -> Result<u64, AttrError> {
        let bytes: [u8; 8] = self
            .payload
            .try_into()
            .map_err(|_| AttrError::PayloadSize {
                kind: self.kind,
                expected: 8,
                got: self.payload.len(),
            })?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// The payload as host-order u32 words; an error unless its length is a
    /// multiple of 4 (SKMEMINFO is `u32[SK_MEMINFO_VARS]`, and newer kernels
    /// may append words, so the count is not fixed).
    pub fn u32_words(&self) -> Result<impl Iterator<Item = u32> + 'a, AttrError> {
        if self.payload.len() % 4 != 0 {
            return Err(AttrError::PayloadSize {
                kind: self.kind,
                expected: attr_align(self.payload.len()),
                got: self.payload.len(),
            });
        }
        Ok(self
            .payload
            .chunks_exact(4)
            .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
    }
}

/// Why the attribute area is malformed. Offsets count from the start of the
/// bytes given to [`Attrs::new`] plus its `base`, so an error can name the
/// byte in the whole netlink payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrError {
    /// 1 to 3 bytes left: less than an attribute header.
    Truncated { offset: usize, left: usize },
    /// A length smaller than the 4-byte header (0 included).
    LengthTooSmall { offset: usize, len: u16 },
    /// A length past the end of the bytes.
    LengthPastEnd {
        offset: usize,
        len: u16,
        left: usize,
    },
    /// An attribute whose payload does not have the size its type needs.
    PayloadSize {
        kind: u16,
        expected: usize,
        got: usize,
    },
    /// A payload shorter than the fixed message the attributes follow.
    ShortMessage { len: usize, need: usize },
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AttrError::Truncated { offset, left } => write!(
                f,
                "truncated attribute at byte {offset}: {left} bytes left, a header needs {ATTR_HDRLEN}"
            ),
            AttrError::LengthTooSmall { offset, len } => write!(
                f,
                "attribute at byte {offset} has length {len}, less than its {ATTR_HDRLEN}-byte header"
            ),
            AttrError::LengthPastEnd { offset, len, left } => write!(
                f,
                "attribute at byte {offset} claims {len} bytes but only {left} are left"
            ),
            AttrError::PayloadSize {
                kind,
                expected,
                got,
            } => write!(
                f,
                "attribute type {kind} has a {got}-byte payload, expected {expected}"
            ),
            AttrError::ShortMessage { len, need } => write!(
                f,
                "message payload of {len} bytes is shorter than the {need}-byte header the attributes follow"
            ),
        }
    }
}

impl std::error::Error for AttrError {}

/// Iterator over the attributes in a byte slice. Yields `Err` once for the
/// first malformed attribute and then ends.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    bytes: &'a [u8],
    offset: usize,
    base: usize,
    failed: bool,
}

impl<'a> Attrs<'a> {
    /// Attributes filling all of `bytes`. `base` is added to the offsets in
    /// errors (the position of `bytes` in the enclosing payload).
    pub fn new(bytes: &'a [u8], base: usize) -> Attrs<'a> {
        Attrs {
            bytes,
            offset: 0,
            base,
            failed: false,
        }
    }

    /// The attributes after a `struct inet_diag_msg` (a sock_diag data
    /// message's payload, netlink header excluded).
    pub fn after_inet_diag_msg(payload: &'a [u8]) -> Result<Attrs<'a>, AttrError> {
        let rest = payload
            .get(INET_DIAG_MSG_LEN..)
            .ok_or(AttrError::ShortMessage {
                len: payload.len(),
                need: INET_DIAG_MSG_LEN,
            })?;
        Ok(Attrs::new(rest, INET_DIAG_MSG_LEN))
    }

    /// The first attribute of type `kind` (flags masked), or None; an error
    /// if the area is malformed before it is found.
    pub fn find(self, kind: u16) -> Result<Option<Attr<'a>>, AttrError> {
        for attr in self {
            let attr = attr?;
            if attr.kind == kind {
                return Ok(Some(attr));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, AttrError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.bytes.len() {
            return None;
        }
        let left = self.bytes.len() - self.offset;
        let offset = self.base + self.offset;
        let error = if left < ATTR_HDRLEN {
            Some(AttrError::Truncated { offset, left })
        } else {
            let at = self.offset;
            let len = u16::from_ne_bytes([self.bytes[at], self.bytes[at + 1]]);
            let raw_kind = u16::from_ne_bytes([self.bytes[at + 2], self.bytes[at + 3]]);
            if usize::from(len) < ATTR_HDRLEN {
                Some(AttrError::LengthTooSmall { offset, len })
            } else if usize::from(len) > left {
                Some(AttrError::LengthPastEnd { offset, len, left })
            } else {
                // The last attribute's padding may be missing; never step
                // past the end.
                self.offset = (at + attr_align(usize::from(len))).min(self.bytes.len());
                return Some(Ok(Attr {
                    kind: raw_kind & ATTR_TYPE_MASK,
                    raw_kind,
                    payload: &self.bytes[at + ATTR_HDRLEN..at + usize::from(len)],
                }));
            }
        };
        self.failed = true;
        error.map(Err)
    }
}

/// The INET_DIAG_CGROUP_ID of one socket message payload (netlink header
/// excluded): Ok(None) when the kernel sent none (TIME_WAIT and request
/// sockets, kernels before 5.7, or no CONFIG_SOCK_CGROUP_DATA).
pub fn inet_diag_cgroup_id(payload: &[u8]) -> Result<Option<u64>, AttrError> {
    Attrs::after_inet_diag_msg(payload)?
        .find(inet_diag::CGROUP_ID)?
        .map(|a| a.u64())
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attribute as the kernel lays it out: header, payload, zero padding.
    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = (ATTR_HDRLEN + payload.len()) as u16;
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(attr_align(out.len()), 0);
        out
    }

    fn collect(bytes: &[u8]) -> Vec<Result<(u16, Vec<u8>), AttrError>> {
        Attrs::new(bytes, 0)
            .map(|r| r.map(|a| (a.kind, a.payload.to_vec())))
            .collect()
    }

    #[test]
    fn walks_a_kernel_like_attribute_area() {
        // What a 6.18 kernel appends to a full TCP socket when no
        // extension was asked for (MARK only for a CAP_NET_ADMIN asker),
        // annotated byte by byte (x86-64, little endian).
        #[rustfmt::skip]
        let bytes: Vec<u8> = [
            // SHUTDOWN: len 5, type 8, one byte, 3 bytes padding
            &[0x05, 0x00, 0x08, 0x00, 0x00, 0, 0, 0][..],
            // MARK: len 8, type 15, u32 0
            &[0x08, 0x00, 0x0f, 0x00, 0, 0, 0, 0],
            // CGROUP_ID: len 12, type 21, u64 0x1234
            &[0x0c, 0x00, 0x15, 0x00, 0x34, 0x12, 0, 0, 0, 0, 0, 0],
            // SOCKOPT: len 6, type 22, u16 bitfield, 2 bytes padding
            &[0x06, 0x00, 0x16, 0x00, 0x01, 0x00, 0, 0],
        ]
        .concat();
        assert_eq!(
            collect(&bytes),
            vec![
                Ok((inet_diag::SHUTDOWN, vec![0])),
                Ok((inet_diag::MARK, vec![0; 4])),
                Ok((inet_diag::CGROUP_ID, 0x1234u64.to_ne_bytes().to_vec())),
                Ok((inet_diag::SOCKOPT, vec![1, 0])),
            ]
        );
        let cg = Attrs::new(&bytes, 0).find(inet_diag::CGROUP_ID).unwrap();
        assert_eq!(cg.unwrap().u64(), Ok(0x1234));
        assert_eq!(Attrs::new(&bytes, 0).find(inet_diag::SKMEMINFO), Ok(None));
    }

    #[test]
    fn empty_area_has_no_attributes() {
        assert!(collect(&[]).is_empty());
    }

    #[test]
    fn masks_the_flag_bits_of_the_type() {
        let bytes = attr(0x8000 | 0x4000 | 7, &[1, 2, 3, 4]);
        let a = Attrs::new(&bytes, 0).next().unwrap().unwrap();
        assert_eq!((a.kind, a.raw_kind), (7, 0xc007));
    }

    #[test]
    fn last_attribute_may_lack_its_padding() {
        // len 5 and the datagram ends right after the payload byte.
        let bytes = [0x05, 0x00, 0x08, 0x00, 0x07];
        assert_eq!(collect(&bytes), vec![Ok((8, vec![7]))]);
    }

    #[test]
    fn pad_attribute_before_a_u64_is_skipped_by_find() {
        let mut bytes = attr(inet_diag::PAD, &[]);
        bytes.extend(attr(inet_diag::CGROUP_ID, &7u64.to_ne_bytes()));
        assert_eq!(collect(&bytes)[0], Ok((inet_diag::PAD, vec![])));
        let found = Attrs::new(&bytes, 0).find(inet_diag::CGROUP_ID).unwrap();
        assert_eq!(found.unwrap().u64(), Ok(7));
    }

    #[test]
    fn malformed_areas_are_errors_with_offsets() {
        let good = attr(inet_diag::SHUTDOWN, &[0]); // 8 bytes
        let cases: Vec<(Vec<u8>, AttrError)> = vec![
            // 2 stray bytes after a good attribute.
            (
                [&good[..], &[0x01, 0x02]].concat(),
                AttrError::Truncated {
                    offset: 108,
                    left: 2,
                },
            ),
            // Length 0 would loop forever if accepted.
            (
                vec![0, 0, 8, 0],
                AttrError::LengthTooSmall {
                    offset: 100,
                    len: 0,
                },
            ),
            // Length 3 is inside its own header.
            (
                vec![3, 0, 8, 0],
                AttrError::LengthTooSmall {
                    offset: 100,
                    len: 3,
                },
            ),
            // Claims 12 bytes, 8 present.
            (
                [&good[..], &[12, 0, 21, 0, 1, 2, 3, 4]].concat(),
                AttrError::LengthPastEnd {
                    offset: 108,
                    len: 12,
                    left: 8,
                },
            ),
        ];
        for (bytes, want) in cases {
            let got: Vec<_> = Attrs::new(&bytes, 100).collect();
            assert_eq!(got.last(), Some(&Err(want)), "{bytes:?}");
            // Exactly one error, then the iterator ends.
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
            assert!(Attrs::new(&bytes, 100).find(999).is_err());
        }
    }

    #[test]
    fn payload_size_is_checked_by_the_accessors() {
        let bytes = attr(inet_diag::CGROUP_ID, &[1, 2, 3, 4]);
        let a = Attrs::new(&bytes, 0).next().unwrap().unwrap();
        assert_eq!(
            a.u64(),
            Err(AttrError::PayloadSize {
                kind: 21,
                expected: 8,
                got: 4
            })
        );
        let words = attr(inet_diag::SKMEMINFO, &[1, 0, 0, 0, 2, 0, 0, 0]);
        let a = Attrs::new(&words, 0).next().unwrap().unwrap();
        assert_eq!(a.u32_words().unwrap().collect::<Vec<_>>(), vec![1, 2]);
        let odd = attr(inet_diag::SKMEMINFO, &[1, 0, 0]);
        let a = Attrs::new(&odd, 0).next().unwrap().unwrap();
        assert!(a.u32_words().is_err());
    }

    #[test]
    fn cgroup_id_after_an_inet_diag_msg() {
        let mut payload = vec![0u8; INET_DIAG_MSG_LEN];
        assert_eq!(inet_diag_cgroup_id(&payload), Ok(None), "no attributes");
        payload.extend(attr(inet_diag::SHUTDOWN, &[0]));
        payload.extend(attr(inet_diag::CGROUP_ID, &4242u64.to_ne_bytes()));
        assert_eq!(inet_diag_cgroup_id(&payload), Ok(Some(4242)));
        assert_eq!(
            inet_diag_cgroup_id(&[0; 10]),
            Err(AttrError::ShortMessage { len: 10, need: 72 })
        );
        // Errors count from the start of the whole payload.
        let mut bad = vec![0u8; INET_DIAG_MSG_LEN];
        bad.extend([0, 0]);
        assert_eq!(
            inet_diag_cgroup_id(&bad),
            Err(AttrError::Truncated {
                offset: 72,
                left: 2
            })
        );
    }
}
