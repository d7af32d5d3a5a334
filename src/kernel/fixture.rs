//! Recorded dumps replayed as if the kernel sent them: the fixture text
//! format (`dump`, `recv HEX`, `include`, and the scripted faults `error`,
//! `eof`, `hang`, `endless`), its parser, and the [`Fixture`] transport that
//! answers each request with the next matching recording under the
//! request's sequence number. Kept apart from the real socket because it is
//! test and offline machinery with its own format, not a syscall path.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::kernel::diag::{nlmsg_align, DumpRequest, NLMSG_HDRLEN};
use crate::kernel::transport::Transport;

/// One recorded dump: the request it answered and what each recv returned,
/// in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDump {
    pub request: DumpRequest,
    /// The sequence number the recorded answers carry.
    pub seq: u32,
    pub steps: Vec<Step>,
}

/// What one recv returns when a fixture is replayed. Besides datagrams, a
/// fixture can script the faults a real socket shows, so they reach the
/// collector through the same [`Transport`] path as a live dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `recv HEX`: one datagram, as received.
    Datagram(Vec<u8>),
    /// `error ERRNO`: recv fails with this errno (e.g. ENOBUFS after the
    /// socket's receive buffer overflowed, or EINTR).
    Error(i32),
    /// `eof`: recv returns 0, the end of the stream.
    Eof,
    /// `hang`: nothing arrives; recv blocks until its timeout, then fails
    /// with EAGAIN, as a socket with SO_RCVTIMEO does.
    Hang,
    /// `endless`: the step before it repeats for ever (a dump that never
    /// ends). Always a dump's last step.
    Endless,
}

/// Replays recorded dumps as if the kernel sent them. Each request takes the
/// next unused recording of the same kind; its answers get the request's
/// sequence number, so they pass the same checks as live data.
pub struct Fixture {
    dumps: Vec<RecordedDump>,
    used: Vec<bool>,
    pending: std::collections::VecDeque<Step>,
    /// The step an `endless` repeats.
    last: Option<Step>,
    /// How long a `hang` blocks (set by the collector before each recv).
    recv_timeout: Duration,
}

impl Fixture {
    pub fn new(dumps: Vec<RecordedDump>) -> Fixture {
        let used = vec![false; dumps.len()];
        Fixture {
            dumps,
            used,
            pending: Default::default(),
            last: None,
            recv_timeout: Duration::from_secs(10),
        }
    }

    /// Reads a fixture file (format: see [`parse_fixture`]). `include`
    /// paths are relative to the including file.
    pub fn load(path: &Path) -> Result<Fixture, String> {
        load_dumps(path, 0).map(Fixture::new)
    }
}

/// Includes nest at most this deep (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 4;

fn load_dumps(path: &Path, depth: usize) -> Result<Vec<RecordedDump>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read fixture {}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut include = |name: &str| {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH} (an include loop?)"
            ));
        }
        load_dumps(&dir.join(name), depth + 1)
    };
    parse_fixture_with(&text, &mut include).map_err(|e| format!("fixture {}: {e}", path.display()))
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
            .steps
            .iter()
            .map(|step| match step {
                Step::Datagram(d) => Step::Datagram(with_sequence(d, recorded.seq, seq)),
                other => other.clone(),
            })
            .collect();
        self.last = None;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let step = match self.pending.front() {
            Some(Step::Endless) => self.last.clone().unwrap_or(Step::Eof),
            Some(_) => {
                let step = self.pending.pop_front().expect("front exists");
                self.last = Some(step.clone());
                step
            }
            None => Step::Eof,
        };
        match step {
            Step::Datagram(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(datagram.len())
            }
            Step::Error(errno) => Err(io::Error::from_raw_os_error(errno)),
            Step::Eof | Step::Endless => Ok(0),
            Step::Hang => {
                std::thread::sleep(self.recv_timeout);
                Err(io::Error::from_raw_os_error(libc::EAGAIN))
            }
        }
    }

    fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.recv_timeout = timeout;
        Ok(())
    }

    fn port(&self) -> u32 {
        0
    }

    fn reset(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.last = None;
        Ok(())
    }

    /// Recordings carry no sysctls: a replay assumes the kernel's default
    /// port range with nothing reserved (what `make fixtures` records in).
    fn local_ports(&mut self) -> io::Result<crate::kernel::sysctl::LocalPorts> {
        Ok(crate::kernel::sysctl::LocalPorts::linux_default())
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

/// Errno names a fixture may use in `error` lines (any number works too).
const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("EBADF", libc::EBADF),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("EBUSY", libc::EBUSY),
    ("EINVAL", libc::EINVAL),
    ("EMSGSIZE", libc::EMSGSIZE),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("ENOBUFS", libc::ENOBUFS),
    ("ECONNRESET", libc::ECONNRESET),
    ("ENOTCONN", libc::ENOTCONN),
    ("ETIMEDOUT", libc::ETIMEDOUT),
];

