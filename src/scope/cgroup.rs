//! cgroup v2 attribution: from the INET_DIAG_CGROUP_ID a socket carries to a
//! path such as `/system.slice/nginx.service`, with bounded cardinality.
//!
//! * [`detect`] finds the cgroup2 mount in /proc/self/mountinfo (hybrid hosts
//!   mount it at /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup).
//!   The mountinfo parser is pure and tested on fixture text.
//! * On cgroup v2 a cgroup's id is the inode number of its directory in that
//!   mount (the root cgroup is 1). [`CgroupPaths`] walks the mount (bounded in
//!   depth and entries, using the inode numbers readdir already returns, so
//!   no stat per cgroup) into an id -> path map, and rebuilds it when an
//!   unknown id appears, at most once per collection.
//!   The walk is also redone when the mount root's `cgroup.stat` changed
//!   (a cgroup was created or removed), so a removed cgroup's id stops
//!   mapping to its old path at the next collection.
//! * [`truncate_path`] aggregates to a path prefix (`--collector.cgroup.depth`)
//!   and the series cap ([`crate::cap::heaviest_with_bucket`]) keeps the
//!   heaviest keys, summing the rest into [`OTHER`].
//! * [`Attribution`] puts these together for the exporter: once per
//!   collection it turns the per-id counts of `TcpStats::by_cgroup` into
//!   capped rows keyed by label.
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
//!
//! A wrong path is never emitted: an id is only ever mapped to the path the
//! walk found for exactly that inode.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::PathBuf;

use crate::cap;
use crate::outcome::OsError;

/// Sockets that carried no cgroup id (TIME_WAIT, request sockets).
pub const NONE: &str = "none";
/// Sockets whose cgroup id is not in the cgroup2 tree (see the module doc).
pub const UNKNOWN: &str = "unknown";
/// The sum of the cgroups cut by the series cap.
pub const OTHER: &str = "other";

// ---------------------------------------------------------------------------
// /proc/self/mountinfo
// ---------------------------------------------------------------------------

/// One line of /proc/PID/mountinfo (proc(5)), with the octal escapes
/// (`\040` space, `\011` tab, `\012` newline, `\134` backslash) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    /// The path inside the filesystem that is mounted (`/` for all of it).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// Parses one mountinfo line:
/// `36 35 98:0 /root /mnt opts [optional fields...] - fstype source superopts`.
/// The optional fields are any number of words up to the lone `-`.
pub fn parse_mountinfo_line(line: &str) -> Result<MountInfo, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let bad = |why: &str| format!("bad mountinfo line ({why}): {line:?}");
    if fields.len() < 10 {
        return Err(bad("fewer than 10 fields"));
    }
    let mount_id = fields[0]
        .parse()
        .map_err(|_| bad("mount id is not a number"))?;
    let separator = fields[6..]
        .iter()
        .position(|f| *f == "-")
        .map(|i| i + 6)
        .ok_or_else(|| bad("no ` - ` separator"))?;
    if fields.len() < separator + 3 {
        return Err(bad("fewer than 3 fields after ` - `"));
    }
    Ok(MountInfo {
        mount_id,
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        fstype: unescape(fields[separator + 1]),
        source: unescape(fields[separator + 2]),
    })
}

/// Decodes mountinfo's `\ooo` octal escapes; anything else is kept as is.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = &bytes[i + 1..(i + 4).min(bytes.len())];
            if digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where cgroup v2 is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// The mounted part of the hierarchy, prefixed to every path when it is
    /// a clean absolute path (a subtree bind mount); ignored when it leaves
    /// the cgroup namespace root (`/..`), where no global path is known.
    pub root: String,
}

impl Cgroup2Mount {
    /// The prefix for paths under this mount: "" for the whole hierarchy.
    fn prefix(&self) -> &str {
        let root = self.root.trim_end_matches('/');
        if root.is_empty() || !root.starts_with('/') || root.split('/').any(|c| c == "..") {
            ""
        } else {
            root
        }
    }
}

