//! The collection driver: runs the enabled collectors once per collection,
//! each to its own outcome ([`Report`]), the side collectors on a second
//! socket and a scoped thread while the others run on the caller's.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use super::{All, Kind, KindSet, Options, PartMut, SocketCollector, Stats, TcpStats};
use crate::kernel::diag::DumpRequest;
use crate::kernel::dump::{CollectError, Dumper};
use crate::kernel::transport::Transport;
use crate::log::{self, Level};

/// One namespace's counts of every collector, kept between collections
/// apart from any transport or buffer ([`Collector::collect_into`]).
pub struct Counts {
    all: All,
}

impl Counts {
    /// Zero counts for collectors built with `options`.
    pub fn new(options: &Options) -> Counts {
        Counts {
            all: All::new(options),
        }
    }

    /// The counts, as [`Collector::stats`] shows a collector's own.
    pub fn stats<'a>(&'a self, options: &'a Options) -> Stats<'a> {
        self.all.stats(options)
    }
}

/// One collector's outcome in one collection.
#[derive(Debug)]
pub struct Report {
    pub kind: Kind,
    /// Wall-clock start, for the timestamp metric.
    pub started: SystemTime,
    pub duration: Duration,
    pub error: Option<CollectError>,
}

impl Report {
    /// The collector series' view of this outcome.
    pub fn health(&self) -> crate::outcome::Health {
        crate::outcome::Health {
            started: self.started,
            duration: self.duration,
            ok: self.error.is_none(),
        }
    }
}

/// Runs one collector and times it.
fn timed(kind: Kind, run: impl FnOnce() -> Result<(), CollectError>) -> Report {
    let started = SystemTime::now();
    let clock = Instant::now();
    let error = run().err();
    Report {
        kind,
        started,
        duration: clock.elapsed(),
        error,
    }
}

/// The enabled collectors and their latest counts (valid for the collectors
/// whose last report has no error).
///
/// Built with [`Collector::new`], every collector shares one transport and
/// they run one after another. [`Collector::with_side`] gives the side
/// collectors (those whose [`SocketCollector::SIDE`] is set) a transport
/// `S` of their own, and [`Collector::collect`] then runs them on a scoped
/// thread while the others run on the calling thread.
pub struct Collector<T, S = Box<dyn Transport + Send>> {
    dumper: Dumper<T>,
    /// The side collectors' own dumper, if they have a transport of their own.
    side: Option<Dumper<S>>,
    options: Options,
    /// Every collector's counts (and state kept between collections).
    all: All,
}

impl<T: Transport> Collector<T> {
    /// Every collector on `transport`, one after another.
    pub fn new(transport: T, options: Options) -> Collector<T> {
        Collector {
            dumper: Dumper::new(transport, options.deadline),
            side: None,
            all: All::new(&options),
            options,
        }
    }
}

impl<T: Transport, S: Transport + Send> Collector<T, S> {
    /// Gives the side collectors their own transport, which must answer
    /// like the main one (a second netlink socket in the same namespace, or
    /// a second copy of the same fixture). From then on a collection with a
    /// main and a side collector enabled runs the side collectors on a
    /// scoped thread while the main ones run on the caller's (see
    /// [`Options::wants_side`]); otherwise `side` is never used.
    pub fn with_side<S2: Transport + Send>(self, side: S2) -> Collector<T, S2> {
        let deadline = self.options.deadline;
        Collector {
            dumper: self.dumper,
            side: Some(Dumper::new(side, deadline)),
            options: self.options,
            all: self.all,
        }
    }

    /// The main transport: tcp's, and everyone's without a side transport.
    pub fn transport(&self) -> &T {
        &self.dumper.transport
    }

    /// The side collectors' transport, if [`Collector::with_side`] gave one.
    pub fn side_transport(&self) -> Option<&S> {
        self.side.as_ref().map(|side| &side.transport)
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The TCP requests the next collection sends.
    pub fn plan(&self) -> &'static [DumpRequest] {
        self.all.tcp.plan()
    }

