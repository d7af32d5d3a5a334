//! Pure parsing of one received sock_diag datagram: header checks, control
//! messages, and a zero-copy hand-off of each socket to the aggregator.
//!
//! No syscalls and no allocation here: `collect` feeds it the bytes of each
//! recv, the tests feed it annotated fixtures. Every malformed input is an
//! error that names what was wrong and where; nothing is skipped silently,
//! because a skipped message would be a silently short count.

use std::fmt;

use netlink_packet_core::NetlinkBuffer;

use crate::kernel::diag::{
    nlmsg_align, BadAttribute, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_NOOP, NLMSG_OVERRUN,
    NLM_F_DUMP_INTR,
};

/// What a datagram must match to belong to the dump in progress.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// The request's nlmsg_seq; every answer carries it.
    pub seq: u32,
    /// Our netlink port id; 0 skips the check (fixtures).
    pub port: u32,
    /// The nlmsg_type of data messages (18 for legacy, 20 for by-family).
    pub data_type: u16,
    /// The smallest valid socket payload (72 for inet_diag_msg, 16 for
    /// unix_diag_msg); shorter ones are errors.
    pub min_payload: usize,
}

/// Progress of one dump across datagrams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// NLMSG_DONE was seen with no error.
    pub done: bool,
    /// Some message carried NLM_F_DUMP_INTR: the dump may be inconsistent.
    pub interrupted: bool,
    /// Socket messages handed on.
    pub sockets: u64,
}

