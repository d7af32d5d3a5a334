//! Outcomes of the steps of a collection (each collector in each
//! namespace, network namespace discovery, cgroup attribution), and the one
//! place that logs their problems: a problem once when it appears, and the
//! recovery once when the step has none left.
//!
//! Problems are typed. Whether this collection's problem is the one logged
//! last time is decided by [`Problem::key`], which names the problem and
//! leaves out what changes from one collection to the next (counts, the
//! example path): a persistent problem is logged once, not once per scrape,
//! and no error is ever compared by its text.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use crate::log::{self, Level};

/// An OS error as a problem keeps it: its errno (for identity) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    pub errno: Option<i32>,
    pub text: String,
}

impl From<&io::Error> for OsError {
    fn from(e: &io::Error) -> OsError {
        OsError {
            errno: e.raw_os_error(),
            text: e.to_string(),
        }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One step's health in one collection, for the collector series
/// (`sockdiag_collect_success`, `_duration_seconds`, `_timestamp_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// Wall-clock start, for the timestamp metric.
    pub started: SystemTime,
    pub duration: Duration,
    pub ok: bool,
}

/// A typed problem of one step.
pub trait Problem: fmt::Display {
    /// What identifies the problem across collections.
    type Key: PartialEq + Clone + fmt::Debug;
    fn key(&self) -> Self::Key;
}

/// What one step logged last, so each problem is logged once and the
/// recovery once.
#[derive(Debug)]
pub struct LogOnce<K> {
    /// The problems logged, with their text for the recovery line.
    logged: Vec<(K, String)>,
}

impl<K> Default for LogOnce<K> {
    fn default() -> LogOnce<K> {
        LogOnce { logged: Vec::new() }
    }
}

/// How a step's problems and recovery read in the log.
pub struct Lines<'a> {
    /// Level and message of a new problem (the problem is the `field`).
    pub problem: (Level, &'a str),
    /// The field name the problem is logged under.
    pub field: &'a str,
    /// Message once the step has no problem left.
    pub recovered: &'a str,
    /// Field name of the last problem on the recovery line, if it is shown.
    pub last: Option<&'a str>,
}

impl<K: PartialEq + Clone + fmt::Debug> LogOnce<K> {
    /// Logs every problem whose key was not logged last time (when `log`
    /// is set), and the recovery when `problems` is empty after it was not.
    /// `fields` go on every line (collector, netns). Returns whether
    /// anything was logged.
    pub fn update<P: Problem<Key = K>>(
        &mut self,
        problems: &[P],
        lines: &Lines<'_>,
        fields: &[(&str, &dyn fmt::Display)],
        log: bool,
    ) -> bool {
        let mut wrote = false;
        let now: Vec<(K, String)> = problems.iter().map(|p| (p.key(), p.to_string())).collect();
        if now.is_empty() {
            if let Some((_, last)) = self.logged.last() {
                let mut all = fields.to_vec();
                if let Some(name) = lines.last {
                    all.push((name, last));
                }
                log::log(Level::Info, lines.recovered, &all);
                wrote = true;
            }
        } else if log {
            for (key, text) in &now {
                if self.logged.iter().any(|(k, _)| k == key) {
                    continue;
                }
                let mut all = fields.to_vec();
                all.push((lines.field, text));
                log::log(lines.problem.0, lines.problem.1, &all);
                wrote = true;
            }
        }
        self.logged = now;
        wrote
    }

    /// Whether the last update had problems.
    pub fn failing(&self) -> bool {
        !self.logged.is_empty()
    }

    /// The text of the last update's problems.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.logged.iter().map(|(_, t)| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A problem whose count changes while it persists.
    struct Denied {
        path: &'static str,
        count: u32,
    }
    impl fmt::Display for Denied {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} denied {} times", self.path, self.count)
        }
    }
    impl Problem for Denied {
        type Key = &'static str;
        fn key(&self) -> &'static str {
            self.path
        }
    }

    const LINES: Lines<'static> = Lines {
        problem: (Level::Warn, "step failed"),
        field: "problem",
        recovered: "step recovered",
        last: Some("last_err"),
    };

    #[test]
    fn a_problem_is_logged_once_whatever_its_counts_and_recovery_once() {
        let mut once = LogOnce::default();
        let p = |path, count| Denied { path, count };
        assert!(once.update(&[p("/a", 1)], &LINES, &[], true));
        assert!(!once.update(&[p("/a", 2)], &LINES, &[], true), "same key");
        assert!(
            once.update(&[p("/a", 3), p("/b", 1)], &LINES, &[], true),
            "new key"
        );
        assert!(once.failing());
        assert_eq!(
            once.texts().collect::<Vec<_>>(),
            ["/a denied 3 times", "/b denied 1 times"]
        );
        assert!(once.update::<Denied>(&[], &LINES, &[], true), "recovery");
        assert!(
            !once.update::<Denied>(&[], &LINES, &[], true),
            "recovered once"
        );
        assert!(!once.failing());
    }

    #[test]
    fn a_quiet_step_logs_no_problem_but_remembers_it() {
        let mut once = LogOnce::default();
        let p = Denied {
            path: "/a",
            count: 1,
        };
        assert!(!once.update(std::slice::from_ref(&p), &LINES, &[], false));
        assert!(once.failing());
        assert!(!once.update(&[p], &LINES, &[], true), "already known");
    }
}
