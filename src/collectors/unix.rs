//! The `unix` collector: unix domain sockets by type and state, queue
//! sums, and listeners by path (abstract and unnamed ones summed) with
//! their accept queues, named paths capped at
//! `--collector.unix.max-listeners` and the rest summed as `@other`. One
//! unix_diag dump with names and queue lengths.

use std::collections::HashMap;

use super::{Options, SocketCollector, SERIES_DROPPED};
use crate::cap;
use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{
    meminfo, Attributes, DumpRequest, UnixDiagMsg, UnixState, UnixType, UNIX_DIAG_NAME,
    UNIX_DIAG_RQLEN,
};
use crate::kernel::dump::{CollectError, Dumper, Sink};
use crate::kernel::parse::ParseError;
use crate::kernel::transport::Transport;
use crate::table::{columns, fullest, row};

pub(super) const UNIX: &[DumpRequest] = &[DumpRequest::Unix];

/// Per-type, per-state values for unix sockets.
pub type UnixByState = [[u64; UnixState::COUNT]; UnixType::COUNT];

/// How a unix listener is named in its series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixName {
    /// A filesystem path (lossy UTF-8 for the label).
    Path(Vec<u8>),
    /// Any abstract name: aggregated into one series.
    Abstract,
    /// No name at all: aggregated into one series.
    Unnamed,
}

impl UnixName {
    /// The `path` label value: the path, or `@abstract` / `@unnamed`. A
    /// relative path (bound relative to the binder's working directory) gets
    /// a `./` prefix, so no path can read like one of the `@` names.
    pub fn label(&self) -> String {
        match self {
            UnixName::Path(p) if p.starts_with(b"/") => String::from_utf8_lossy(p).into_owned(),
            UnixName::Path(p) => format!("./{}", String::from_utf8_lossy(p)),
            UnixName::Abstract => "@abstract".into(),
            UnixName::Unnamed => "@unnamed".into(),
        }
    }
}

/// One unix listener (summed if several share a name).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnixListener {
    /// Connections waiting for accept().
    pub queue: u64,
    /// The backlog limit.
    pub max: u64,
    pub sockets: u64,
}

/// Unix sockets by type and state, queue sums and listeners.
#[derive(Debug, Default, Clone)]
pub struct UnixStats {
    pub sockets: UnixByState,
    /// Bytes waiting to be read (for dgram: the first datagram's length
    /// only, which is what the kernel reports), over non-listening sockets.
    pub receive_queue_bytes: UnixByState,
    /// Send memory not yet consumed by the peer (sk_wmem_alloc), over
    /// non-listening sockets.
    pub send_queue_bytes: UnixByState,
    /// Keyed by path; b"\0" collects every abstract name, b"" unnamed ones.
    listeners: HashMap<Vec<u8>, UnixListener>,
}

impl UnixStats {
    /// Zeroes everything. Listener names seen last time keep their entry
    /// (zeroed) for one more collection so that a steady set of listeners
    /// allocates nothing; names gone for a whole collection are dropped.
    pub fn clear(&mut self) {
        self.sockets = UnixByState::default();
        self.receive_queue_bytes = UnixByState::default();
        self.send_queue_bytes = UnixByState::default();
        self.listeners.retain(|_, l| l.sockets > 0);
        self.listeners
            .values_mut()
            .for_each(|l| *l = UnixListener::default());
    }

    /// Folds one unix socket (with UNIX_DIAG_NAME and UNIX_DIAG_RQLEN) in.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let msg = UnixDiagMsg::new(payload).ok_or(ParseError::ShortSocket {
            offset: 0,
            payload: payload.len(),
            needed: crate::kernel::diag::UNIX_DIAG_MSG_LEN,
        })?;
        let kind = UnixType::from_kernel(msg.kind())
            .ok_or(ParseError::UnknownUnixType { kind: msg.kind() })?;
        let state = UnixState::from_kernel(msg.state())
            .ok_or(ParseError::UnknownUnixState { state: msg.state() })?;
        let mut name: Option<&[u8]> = None;
        let mut queues: Option<(u32, u32)> = None;
        for attribute in Attributes::new(&payload[crate::kernel::diag::UNIX_DIAG_MSG_LEN..]) {
            match attribute.map_err(ParseError::Attribute)? {
                (UNIX_DIAG_NAME, bytes) => name = Some(bytes),
                (UNIX_DIAG_RQLEN, bytes) => {
                    queues = Some((
                        meminfo(bytes, 0).ok_or(ParseError::MissingAttribute {
                            name: "UNIX_DIAG_RQLEN",
                        })?,
                        meminfo(bytes, 1).ok_or(ParseError::MissingAttribute {
                            name: "UNIX_DIAG_RQLEN",
                        })?,
                    ))
                }
                _ => {}
            }
        }
        let (rqueue, wqueue) = queues.ok_or(ParseError::MissingAttribute {
            name: "UNIX_DIAG_RQLEN",
        })?;
        let (t, s) = (kind as usize, state as usize);
        self.sockets[t][s] += 1;
        if state == UnixState::Listen {
            // Key: the path; b"\0" for every abstract name, b"" for none.
            let key: &[u8] = match name {
                Some([0, ..]) => b"\0",
                None => b"",
                Some(path) => path.strip_suffix(&[0]).unwrap_or(path),
            };
            let listener = match self.listeners.get_mut(key) {
                Some(listener) => listener,
                None => self.listeners.entry(key.to_vec()).or_default(),
            };
            listener.queue += u64::from(rqueue);
            listener.max += u64::from(wqueue);
            listener.sockets += 1;
        } else {
            self.receive_queue_bytes[t][s] += u64::from(rqueue);
            self.send_queue_bytes[t][s] += u64::from(wqueue);
        }
        Ok(())
    }

    /// Listeners with sockets, sorted by name.
    pub fn listeners(&self) -> Vec<(UnixName, UnixListener)> {
        let mut out: Vec<_> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.sockets > 0)
            .map(|(k, v)| {
                let name = match k.as_slice() {
                    b"" => UnixName::Unnamed,
                    b"\0" => UnixName::Abstract,
                    path => UnixName::Path(path.to_vec()),
                };
                (name, *v)
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Sink for UnixStats {
    fn clear(&mut self) {
        UnixStats::clear(self)
    }
    #[inline]
    fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        UnixStats::add(self, payload)
    }
}

/// Labels of the per-state unix series.
const BY_UNIX_STATE: &[&str] = &["type", "state"];

pub static UNIX_SOCKETS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_unix_sockets",
    help: "Unix domain sockets by type and state. Connected counts accepted and connecting sockets and both ends of socketpairs; a connection still waiting in a listener's queue shows as its client socket here and in sockdiag_unix_listen_queue (the kernel does not list the waiting server end).",
    labels: BY_UNIX_STATE,
};