/// Why a datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes left than a netlink header.
    Truncated { offset: usize, left: usize },
    /// nlmsg_len smaller than the header itself (0 included).
    LengthTooSmall { offset: usize, len: u32 },
    /// nlmsg_len past the end of the received bytes.
    LengthPastEnd {
        offset: usize,
        len: u32,
        left: usize,
    },
    /// nlmsg_len not a multiple of 4 with more bytes after it.
    Misaligned { offset: usize, len: u32 },
    /// A message from another request (a stale or foreign dump).
    Sequence { expected: u32, got: u32 },
    /// A message addressed to another netlink port.
    Port { expected: u32, got: u32 },
    /// NLMSG_ERROR: the kernel refused the request.
    KernelError { errno: i32 },
    /// NLMSG_ERROR with error 0 (an ACK) where a dump was expected.
    UnexpectedAck,
    /// NLMSG_DONE carrying a negative error code.
    DoneError { errno: i32 },
    /// NLMSG_OVERRUN: the kernel lost data.
    Overrun,
    /// A control or data message of a type this dump cannot carry.
    UnexpectedType { kind: u16 },
    /// A message after NLMSG_DONE.
    AfterDone,
    /// A socket message too short for its struct.
    ShortSocket {
        offset: usize,
        payload: usize,
        needed: usize,
    },
    /// A socket of a family other than AF_INET / AF_INET6.
    UnknownFamily { family: u8 },
    /// A TCP state number the kernel does not define.
    UnknownState { state: u8 },
    /// A UDP socket in a state other than TCP_CLOSE / TCP_ESTABLISHED.
    UnknownUdpState { state: u8 },
    /// A unix socket type other than stream, dgram, seqpacket.
    UnknownUnixType { kind: u8 },
    /// A unix socket state other than listen, established, close.
    UnknownUnixState { state: u8 },
    /// A malformed attribute after a socket message.
    Attribute(BadAttribute),
    /// A requested attribute (SKMEMINFO, UNIX_DIAG_RQLEN) missing or short.
    MissingAttribute { name: &'static str },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ParseError::*;
        match *self {
            Truncated { offset, left } => write!(
                f,
                "truncated netlink message at byte {offset}: {left} bytes left, a header needs {NLMSG_HDRLEN}"
            ),
            LengthTooSmall { offset, len } => write!(
                f,
                "netlink message at byte {offset} has length {len}, less than its {NLMSG_HDRLEN}-byte header"
            ),
            LengthPastEnd { offset, len, left } => write!(
                f,
                "netlink message at byte {offset} claims {len} bytes but only {left} were received"
            ),
            Misaligned { offset, len } => write!(
                f,
                "netlink message at byte {offset} has length {len}, not a multiple of 4, with more data after it"
            ),
            Sequence { expected, got } => write!(
                f,
                "netlink message with sequence number {got} while waiting for {expected} (stale or foreign dump)"
            ),
            Port { expected, got } => {
                write!(f, "netlink message for port {got}, but this socket is port {expected}")
            }
            KernelError { errno } => write!(
                f,
                "kernel refused the dump request: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            UnexpectedAck => write!(f, "kernel sent an acknowledgement instead of dump data"),
            DoneError { errno } => write!(
                f,
                "kernel ended the dump with an error: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            Overrun => write!(f, "kernel reported NLMSG_OVERRUN: dump data was lost"),
            UnexpectedType { kind } => write!(f, "unexpected netlink message type {kind} in a dump"),
            AfterDone => write!(f, "netlink message after the end of the dump (NLMSG_DONE)"),
            ShortSocket {
                offset,
                payload,
                needed,
            } => write!(
                f,
                "socket message at byte {offset} has a {payload}-byte payload, less than the {needed} of its struct"
            ),
            UnknownFamily { family } => write!(f, "socket of unknown address family {family}"),
            UnknownState { state } => write!(f, "socket in unknown TCP state {state}"),
            UnknownUdpState { state } => write!(f, "UDP socket in unexpected state {state}"),
            UnknownUnixType { kind } => write!(f, "unix socket of unknown type {kind}"),
            UnknownUnixState { state } => {
                write!(f, "unix socket in unexpected state {state}")
            }
            Attribute(BadAttribute { offset, len, left }) => write!(
                f,
                "malformed socket attribute at byte {offset} of the attributes: length {len} with {left} bytes left"
            ),
            MissingAttribute { name } => write!(
                f,
                "socket message without a complete {name} attribute, which the dump requested"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// The first 4 payload bytes as the kernel's `int error` (0 when absent).
fn error_code(payload: &[u8]) -> i32 {
    match payload.get(..4) {
        Some(b) => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// Walks every netlink message in `buf`, checking each header against
/// `expect`, and calls `on_socket` with each socket message's payload (the
/// struct and its attributes), at least `expect.min_payload` bytes long. Updates
/// `progress`; stops with an error at the first bad message.
pub fn walk_datagram<F>(
    buf: &[u8],
    expect: &Expect,
    progress: &mut Progress,
    mut on_socket: F,
) -> Result<(), ParseError>
where
    F: FnMut(&[u8]) -> Result<(), ParseError>,
{
    let mut offset = 0;
    while offset < buf.len() {
        let left = buf.len() - offset;
        if progress.done {
            return Err(ParseError::AfterDone);
        }
        if left < NLMSG_HDRLEN {
            return Err(ParseError::Truncated { offset, left });
        }
        let message = NetlinkBuffer::new(&buf[offset..]);
        let len = message.length();
        if (len as usize) < NLMSG_HDRLEN {
            return Err(ParseError::LengthTooSmall { offset, len });
        }
        if len as usize > left {
            return Err(ParseError::LengthPastEnd { offset, len, left });
        }
        if len % 4 != 0 && (len as usize) < left {
            return Err(ParseError::Misaligned { offset, len });
        }
        let seq = message.sequence_number();
        if seq != expect.seq {
            return Err(ParseError::Sequence {
                expected: expect.seq,
                got: seq,
            });
        }
        let port = message.port_number();
        if expect.port != 0 && port != expect.port {
            return Err(ParseError::Port {
                expected: expect.port,
                got: port,
            });
        }
        if message.flags() & NLM_F_DUMP_INTR != 0 {
            progress.interrupted = true;
        }
        let payload = &buf[offset + NLMSG_HDRLEN..offset + len as usize];
        match message.message_type() {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                return Err(match error_code(payload) {
                    0 => ParseError::UnexpectedAck,
                    code => ParseError::KernelError {
                        errno: code.saturating_neg(),
                    },
                })
            }
            NLMSG_DONE => match error_code(payload) {
                code if code < 0 => {
                    return Err(ParseError::DoneError {
                        errno: code.saturating_neg(),
                    })
                }
                _ => progress.done = true,
            },
            NLMSG_OVERRUN => return Err(ParseError::Overrun),
            kind if kind == expect.data_type => {
                if payload.len() < expect.min_payload {
                    return Err(ParseError::ShortSocket {
                        offset,
                        payload: payload.len(),
                        needed: expect.min_payload,
                    });
                }
                on_socket(payload)?;
                progress.sockets += 1;
            }
            kind => return Err(ParseError::UnexpectedType { kind }),
        }
        // Messages are padded to 4 bytes; the last one may end the datagram.
        offset = (offset + nlmsg_align(len as usize)).min(buf.len());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::diag::{
        InetDiagMsg, AF_INET, AF_INET6, AF_UNIX, INET_DIAG_MSG_LEN, INET_DIAG_SKMEMINFO,
        SOCK_DIAG_BY_FAMILY, UNIX_DIAG_MSG_LEN, UNIX_DIAG_NAME, UNIX_DIAG_RQLEN,
    };

    /// Builds one netlink message: header fields, then payload.
    pub fn nlmsg(kind: u16, flags: u16, seq: u32, port: u32, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes()); // nlmsg_len
        out.extend_from_slice(&kind.to_ne_bytes()); // nlmsg_type
        out.extend_from_slice(&flags.to_ne_bytes()); // nlmsg_flags
        out.extend_from_slice(&seq.to_ne_bytes()); // nlmsg_seq
        out.extend_from_slice(&port.to_ne_bytes()); // nlmsg_pid
        out.extend_from_slice(payload);
        while out.len() % 4 != 0 {
            out.push(0); // NLMSG_ALIGN padding
        }
        out
    }

    /// One `struct inet_diag_msg`, annotated field by field.
    #[allow(clippy::too_many_arguments)]
    pub fn inet_diag_msg(
        family: u8,
        state: u8,
        src: [u8; 16],
        sport: u16,
        dport: u16,
        rqueue: u32,
        wqueue: u32,
        inode: u32,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(INET_DIAG_MSG_LEN);
        m.push(family); // idiag_family
        m.push(state); // idiag_state
        m.push(0); // idiag_timer
        m.push(0); // idiag_retrans
        m.extend_from_slice(&sport.to_be_bytes()); // id.idiag_sport (network order)
        m.extend_from_slice(&dport.to_be_bytes()); // id.idiag_dport (network order)
        m.extend_from_slice(&src); // id.idiag_src
        m.extend_from_slice(&[0; 16]); // id.idiag_dst
        m.extend_from_slice(&0u32.to_ne_bytes()); // id.idiag_if
        m.extend_from_slice(&[0xAB; 8]); // id.idiag_cookie
        m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_expires
        m.extend_from_slice(&rqueue.to_ne_bytes()); // idiag_rqueue
        m.extend_from_slice(&wqueue.to_ne_bytes()); // idiag_wqueue
        m.extend_from_slice(&1000u32.to_ne_bytes()); // idiag_uid
        m.extend_from_slice(&inode.to_ne_bytes()); // idiag_inode
        assert_eq!(m.len(), INET_DIAG_MSG_LEN);
        m
    }

    pub fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    /// One `struct rtattr` with its payload, padded to 4 bytes.
    pub fn rtattr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes()); // rta_len
        out.extend_from_slice(&kind.to_ne_bytes()); // rta_type
        out.extend_from_slice(payload);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    /// An INET_DIAG_SKMEMINFO attribute: `__u32 meminfo[9]`, with
    /// rmem_alloc (index 0) and drops (index 8) set.
    pub fn skmeminfo(rmem_alloc: u32, drops: u32) -> Vec<u8> {
        let mut vars = [0u32; 9];
        vars[0] = rmem_alloc; // SK_MEMINFO_RMEM_ALLOC
        vars[1] = 212_992; // SK_MEMINFO_RCVBUF
        vars[8] = drops; // SK_MEMINFO_DROPS
        let bytes: Vec<u8> = vars.iter().flat_map(|v| v.to_ne_bytes()).collect();
        rtattr(INET_DIAG_SKMEMINFO, &bytes)
    }

    /// An inet_diag_msg followed by an SKMEMINFO attribute.
    #[allow(clippy::too_many_arguments)]
    pub fn inet_with_drops(
        family: u8,
        state: u8,
        src: [u8; 16],
        sport: u16,
        dport: u16,
        rqueue: u32,
        wqueue: u32,
        drops: u32,
    ) -> Vec<u8> {
        let mut m = inet_diag_msg(family, state, src, sport, dport, rqueue, wqueue, 1);
        m.extend(skmeminfo(rqueue, drops));
        m
    }

    /// One `struct unix_diag_msg` with UNIX_DIAG_NAME (when `name` is
    /// given) and UNIX_DIAG_RQLEN attributes, annotated field by field.
    pub fn unix_diag_msg(kind: u8, state: u8, name: Option<&[u8]>, rq: u32, wq: u32) -> Vec<u8> {
        let mut m = vec![
            AF_UNIX, // udiag_family
            kind,    // udiag_type
            state,   // udiag_state
            0,       // pad
        ];
        m.extend_from_slice(&4242u32.to_ne_bytes()); // udiag_ino
        m.extend_from_slice(&[0xCD; 8]); // udiag_cookie
        assert_eq!(m.len(), UNIX_DIAG_MSG_LEN);
        if let Some(name) = name {
            m.extend(rtattr(UNIX_DIAG_NAME, name));
        }
        let mut rqlen = rq.to_ne_bytes().to_vec(); // udiag_rqueue
        rqlen.extend_from_slice(&wq.to_ne_bytes()); // udiag_wqueue
        m.extend(rtattr(UNIX_DIAG_RQLEN, &rqlen));
        m
    }

    const EXPECT: Expect = Expect {
        seq: 5,
        port: 77,
        data_type: SOCK_DIAG_BY_FAMILY,
        min_payload: INET_DIAG_MSG_LEN,
    };

    fn socket(state: u8) -> Vec<u8> {
        let body = inet_diag_msg(AF_INET, state, v4([127, 0, 0, 1]), 80, 4000, 3, 4, 9);
        nlmsg(SOCK_DIAG_BY_FAMILY, 2, 5, 77, &body)
    }

    fn done(code: i32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, 2, 5, 77, &code.to_ne_bytes())
    }

    /// (family, state, local port, rqueue, wqueue) of each socket seen.
    type Seen = Vec<(u8, u8, u16, u32, u32)>;

    fn walk(buf: &[u8]) -> (Result<(), ParseError>, Progress, Seen) {
        let mut progress = Progress::default();
        let mut seen = Vec::new();
        let result = walk_datagram(buf, &EXPECT, &mut progress, |payload| {
            let m = InetDiagMsg::new(payload).unwrap();
            seen.push((
                m.family(),
                m.state(),
                m.local_port(),
                m.rqueue(),
                m.wqueue(),
            ));
            Ok(())
        });
        (result, progress, seen)
    }

    #[test]
    fn reads_sockets_and_done() {
        let mut buf = socket(1);
        buf.extend(socket(10));
        buf.extend(done(0));
        let (result, progress, seen) = walk(&buf);
        assert_eq!(result, Ok(()));
        assert!(progress.done && !progress.interrupted);
        assert_eq!(progress.sockets, 2);
        assert_eq!(seen, vec![(AF_INET, 1, 80, 3, 4), (AF_INET, 10, 80, 3, 4)]);
    }

    #[test]
    fn reads_ipv6_fields() {
        let mut src = [0u8; 16];
        src[15] = 1;
        let body = inet_diag_msg(AF_INET6, 8, src, 443, 5555, 100, 200, 0);
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 2, 5, 77, &body);
        let mut progress = Progress::default();
        walk_datagram(&buf, &EXPECT, &mut progress, |payload| {
            let m = InetDiagMsg::new(payload).unwrap();
            assert_eq!(m.family(), AF_INET6);
            assert_eq!(m.state(), 8);
            assert_eq!(m.local_port(), 443);
            assert_eq!(m.remote_port(), 5555);
            assert_eq!(m.local_address(), src);
            assert_eq!((m.rqueue(), m.wqueue(), m.inode()), (100, 200, 0));
            Ok(())
        })
        .unwrap();
        assert!(!progress.done);
    }

    #[test]
    fn flags_interrupted_dumps() {
        let mut buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            2 | NLM_F_DUMP_INTR,
            5,
            77,
            &socket(1)[16..],
        );
        buf.extend(done(0));
        let (result, progress, _) = walk(&buf);
        assert_eq!(result, Ok(()));
        assert!(progress.interrupted && progress.done);
    }

    #[test]
    fn truncated_header() {
        let mut buf = socket(1);
        buf.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let (result, _, seen) = walk(&buf);
        assert_eq!(
            result,
            Err(ParseError::Truncated {
                offset: 88,
                left: 8
            })
        );
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn length_past_the_buffer() {
        let mut buf = socket(1);
        buf.truncate(60);
        let (result, _, seen) = walk(&buf);
        assert_eq!(
            result,
            Err(ParseError::LengthPastEnd {
                offset: 0,
                len: 88,
                left: 60
            })
        );
        assert!(seen.is_empty());
    }

    #[test]
    fn zero_length() {
        let mut buf = socket(1);
        buf[0..4].copy_from_slice(&0u32.to_ne_bytes());
        let (result, _, _) = walk(&buf);
        assert_eq!(
            result,
            Err(ParseError::LengthTooSmall { offset: 0, len: 0 })
        );
    }

    #[test]
    fn misaligned_length() {
        let mut buf = socket(1);
        buf[0..4].copy_from_slice(&87u32.to_ne_bytes());
        buf.extend(done(0));
        let (result, _, _) = walk(&buf);
        assert_eq!(result, Err(ParseError::Misaligned { offset: 0, len: 87 }));
    }

    #[test]
    fn nlmsg_error() {
        let mut payload = (-95i32).to_ne_bytes().to_vec(); // -EOPNOTSUPP
        payload.extend_from_slice(&[0; 16]); // the offending request header
        let buf = nlmsg(NLMSG_ERROR, 0, 5, 77, &payload);
        let (result, _, _) = walk(&buf);
        assert_eq!(result, Err(ParseError::KernelError { errno: 95 }));
        let message = result.unwrap_err().to_string();
        assert!(message.contains("Operation not supported"), "{message}");

        let ack = nlmsg(NLMSG_ERROR, 0, 5, 77, &[0; 20]);
        assert_eq!(walk(&ack).0, Err(ParseError::UnexpectedAck));
    }

    #[test]
    fn error_inside_done() {
        let mut buf = socket(1);
        buf.extend(done(-2)); // -ENOENT: unsupported protocol
        let (result, progress, _) = walk(&buf);
        assert_eq!(result, Err(ParseError::DoneError { errno: 2 }));
        assert!(!progress.done);
    }

    #[test]
    fn done_without_payload_is_a_clean_end() {
        let buf = nlmsg(NLMSG_DONE, 2, 5, 77, &[]);
        let (result, progress, _) = walk(&buf);
        assert_eq!(result, Ok(()));
        assert!(progress.done);
    }

    #[test]
    fn wrong_sequence_and_port() {
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 2, 4, 77, &socket(1)[16..]);
        assert_eq!(
            walk(&buf).0,
            Err(ParseError::Sequence {
                expected: 5,
                got: 4
            })
        );
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 2, 5, 78, &socket(1)[16..]);
        assert_eq!(
            walk(&buf).0,
            Err(ParseError::Port {
                expected: 77,
                got: 78
            })
        );
    }

    #[test]
    fn short_socket_payload() {
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 2, 5, 77, &[0; 40]);
        assert_eq!(
            walk(&buf).0,
            Err(ParseError::ShortSocket {
                offset: 0,
                payload: 40,
                needed: 72
            })
        );
    }

    #[test]
    fn payload_includes_attributes() {
        let body = inet_with_drops(AF_INET, 7, v4([0; 4]), 53, 0, 0, 0, 3);
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 2, 5, 77, &body);
        let mut progress = Progress::default();
        walk_datagram(&buf, &EXPECT, &mut progress, |payload| {
            assert_eq!(payload.len(), 72 + 4 + 36);
            Ok(())
        })
        .unwrap();
        assert_eq!(progress.sockets, 1);
    }

    #[test]
    fn unexpected_types_overrun_and_data_after_done() {
        let buf = nlmsg(18, 2, 5, 77, &socket(1)[16..]);
        assert_eq!(walk(&buf).0, Err(ParseError::UnexpectedType { kind: 18 }));
        let buf = nlmsg(NLMSG_OVERRUN, 0, 5, 77, &[]);
        assert_eq!(walk(&buf).0, Err(ParseError::Overrun));
        let mut buf = done(0);
        buf.extend(socket(1));
        assert_eq!(walk(&buf).0, Err(ParseError::AfterDone));
    }

    #[test]
    fn noop_is_skipped() {
        let mut buf = nlmsg(NLMSG_NOOP, 0, 5, 77, &[]);
        buf.extend(done(0));
        let (result, progress, _) = walk(&buf);
        assert_eq!(result, Ok(()));
        assert!(progress.done);
    }

    #[test]
    fn callback_errors_stop_the_walk() {
        let mut buf = socket(1);
        buf.extend(socket(1));
        let mut progress = Progress::default();
        let result = walk_datagram(&buf, &EXPECT, &mut progress, |_| {
            Err(ParseError::UnknownState { state: 99 })
        });
        assert_eq!(result, Err(ParseError::UnknownState { state: 99 }));
        assert_eq!(progress.sockets, 0);
    }
}
