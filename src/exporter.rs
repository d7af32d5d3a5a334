//! One collection cycle: collect from the kernel, record the outcome in the
//! metric catalogue, render the text and the summary. Failures become
//! metrics and one log line per distinct error, never a crash.

use std::time::{Duration, Instant};

use crate::collect::{Collector, Kind};
use crate::log::{self, Level};
use crate::metrics::Metrics;
use crate::render;
use crate::transport::Transport;

/// Everything a scrape or a dump serves from one collection.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The Prometheus text exposition.
    pub text: String,
    /// The human summary (`dump --format table`, landing page).
    pub summary: String,
    /// When the collection started (monotonic, for the cache).
    pub started: Instant,
    pub duration: Duration,
    /// Every enabled collector succeeded.
    pub success: bool,
}

pub struct Exporter<T> {
    collector: Collector<T>,
    metrics: Metrics,
    /// Each collector's last error, so a persistent fault logs once, not
    /// per scrape, and recovery is logged once too.
    last_errors: Vec<(Kind, String)>,
    /// Log failures (the server) or leave them to the caller (`dump`).
    log_failures: bool,
}

impl<T: Transport> Exporter<T> {
    pub fn new(collector: Collector<T>, metrics: Metrics) -> Exporter<T> {
        Exporter {
            collector,
            metrics,
            last_errors: Vec::new(),
            log_failures: true,
        }
    }

    /// For callers that report the error themselves.
    pub fn quiet(mut self) -> Exporter<T> {
        self.log_failures = false;
        self
    }

    /// The errors of the last collection (`collector: error; ...`), if any
    /// collector failed.
    pub fn last_error(&self) -> Option<String> {
        if self.last_errors.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .last_errors
            .iter()
            .map(|(kind, e)| format!("{} collector: {e}", kind.label()))
            .collect();
        Some(parts.join("; "))
    }

    pub fn collector(&self) -> &Collector<T> {
        &self.collector
    }

    /// Runs one collection and renders it.
    pub fn refresh(&mut self) -> Snapshot {
        let started = Instant::now();
        let reports = self.collector.collect();
        let duration = started.elapsed();
        let mut errors = Vec::new();
        for report in &reports {
            let previous = self
                .last_errors
                .iter()
                .find(|(kind, _)| *kind == report.kind)
                .map(|(_, e)| e.as_str());
            match (&report.error, previous) {
                (None, Some(last)) => {
                    log::log(
                        Level::Info,
                        "collection recovered",
                        &[("collector", &report.kind.label()), ("last_err", &last)],
                    );
                }
                (Some(error), previous) => {
                    let message = error.to_string();
                    if self.log_failures && previous != Some(message.as_str()) {
                        log::log(
                            Level::Error,
                            "collection failed; the collector's series are left out until it recovers",
                            &[("collector", &report.kind.label()), ("err", &message)],
                        );
                    }
                    errors.push((report.kind, message));
                }
                (None, None) => {}
            }
        }
        self.last_errors = errors;
        self.metrics.record(self.collector.stats(), &reports);
        let success = self.last_errors.is_empty();
        log::log(
            Level::Debug,
            "collected",
            &[
                ("duration", &format!("{duration:?}")),
                ("success", &success),
            ],
        );
        Snapshot {
            text: self.metrics.encode(),
            summary: render::table(self.collector.stats(), &reports),
            started,
            duration,
            success,
        }
    }
}
