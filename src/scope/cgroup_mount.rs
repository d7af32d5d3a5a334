//! Finding the cgroup2 mount: a parser for /proc/self/mountinfo lines (with
//! its octal escapes) and the choice of the mount to walk ([`detect`]).
//! Hybrid hosts mount cgroup2 at /sys/fs/cgroup/unified, pure v2 hosts at
//! /sys/fs/cgroup, and a container may see only a subtree. Kept apart
//! because it is pure text parsing, tested on fixture text, and needs
//! nothing else of the attribution.

use std::fs;
use std::path::PathBuf;

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
    pub(crate) fn prefix(&self) -> &str {
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
    fn detect_reads_this_machine() {
        // Whatever the host has, detect either finds a mount that exists or
        // says why not.
        match detect() {
            Ok(m) => assert!(m.mount_point.is_dir(), "{m:?}"),
            Err(e) => assert!(e.contains("cgroup2"), "{e}"),
        }
    }
}
