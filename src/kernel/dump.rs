//! Driving one netlink dump to its end: sequence numbers, the receive
//! buffer, deadlines, NLM_F_DUMP_INTR retries, a reset after any failure,
//! and the typed error of a failed dump. Each socket message's payload goes
//! to a [`Sink`], the collector's counts.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::kernel::diag::{DumpRequest, INET_DIAG_MSG_LEN, UNIX_DIAG_MSG_LEN};
use crate::kernel::parse::{walk_datagram, Expect, ParseError, Progress};
use crate::kernel::transport::Transport;
use crate::log::{self, Level};

/// Bytes per recv. The kernel fills at most SKB_WITH_OVERHEAD(32768) per
/// dump datagram, so 32 KiB always holds one; MSG_TRUNC catches the rest.
pub const RECV_BUFFER: usize = 32 * 1024;

/// Why a collection failed.
#[derive(Debug)]
pub struct CollectError {
    /// The dump that failed ("legacy", "by-family ipv4", ...).
    pub request: &'static str,
    pub kind: ErrorKind,
}

#[derive(Debug)]
pub enum ErrorKind {
    /// Opening or resetting the netlink socket.
    Open(io::Error),
    Send(io::Error),
    Recv(io::Error),
    /// No complete answer within the deadline.
    Deadline(Duration),
    /// The transport ended before NLMSG_DONE.
    Eof,
    /// A datagram larger than the receive buffer (it was truncated).
    Oversized {
        len: usize,
    },
    Parse(ParseError),
    /// NLM_F_DUMP_INTR on the dump and on its retry.
    Interrupted,
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dump: ", self.request)?;
        match &self.kind {
            ErrorKind::Open(e) => write!(f, "cannot open the NETLINK_SOCK_DIAG socket: {e}"),
            ErrorKind::Send(e) => write!(f, "cannot send the request: {e}"),
            ErrorKind::Recv(e) => write!(f, "cannot receive: {e}"),
            ErrorKind::Deadline(d) => write!(
                f,
                "no complete answer within {}",
                crate::config::format_duration(*d)
            ),
            ErrorKind::Eof => write!(f, "the answer ended before NLMSG_DONE"),
            ErrorKind::Oversized { len } => write!(
                f,
                "a {len}-byte datagram did not fit the {RECV_BUFFER}-byte receive buffer"
            ),
            ErrorKind::Parse(e) => write!(f, "{e}"),
            ErrorKind::Interrupted => write!(
                f,
                "the kernel flagged the dump inconsistent (NLM_F_DUMP_INTR) twice in a row"
            ),
        }
    }
}

impl std::error::Error for CollectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Open(e) | ErrorKind::Send(e) | ErrorKind::Recv(e) => Some(e),
            ErrorKind::Parse(e) => Some(e),
            _ => None,
        }
    }
}

/// What identifies a collector's failure across collections: the dump,
/// the kind of failure and the errno where there is one (offsets and
/// lengths left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorKey {
    request: &'static str,
    kind: std::mem::Discriminant<ErrorKind>,
    parse: Option<std::mem::Discriminant<ParseError>>,
    errno: Option<i32>,
}

impl crate::outcome::Problem for CollectError {
    type Key = ErrorKey;
    fn key(&self) -> ErrorKey {
        let (parse, errno) = match &self.kind {
            ErrorKind::Open(e) | ErrorKind::Send(e) | ErrorKind::Recv(e) => {
                (None, e.raw_os_error())
            }
            ErrorKind::Parse(e) => (
                Some(std::mem::discriminant(e)),
                match e {
                    ParseError::KernelError { errno } | ParseError::DoneError { errno } => {
                        Some(*errno)
                    }
                    _ => None,
                },
            ),
            _ => (None, None),
        };
        ErrorKey {
            request: self.request,
            kind: std::mem::discriminant(&self.kind),
            parse,
            errno,
        }
    }
}

/// Where a dump's sockets go: one stats type per collector.
pub trait Sink {
    /// Forgets the previous collection (before the first dump and a retry).
    fn clear(&mut self);
    /// Folds one socket message's payload (struct and attributes) in.
    fn add(&mut self, payload: &[u8]) -> Result<(), ParseError>;
}