fn errno_from_name(name: &str) -> Option<i32> {
    ERRNO_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .or_else(|| name.parse().ok().filter(|&n: &i32| n > 0))
}

pub(crate) fn errno_name(errno: i32) -> String {
    ERRNO_NAMES
        .iter()
        .find(|(_, v)| *v == errno)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| errno.to_string())
}

/// Parses the fixture text format:
///
/// ```text
/// # comments and blank lines are ignored
/// dump legacy seq=1            # any DumpRequest name, e.g. dump by-family ipv4 seq=1
/// recv 4c000000120002...       # one datagram, hex, as received
/// ```
///
/// Faults a real socket shows can be scripted inside a dump, each standing
/// for one recv: `error ERRNO` (a name such as ENOBUFS or EINTR, or a
/// number), `eof` (recv returns 0), `hang` (nothing arrives until the recv
/// timeout) and `endless` (the line before repeats for ever; it must be the
/// dump's last line). `dump ... seq=N times=K` serves the same answer to K
/// requests in a row, so a persistent fault takes one dump block. Files
/// loaded with [`Fixture::load`] may also say `include FILE [times=K]`
/// between dumps to append another fixture's dumps (K times over).
pub fn parse_fixture(text: &str) -> Result<Vec<RecordedDump>, String> {
    parse_fixture_with(text, &mut |_| {
        Err("`include` works only in fixture files".to_string())
    })
}