/// Finds the cgroup2 mount in mountinfo text. A mount of the whole
/// hierarchy (root `/`) wins over subtree mounts; among equals, the first.
/// Err is the problem to report: no cgroup2 mount, or an unparsable line.
pub fn find_cgroup2(mountinfo: &str) -> Result<Cgroup2Mount, String> {
    let mut best: Option<MountInfo> = None;
    for line in mountinfo.lines().filter(|l| !l.trim().is_empty()) {
        let mount = parse_mountinfo_line(line)?;
        if mount.fstype != "cgroup2" {
            continue;
        }
        let whole = mount.root == "/";
        match &best {
            Some(b) if b.root == "/" || !whole => {}
            _ => best = Some(mount),
        }
    }
    best.map(|m| Cgroup2Mount {
        mount_point: PathBuf::from(m.mount_point),
        root: m.root,
    })
    .ok_or_else(|| {
        "no cgroup2 filesystem is mounted (no `cgroup2` line in /proc/self/mountinfo); \
         socket cgroup ids cannot be mapped to paths"
            .to_string()
    })
}

/// Reads /proc/self/mountinfo and finds the cgroup2 mount.
pub fn detect() -> Result<Cgroup2Mount, String> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    find_cgroup2(&text)
}

// ---------------------------------------------------------------------------
// id -> path
// ---------------------------------------------------------------------------

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkReport {
    pub cgroups: usize,
    /// The walk stopped at a bound: some cgroups were not recorded.
    pub truncated: bool,
}

/// Walks `mount` into id -> path. Cgroups that vanish during the walk are
/// skipped; only failing to read the mount root itself is an error.
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
        if !self.walk_failed && !self.last.truncated {
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
                self.last = report;
                self.problem = report.truncated.then(|| Problem::Truncated {
                    mount: self.mount.mount_point.clone(),
                    max_depth: self.limits.max_depth,
                    max_cgroups: self.limits.max_cgroups,
                });
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
    pub fn last_walk(&self) -> WalkReport {
        self.last
    }
}

// ---------------------------------------------------------------------------
// Cardinality
// ---------------------------------------------------------------------------

/// Keeps the first `depth` components of a cgroup path: depth 1 of
/// `/system.slice/nginx.service` is `/system.slice`, depth 0 is `/`. Values
/// that are not paths ([`NONE`], [`UNKNOWN`]) are returned unchanged. A
/// depth of `usize::MAX` keeps every path whole.
pub fn truncate_path(path: &str, depth: usize) -> &str {
    if !path.starts_with('/') {
        return path;
    }
    if depth == 0 {
        return "/";
    }
    let mut seen = 0;
    for (i, c) in path.char_indices().skip(1) {
        if c == '/' {
            seen += 1;
            if seen == depth {
                return &path[..i];
            }
        }
    }
    // Fewer than `depth` components: the whole path, without a trailing `/`.
    match path.trim_end_matches('/') {
        "" => "/",
        whole => whole,
    }
}

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
}

impl crate::outcome::Problem for Problem {
    type Key = (std::mem::Discriminant<Problem>, Option<i32>);
    fn key(&self) -> Self::Key {
        let errno = match self {
            Problem::Unreadable { error, .. } | Problem::WalkFailed { error, .. } => error.errno,
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
        }
    }
}

/// The root cgroup's id (and its directory's inode) on cgroup v2.
pub const ROOT_CGROUP_ID: u64 = 1;

/// Series after the cap: at most `max` keys, sorted by key, with [`OTHER`]
/// last when anything was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<V> {
    pub rows: Vec<(String, V)>,
    /// Keys summed into [`OTHER`] (0 when nothing was cut).
    pub dropped: usize,
}

/// Per-cgroup TCP counts of one namespace (one count per TCP state), after
/// depth and cap: what the exporter serves and the table shows.
pub type CgroupRows = Capped<[u64; crate::kernel::diag::TcpState::COUNT]>;

// ---------------------------------------------------------------------------
// Attribution: per-id counts to capped rows
// ---------------------------------------------------------------------------

/// Turns one collection's socket counts per cgroup id into rows keyed by
/// label (path, [`NONE`], [`UNKNOWN`], [`OTHER`]): resolves ids through a
/// cached [`CgroupPaths`], truncates paths to the configured depth, sums
/// equal labels and applies the series cap.
pub struct Attribution {
    paths: CgroupPaths,
    depth: usize,
    max_series: usize,
}

