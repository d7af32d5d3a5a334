//! Network namespaces: what identifies one ([`NsId`]), finding every one on
//! the host ([`discover`]) and the `netns` label each is collected under.
//! Entering one belongs to [`netns_enter`](super::netns_enter), keeping
//! counts per namespace to [`netns_cache`](super::netns_cache) and what can
//! go wrong to [`netns_problem`](super::netns_problem). Nothing here changes
//! a thread's namespace, and discovery runs as well on a plain directory
//! tree ([`Sources`]), which is how it is tested.
//!
//! [`discover`] lists the namespaces: the named ones under /run/netns
//! (`ip netns add`), the ones held by a process (/proc/PID/ns/net of every
//! process), deduplicated by the nsfs (device, inode) pair. Namespaces held
//! only by a non-leader thread, an open fd or a bind mount elsewhere are not
//! found.
//!
//! ## Labels
//!
//! | label          | namespace |
//! |----------------|-----------|
//! | `host`         | the one the discovering thread is in: the exporter's own |
//! | `NAME`         | the /run/netns name (the smallest, if it has several) |
//! | `ino:INODE`    | any other: the namespace's inode, as `lsns -t net` (column NS) and `readlink /proc/PID/ns/net` (`net:[INODE]`) print it; for a container, `readlink /proc/$(docker inspect -f '{{.State.Pid}}' NAME)/ns/net` |
//!
//! The inode is fixed for the namespace's whole life, so the label never
//! changes while it lives, unlike a process id: the lowest pid in a
//! namespace changes whenever that process exits (a container's first
//! process need not be its longest-lived). [`Namespace::lowest_pid`] is
//! still reported, for an info metric that maps the label to a process (and
//! so to a container) without making the socket series churn. A name that
//! could be mistaken for another kind of label (`host`, `ino:...`) is
//! written `name:NAME`.
//!
//! Discovery costs one stat per process (1.9 ms for 124 processes here).
//! What collecting from a namespace costs is in
//! [`netns_enter`](super::netns_enter).
//!
//! `by_label` exists only with the `testing` feature (on for tests,
//! benches and the fuzz harness), not in the binary's API.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::scope::netns_problem::Problem;

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/// A namespace's identity: the device and inode of its nsfs file. Two paths
/// name the same namespace exactly when both are equal. The inode is fixed
/// for the namespace's life; after it dies the number may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    pub(crate) fn of(meta: &fs::Metadata) -> NsId {
        NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Where the calling thread's own namespace file is.
pub const THREAD_SELF_NET: &str = "/proc/thread-self/ns/net";

/// The network namespace the calling thread is in.
pub fn current() -> io::Result<NsId> {
    fs::metadata(THREAD_SELF_NET).map(|m| NsId::of(&m))
}

/// `_IO(0xb7, 0x3)`: asks an nsfs file which kind of namespace it is.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Whether an open file is a network namespace (an nsfs file of type
/// CLONE_NEWNET), as opposed to, say, a /run/netns mount point left empty.
fn is_netns(file: &File) -> bool {
    // SAFETY: NS_GET_NSTYPE takes no argument; the fd is open.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    kind == libc::CLONE_NEWNET
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

/// One network namespace found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub id: NsId,
    /// The `netns` label value (see the module doc).
    pub label: String,
    /// The discovering thread's own namespace.
    pub own: bool,
    /// Its /run/netns name, if it has one (the smallest, if several).
    pub name: Option<String>,
    /// The lowest pid of the processes found in it; it changes when that
    /// process exits, so it belongs in an info metric, not in the label.
    pub lowest_pid: Option<u32>,
    /// Processes found in it (their /proc/PID/ns/net was readable).
    pub processes: u32,
    /// A file that opens it: /run/netns/NAME, /proc/PID/ns/net, or the
    /// thread's own.
    pub path: PathBuf,
}

impl Namespace {
    /// Opens the namespace's file and checks it is still this namespace: a
    /// /proc/PID path may now belong to a reused pid, a /run/netns name may
    /// have been deleted and re-added. Err(NotFound) when it is gone.
    pub fn open(&self) -> io::Result<File> {
        let gone = |why: String| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("network namespace {} is gone: {why}", self.label),
            )
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Err(gone(format!("{}: {e}", self.path.display())))
            }
            Err(e) => return Err(e),
        };
        let id = NsId::of(&file.metadata()?);
        if id != self.id {
            return Err(gone(format!(
                "{} is now inode {} instead of {}",
                self.path.display(),
                id.ino,
                self.id.ino
            )));
        }
        Ok(file)
    }
}

