//! Counting per cgroup with bounded cardinality: [`Attribution`] resolves
//! the cgroup ids of one collection's sockets to paths (through a cached
//! `CgroupPaths`), truncates them to the configured depth
//! ([`truncate_path`], `--collector.cgroup.depth`), sums equal labels and
//! applies the series cap ([`crate::cap::heaviest_with_bucket`]), which
//! keeps the heaviest keys and sums the rest into [`OTHER`]. Kept apart
//! from the walk: this part only sums and cuts counts (reading the tree is
//! behind `CgroupPaths`), and it is what the exporter calls. The labels it
//! produces are described in [`cgroup`](super::cgroup).

use std::collections::HashMap;

use crate::cap;
use crate::scope::cgroup::{Problem, NONE, OTHER, UNKNOWN};
use crate::scope::cgroup_mount::{detect, Cgroup2Mount};
use crate::scope::cgroup_paths::{CgroupPaths, WalkLimits};

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
        self.rows_by(per_id, |v| v.iter().sum(), add)
    }

    /// [`rows`](Self::rows) for any per-id value: `merge` sums two values
    /// under one label, `weight` ranks rows for the cap (the same weight
    /// gives the same rows and cut as [`rows`](Self::rows)).
    pub fn rows_by<V>(
        &mut self,
        per_id: impl IntoIterator<Item = (Option<u64>, V)>,
        weight: impl Fn(&V) -> u64,
        merge: impl Fn(&mut V, V),
    ) -> Capped<V> {
        let depth = if self.depth == 0 {
            usize::MAX
        } else {
            self.depth
        };
        let mut by_path: HashMap<String, V> = HashMap::new();
        let mut none: Option<V> = None;
        let mut unknown: Option<V> = None;
        let fold = |into: &mut Option<V>, v: V| match into {
            Some(row) => merge(row, v),
            None => *into = Some(v),
        };
        for (id, value) in per_id {
            if id.is_none() {
                fold(&mut none, value);
                continue;
            }
            let label = self.paths.resolve(id);
            if label == UNKNOWN {
                fold(&mut unknown, value);
                continue;
            }
            let key = truncate_path(label, depth);
            match by_path.get_mut(key) {
                Some(row) => merge(row, value),
                None => {
                    by_path.insert(key.to_string(), value);
                }
            }
        }
        let capped = cap::heaviest_with_bucket(by_path, self.max_series, cap::by_weight(weight))
            .merge_rest(&merge);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

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

    /// A directory tree standing in for a cgroup2 mount (the walk only
    /// reads names and d_ino), removed on drop.
    pub(crate) struct Tree(pub(crate) PathBuf);

    impl Tree {
        pub(crate) fn new(tag: &str, dirs: &[&str]) -> Tree {
            let dir = std::env::temp_dir().join(format!("sockdiag-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            for d in dirs {
                fs::create_dir_all(dir.join(d)).unwrap();
            }
            Tree(dir)
        }
        pub(crate) fn mount(&self) -> Cgroup2Mount {
            Cgroup2Mount {
                mount_point: self.0.clone(),
                root: "/".into(),
            }
        }
        pub(crate) fn id(&self, p: &str) -> Option<u64> {
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
}
