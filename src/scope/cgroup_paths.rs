//! cgroup ids to paths: on cgroup v2 a cgroup's id is the inode number of
//! its directory in the cgroup2 mount (the root cgroup is 1). [`walk`]
//! reads the mount (bounded in depth and entries, using the inode numbers
//! readdir already returns, so no stat per cgroup) into an id -> path map,
//! and [`CgroupPaths`] caches it: rebuilt when an unknown id appears, at
//! most once per collection, and when the mount root's `cgroup.stat`
//! changed (a cgroup was created or removed), so a removed cgroup's id
//! stops mapping to its old path at the next collection. Kept apart from
//! the counting because this is the only part that reads the cgroup tree
//! and keeps state between collections.
//!
//! A wrong path is never emitted: an id is only ever mapped to the path the
//! walk found for exactly that inode.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::PathBuf;

use crate::outcome::OsError;
use crate::scope::cgroup::{Problem, NONE, UNKNOWN};
use crate::scope::cgroup_mount::Cgroup2Mount;

/// Bounds on one walk of the cgroup2 tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Directory levels below the mount root that are walked.
    pub max_depth: usize,
    /// Cgroups recorded at most; the rest map to [`UNKNOWN`].
    pub max_cgroups: usize,
}

impl Default for WalkLimits {
    fn default() -> WalkLimits {
        WalkLimits {
            max_depth: 32,
            max_cgroups: 100_000,
        }
    }
}

/// What one walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkReport {
    pub cgroups: usize,
    /// The walk stopped at a bound: some cgroups were not recorded.
    pub truncated: bool,
    /// Directories below the root that could not be listed (their own
    /// path is recorded, their subtree is not).
    pub unreadable: usize,
    /// The first of them and why, for the log.
    pub unreadable_example: Option<(PathBuf, OsError)>,
}