/// What [`discover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// At most `limit`: the own namespace first, then named ones by name,
    /// then the others by inode.
    pub namespaces: Vec<Namespace>,
    /// Namespaces found beyond the limit.
    pub skipped: usize,
    /// Why the list may be incomplete (permission denied reading other
    /// processes' namespaces when unprivileged, an unreadable /run/netns).
    /// Not fatal: everything found is still listed.
    pub problems: Vec<Problem>,
    /// Processes whose namespace could not be read for lack of permission
    /// (0 as root on most hosts; the sandbox this was written on denies
    /// root /proc/1/ns/net). Such a process may hold a namespace that is
    /// then missing from the list.
    pub denied_processes: usize,
}

/// Where discovery looks; [`Sources::default`] is the real system. Tests
/// point it at a directory tree (hard links stand in for shared namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The proc mount: `<proc>/<pid>/ns/net` is read for every numeric entry.
    pub proc: PathBuf,
    /// The directory of named namespaces.
    pub run_netns: PathBuf,
    /// The discovering thread's own namespace file.
    pub own: PathBuf,
    /// Only accept nsfs files of type CLONE_NEWNET under `run_netns`
    /// (off for directory-tree tests, whose files are plain files).
    pub check_nstype: bool,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            proc: PathBuf::from("/proc"),
            run_netns: PathBuf::from("/run/netns"),
            own: PathBuf::from(THREAD_SELF_NET),
            check_nstype: true,
        }
    }
}

/// Finds the host's network namespaces, at most `limit` of them (0 counts
/// as 1: the own namespace is always listed). Never fails: what cannot be
/// read is skipped and, unless it is a process that exited meanwhile,
/// reported in [`Discovery::problems`].
pub fn discover(limit: usize) -> Discovery {
    discover_keeping(limit, &HashSet::new())
}

/// [`discover`], where the namespaces in `keep` (those collected last
/// time) keep their place under the limit: past `--collector.netns.max`,
/// a new namespace never pushes out one already collected, so the chosen
/// set does not flap as pods come and go.
pub fn discover_keeping(limit: usize, keep: &HashSet<NsId>) -> Discovery {
    let mut sources = Sources::default();
    // /proc/thread-self/ns/net means "whoever looks"; the resolved
    // /proc/PID/task/TID/ns/net keeps naming this thread's namespace when
    // the Namespace is used from another thread.
    if let Ok(link) = fs::read_link("/proc/thread-self") {
        sources.own = Path::new("/proc").join(link).join("ns/net");
    }
    discover_from(&sources, limit, keep)
}

/// [`discover_keeping`] with other places to look.
pub fn discover_from(sources: &Sources, limit: usize, keep: &HashSet<NsId>) -> Discovery {
    let mut problems = Vec::new();
    let own = match fs::metadata(&sources.own) {
        Ok(meta) => Some(NsId::of(&meta)),
        Err(e) => {
            problems.push(Problem::OwnUnidentified {
                path: sources.own.clone(),
                error: (&e).into(),
            });
            None
        }
    };
    let named = read_named(sources, &mut problems);
    let (processes, denied_processes) = read_processes(&sources.proc, &mut problems);
    let (namespaces, skipped) = assemble(
        own.map(|id| (id, sources.own.clone())),
        named,
        processes,
        &sources.proc,
        limit,
        keep,
    );
    Discovery {
        namespaces,
        skipped,
        problems,
        denied_processes,
    }
}

/// (name, id, path) of every namespace under /run/netns.
fn read_named(sources: &Sources, problems: &mut Vec<Problem>) -> Vec<(String, NsId, PathBuf)> {
    let dir = match fs::read_dir(&sources.run_netns) {
        Ok(dir) => dir,
        // No named namespaces: nothing ever ran `ip netns add`.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(Problem::NamedUnlisted {
                dir: sources.run_netns.clone(),
                error: (&e).into(),
            });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => {
                problems.push(Problem::NamedUnopened {
                    path: path.clone(),
                    error: (&e).into(),
                });
                continue;
            }
        };
        // A name whose mount is gone (`ip netns` leaves the empty file after
        // some failures) is not a namespace: skipped, as `ip netns` does.
        if sources.check_nstype && !is_netns(&file) {
            continue;
        }
        if let Ok(meta) = file.metadata() {
            out.push((name, NsId::of(&meta), path));
        }
    }
    out
}

