//! Recording live dumps: [`Recorder`] wraps any [`Transport`] and writes
//! what it sends and receives, faults included, in the fixture format that
//! `kernel::fixture` replays. The writing side of that format, kept apart
//! from the parser so each stays small.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use crate::kernel::diag::DumpRequest;
use crate::kernel::fixture::errno_name;
use crate::kernel::transport::Transport;

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
        // Faults are recorded too, so a fixture replays them.
        let n = match self.inner.recv(buf) {
            Ok(n) => n,
            Err(e) => {
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => writeln!(self.out, "hang")?,
                    Some(errno) => writeln!(self.out, "error {}", errno_name(errno))?,
                    None => writeln!(self.out, "# recv failed: {e}")?,
                }
                return Err(e);
            }
        };
        if n == 0 {
            writeln!(self.out, "eof")?;
        } else {
            let mut line = String::with_capacity(6 + 2 * n);
            line.push_str("recv ");
            for byte in &buf[..n.min(buf.len())] {
                let _ = write!(line, "{byte:02x}");
            }
            writeln!(self.out, "{line}")?;
        }
        Ok(n)
    }

    fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.set_recv_timeout(timeout)
    }

    fn port(&self) -> u32 {
        self.inner.port()
    }

    fn reset(&mut self) -> io::Result<()> {
        self.inner.reset()
    }
    /// Not recorded: a replay assumes the kernel's default range.
    fn local_ports(&mut self) -> io::Result<crate::kernel::sysctl::LocalPorts> {
        self.inner.local_ports()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag::Family;
    use crate::kernel::fixture::{parse_fixture, Fixture, RecordedDump, Step};

    #[test]
    fn recorder_output_parses_back() {
        let inner = Fixture::new(vec![RecordedDump {
            request: DumpRequest::ByFamily(Family::Ipv4),
            seq: 5,
            steps: vec![Step::Datagram(vec![0xde, 0xad]), Step::Error(libc::ENOBUFS)],
        }]);
        let mut recorder = Recorder::new(inner, Vec::new()).unwrap();
        recorder
            .send(&DumpRequest::ByFamily(Family::Ipv4).encode(5))
            .unwrap();
        let mut buf = [0u8; 16];
        recorder.recv(&mut buf).unwrap();
        recorder.recv(&mut buf).unwrap_err();
        recorder.recv(&mut buf).unwrap();
        let text = String::from_utf8(recorder.into_output()).unwrap();
        let dumps = parse_fixture(&text).unwrap();
        assert_eq!(
            dumps[0].steps,
            vec![
                Step::Datagram(vec![0xde, 0xad]),
                Step::Error(libc::ENOBUFS),
                Step::Eof
            ]
        );
        assert_eq!(dumps[0].seq, 5);
    }
}
