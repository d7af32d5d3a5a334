//! Where dump bytes come from: the kernel's NETLINK_SOCK_DIAG socket (the
//! only place this crate does netlink syscalls), a recorded fixture file, or
//! a recorder wrapping either.
//!
//! The collector only sees the [`Transport`] trait, so fixtures and tests go
//! through exactly the same parsing and checking as a live dump.

use std::fmt::Write as _;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use crate::diag::{nlmsg_align, DumpRequest, NLMSG_HDRLEN};

/// A message-oriented channel to something that answers dump requests.
pub trait Transport {
    /// Sends one encoded request.
    fn send(&mut self, request: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf` and returns its full length, which
    /// exceeds `buf.len()` when the datagram did not fit (it was truncated).
    /// Ok(0) means end of stream.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Our netlink port id, which answers must carry; 0 disables the check.
    fn port(&self) -> u32;
    /// Drops any half-read dump so the next request starts clean (the
    /// kernel answers EBUSY to a new dump while one is still running).
    fn reset(&mut self) -> io::Result<()>;
}

/// The kernel: one NETLINK_SOCK_DIAG socket, reused until an error forces a
/// reset. Dumps need no privilege; they see the namespace of the thread
/// that opened the socket.
pub struct Netlink {
    socket: Socket,
    port: u32,
    recv_timeout: Duration,
}

impl Netlink {
    /// Opens and binds the socket. `recv_timeout` bounds every recv, so a
    /// dump that never ends cannot hang the caller.
    pub fn open(recv_timeout: Duration) -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        let address = socket.bind_auto()?;
        set_timeout(&socket, libc::SO_RCVTIMEO, recv_timeout)?;
        Ok(Netlink {
            socket,
            port: address.port_number(),
            recv_timeout,
        })
    }
}

/// Sets SO_RCVTIMEO or SO_SNDTIMEO on any socket.
pub fn set_timeout(fd: &impl AsRawFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a valid timeval that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Transport for Netlink {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        let sent = self.socket.send_to(request, &SocketAddr::new(0, 0), 0)?;
        if sent != request.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} request bytes", request.len()),
            ));
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // MSG_TRUNC makes recv return the datagram's real length, so a
        // datagram larger than the buffer is detected instead of cut short.
        self.socket.recv(&mut &mut buf[..], libc::MSG_TRUNC)
    }

    fn port(&self) -> u32 {
        self.port
    }

    fn reset(&mut self) -> io::Result<()> {
        *self = Netlink::open(self.recv_timeout)?;
        Ok(())
    }
}

/// One recorded dump: the request it answered and the datagrams, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDump {
    pub request: DumpRequest,
    /// The sequence number the recorded answers carry.
    pub seq: u32,
    pub datagrams: Vec<Vec<u8>>,
}

/// Replays recorded dumps as if the kernel sent them. Each request takes the
/// next unused recording of the same kind; its answers get the request's
/// sequence number, so they pass the same checks as live data.
pub struct Fixture {
    dumps: Vec<RecordedDump>,
    used: Vec<bool>,
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl Fixture {
    pub fn new(dumps: Vec<RecordedDump>) -> Fixture {
        let used = vec![false; dumps.len()];
        Fixture {
            dumps,
            used,
            pending: Default::default(),
        }
    }

    /// Reads a fixture file (format: see [`parse_fixture`]).
    pub fn load(path: &Path) -> Result<Fixture, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read fixture {}: {e}", path.display()))?;
        parse_fixture(&text)
            .map(Fixture::new)
            .map_err(|e| format!("fixture {}: {e}", path.display()))
    }
}

impl Transport for Fixture {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        let (kind, seq) = DumpRequest::decode(request).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "fixture: not a dump request")
        })?;
        let index = (0..self.dumps.len())
            .find(|&i| !self.used[i] && self.dumps[i].request == kind)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("fixture has no recorded answer for a {} dump", kind.name()),
                )
            })?;
        self.used[index] = true;
        let recorded = &self.dumps[index];
        self.pending = recorded
            .datagrams
            .iter()
            .map(|d| with_sequence(d, recorded.seq, seq))
            .collect();
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.pending.pop_front() {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(datagram.len())
            }
            None => Ok(0),
        }
    }

    fn port(&self) -> u32 {
        0
    }

    fn reset(&mut self) -> io::Result<()> {
        self.pending.clear();
        Ok(())
    }
}

/// Copies a datagram, replacing sequence number `from` with `to` in every
/// well-formed header; malformed bytes are left for the parser to reject.
fn with_sequence(datagram: &[u8], from: u32, to: u32) -> Vec<u8> {
    let mut out = datagram.to_vec();
    let mut offset = 0;
    while offset + NLMSG_HDRLEN <= out.len() {
        let len = u32::from_ne_bytes(out[offset..offset + 4].try_into().unwrap()) as usize;
        let seq = &mut out[offset + 8..offset + 12];
        if u32::from_ne_bytes((&*seq).try_into().unwrap()) == from {
            seq.copy_from_slice(&to.to_ne_bytes());
        }
        if len < NLMSG_HDRLEN {
            break;
        }
        offset += nlmsg_align(len);
    }
    out
}

/// Parses the fixture text format:
///
/// ```text
/// # comments and blank lines are ignored
/// dump legacy seq=1            # any DumpRequest name, e.g. dump by-family ipv4 seq=1
/// recv 4c000000120002...       # one datagram, hex, as received
/// ```
pub fn parse_fixture(text: &str) -> Result<Vec<RecordedDump>, String> {
    let mut dumps: Vec<RecordedDump> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| format!("line {}: {msg}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["dump", name @ .., seq] if !name.is_empty() => {
                let kind = DumpRequest::from_name(&name.join(" ")).ok_or_else(|| {
                    let known: Vec<&str> = DumpRequest::ALL.iter().map(|r| r.name()).collect();
                    at(format!(
                        "unknown dump `{}` in `{line}`; known: {}",
                        name.join(" "),
                        known.join(", ")
                    ))
                })?;
                let seq = seq
                    .strip_prefix("seq=")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| at(format!("bad sequence `{seq}`, expected seq=N")))?;
                dumps.push(RecordedDump {
                    request: kind,
                    seq,
                    datagrams: Vec::new(),
                });
            }
            ["recv", hex] => {
                let bytes = decode_hex(hex).map_err(at)?;
                dumps
                    .last_mut()
                    .ok_or_else(|| at("`recv` before any `dump` line".into()))?
                    .datagrams
                    .push(bytes);
            }
            _ => {
                return Err(at(format!(
                    "expected `dump ...` or `recv HEX`, got `{line}`"
                )))
            }
        }
    }
    if dumps.is_empty() {
        return Err("no `dump` lines: the fixture is empty".into());
    }
    Ok(dumps)
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", hex.len()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| format!("bad hex digits `{}` at column {}", &hex[i..i + 2], i + 6))
        })
        .collect()
}