/// (pid, id) of every process whose namespace could be read, and how many
/// were denied. Processes that exit during the walk are skipped silently;
/// permission errors are summed into one problem.
fn read_processes(proc: &Path, problems: &mut Vec<Problem>) -> (Vec<(u32, NsId)>, usize) {
    let dir = match fs::read_dir(proc) {
        Ok(dir) => dir,
        Err(e) => {
            problems.push(Problem::ProcessesUnlisted {
                dir: proc.to_path_buf(),
                error: (&e).into(),
            });
            return (Vec::new(), 0);
        }
    };
    let mut out = Vec::new();
    let mut denied = 0usize;
    let mut example = None;
    let mut seen = 0usize;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        seen += 1;
        let path = entry.path().join("ns/net");
        match fs::metadata(&path) {
            Ok(meta) => out.push((pid, NsId::of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                denied += 1;
                example.get_or_insert(path);
            }
            // Exited (ENOENT, ESRCH) or a zombie (no namespaces left).
            Err(_) => {}
        }
    }
    if let Some(example) = example {
        problems.push(Problem::ProcessesDenied {
            denied,
            seen,
            example,
        });
    }
    (out, denied)
}

/// The `netns` label of the exporter's own namespace.
pub const OWN_NETNS: &str = "host";

/// The label of a namespace (see the module doc).
pub fn label(own: bool, name: Option<&str>, id: NsId) -> String {
    if own {
        return OWN_NETNS.to_string();
    }
    match name {
        Some(name) if name == "host" || name.starts_with("ino:") || name.starts_with("name:") => {
            format!("name:{name}")
        }
        Some(name) => name.to_string(),
        None => format!("ino:{}", id.ino),
    }
}

/// Merges what was read into the ordered, deduplicated, limited list.
/// Returns it and how many were left out by the limit. Under the limit the
/// own namespace comes first, then those in `keep` (in list order), then
/// the others in list order; the list keeps its order. Pure.
pub fn assemble(
    own: Option<(NsId, PathBuf)>,
    named: Vec<(String, NsId, PathBuf)>,
    processes: Vec<(u32, NsId)>,
    proc: &Path,
    limit: usize,
    keep: &HashSet<NsId>,
) -> (Vec<Namespace>, usize) {
    let mut by_id: HashMap<NsId, Namespace> = HashMap::new();
    let blank = |id: NsId, path: PathBuf| Namespace {
        id,
        label: String::new(),
        own: false,
        name: None,
        lowest_pid: None,
        processes: 0,
        path,
    };
    if let Some((id, path)) = &own {
        by_id.insert(
            *id,
            Namespace {
                own: true,
                ..blank(*id, path.clone())
            },
        );
    }
    for (name, id, path) in named {
        let ns = by_id.entry(id).or_insert_with(|| blank(id, path.clone()));
        if ns.name.as_ref().map_or(true, |old| name < *old) {
            if !ns.own {
                ns.path = path;
            }
            ns.name = Some(name);
        }
    }
    for (pid, id) in processes {
        let ns = by_id.entry(id).or_insert_with(|| blank(id, PathBuf::new()));
        ns.processes += 1;
        if ns.lowest_pid.map_or(true, |old| pid < old) {
            ns.lowest_pid = Some(pid);
            if !ns.own && ns.name.is_none() {
                ns.path = proc.join(pid.to_string()).join("ns/net");
            }
        }
    }
    // own first, then named by name, then the rest by inode (then device).
    let mut list: Vec<Namespace> = by_id.into_values().collect();
    list.sort_by_key(|ns| {
        let rank = if ns.own {
            0
        } else if ns.name.is_some() {
            1
        } else {
            2
        };
        (rank, ns.name.clone(), ns.id.ino, ns.id.dev)
    });
    for ns in &mut list {
        ns.label = label(ns.own, ns.name.as_deref(), ns.id);
    }
    let room = limit.max(1).min(list.len());
    let skipped = list.len() - room;
    if skipped > 0 {
        // Rank 0: own; 1: kept; 2: the rest, each in list order.
        let rank = |ns: &Namespace| u8::from(!ns.own) + u8::from(!ns.own && !keep.contains(&ns.id));
        let mut by_priority: Vec<usize> = (0..list.len()).collect();
        by_priority.sort_by_key(|&i| (rank(&list[i]), i));
        let mut chosen = vec![false; list.len()];
        for &i in &by_priority[..room] {
            chosen[i] = true;
        }
        let mut index = 0;
        list.retain(|_| {
            index += 1;
            chosen[index - 1]
        });
    }
    (list, skipped)
}

