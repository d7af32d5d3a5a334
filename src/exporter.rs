//! One collection cycle: collect from the kernel, record the outcome in the
//! metric catalogue, render the text and the summary. Failures become
//! metrics and one log line per distinct error, never a crash.

use std::time::{Duration, Instant};

use crate::collect::Kind;
use crate::log::{self, Level};
use crate::metrics::{Metrics, NetnsInfo};
use crate::namespaces::Fleet;
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
    fleet: Fleet<T>,
    metrics: Metrics,
    /// Each collector's last error per namespace label, so a persistent
    /// fault logs once, not per scrape, and recovery is logged once too.
    last_errors: Vec<(String, Kind, String)>,
    /// Log failures (the server) or leave them to the caller (`dump`).
    log_failures: bool,
}

impl<T: Transport> Exporter<T> {
    pub fn new(fleet: Fleet<T>, metrics: Metrics) -> Exporter<T> {
        Exporter {
            fleet,
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
            .map(|(netns, kind, e)| match self.fleet.netns() {
                None => format!("{} collector: {e}", kind.label()),
                Some(_) => format!("{} collector in netns {netns}: {e}", kind.label()),
            })
            .collect();
        Some(parts.join("; "))
    }

    pub fn fleet(&self) -> &Fleet<T> {
        &self.fleet
    }

    /// Runs one collection and renders it.
    pub fn refresh(&mut self) -> Snapshot {
        let started = Instant::now();
        self.fleet.collect();
        let duration = started.elapsed();
        let parts = self.fleet.parts();
        let netns = self.fleet.netns();
        let mut errors = Vec::new();
        for part in &parts {
            for report in part.reports {
                let previous = self
                    .last_errors
                    .iter()
                    .find(|(netns, kind, _)| netns == part.label && *kind == report.kind)
                    .map(|(_, _, e)| e.as_str());
                let collector = report.kind.label();
                let mut fields: Vec<(&str, &dyn std::fmt::Display)> =
                    vec![("collector", &collector)];
                if netns.is_some() {
                    fields.push(("netns", &part.label));
                }
                match (&report.error, previous) {
                    (None, Some(last)) => {
                        fields.push(("last_err", &last));
                        log::log(Level::Info, "collection recovered", &fields);
                    }
                    (Some(error), previous) => {
                        let message = error.to_string();
                        if self.log_failures && previous != Some(message.as_str()) {
                            fields.push(("err", &message));
                            log::log(
                                Level::Error,
                                "collection failed; the collector's series are left out until it recovers",
                                &fields,
                            );
                        }
                        errors.push((part.label.to_string(), report.kind, message));
                    }
                    (None, None) => {}
                }
            }
        }
        self.last_errors = errors;
        self.metrics.begin();
        for part in &parts {
            self.metrics
                .record_namespace(part.label, part.stats, part.reports);
        }
        if let Some(netns) = netns {
            self.metrics.record_global_health("netns", netns.health);
            let infos: Vec<NetnsInfo<'_>> = netns
                .namespaces
                .iter()
                .map(|ns| NetnsInfo {
                    label: &ns.label,
                    inode: ns.inode,
                    lowest_pid: ns.lowest_pid,
                })
                .collect();
            self.metrics
                .record_netns(&infos, netns.skipped, netns.unreadable);
        }
        let success = self.last_errors.is_empty() && netns.map_or(true, |n| n.health.ok);
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
            summary: render::summary(&parts, netns),
            started,
            duration,
            success,
        }
    }
}