pub static UNIX_RECEIVE_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_unix_receive_queue_bytes",
    help: "Unix receive queues summed over non-listening sockets: unread bytes for stream and seqpacket; for dgram the kernel reports only the first queued datagram's length.",
    labels: BY_UNIX_STATE,
};

pub static UNIX_SEND_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_unix_send_queue_bytes",
    help: "Unix send memory not yet consumed by the receiver, summed over non-listening sockets.",
    labels: BY_UNIX_STATE,
};

pub static UNIX_LISTEN_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_unix_listen_queue",
    help: "Connections waiting for accept() per unix listener path (relative paths as ./path); abstract names are summed as @abstract, unnamed as @unnamed, listeners beyond --collector.unix.max-listeners as @other.",
    labels: &["path"],
};

pub static UNIX_LISTEN_QUEUE_MAX: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_unix_listen_queue_max",
    help: "Accept backlog limit per unix listener path (summed like sockdiag_unix_listen_queue).",
    labels: &["path"],
};

/// The metrics this collector alone produces.
pub static SPECS: &[&Spec] = &[
    &UNIX_SOCKETS,
    &UNIX_RECEIVE_QUEUE,
    &UNIX_SEND_QUEUE,
    &UNIX_LISTEN_QUEUE,
    &UNIX_LISTEN_QUEUE_MAX,
];