/// Drives dumps through one transport: sequence numbers, the receive
/// buffer, deadlines, DUMP_INTR retries, and a reset after any failure.
pub struct Dumper<T> {
    pub(crate) transport: T,
    buffer: Vec<u8>,
    seq: u32,
    deadline: Duration,
}

impl<T: Transport> Dumper<T> {
    pub fn new(transport: T, deadline: Duration) -> Dumper<T> {
        Dumper {
            transport,
            buffer: vec![0; RECV_BUFFER],
            seq: 0,
            deadline,
        }
    }

    /// Runs every request of `plan` into `sink` (cleared first). If a dump
    /// was flagged NLM_F_DUMP_INTR the whole plan runs once more. On error
    /// the transport is reset, so the next collection starts from a clean
    /// socket.
    pub fn run<S: Sink>(&mut self, plan: &[DumpRequest], sink: &mut S) -> Result<(), CollectError> {
        let result = self.run_inner(plan, sink);
        if let Err(error) = &result {
            self.reset(error);
        }
        result
    }

    fn reset(&mut self, error: &CollectError) {
        if let Err(e) = self.transport.reset() {
            log::log(
                Level::Warn,
                "cannot reset the netlink socket after a failed dump",
                &[("dump_error", error), ("err", &e)],
            );
        }
    }

    fn run_inner<S: Sink>(
        &mut self,
        plan: &[DumpRequest],
        sink: &mut S,
    ) -> Result<(), CollectError> {
        let mut retried = false;
        loop {
            sink.clear();
            let mut interrupted = None;
            for &request in plan {
                if self.dump(request, sink)?.interrupted {
                    interrupted = Some(request);
                }
            }
            match interrupted {
                None => return Ok(()),
                Some(request) if retried => {
                    return Err(CollectError {
                        request: request.name(),
                        kind: ErrorKind::Interrupted,
                    })
                }
                Some(request) => {
                    log::log(
                        Level::Debug,
                        "dump interrupted by table changes (NLM_F_DUMP_INTR); retrying once",
                        &[("dump", &request.name())],
                    );
                    retried = true;
                }
            }
        }
    }

    /// Sends one request and reads its answer to NLMSG_DONE.
    fn dump<S: Sink>(
        &mut self,
        request: DumpRequest,
        sink: &mut S,
    ) -> Result<Progress, CollectError> {
        let fail = |kind| CollectError {
            request: request.name(),
            kind,
        };
        self.seq = self.seq.wrapping_add(1).max(1);
        self.transport
            .send(&request.encode(self.seq))
            .map_err(|e| fail(ErrorKind::Send(e)))?;
        let expect = Expect {
            seq: self.seq,
            port: self.transport.port(),
            data_type: request.response_type(),
            min_payload: match request {
                DumpRequest::Unix => UNIX_DIAG_MSG_LEN,
                _ => INET_DIAG_MSG_LEN,
            },
        };
        let mut progress = Progress::default();
        let started = Instant::now();
        let Dumper {
            transport, buffer, ..
        } = self;
        while !progress.done {
            // Each recv may block only for what is left of the deadline, so
            // a dump that stalls late still ends on time.
            let left = self.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(fail(ErrorKind::Deadline(self.deadline)));
            }
            transport
                .set_recv_timeout(left)
                .map_err(|e| fail(ErrorKind::Recv(e)))?;
            let len = match transport.recv(buffer) {
                Ok(0) => return Err(fail(ErrorKind::Eof)),
                Ok(len) if len > buffer.len() => return Err(fail(ErrorKind::Oversized { len })),
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(fail(ErrorKind::Deadline(self.deadline)))
                }
                Err(e) => return Err(fail(ErrorKind::Recv(e))),
            };
            walk_datagram(&buffer[..len], &expect, &mut progress, |m| sink.add(m))
                .map_err(|e| fail(ErrorKind::Parse(e)))?;
        }
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_reads_as_the_flag_is_written() {
        let e = CollectError {
            request: "tcp",
            kind: ErrorKind::Deadline(Duration::from_millis(90_000)),
        };
        assert_eq!(e.to_string(), "tcp dump: no complete answer within 1m30s");
    }
}