fn parse_fixture_with(
    text: &str,
    include: &mut dyn FnMut(&str) -> Result<Vec<RecordedDump>, String>,
) -> Result<Vec<RecordedDump>, String> {
    // Each dump with how many requests it answers.
    let mut dumps: Vec<(RecordedDump, usize)> = Vec::new();
    // Whether the last dump still takes steps (not after an `include`).
    let mut open = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| format!("line {}: {msg}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let step = match words.as_slice() {
            ["dump", rest @ ..] => {
                let (times, rest) = match rest.split_last() {
                    Some((last, rest)) if last.starts_with("times=") => {
                        (parse_times(last).map_err(at)?, rest)
                    }
                    _ => (1, rest),
                };
                let Some((seq, name)) = rest.split_last().filter(|(_, name)| !name.is_empty())
                else {
                    return Err(at(format!(
                        "expected `dump NAME seq=N [times=K]`, got `{line}`"
                    )));
                };
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
                let dump = RecordedDump {
                    request: kind,
                    seq,
                    steps: Vec::new(),
                };
                dumps.push((dump, times));
                open = true;
                continue;
            }
            ["include", name, rest @ ..] if rest.len() <= 1 => {
                let times = match rest {
                    [word] => parse_times(word).map_err(at)?,
                    _ => 1,
                };
                let included = include(name).map_err(|e| at(format!("include {name}: {e}")))?;
                for _ in 0..times {
                    dumps.extend(included.iter().map(|d| (d.clone(), 1)));
                }
                open = false;
                continue;
            }
            ["recv", hex] => Step::Datagram(decode_hex(hex).map_err(at)?),
            ["error", errno] => Step::Error(errno_from_name(errno).ok_or_else(|| {
                at(format!(
                    "unknown errno `{errno}`: use a positive number or one of {}",
                    ERRNO_NAMES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?),
            ["eof"] => Step::Eof,
            ["hang"] => Step::Hang,
            ["endless"] => Step::Endless,
            _ => {
                return Err(at(format!(
                    "expected `dump ...`, `include FILE`, `recv HEX`, `error ERRNO`, `eof`, `hang` or `endless`, got `{line}`"
                )))
            }
        };
        let word = words[0];
        let steps = match dumps.last_mut() {
            Some((dump, _)) if open => &mut dump.steps,
            Some(_) => {
                return Err(at(format!(
                    "`{word}` after `include` needs a `dump` line first"
                )))
            }
            None => return Err(at(format!("`{word}` before any `dump` line"))),
        };
        match steps.last() {
            Some(Step::Endless) => {
                return Err(at(format!(
                    "`{word}` after `endless` would never be reached"
                )))
            }
            None if step == Step::Endless => {
                return Err(at("`endless` needs a line before it to repeat".into()))
            }
            _ => steps.push(step),
        }
    }
    if dumps.is_empty() {
        return Err("no `dump` lines: the fixture is empty".into());
    }
    Ok(dumps
        .into_iter()
        .flat_map(|(dump, times)| (0..times).map(move |_| dump.clone()))
        .collect())
}

/// `times=N`, N in 1..=10000.
fn parse_times(word: &str) -> Result<usize, String> {
    word.strip_prefix("times=")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| format!("bad `{word}`, expected times=N with N in 1..=10000"))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", hex.len()));
    }
    // By bytes, not str slices: a non-ASCII character must be an error, not
    // a slice through the middle of it.
    let digit = |b: u8| (b as char).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
            _ => Err(format!(
                "bad hex digits `{}` at column {}",
                String::from_utf8_lossy(pair),
                2 * i + 6
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag::Family;

    #[test]
    fn parses_fixture_text() {
        let text = "# c\n\ndump legacy seq=3\nrecv 0102\nrecv ff\ndump by-family ipv6 seq=9 # x\n";
        let dumps = parse_fixture(text).unwrap();
        assert_eq!(dumps.len(), 2);
        assert_eq!(dumps[0].request, DumpRequest::Legacy);
        assert_eq!(dumps[0].seq, 3);
        assert_eq!(
            dumps[0].steps,
            vec![Step::Datagram(vec![1, 2]), Step::Datagram(vec![0xff])]
        );
        assert_eq!(dumps[1].request, DumpRequest::ByFamily(Family::Ipv6));
        assert!(dumps[1].steps.is_empty());
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
            ("hello\n", "line 1: expected `dump ...`, `include FILE`"),
            (
                "dump legacy seq=1\nrecv 0\u{e9}0\n",
                "line 2: bad hex digits `0\u{fffd}",
            ),
            (
                "dump legacy seq=1\nrecv a\u{20ac}\n",
                "line 2: bad hex digits",
            ),
            ("eof\n", "line 1: `eof` before any `dump` line"),
            (
                "dump legacy seq=1\nerror EWHAT\n",
                "line 2: unknown errno `EWHAT`",
            ),
            ("dump legacy seq=1\nerror 0\n", "line 2: unknown errno `0`"),
            (
                "dump legacy seq=1\nendless\n",
                "line 2: `endless` needs a line before it",
            ),
            (
                "dump legacy seq=1\nhang\nendless\neof\n",
                "line 4: `eof` after `endless` would never be reached",
            ),
            ("dump legacy seq=1 times=0\n", "line 1: bad `times=0`"),
            (
                "dump seq=1\n",
                "line 1: expected `dump NAME seq=N [times=K]`",
            ),
            (
                "dump legacy seq=1\ninclude x.fixture\n",
                "line 2: include x.fixture: `include` works only in fixture files",
            ),
            ("# nothing\n", "no `dump` lines"),
        ];
        for (text, want) in cases {
            let err = parse_fixture(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: got {err:?}");
        }
    }

    #[test]
    fn fixture_replays_with_the_request_sequence() {
        let mut datagram = crate::kernel::parse::tests::nlmsg(3, 2, 41, 0, &0i32.to_ne_bytes());
        datagram.extend(crate::kernel::parse::tests::nlmsg(
            3,
            2,
            40,
            0,
            &0i32.to_ne_bytes(),
        ));
        let mut fixture = Fixture::new(vec![RecordedDump {
            request: DumpRequest::Legacy,
            seq: 41,
            steps: vec![Step::Datagram(datagram)],
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
            steps: vec![Step::Datagram(vec![0; 100])],
        }]);
        fixture.send(&DumpRequest::Legacy.encode(1)).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(fixture.recv(&mut buf).unwrap(), 100);
    }

    #[test]
    fn fixture_scripts_faults() {
        let text = "dump legacy seq=1 times=2\nrecv 00\nerror ENOBUFS\nerror 4\neof\nhang\nrecv 01\nendless\n";
        let dumps = parse_fixture(text).unwrap();
        assert_eq!(dumps.len(), 2, "times=2 answers two requests");
        assert_eq!(dumps[0], dumps[1]);
        let mut fixture = Fixture::new(dumps);
        let mut buf = [0u8; 4];
        for _ in 0..2 {
            fixture.send(&DumpRequest::Legacy.encode(1)).unwrap();
            assert_eq!(fixture.recv(&mut buf).unwrap(), 1);
            let err = fixture.recv(&mut buf).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS));
            let err = fixture.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted);
            assert_eq!(fixture.recv(&mut buf).unwrap(), 0);
            // `hang` blocks for the recv timeout the collector set.
            fixture.set_recv_timeout(Duration::from_millis(20)).unwrap();
            let started = std::time::Instant::now();
            let err = fixture.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            assert!(started.elapsed() >= Duration::from_millis(20));
            // `endless` repeats the datagram before it.
            for _ in 0..5 {
                assert_eq!(fixture.recv(&mut buf).unwrap(), 1);
                assert_eq!(buf[0], 1);
            }
        }
        assert!(fixture.send(&DumpRequest::Legacy.encode(1)).is_err());
    }

    #[test]
    fn fixture_files_include_others() {
        let dir = std::env::temp_dir().join(format!("sockdiag-include-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("good.fixture"), "dump legacy seq=2\nrecv 02\n").unwrap();
        std::fs::write(
            dir.join("sub/bad.fixture"),
            "dump legacy seq=1 times=2\nerror EINTR\ninclude ../good.fixture times=2\n",
        )
        .unwrap();
        std::fs::write(dir.join("loop.fixture"), "include loop.fixture\n").unwrap();
        let mut fixture = Fixture::load(&dir.join("sub/bad.fixture")).unwrap();
        assert_eq!(fixture.dumps.len(), 4);
        assert_eq!(fixture.dumps[3].steps, vec![Step::Datagram(vec![2])]);
        let mut buf = [0u8; 4];
        for _ in 0..2 {
            fixture.send(&DumpRequest::Legacy.encode(1)).unwrap();
            assert!(fixture.recv(&mut buf).is_err());
        }
        fixture.send(&DumpRequest::Legacy.encode(1)).unwrap();
        assert_eq!(fixture.recv(&mut buf).unwrap(), 1);
        let err = Fixture::load(&dir.join("loop.fixture")).err().unwrap();
        assert!(err.contains("nest deeper than 4"), "{err}");
        std::fs::write(dir.join("after.fixture"), "include good.fixture\nrecv 00\n").unwrap();
        let err = Fixture::load(&dir.join("after.fixture")).err().unwrap();
        assert!(
            err.contains("line 2: `recv` after `include` needs a `dump` line first"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