    /// The latest counts of every collector.
    pub fn stats(&self) -> Stats<'_> {
        self.all.stats(&self.options)
    }

    /// Runs every enabled collector once, each to its own outcome, and
    /// returns their reports in [`Kind::ALL`] order, each with its own
    /// start and duration.
    ///
    /// With a side transport and both a main and a side collector enabled,
    /// the side collectors run in order on a scoped thread (through the
    /// side transport) while the main ones run on the calling thread; the
    /// thread is joined before this returns, and a panic on it is resumed
    /// here. If the thread cannot be spawned, the collection runs on this
    /// thread after a warning. Otherwise everything runs here, one after
    /// another, through the main transport.
    pub fn collect(&mut self) -> Vec<Report> {
        self.collect_filtered(KindSet::all(), &|_| false)
    }

    /// As [`collect`](Self::collect), but only the enabled collectors in
    /// `only` run and report (a scrape's `collect[]` filter); the others'
    /// counts stay as they were, and have no report this time.
    pub fn collect_only(&mut self, only: KindSet) -> Vec<Report> {
        self.collect_filtered(only, &|_| false)
    }

    /// [`collect`](Self::collect) into `counts` instead of this collector's
    /// own, which are left as they were: one collector (its transport and
    /// receive buffer) serves many sets of counts, as the netns pool's
    /// threads do, one set per namespace.
    ///
    /// A collector for which `empty(kind)` holds is not run: its counts are
    /// cleared, exactly as a dump that found no socket would leave them,
    /// and it reports success. Callers pass what the namespace's own
    /// counters prove empty (`scope::netns_sockstat`).
    /// Only the collectors in `only` run (see [`collect_only`](Self::collect_only)).
    pub fn collect_into(
        &mut self,
        counts: &mut Counts,
        only: KindSet,
        empty: &dyn Fn(Kind) -> bool,
    ) -> Vec<Report> {
        std::mem::swap(&mut self.all, &mut counts.all);
        let reports = self.collect_filtered(only, empty);
        std::mem::swap(&mut self.all, &mut counts.all);
        reports
    }

    /// The transport, to replace it between collections.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.dumper.transport
    }

    fn collect_filtered(&mut self, only: KindSet, empty: &dyn Fn(Kind) -> bool) -> Vec<Report> {
        let Collector {
            dumper,
            side,
            options,
            all,
        } = self;
        let parts: Vec<PartMut<'_>> = all
            .parts()
            .into_iter()
            .filter(|part| options.enabled(part.kind()) && only.contains(part.kind()))
            .collect();
        let mut reports = Vec::with_capacity(Kind::ALL.len());
        let (mut cleared, parts): (Vec<_>, Vec<_>) =
            parts.into_iter().partition(|part| empty(part.kind()));
        for part in &mut cleared {
            reports.push(timed(part.kind(), || {
                part.skip(&mut dumper.transport);
                Ok(())
            }));
        }
        let (mut main, mut beside): (Vec<_>, Vec<_>) =
            parts.into_iter().partition(|part| !part.kind().side());
        let overlap = !main.is_empty() && !beside.is_empty();
        if let Some(side) = side.as_mut().filter(|_| overlap) {
            let split = std::thread::scope(|scope| {
                let thread = std::thread::Builder::new()
                    .name("collect-side".into())
                    .spawn_scoped(scope, || run(&mut beside, side))?;
                let main_reports = run(&mut main, dumper);
                let side_reports = thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                Ok::<_, io::Error>((main_reports, side_reports))
            });
            match split {
                Ok((main_reports, side_reports)) => {
                    reports.extend(main_reports);
                    reports.extend(side_reports);
                    reports.sort_by_key(|report| report.kind);
                    return reports;
                }
                Err(e) => log::log(
                    Level::Warn,
                    "cannot start the side collectors' thread; collecting one after another",
                    &[("err", &e)],
                ),
            }
        }
        reports.extend(run(&mut main, dumper));
        reports.extend(run(&mut beside, dumper));
        reports.sort_by_key(|report| report.kind);
        reports
    }

    /// Runs one collector on the main transport.
    pub fn collect_one(&mut self, kind: Kind) -> Result<(), CollectError> {
        let mut part = self.all.parts().into_iter().find(|p| p.kind() == kind);
        match part.as_mut() {
            Some(part) => part.collect(&mut self.dumper),
            None => Ok(()),
        }
    }

    /// Runs the TCP collector on the main transport, falling back from the
    /// legacy request in auto mode.
    pub fn collect_tcp(&mut self) -> Result<&TcpStats, CollectError> {
        self.all.tcp.collect(&mut self.dumper)?;
        Ok(&self.all.tcp)
    }
}

/// Runs `parts` in order through `dumper`, one timed report each.
fn run<T: Transport>(parts: &mut [PartMut<'_>], dumper: &mut Dumper<T>) -> Vec<Report> {
    parts
        .iter_mut()
        .map(|part| timed(part.kind(), || part.collect(dumper)))
        .collect()
}