impl Attribution {
    /// `depth`: path components kept, 0 for whole paths (see the module
    /// doc). `max_series`: path rows at most, [`OTHER`] included (at least
    /// 1; 0 counts as 1).
    pub fn new(mount: Cgroup2Mount, depth: usize, max_series: usize) -> Attribution {
        Attribution {
            paths: CgroupPaths::new(mount, WalkLimits::default()),
            depth,
            max_series: max_series.max(1),
        }
    }

    /// [`Attribution::new`] on this host's cgroup2 mount ([`detect`]); Err
    /// says why there is none.
    pub fn detect(depth: usize, max_series: usize) -> Result<Attribution, String> {
        Ok(Attribution::new(detect()?, depth, max_series))
    }

    /// The id -> path cache (walk counts and mount, for logs and tests).
    pub fn paths(&self) -> &CgroupPaths {
        &self.paths
    }

    /// Call once per collection, before [`rows`](Self::rows) (which may be
    /// called several times per collection, e.g. once per namespace).
    pub fn start_collection(&mut self) {
        self.paths.start_collection();
    }

    /// The rows for one set of per-id counts (`N` states each): paths
    /// sorted, then [`NONE`] (whenever the input has a `None` item, zeros
    /// included), [`UNKNOWN`] (when some id resolved to it), then
    /// [`OTHER`] (when the cap cut paths; `dropped` says how many).
    /// Weight for the cap: the row's total sockets.
    pub fn rows<const N: usize>(
        &mut self,
        per_id: impl IntoIterator<Item = (Option<u64>, [u64; N])>,
    ) -> Capped<[u64; N]> {
        fn add<const N: usize>(into: &mut [u64; N], from: [u64; N]) {
            into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
        }
        let depth = if self.depth == 0 {
            usize::MAX
        } else {
            self.depth
        };
        let mut by_path: HashMap<String, [u64; N]> = HashMap::new();
        let mut none: Option<[u64; N]> = None;
        let mut unknown: Option<[u64; N]> = None;
        for (id, counts) in per_id {
            if id.is_none() {
                add(none.get_or_insert([0; N]), counts);
                continue;
            }
            let label = self.paths.resolve(id);
            if label == UNKNOWN {
                add(unknown.get_or_insert([0; N]), counts);
                continue;
            }
            let key = truncate_path(label, depth);
            match by_path.get_mut(key) {
                Some(row) => add(row, counts),
                None => {
                    by_path.insert(key.to_string(), counts);
                }
            }
        }
        let capped = cap::heaviest_with_bucket(
            by_path,
            self.max_series,
            cap::by_weight(|v: &[u64; N]| v.iter().sum()),
        )
        .merge_rest(add);
        let mut rows = capped.rows;
        let buckets = [(NONE, none), (UNKNOWN, unknown), (OTHER, capped.other)]
            .into_iter()
            .filter_map(|(label, v)| Some((label.to_string(), v?)));
        rows.extend(buckets);
        Capped {
            rows,
            dropped: capped.dropped,
        }
    }

    /// Why attribution is incomplete: the last walk failed or hit its
    /// bounds. None when it was whole.
    pub fn problem(&self) -> Option<&Problem> {
        self.paths.problem()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's mountinfo (hybrid: v1 controllers plus cgroup2 at
    /// /sys/fs/cgroup/unified), trimmed.
    const HYBRID: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A pure v2 host (systemd default): optional fields before ` - `.
    const PURE_V2: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_hybrid_mount() {
        let m = find_cgroup2(HYBRID).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, "/");
        assert_eq!(m.prefix(), "");
    }

