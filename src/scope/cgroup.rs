//! cgroup v2 attribution: from the INET_DIAG_CGROUP_ID a socket carries to a
//! path such as `/system.slice/nginx.service`, with bounded cardinality.
//! This module holds what its three stages share, the label values, the
//! root cgroup's id and the typed [`Problem`]; each stage is a module of
//! its own, tested on its own (mountinfo fixture text, a directory tree
//! standing in for the mount):
//!
//! * [`cgroup_mount`](super::cgroup_mount) finds the cgroup2 mount in
//!   /proc/self/mountinfo (hybrid hosts mount it at /sys/fs/cgroup/unified,
//!   pure v2 hosts at /sys/fs/cgroup).
//! * [`cgroup_paths`](super::cgroup_paths): on cgroup v2 a cgroup's id is the
//!   inode number of its directory in that mount (the root cgroup is 1), so
//!   a bounded walk of the mount maps ids to paths; the map is cached and
//!   walked again when an unknown id appears or a cgroup was created or
//!   removed, at most once per collection.
//! * [`cgroup_attribution`](super::cgroup_attribution) aggregates to a path
//!   prefix (`--collector.cgroup.depth`, `truncate_path`) and applies the
//!   series cap ([`crate::cap::heaviest_with_bucket`]), which keeps the
//!   heaviest keys, summing the rest into [`OTHER`]. Its `Attribution` puts
//!   the stages together for the exporter: once per collection it turns the
//!   per-id counts of `TcpStats::by_cgroup` into capped rows keyed by label.
//!
//! Depth (`--collector.cgroup.depth N`): 0, the default, keeps every path
//! whole; N >= 1 keeps the first N components, so depth 1 folds
//! `/system.slice/nginx.service` into `/system.slice` and depth 3 of a
//! kubepods path stops at the pod's slice. Sockets whose paths become equal
//! are summed. The root cgroup is `/` at any depth.
//!
//! Label values that are not paths never start with `/`, so they cannot
//! collide with a real cgroup:
//!
//! | value      | meaning |
//! |------------|---------|
//! | `/...`     | the cgroup's path relative to the cgroup2 root (`/` is the root cgroup) |
//! | [`NONE`]   | the socket carried no cgroup id: TIME_WAIT and request (SYN_RECV) sockets never do, and neither does any socket on kernels that do not send INET_DIAG_CGROUP_ID |
//! | [`UNKNOWN`]| the id is not in the cgroup2 tree even after a fresh walk: the cgroup was removed while the socket lived on, it lies outside the part of the hierarchy this mount shows (a cgroup namespace or subtree mount), or the walk hit its bounds |
//! | [`OTHER`]  | beyond the series cap: the sum of every cgroup that was cut |
//!
//! The cap counts path rows, [`OTHER`] included; [`NONE`] and [`UNKNOWN`]
//! are never cut, so they always tell how much could not be attributed.

use std::fmt;
use std::path::PathBuf;
#[cfg(any(test, feature = "testing"))]
use std::{fs, io};

use crate::outcome::OsError;

/// Sockets that carried no cgroup id (TIME_WAIT, request sockets).
pub const NONE: &str = "none";
/// Sockets whose cgroup id is not in the cgroup2 tree (see the module doc).
pub const UNKNOWN: &str = "unknown";
/// The sum of the cgroups cut by the series cap.
pub const OTHER: &str = "other";

/// Why cgroup attribution is missing or incomplete. Typed, so that a
/// problem that persists is logged once ([`crate::outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No usable cgroup2 mount; the text says why.
    NoMount(String),
    /// The mount's top is not the hierarchy's root although mountinfo says
    /// it is: a cgroup namespace, where paths cannot be told.
    NotRoot { mount: PathBuf, inode: u64 },
    /// The mount point could not be read.
    Unreadable { mount: PathBuf, error: OsError },
    /// The kernel sent no INET_DIAG_CGROUP_ID for any socket.
    NoIds { sockets: u64 },
    /// The tree exceeds the walk bounds.
    Truncated {
        mount: PathBuf,
        max_depth: usize,
        max_cgroups: usize,
    },
    /// The walk failed.
    WalkFailed { mount: PathBuf, error: OsError },
    /// Directories the walk could not list; their subtrees were skipped.
    SubtreesUnreadable {
        skipped: usize,
        example: PathBuf,
        error: OsError,
    },
}

impl crate::outcome::Problem for Problem {
    type Key = (std::mem::Discriminant<Problem>, Option<i32>);
    fn key(&self) -> Self::Key {
        let errno = match self {
            Problem::Unreadable { error, .. }
            | Problem::WalkFailed { error, .. }
            | Problem::SubtreesUnreadable { error, .. } => error.errno,
            _ => None,
        };
        (std::mem::discriminant(self), errno)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoMount(why) => f.write_str(why),
            Problem::NotRoot { mount, inode } => write!(
                f,
                "the cgroup2 mount at {} is not the root of the hierarchy (inode {inode}, not {ROOT_CGROUP_ID}): \
                 the exporter runs in a cgroup namespace, where paths cannot be told; mount the host's \
                 /sys/fs/cgroup into it",
                mount.display()
            ),
            Problem::Unreadable { mount, error } => {
                write!(f, "cannot read the cgroup2 mount {}: {error}", mount.display())
            }
            Problem::NoIds { sockets } => write!(
                f,
                "the kernel sent no INET_DIAG_CGROUP_ID for any of {sockets} sockets \
                 (it needs Linux 5.7 or later with cgroup v2); no per-cgroup series"
            ),
            Problem::Truncated {
                mount,
                max_depth,
                max_cgroups,
            } => write!(
                f,
                "the cgroup2 tree at {} exceeds the walk bounds (depth {max_depth}, {max_cgroups} cgroups); \
                 sockets of the cgroups left out are counted as `{UNKNOWN}`",
                mount.display()
            ),
            Problem::WalkFailed { mount, error } => {
                write!(f, "cannot walk the cgroup2 mount {}: {error}", mount.display())
            }
            Problem::SubtreesUnreadable {
                skipped,
                example,
                error,
            } => write!(
                f,
                "cannot list {skipped} cgroup directories (for example {}: {error}); their subtrees \
                 were skipped and their sockets are counted as `{UNKNOWN}`",
                example.display()
            ),
        }
    }
}

/// The root cgroup's id (and its directory's inode) on cgroup v2.
pub const ROOT_CGROUP_ID: u64 = 1;

/// Reads the cgroup v2 path of a process from /proc/PID/cgroup (the `0::`
/// line), for tests and diagnostics.
#[cfg(any(test, feature = "testing"))]
pub fn process_cgroup(pid: u32) -> io::Result<Option<String>> {
    let text = fs::read_to_string(
        std::path::Path::new("/proc")
            .join(pid.to_string())
            .join("cgroup"),
    )?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string))
}
