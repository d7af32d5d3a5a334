//! One collection cycle: collect from the kernel, record the outcome in the
//! metric catalogue, render the text and the summary. Failures become
//! metrics and one log line per distinct error, never a crash.

use std::time::{Duration, Instant, SystemTime};

use crate::collect::Collector;
use crate::log::{self, Level};
use crate::metrics::{Metrics, Outcome};
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
    pub success: bool,
}

pub struct Exporter<T> {
    collector: Collector<T>,
    metrics: Metrics,
    /// The last error, so a persistent fault logs once, not per scrape.
    last_error: Option<String>,
    /// Log failures (the server) or leave them to the caller (`dump`).
    log_failures: bool,
}

impl<T: Transport> Exporter<T> {
    pub fn new(collector: Collector<T>, metrics: Metrics) -> Exporter<T> {
        Exporter {
            collector,
            metrics,
            last_error: None,
            log_failures: true,
        }
    }

    /// For callers that report the error themselves.
    pub fn quiet(mut self) -> Exporter<T> {
        self.log_failures = false;
        self
    }

    /// The error of the last collection, if it failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn collector(&self) -> &Collector<T> {
        &self.collector
    }

    /// Runs one collection and renders it.
    pub fn refresh(&mut self) -> Snapshot {
        let wall = SystemTime::now();
        let started = Instant::now();
        let result = self.collector.collect();
        let duration = started.elapsed();
        let (summary, success) = match result {
            Ok(stats) => {
                self.metrics.record(&Outcome {
                    stats: Some(stats),
                    started: wall,
                    duration,
                });
                if let Some(error) = self.last_error.take() {
                    log::log(Level::Info, "collection recovered", &[("last_err", &error)]);
                }
                (render::table(stats), true)
            }
            Err(error) => {
                self.metrics.record(&Outcome {
                    stats: None,
                    started: wall,
                    duration,
                });
                let message = error.to_string();
                if self.log_failures && self.last_error.as_deref() != Some(message.as_str()) {
                    log::log(
                        Level::Error,
                        "collection failed; socket series are left out until it recovers",
                        &[("collector", &"tcp"), ("err", &message)],
                    );
                }
                self.last_error = Some(message.clone());
                (format!("collection failed: {message}\n"), false)
            }
        };
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
            summary,
            started,
            duration,
            success,
        }
    }
}