impl SocketCollector for UnixStats {
    const NAME: &'static str = "unix";
    const HELP: &'static str = "unix sockets, queues and listeners";
    const SIDE: bool = true;
    fn specs() -> &'static [&'static Spec] {
        SPECS
    }
    fn new(_options: &Options) -> UnixStats {
        UnixStats::default()
    }
    /// Runs its dumps through `dumper` into these counts.
    fn collect<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError> {
        dumper.run(UNIX, self)
    }

    /// Its series for one namespace (`ns`: the `netns` label, if any).
    fn families(&self, options: &Options, out: &mut Families, ns: Ns<'_>) {
        let unix = self;
        for kind in UnixType::ALL {
            for state in UnixState::ALL {
                let labels = &[kind.label(), state.label()];
                let (t, s) = (kind as usize, state as usize);
                out.int(&UNIX_SOCKETS, labels, ns, unix.sockets[t][s]);
                out.int(
                    &UNIX_RECEIVE_QUEUE,
                    labels,
                    ns,
                    unix.receive_queue_bytes[t][s],
                );
                out.int(&UNIX_SEND_QUEUE, labels, ns, unix.send_queue_bytes[t][s]);
            }
        }
        // Named paths compete for the cap, the rest summed as @other; the
        // summed @abstract / @unnamed series are always kept.
        let (paths, summed): (Vec<_>, Vec<_>) = unix
            .listeners()
            .into_iter()
            .partition(|(name, _)| matches!(name, UnixName::Path(_)));
        let capped = cap::first(paths, options.max_unix_listeners).merge_rest(|o, l| {
            o.queue += l.queue;
            o.max += l.max;
        });
        for (name, listener) in summed.iter().chain(&capped.rows) {
            let label = name.label();
            out.int(&UNIX_LISTEN_QUEUE, &[&label], ns, listener.queue);
            out.int(&UNIX_LISTEN_QUEUE_MAX, &[&label], ns, listener.max);
        }
        if let Some(other) = capped.other {
            out.int(&UNIX_LISTEN_QUEUE, &["@other"], ns, other.queue);
            out.int(&UNIX_LISTEN_QUEUE_MAX, &["@other"], ns, other.max);
        }
        let dropped = capped.dropped as u64;
        out.int(&SERIES_DROPPED, &[UNIX_LISTEN_QUEUE.name], ns, dropped);
    }

    fn table(&self, out: &mut String) {
        let mut header = vec!["Unix sockets".to_string()];
        header.extend(UnixState::ALL.map(|s| s.label().to_string()));
        header.extend(["recv bytes", "send bytes"].map(String::from));
        let mut rows = vec![header];
        for kind in UnixType::ALL {
            let t = kind as usize;
            let mut cells = vec![kind.label().to_string()];
            cells.extend(self.sockets[t].iter().map(u64::to_string));
            cells.push(self.receive_queue_bytes[t].iter().sum::<u64>().to_string());
            cells.push(self.send_queue_bytes[t].iter().sum::<u64>().to_string());
            rows.push(cells);
        }
        out.push_str(&columns(&rows, 1));

        out.push('\n');
        let listeners = fullest(
            out,
            "unix listeners",
            self.listeners(),
            |l: &UnixListener| (l.queue, l.max),
        );
        if listeners.is_empty() {
            out.push_str("(no listening unix sockets)\n");
            return;
        }
        let mut rows = vec![row(["path", "queue", "max", "sockets"].map(String::from))];
        for (name, l) in &listeners {
            rows.push(row([
                name.label(),
                l.queue.to_string(),
                l.max.to_string(),
                l.sockets.to_string(),
            ]));
        }
        out.push_str(&columns(&rows, 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse::tests::unix_diag_msg;

    #[test]
    fn unix_counts_types_states_and_listeners() {
        let mut stats = UnixStats::default();
        let (stream, dgram, seqpacket) = (1, 2, 5);
        stats
            .add(&unix_diag_msg(stream, 10, Some(b"/run/a.sock"), 2, 128))
            .unwrap();
        stats
            .add(&unix_diag_msg(stream, 10, Some(b"/run/a.sock"), 1, 64))
            .unwrap();
        stats
            .add(&unix_diag_msg(seqpacket, 10, Some(b"\0abstract"), 1, 8))
            .unwrap();
        stats
            .add(&unix_diag_msg(stream, 10, Some(b"\0other"), 0, 8))
            .unwrap();
        stats.add(&unix_diag_msg(stream, 1, None, 100, 5)).unwrap();
        stats
            .add(&unix_diag_msg(dgram, 7, Some(b"/dev/log"), 30, 0))
            .unwrap();
        let (l, c, u) = (0, 1, 2);
        assert_eq!(stats.sockets[UnixType::Stream as usize][l], 3);
        assert_eq!(stats.sockets[UnixType::Stream as usize][c], 1);
        assert_eq!(stats.sockets[UnixType::Seqpacket as usize][l], 1);
        assert_eq!(stats.sockets[UnixType::Dgram as usize][u], 1);
        assert_eq!(stats.receive_queue_bytes[UnixType::Stream as usize][c], 100);
        assert_eq!(stats.send_queue_bytes[UnixType::Stream as usize][c], 5);
        assert_eq!(stats.receive_queue_bytes[UnixType::Dgram as usize][u], 30);
        // Listener queues stay out of the byte sums.
        assert_eq!(stats.receive_queue_bytes[UnixType::Stream as usize][l], 0);
        let listeners = stats.listeners();
        assert_eq!(listeners.len(), 2);
        assert_eq!(
            listeners[0],
            (
                UnixName::Path(b"/run/a.sock".to_vec()),
                UnixListener {
                    queue: 3,
                    max: 192,
                    sockets: 2
                }
            )
        );
        assert_eq!(listeners[1].0, UnixName::Abstract);
        assert_eq!(listeners[1].1.sockets, 2);
        assert_eq!(listeners[1].0.label(), "@abstract");
        assert_eq!(UnixName::Path(b"@abstract".to_vec()).label(), "./@abstract");
        assert_eq!(UnixName::Path(b"run/x".to_vec()).label(), "./run/x");
        // A listener gone for one collection is forgotten.
        stats.clear();
        assert!(stats.listeners().is_empty());
        stats.clear();
        assert!(stats.listeners.is_empty());
    }

    #[test]
    fn unix_rejects_what_it_cannot_count() {
        let mut stats = UnixStats::default();
        assert_eq!(
            stats.add(&unix_diag_msg(3, 1, None, 0, 0)),
            Err(ParseError::UnknownUnixType { kind: 3 })
        );
        assert_eq!(
            stats.add(&unix_diag_msg(1, 2, None, 0, 0)),
            Err(ParseError::UnknownUnixState { state: 2 })
        );
        let mut no_rqlen = unix_diag_msg(1, 1, None, 0, 0);
        no_rqlen.truncate(16);
        assert_eq!(
            stats.add(&no_rqlen),
            Err(ParseError::MissingAttribute {
                name: "UNIX_DIAG_RQLEN"
            })
        );
        assert_eq!(stats.sockets, UnixByState::default());
    }
}