/// Wraps a transport and writes everything it sends and receives to `out`
/// in the fixture format, as it happens.
pub struct Recorder<T, W> {
    inner: T,
    out: W,
}

impl<T: Transport, W: io::Write> Recorder<T, W> {
    pub fn new(inner: T, mut out: W) -> io::Result<Recorder<T, W>> {
        writeln!(
            out,
            "# sockdiag_exporter fixture: netlink dump answers as received"
        )?;
        Ok(Recorder { inner, out })
    }

    pub fn into_output(self) -> W {
        self.out
    }
}

impl<T: Transport, W: io::Write> Transport for Recorder<T, W> {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        if let Some((kind, seq)) = DumpRequest::decode(request) {
            writeln!(self.out, "dump {} seq={seq}", kind.name())?;
        }
        self.inner.send(request)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.recv(buf)?;
        if n > 0 {
            let mut line = String::with_capacity(6 + 2 * n);
            line.push_str("recv ");
            for byte in &buf[..n.min(buf.len())] {
                let _ = write!(line, "{byte:02x}");
            }
            writeln!(self.out, "{line}")?;
        }
        Ok(n)
    }

    fn port(&self) -> u32 {
        self.inner.port()
    }

    fn reset(&mut self) -> io::Result<()> {
        self.inner.reset()
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        (**self).send(request)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).recv(buf)
    }
    fn port(&self) -> u32 {
        (**self).port()
    }
    fn reset(&mut self) -> io::Result<()> {
        (**self).reset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Family;

    #[test]
    fn parses_fixture_text() {
        let text = "# c\n\ndump legacy seq=3\nrecv 0102\nrecv ff\ndump by-family ipv6 seq=9 # x\n";
        let dumps = parse_fixture(text).unwrap();
        assert_eq!(dumps.len(), 2);
        assert_eq!(dumps[0].request, DumpRequest::Legacy);
        assert_eq!(dumps[0].seq, 3);
        assert_eq!(dumps[0].datagrams, vec![vec![1, 2], vec![0xff]]);
        assert_eq!(dumps[1].request, DumpRequest::ByFamily(Family::Ipv6));
        assert!(dumps[1].datagrams.is_empty());
    }

    #[test]
    fn fixture_errors_name_the_line() {
        let cases = [
            ("recv 00\n", "line 1: `recv` before any `dump` line"),
            (
                "dump legacy seq=1\nrecv 0\n",
                "line 2: odd number of hex digits (1)",
            ),
            (
                "dump legacy seq=1\nrecv zz\n",
                "line 2: bad hex digits `zz` at column 6",
            ),
            ("dump bogus seq=1\n", "line 1: unknown dump `bogus`"),
            ("dump legacy 1\n", "line 1: bad sequence `1`"),
            ("hello\n", "line 1: expected `dump ...` or `recv HEX`"),
            ("# nothing\n", "no `dump` lines"),
        ];
        for (text, want) in cases {
            let err = parse_fixture(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: got {err:?}");
        }
    }

    #[test]
    fn fixture_replays_with_the_request_sequence() {
        let mut datagram = crate::parse::tests::nlmsg(3, 2, 41, 0, &0i32.to_ne_bytes());
        datagram.extend(crate::parse::tests::nlmsg(3, 2, 40, 0, &0i32.to_ne_bytes()));
        let mut fixture = Fixture::new(vec![RecordedDump {
            request: DumpRequest::Legacy,
            seq: 41,
            datagrams: vec![datagram],
        }]);
        fixture.send(&DumpRequest::Legacy.encode(7)).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(fixture.recv(&mut buf).unwrap(), 40);
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        // A header with another sequence number is left alone.
        assert_eq!(u32::from_ne_bytes(buf[28..32].try_into().unwrap()), 40);
        assert_eq!(fixture.recv(&mut buf).unwrap(), 0, "end of stream");
        let err = fixture.send(&DumpRequest::Legacy.encode(8)).unwrap_err();
        assert!(err
            .to_string()
            .contains("no recorded answer for a legacy dump"));
    }

    #[test]
    fn fixture_reports_oversized_datagrams() {
        let mut fixture = Fixture::new(vec![RecordedDump {
            request: DumpRequest::Legacy,
            seq: 1,
            datagrams: vec![vec![0; 100]],
        }]);
        fixture.send(&DumpRequest::Legacy.encode(1)).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(fixture.recv(&mut buf).unwrap(), 100);
    }

    #[test]
    fn recorder_output_parses_back() {
        let inner = Fixture::new(vec![RecordedDump {
            request: DumpRequest::ByFamily(Family::Ipv4),
            seq: 5,
            datagrams: vec![vec![0xde, 0xad]],
        }]);
        let mut recorder = Recorder::new(inner, Vec::new()).unwrap();
        recorder
            .send(&DumpRequest::ByFamily(Family::Ipv4).encode(5))
            .unwrap();
        let mut buf = [0u8; 16];
        recorder.recv(&mut buf).unwrap();
        recorder.recv(&mut buf).unwrap();
        let text = String::from_utf8(recorder.into_output()).unwrap();
        let dumps = parse_fixture(&text).unwrap();
        assert_eq!(dumps[0].datagrams, vec![vec![0xde, 0xad]]);
        assert_eq!(dumps[0].seq, 5);
    }
}