    #[test]
    fn finds_the_pure_v2_mount_past_optional_fields() {
        let m = find_cgroup2(PURE_V2).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn no_cgroup2_is_a_clear_problem() {
        let only_v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let err = find_cgroup2(only_v1).unwrap_err();
        assert!(err.contains("no cgroup2 filesystem is mounted"), "{err}");
        assert!(find_cgroup2("").is_err());
    }

    #[test]
    fn whole_hierarchy_wins_over_a_subtree_mount() {
        let text = "\
50 1 0:38 /kubepods/pod1 /mnt/pod rw - cgroup2 cgroup2 rw
51 1 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2(text).unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
        let only_sub = "50 1 0:38 /kubepods/pod1 /mnt/pod rw - cgroup2 cgroup2 rw\n";
        let m = find_cgroup2(only_sub).unwrap();
        assert_eq!(m.prefix(), "/kubepods/pod1", "subtree paths stay global");
        let escaped = "50 1 0:38 /../.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2(escaped).unwrap().prefix(), "");
    }

    #[test]
    fn decodes_escapes_and_keeps_the_rest() {
        let line = r"60 22 0:50 /a\040b /mnt/with\040space\011tab\134x rw shared:3 master:1 - cgroup2 my\040src rw";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.mount_id, 60);
        assert_eq!(m.root, "/a b");
        assert_eq!(m.mount_point, "/mnt/with space\ttab\\x");
        assert_eq!(m.fstype, "cgroup2");
        assert_eq!(m.source, "my src");
        // Not an escape: kept literally.
        assert_eq!(unescape(r"a\0b\9zz\"), r"a\0b\9zz\");
        assert_eq!(unescape(r"\400"), r"\400", "above 255 is not a byte");
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            "garbage",
            "x 1 0:1 / / rw - ext4 /dev/x rw extra words here",
            "1 2 0:1 / /mnt rw shared:1 master:2 nothing after",
            "1 2 0:1 / /mnt rw shared:1 - cgroup2",
        ] {
            let err = parse_mountinfo_line(line).unwrap_err();
            assert!(err.starts_with("bad mountinfo line"), "{line}: {err}");
        }
        assert!(find_cgroup2("garbage\n").is_err());
    }

    #[test]
    fn truncates_paths_to_a_depth() {
        let p = "/system.slice/nginx.service";
        assert_eq!(truncate_path(p, 0), "/");
        assert_eq!(truncate_path(p, 1), "/system.slice");
        assert_eq!(truncate_path(p, 2), p);
        assert_eq!(truncate_path(p, 9), p);
        assert_eq!(truncate_path(p, usize::MAX), p);
        let deep = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope";
        assert_eq!(
            truncate_path(deep, 3),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
        );
        assert_eq!(truncate_path("/", 0), "/");
        assert_eq!(truncate_path("/", 3), "/");
        assert_eq!(truncate_path(NONE, 1), NONE);
        assert_eq!(truncate_path(UNKNOWN, 0), UNKNOWN);
        assert_eq!(truncate_path("/a/", 5), "/a", "trailing slash dropped");
        // Multi-byte names are cut at the separator, never inside a char.
        assert_eq!(truncate_path("/é/ü", 1), "/é");
    }

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
                truncated: false
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

    /// A directory tree standing in for a cgroup2 mount (the walk only
    /// reads names and d_ino), removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str, dirs: &[&str]) -> Tree {
            let dir = std::env::temp_dir().join(format!("sockdiag-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            for d in dirs {
                fs::create_dir_all(dir.join(d)).unwrap();
            }
            Tree(dir)
        }
        fn mount(&self) -> Cgroup2Mount {
            Cgroup2Mount {
                mount_point: self.0.clone(),
                root: "/".into(),
            }
        }
        fn id(&self, p: &str) -> Option<u64> {
            Some(fs::metadata(self.0.join(p)).unwrap().ino())
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn attribution_resolves_truncates_merges_and_caps() {
        let tree = Tree::new("attr", &["a/x", "a/y", "b"]);
        let missing = Some(u64::MAX - 3);
        let per_id = || {
            vec![
                (tree.id("a/x"), [1, 2, 0]),
                (tree.id("a/y"), [0, 1, 0]),
                (tree.id("b"), [5, 0, 0]),
                (tree.id(""), [0, 0, 1]), // the root cgroup
                (missing, [0, 0, 4]),
                (None, [2, 0, 0]),
            ]
        };
        let row = |k: &str, v: [u64; 3]| (k.to_string(), v);

        // Depth 0: whole paths.
        let mut whole = Attribution::new(tree.mount(), 0, 100);
        whole.start_collection();
        let got = whole.rows(per_id());
        assert_eq!(
            got.rows,
            vec![
                row("/", [0, 0, 1]),
                row("/a/x", [1, 2, 0]),
                row("/a/y", [0, 1, 0]),
                row("/b", [5, 0, 0]),
                row(NONE, [2, 0, 0]),
                row(UNKNOWN, [0, 0, 4]),
            ]
        );
        assert_eq!(got.dropped, 0);
        assert_eq!(
            whole.paths().walks(),
            1,
            "one walk for the whole collection"
        );
        assert_eq!(whole.problem(), None);

        // Depth 1: /a/x and /a/y are summed into /a.
        let mut top = Attribution::new(tree.mount(), 1, 100);
        top.start_collection();
        let got = top.rows(per_id());
        assert_eq!(
            got.rows,
            vec![
                row("/", [0, 0, 1]),
                row("/a", [1, 3, 0]),
                row("/b", [5, 0, 0]),
                row(NONE, [2, 0, 0]),
                row(UNKNOWN, [0, 0, 4]),
            ]
        );

        // A cap of 2 path rows: the heaviest (/b, 5 sockets) and `other`
        // (3 paths, 5 sockets); none and unknown are never cut.
        let mut capped = Attribution::new(tree.mount(), 0, 2);
        capped.start_collection();
        let got = capped.rows(per_id());
        assert_eq!(
            got.rows,
            vec![
                row("/b", [5, 0, 0]),
                row(NONE, [2, 0, 0]),
                row(UNKNOWN, [0, 0, 4]),
                row(OTHER, [1, 3, 1]),
            ]
        );
        assert_eq!(got.dropped, 3);

        // No `None` item: no `none` row; no input: no rows.
        capped.start_collection();
        let got = capped.rows([(tree.id("b"), [1, 1, 1])]);
        assert_eq!(got.rows, vec![row("/b", [1, 1, 1])]);
        assert_eq!(capped.rows::<3>([]).rows, vec![]);
        // Max 0 counts as 1: everything in `other`.
        let mut one = Attribution::new(tree.mount(), 0, 0);
        one.start_collection();
        let got = one.rows([(tree.id("b"), [1]), (tree.id("a"), [2])]);
        assert_eq!((got.rows, got.dropped), (vec![(OTHER.to_string(), [3])], 2));
    }

    #[test]
    fn a_changed_cgroup_stat_makes_removed_cgroups_unknown() {
        let tree = Tree::new("stat", &["keep", "gone"]);
        let stat = tree.0.join("cgroup.stat");
        fs::write(&stat, "nr_descendants 2\nnr_dying_descendants 0\n").unwrap();
        let (keep, gone) = (tree.id("keep"), tree.id("gone"));
        let mut attribution = Attribution::new(tree.mount(), 0, 100);
        let collect = |a: &mut Attribution| {
            a.start_collection();
            a.rows([(keep, [1]), (gone, [1])]).rows
        };
        let labels = |rows: Vec<(String, [u64; 1])>| -> Vec<String> {
            rows.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(labels(collect(&mut attribution)), ["/gone", "/keep"]);
        assert_eq!(attribution.paths().walks(), 1);

        // Removed, but cgroup.stat unchanged (impossible on cgroupfs, where
        // rmdir moves the cgroup to nr_dying_descendants): the cache answers.
        fs::remove_dir(tree.0.join("gone")).unwrap();
        assert_eq!(labels(collect(&mut attribution)), ["/gone", "/keep"]);
        assert_eq!(attribution.paths().walks(), 1);

        // cgroup.stat changed: one walk, and the removed id is unknown.
        fs::write(&stat, "nr_descendants 1\nnr_dying_descendants 1\n").unwrap();
        assert_eq!(labels(collect(&mut attribution)), ["/keep", UNKNOWN]);
        assert_eq!(attribution.paths().walks(), 2);
        // One more walk, made for the id itself, proves it gone for good.
        assert_eq!(labels(collect(&mut attribution)), ["/keep", UNKNOWN]);
        assert_eq!(attribution.paths().walks(), 3);
        assert_eq!(labels(collect(&mut attribution)), ["/keep", UNKNOWN]);
        assert_eq!(attribution.paths().walks(), 3, "steady state: no walks");
    }

    #[test]
    fn detect_reads_this_machine() {
        // Whatever the host has, detect either finds a mount that exists or
        // says why not.
        match detect() {
            Ok(m) => assert!(m.mount_point.is_dir(), "{m:?}"),
            Err(e) => assert!(e.contains("cgroup2"), "{e}"),
        }
    }
}