/// Discovered namespaces by label, for logs and tests.
#[cfg(any(test, feature = "testing"))]
pub fn by_label(discovery: &Discovery) -> std::collections::BTreeMap<&str, &Namespace> {
    discovery
        .namespaces
        .iter()
        .map(|ns| (ns.label.as_str(), ns))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ino: u64) -> NsId {
        NsId { dev: 4, ino }
    }

    #[test]
    fn assembles_in_order_with_stable_labels() {
        let proc = Path::new("/proc");
        let named = vec![
            ("blue".to_string(), id(30), PathBuf::from("/run/netns/blue")),
            (
                "azure".to_string(),
                id(30),
                PathBuf::from("/run/netns/azure"),
            ),
            ("red".to_string(), id(40), PathBuf::from("/run/netns/red")),
            ("host".to_string(), id(60), PathBuf::from("/run/netns/host")),
            ("mine".to_string(), id(10), PathBuf::from("/run/netns/mine")),
        ];
        let processes = vec![
            (900, id(50)),
            (1, id(10)),
            (77, id(30)),
            (12, id(50)),
            (2, id(20)),
        ];
        let (list, skipped) = assemble(
            Some((id(10), PathBuf::from("/own"))),
            named.clone(),
            processes.clone(),
            proc,
            usize::MAX,
            &HashSet::new(),
        );
        assert_eq!(skipped, 0);
        let labels: Vec<&str> = list.iter().map(|n| n.label.as_str()).collect();
        // own; named by name (azure < blue: one namespace, smallest name);
        // `host` as a name is escaped; the rest by inode.
        assert_eq!(
            labels,
            ["host", "azure", "name:host", "red", "ino:20", "ino:50"]
        );
        let own = &list[0];
        assert!(own.own);
        assert_eq!(own.name.as_deref(), Some("mine"));
        assert_eq!(own.path, PathBuf::from("/own"));
        assert_eq!((own.lowest_pid, own.processes), (Some(1), 1));
        assert_eq!(list[1].path, PathBuf::from("/run/netns/azure"));
        assert_eq!(list[1].lowest_pid, Some(77));
        assert_eq!(list[3].lowest_pid, None, "named, no process");
        let ino50 = &list[5];
        assert_eq!((ino50.lowest_pid, ino50.processes), (Some(12), 2));
        assert_eq!(ino50.path, PathBuf::from("/proc/12/ns/net"));

        // The limit keeps the head of the order and counts the rest.
        let (list, skipped) = assemble(
            Some((id(10), PathBuf::from("/own"))),
            named,
            processes,
            proc,
            3,
            &HashSet::new(),
        );
        assert_eq!(list.len(), 3);
        assert_eq!(skipped, 3);
        assert_eq!(list[2].label, "name:host");
        let (list, skipped) = assemble(
            Some((id(10), "/own".into())),
            vec![],
            vec![(5, id(9))],
            proc,
            0,
            &HashSet::new(),
        );
        assert_eq!(
            (list.len(), skipped, list[0].label.as_str()),
            (1, 1, "host")
        );
    }

    #[test]
    fn past_the_limit_collected_namespaces_keep_their_place_under_churn() {
        let proc = Path::new("/proc");
        let own = || Some((id(1), PathBuf::from("/own")));
        // Pods come and go: each round some namespaces with lower inodes
        // (which sort first) appear, and some old ones leave.
        let rounds: [&[u64]; 5] = [
            &[50, 60, 70, 80],
            &[20, 50, 60, 70, 80],
            &[10, 20, 30, 50, 70, 80],
            &[5, 10, 20, 30, 50, 70],
            &[5, 10, 20, 30, 40, 50, 70],
        ];
        let mut collected: HashSet<NsId> = HashSet::new();
        let mut sets: Vec<Vec<u64>> = Vec::new();
        for inos in rounds {
            let processes = inos.iter().map(|&i| (i as u32, id(i))).collect();
            let (list, skipped) = assemble(own(), vec![], processes, proc, 4, &collected);
            assert_eq!(list.len(), 4);
            assert_eq!(skipped, inos.len() + 1 - 4);
            assert!(list[0].own, "own first");
            let others: Vec<u64> = list[1..].iter().map(|ns| ns.id.ino).collect();
            // Whoever was collected and is still alive is collected again.
            for old in &collected {
                if inos.contains(&old.ino) {
                    assert!(others.contains(&old.ino), "{} lost its place", old.ino);
                }
            }
            let mut sorted = others.clone();
            sorted.sort();
            assert_eq!(others, sorted, "the list keeps its order");
            collected = list.iter().filter(|ns| !ns.own).map(|ns| ns.id).collect();
            sets.push(others);
        }
        // 50, 60, 70 stay while they live; the place 60 frees goes to the
        // first of the others in order (10), which then stays too.
        assert_eq!(
            sets,
            [
                vec![50, 60, 70],
                vec![50, 60, 70],
                vec![10, 50, 70],
                vec![10, 50, 70],
                vec![10, 50, 70]
            ]
        );
        // Without memory, the order alone decides: it would have flapped.
        let processes = rounds[2].iter().map(|&i| (i as u32, id(i))).collect();
        let (list, _) = assemble(own(), vec![], processes, proc, 4, &HashSet::new());
        let fresh: Vec<u64> = list[1..].iter().map(|ns| ns.id.ino).collect();
        assert_eq!(fresh, [10, 20, 30]);
    }

    #[test]
    fn labels_never_collide_across_kinds() {
        assert_eq!(label(true, Some("x"), id(1)), "host");
        assert_eq!(label(false, Some("x"), id(1)), "x");
        assert_eq!(label(false, Some("ino:5"), id(1)), "name:ino:5");
        assert_eq!(label(false, Some("name:a"), id(1)), "name:name:a");
        assert_eq!(label(false, None, id(4026532301)), "ino:4026532301");
    }

    #[test]
    fn discovers_a_directory_tree_and_dedups_by_inode() {
        // Plain files stand in for nsfs files; hard links share an inode
        // like two processes sharing a namespace.
        let root = std::env::temp_dir().join(format!("sockdiag-nstree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let p = |rel: &str| root.join(rel);
        for pid in ["7", "8", "9", "11"] {
            fs::create_dir_all(p(&format!("proc/{pid}/ns"))).unwrap();
        }
        fs::create_dir_all(p("proc/self/ns")).unwrap();
        fs::create_dir_all(p("proc/10")).unwrap(); // exited: no ns/net
        fs::create_dir_all(p("run/netns")).unwrap();
        fs::write(p("own"), "").unwrap();
        fs::hard_link(p("own"), p("proc/9/ns/net")).unwrap();
        fs::write(p("proc/8/ns/net"), "").unwrap();
        fs::hard_link(p("proc/8/ns/net"), p("proc/11/ns/net")).unwrap();
        fs::write(p("proc/7/ns/net"), "").unwrap();
        fs::hard_link(p("proc/7/ns/net"), p("run/netns/web")).unwrap();
        fs::hard_link(p("proc/7/ns/net"), p("proc/self/ns/net")).unwrap();
        let sources = Sources {
            proc: p("proc"),
            run_netns: p("run/netns"),
            own: p("own"),
            check_nstype: false,
        };
        let found = discover_from(&sources, 10, &HashSet::new());
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(found.denied_processes, 0);
        let labels: Vec<&str> = found.namespaces.iter().map(|n| n.label.as_str()).collect();
        let ino8 = fs::metadata(p("proc/8/ns/net")).unwrap().ino();
        assert_eq!(
            labels,
            ["host".to_string(), "web".into(), format!("ino:{ino8}")]
        );
        let by = by_label(&found);
        assert_eq!(by["host"].lowest_pid, Some(9));
        assert_eq!(
            (by["web"].lowest_pid, by["web"].processes),
            (Some(7), 1),
            "self skipped"
        );
        let other = &found.namespaces[2];
        assert_eq!((other.lowest_pid, other.processes), (Some(8), 2));
        assert_eq!(other.path, p("proc/8/ns/net"));
        // Opening checks identity: a path that now names something else is gone.
        assert!(other.open().is_ok());
        fs::remove_file(p("proc/8/ns/net")).unwrap();
        fs::write(p("proc/8/ns/net"), "").unwrap();
        let err = other.open().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("is gone"), "{err}");
        fs::remove_dir_all(p("proc/8")).unwrap();
        assert_eq!(other.open().unwrap_err().kind(), io::ErrorKind::NotFound);

        // Missing sources are problems, never panics; no /run/netns is normal.
        let nothing = Sources {
            proc: p("nope"),
            run_netns: p("nope"),
            own: p("nope"),
            check_nstype: false,
        };
        let found = discover_from(&nothing, 10, &HashSet::new());
        assert!(found.namespaces.is_empty());
        assert_eq!(found.problems.len(), 2, "{:?}", found.problems);
        fs::remove_dir_all(&root).unwrap();
    }
}