/// Walks `mount` into id -> path. Cgroups that vanish during the walk are
/// skipped; a directory below the root that cannot be listed (EACCES, say)
/// skips its subtree and is counted in [`WalkReport::unreadable`], and the
/// walk goes on; only failing to read the mount root itself is an error.
pub fn walk(
    mount: &Cgroup2Mount,
    limits: WalkLimits,
) -> io::Result<(HashMap<u64, String>, WalkReport)> {
    let prefix = mount.prefix();
    let root_meta = fs::metadata(&mount.mount_point)?;
    let mut paths = HashMap::new();
    let mut report = WalkReport::default();
    paths.insert(
        root_meta.ino(),
        if prefix.is_empty() { "/" } else { prefix }.to_string(),
    );
    report.cgroups = 1;
    // Depth-first, with an explicit stack: (directory, its label path, depth).
    let mut stack: Vec<(PathBuf, String, usize)> =
        vec![(mount.mount_point.clone(), prefix.to_string(), 0)];
    while let Some((dir, label, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if depth > 0 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if depth > 0 => {
                report.unreadable += 1;
                report
                    .unreadable_example
                    .get_or_insert_with(|| (dir.clone(), (&e).into()));
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            // d_type from readdir: no stat. cgroup2 holds only directories
            // (cgroups) and regular files (interface files).
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            if depth + 1 > limits.max_depth || report.cgroups >= limits.max_cgroups {
                report.truncated = true;
                continue;
            }
            let name = entry.file_name();
            let child = format!("{label}/{}", name.to_string_lossy());
            // kernfs reports the node's id as d_ino, the same number stat
            // and INET_DIAG_CGROUP_ID give.
            paths.insert(entry.ino(), child.clone());
            report.cgroups += 1;
            stack.push((entry.path(), child, depth + 1));
        }
    }
    Ok((paths, report))
}

/// A cached id -> path map for one cgroup2 mount, rebuilt when a socket
/// carries an id the map does not know, at most once per collection.
///
/// kernfs hands out ids cyclically (on 64-bit a wrap count fills the high
/// 32 bits), so ids are not reused (measured here: mkdir/rmdir three times
/// gave 25, 44, 63), and a removed cgroup never comes back. An id still
/// missing after a walk made for it is therefore remembered as unknown and
/// triggers no further walks.
pub struct CgroupPaths {
    mount: Cgroup2Mount,
    limits: WalkLimits,
    paths: HashMap<u64, String>,
    /// Ids not found by a walk made after their socket was dumped.
    unknown: HashSet<u64>,
    generation: u64,
    walked_in: Option<u64>,
    walks: u64,
    walk_failed: bool,
    last: WalkReport,
    problem: Option<Problem>,
    /// The mount root's `cgroup.stat` when the map was walked (None where
    /// the file is missing: kernels before 4.14, or a plain directory).
    stat: Option<Vec<u8>>,
    /// `cgroup.stat` changed since the walk: walk again before answering.
    stale: bool,
}

/// Remembered unknown ids at most; beyond it the set starts over.
const MAX_UNKNOWN: usize = 65_536;

impl CgroupPaths {
    /// An empty map; the first lookup walks the mount.
    pub fn new(mount: Cgroup2Mount, limits: WalkLimits) -> CgroupPaths {
        CgroupPaths {
            mount,
            limits,
            paths: HashMap::new(),
            unknown: HashSet::new(),
            generation: 0,
            walked_in: None,
            walks: 0,
            walk_failed: false,
            last: WalkReport::default(),
            problem: None,
            stat: None,
            stale: false,
        }
    }

    fn read_stat(&self) -> Option<Vec<u8>> {
        fs::read(self.mount.mount_point.join("cgroup.stat")).ok()
    }

    pub fn mount(&self) -> &Cgroup2Mount {
        &self.mount
    }

    /// Call once at the start of every collection: allows one more walk,
    /// and notes (one small read of the mount root's `cgroup.stat`:
    /// `nr_descendants`, `nr_dying_descendants`, ...) whether cgroups were
    /// created or removed since the last walk; if so, the next lookup walks
    /// again.
    pub fn start_collection(&mut self) {
        self.generation += 1;
        if self.walks > 0 && !self.stale && self.read_stat() != self.stat {
            self.stale = true;
        }
    }

    /// The label for a socket's cgroup id: its path, [`NONE`] without an id,
    /// or [`UNKNOWN`]. May walk the tree once per collection.
    pub fn resolve(&mut self, id: Option<u64>) -> &str {
        let Some(id) = id else { return NONE };
        if self.stale && self.walked_in != Some(self.generation) {
            self.refresh();
        }
        if self.paths.contains_key(&id) {
            return &self.paths[&id];
        }
        if self.unknown.contains(&id) || self.walked_in == Some(self.generation) {
            return UNKNOWN;
        }
        self.refresh();
        if let Some(path) = self.paths.get(&id) {
            return path;
        }
        // The walk started after this socket was dumped, so its cgroup, if
        // it still existed and was visible, would have been found. A failed
        // or truncated walk proves nothing.
        if !self.walk_failed && !self.last.truncated && self.last.unreadable == 0 {
            if self.unknown.len() >= MAX_UNKNOWN {
                self.unknown.clear();
            }
            self.unknown.insert(id);
        }
        UNKNOWN
    }

    /// Walks the mount now and replaces the map. On failure the old map is
    /// kept and [`problem`](Self::problem) says why.
    pub fn refresh(&mut self) {
        self.walked_in = Some(self.generation);
        self.walks += 1;
        self.stale = false;
        // Read before walking: a change during the walk shows next time.
        self.stat = self.read_stat();
        let result = walk(&self.mount, self.limits);
        self.walk_failed = result.is_err();
        match result {
            Ok((paths, report)) => {
                // `unknown` stays: ids are not reused, so an id missing from
                // an earlier walk is missing from this one too.
                self.paths = paths;
                self.problem = if report.truncated {
                    Some(Problem::Truncated {
                        mount: self.mount.mount_point.clone(),
                        max_depth: self.limits.max_depth,
                        max_cgroups: self.limits.max_cgroups,
                    })
                } else {
                    report.unreadable_example.clone().map(|(example, error)| {
                        Problem::SubtreesUnreadable {
                            skipped: report.unreadable,
                            example,
                            error,
                        }
                    })
                };
                self.last = report;
            }
            Err(e) => {
                self.problem = Some(Problem::WalkFailed {
                    mount: self.mount.mount_point.clone(),
                    error: (&e).into(),
                });
            }
        }
    }

    /// Why the last walk failed or was incomplete; None when it was whole.
    pub fn problem(&self) -> Option<&Problem> {
        self.problem.as_ref()
    }

    /// Walks done since creation (for tests and a debug log).
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// What the last successful walk found.
    pub fn last_walk(&self) -> &WalkReport {
        &self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_a_directory_tree_by_inode() {
        // Any directory tree works: the walk only reads names and d_ino.
        let dir = std::env::temp_dir().join(format!("sockdiag-cgwalk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for d in ["a/x", "a/y", "b", "c/d/e/f"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::write(dir.join("a/cgroup.procs"), "").unwrap();
        let mount = Cgroup2Mount {
            mount_point: dir.clone(),
            root: "/".into(),
        };
        let ino = |p: &str| fs::metadata(dir.join(p)).unwrap().ino();
        let (paths, report) = walk(&mount, WalkLimits::default()).unwrap();
        assert_eq!(
            report,
            WalkReport {
                cgroups: 9,
                ..WalkReport::default()
            }
        );
        assert_eq!(paths[&fs::metadata(&dir).unwrap().ino()], "/");
        assert_eq!(paths[&ino("a/y")], "/a/y");
        assert_eq!(paths[&ino("c/d/e/f")], "/c/d/e/f");
        assert!(!paths.values().any(|p| p.contains("cgroup.procs")));

        let shallow = WalkLimits {
            max_depth: 2,
            max_cgroups: 100,
        };
        let (paths, report) = walk(&mount, shallow).unwrap();
        assert!(report.truncated);
        assert!(paths.contains_key(&ino("c/d")));
        assert!(!paths.contains_key(&ino("c/d/e")));
        let few = WalkLimits {
            max_depth: 32,
            max_cgroups: 3,
        };
        let (paths, report) = walk(&mount, few).unwrap();
        assert_eq!(
            (paths.len(), report.cgroups, report.truncated),
            (3, 3, true)
        );

        // The cache: one walk per collection at most; an id missing from a
        // walk made for it is remembered as unknown.
        let mut cache = CgroupPaths::new(mount.clone(), WalkLimits::default());
        cache.start_collection();
        assert_eq!(cache.resolve(Some(ino("b"))), "/b");
        assert_eq!(cache.walks(), 1);
        assert_eq!(cache.resolve(None), NONE);
        fs::create_dir(dir.join("b/new")).unwrap();
        assert_eq!(cache.resolve(Some(ino("b/new"))), UNKNOWN, "no second walk");
        assert_eq!(cache.walks(), 1);
        cache.start_collection();
        assert_eq!(cache.resolve(Some(ino("b/new"))), "/b/new");
        assert_eq!(cache.walks(), 2);
        let missing = u64::MAX - 7;
        assert_eq!(cache.resolve(Some(missing)), UNKNOWN);
        assert_eq!(cache.walks(), 2, "already walked this collection");
        cache.start_collection();
        assert_eq!(cache.resolve(Some(missing)), UNKNOWN);
        assert_eq!(cache.walks(), 3, "a walk for the id itself");
        cache.start_collection();
        assert_eq!(cache.resolve(Some(missing)), UNKNOWN);
        assert_eq!(cache.walks(), 3, "known unknown: no more walks");
        assert_eq!(cache.problem(), None);

        fs::remove_dir_all(&dir).unwrap();
        cache.start_collection();
        let gone = u64::MAX - 1;
        assert_eq!(cache.resolve(Some(gone)), UNKNOWN);
        let problem = cache.problem().unwrap().to_string();
        assert!(problem.contains("cannot walk"), "{problem}");
        // A failed walk proves nothing: the id is retried next collection.
        cache.start_collection();
        cache.resolve(Some(gone));
        assert_eq!(cache.walks(), 5);
    }
}
