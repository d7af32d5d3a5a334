//! Why the network namespaces collected may not be all of them, as one
//! typed [`Problem`]: discovery (an unreadable /run/netns or /proc, other
//! users' processes denied), privileges (no CAP_SYS_ADMIN or
//! CAP_SYS_PTRACE, a pid namespace of its own), namespaces that cannot be
//! entered, the `--collector.netns.max` limit and the
//! `--collector.netns.budget`. One type for all of them,
//! apart from the code that finds each, so that discovery and the
//! per-namespace fleet (`scope::namespaces`) report the same kinds and each
//! is logged once while it persists ([`crate::outcome`]).

use std::fmt;
use std::path::PathBuf;

use crate::outcome::OsError;

/// Why the namespaces collected may not be all of them. Typed, so that a
/// problem that persists is logged once ([`crate::outcome`]) however its
/// counts change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The own namespace file could not be read.
    OwnUnidentified { path: PathBuf, error: OsError },
    /// The directory of named namespaces could not be listed.
    NamedUnlisted { dir: PathBuf, error: OsError },
    /// A named namespace could not be opened.
    NamedUnopened { path: PathBuf, error: OsError },
    /// The proc mount could not be listed.
    ProcessesUnlisted { dir: PathBuf, error: OsError },
    /// Other processes' namespaces could not be read for lack of permission.
    ProcessesDenied {
        denied: usize,
        seen: usize,
        example: PathBuf,
    },
    /// No CAP_SYS_ADMIN: nothing can be entered.
    NoSysAdmin,
    /// No CAP_SYS_PTRACE: other users' processes may be hidden.
    NoPtrace,
    /// In a pid namespace of its own: only its own processes are visible.
    OwnPidNamespace,
    /// Namespaces that could not be entered (one problem for all of them).
    CannotEnter {
        refused: usize,
        others: usize,
        example: String,
        error: OsError,
    },
    /// Namespaces beyond `--collector.netns.max`.
    OverLimit { skipped: usize, limit: usize },
    /// Namespaces not reached within `--collector.netns.budget`.
    OverBudget {
        unreached: usize,
        budget: std::time::Duration,
    },
}

/// A [`Problem`]'s identity: which problem, on which path, with which errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemKey {
    kind: std::mem::Discriminant<Problem>,
    path: Option<PathBuf>,
    errno: Option<i32>,
}

impl crate::outcome::Problem for Problem {
    type Key = ProblemKey;
    fn key(&self) -> ProblemKey {
        let (path, errno) = match self {
            Problem::OwnUnidentified { path, error }
            | Problem::NamedUnlisted { dir: path, error }
            | Problem::NamedUnopened { path, error }
            | Problem::ProcessesUnlisted { dir: path, error } => (Some(path.clone()), error.errno),
            Problem::CannotEnter { error, .. } => (None, error.errno),
            _ => (None, None),
        };
        ProblemKey {
            kind: std::mem::discriminant(self),
            path,
            errno,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::OwnUnidentified { path, error } => write!(
                f,
                "cannot identify the own network namespace ({}): {error}",
                path.display()
            ),
            Problem::NamedUnlisted { dir, error } => write!(
                f,
                "cannot list named network namespaces in {}: {error}",
                dir.display()
            ),
            Problem::NamedUnopened { path, error } => write!(
                f,
                "cannot open named network namespace {}: {error}",
                path.display()
            ),
            Problem::ProcessesUnlisted { dir, error } => {
                write!(f, "cannot list processes in {}: {error}", dir.display())
            }
            Problem::ProcessesDenied {
                denied,
                seen,
                example,
            } => write!(
                f,
                "permission denied reading the network namespace of {denied} of {seen} processes \
                 (for example {}): namespaces held only by other users' processes are not found; \
                 run as root (CAP_SYS_PTRACE reads them, CAP_SYS_ADMIN enters them)",
                example.display()
            ),
            Problem::NoSysAdmin => f.write_str(
                "no CAP_SYS_ADMIN: other network namespaces cannot be entered; only the own one is collected",
            ),
            Problem::NoPtrace => f.write_str(
                "no CAP_SYS_PTRACE: other users' processes, and the namespaces only they hold, may be hidden or unreadable",
            ),
            Problem::OwnPidNamespace => f.write_str(
                "the exporter runs in a pid namespace of its own (a container without hostPID): only the namespaces of its own processes are visible",
            ),
            Problem::CannotEnter {
                refused,
                others,
                example,
                error,
            } => write!(
                f,
                "cannot enter {refused} of {others} other network namespaces (for example {example}: {error}); \
                 their sockets are not collected"
            ),
            Problem::OverLimit { skipped, limit } => write!(
                f,
                "{skipped} network namespaces beyond --collector.netns.max={limit} are not collected"
            ),
            Problem::OverBudget { unreached, budget } => write!(
                f,
                "--collector.netns.budget={budget:?} ran out before {unreached} network namespaces were reached; \
                 they keep the series of their last collection and are collected first next time \
                 (raise --collector.netns.budget or --collector.netns.parallel)"
            ),
        }
    }
}
