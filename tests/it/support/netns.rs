//! Helpers for the namespace and cgroup tests (netns_cgroup, netns_exporter).
//!
//! * `require_root_netns`: move the calling test thread into a private
//!   network namespace (root only), so a test's sockets are the only ones
//!   there.
//! * `Helper`: a child process that is this very test binary run again on
//!   the test `ENTRY` in helper mode (`run_helper_if_asked`), set up before
//!   exec as asked: moved into a cgroup, into a new network namespace, or
//!   down to an unprivileged uid. It opens an exact mix of IPv4 loopback sockets (or runs a
//!   discovery), prints one `SDTEST-READY` line and waits for stdin to
//!   close. Dropping it kills it by PID.
//! * `NamedNs`: an `ip netns add` namespace with a test-unique name, deleted
//!   on drop.
//! * `TestCgroup`: a cgroup directory under the cgroup2 mount, removed on
//!   drop (after moving any process left in it to the root cgroup).
//! * `dump_ipv4_tcp`: a raw SOCK_DIAG_BY_FAMILY dump that keeps each
//!   socket's attributes, for checking INET_DIAG_CGROUP_ID.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use sockdiag_exporter::kernel::diag::{
    self, Attributes, DumpRequest, Family, INET_DIAG_MSG_LEN, SOCK_DIAG_BY_FAMILY,
};
use sockdiag_exporter::scope::{netns, netns_enter};

use super::skips::{require_root, skip};
use sockdiag_exporter::kernel::transport::{Netlink, Transport};

/// The test a helper process runs: `helper_process_entry` in tests/it/main.rs,
/// at the top of the binary so its name has no module prefix.
pub const ENTRY: &str = "helper_process_entry";

/// Moves the calling thread into a fresh private network namespace with `lo`
/// up and `tcp_tw_reuse` off. Returns false after [`skip`] (which fails the
/// test in strict mode) when that is impossible; the caller must then
/// return early.
///
/// Child processes spawned later from this thread inherit the namespace.
pub fn require_root_netns() -> bool {
    if !require_root("create a private network namespace") {
        return false;
    }
    if let Err(e) = sockdiag_exporter::scope::netns_enter::enter_private() {
        skip(format_args!(
            "needs CAP_SYS_ADMIN to enter a private network namespace: {e}"
        ));
        return false;
    }
    // Without this, connect() on loopback may recycle our TIME_WAIT sockets.
    // A failure here would make the TIME_WAIT counts unreliable: that is a
    // broken test environment, not a skip.
    sockdiag_exporter::scope::netns_enter::write_sysctl("net/ipv4/tcp_tw_reuse", "0")
        .expect("set net/ipv4/tcp_tw_reuse=0 in the private namespace");
    true
}

/// Set in a helper's environment to the helper mode ("sockets", "discover").
pub const HELPER_ENV: &str = "SOCKDIAG_TEST_HELPER";

/// What a helper process is and does.
#[derive(Debug, Clone, Default)]
pub struct HelperSpec {
    /// Run a discovery and print it, instead of holding sockets.
    pub discover: bool,
    /// IPv4 loopback listeners to open (the first one serves the rest).
    pub listeners: u32,
    /// Connections to the first listener, accepted: 2 ESTABLISHED each.
    pub pairs: u32,
    /// Connections to the first listener closed client-first: 1 TIME_WAIT
    /// each (on the client side) once the handshake of closing is over.
    pub time_wait: u32,
    /// Connections to an extra TCP_DEFER_ACCEPT listener, sending nothing:
    /// the server side stays a request socket (SYN_RECV) and the client
    /// side is ESTABLISHED.
    pub syn_recv: u32,
    /// Connect once to this port on 127.0.0.1 and never read.
    pub connect_to: Option<u16>,
    /// unshare(CLONE_NEWNET) before exec (lo is brought up by the helper).
    pub private_netns: bool,
    /// Write "0" into this cgroup's cgroup.procs before exec.
    pub cgroup: Option<PathBuf>,
    /// setgroups([]), setgid, setuid to this id before exec.
    pub uid: Option<u32>,
}

/// A running helper. Dropping it kills it (by PID) and reaps it.
pub struct Helper {
    child: Option<Child>,
    pub pid: u32,
    /// key=value fields of the READY line.
    pub ready: BTreeMap<String, String>,
    /// Every `SDTEST-` line printed before READY, prefix removed.
    pub lines: Vec<String>,
}

/// A copy of `binary` that any user can execute, in a fresh 0755 directory
/// under the system temp dir, removed on drop. A checkout may sit in a
/// directory other users cannot enter (cloned into root's 0700 home), and
/// then a process that drops to another uid cannot exec the original.
pub struct CopyForAnyUser {
    dir: PathBuf,
    pub path: PathBuf,
}

impl CopyForAnyUser {
    pub fn of(binary: &Path) -> CopyForAnyUser {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sdtest-exe-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a directory for the copy");
        let copy = CopyForAnyUser {
            path: dir.join(binary.file_name().expect("a file name")),
            dir,
        };
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(&copy.dir, open.clone()).expect("chmod the directory");
        std::fs::copy(binary, &copy.path).expect("copy the binary");
        std::fs::set_permissions(&copy.path, open).expect("chmod the copy");
        copy
    }
}

/// Spawns `cmd`, retrying while the kernel answers ETXTBSY: a binary just
/// written (a [`CopyForAnyUser`]) stays "busy" while another test thread's
/// freshly forked child still holds an inherited descriptor to it, until
/// that child execs.
pub fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
    cmd.spawn()
}

impl Drop for CopyForAnyUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Helper {
    /// Runs this test binary's `entry` test in helper mode and waits (at
    /// most 20 s) for its READY line.
    pub fn spawn(entry: &str, spec: &HelperSpec) -> Helper {
        let exe = std::env::current_exe().expect("current_exe");
        // Another uid runs a copy it can reach (the process keeps running
        // once the copy is removed), from a directory it can enter.
        let copy = spec.uid.map(|_| CopyForAnyUser::of(&exe));
        let mut cmd = Command::new(copy.as_ref().map_or(&exe, |c| &c.path));
        if copy.is_some() {
            cmd.current_dir("/");
        }
        cmd.args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .env(
                HELPER_ENV,
                if spec.discover { "discover" } else { "sockets" },
            )
            .env("SDTEST_LISTENERS", spec.listeners.to_string())
            .env("SDTEST_PAIRS", spec.pairs.to_string())
            .env("SDTEST_TIME_WAIT", spec.time_wait.to_string())
            .env("SDTEST_SYN_RECV", spec.syn_recv.to_string())
            .env(
                "SDTEST_CONNECT_TO",
                spec.connect_to.map(|p| p.to_string()).unwrap_or_default(),
            )
            .env("SDTEST_PRIVATE", if spec.private_netns { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let procs = spec.cgroup.as_ref().map(|c| {
            CString::new(c.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap()
        });
        let private = spec.private_netns;
        let uid = spec.uid;
        // SAFETY: the closure runs between fork and exec and only makes raw
        // syscalls (open, write, close, unshare, setgroups, setgid, setuid)
        // on data prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(path) = &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                if private && libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = spawn_retrying(&mut cmd).unwrap_or_else(|e| panic!("spawn helper: {e}"));
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut helper = Helper {
            child: Some(child),
            pid,
            ready: BTreeMap::new(),
            lines: Vec::new(),
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    // libtest prints `test NAME ... ` without a newline
                    // before the helper's first line.
                    let Some(at) = line.find("SDTEST-") else {
                        continue;
                    };
                    let rest = &line[at + "SDTEST-".len()..];
                    if let Some(fields) = rest.strip_prefix("READY") {
                        helper.ready = fields
                            .split_whitespace()
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        return helper;
                    }
                    helper.lines.push(rest.to_string());
                }
                Err(e) => panic!(
                    "helper {pid} ({spec:?}) printed no READY line: {e:?}; lines so far: {:?}",
                    helper.lines
                ),
            }
        }
    }

    pub fn field(&self, key: &str) -> &str {
        self.ready
            .get(key)
            .unwrap_or_else(|| panic!("READY line has no {key}=: {:?}", self.ready))
    }

    /// Kills the helper now (by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The helper side: when this process was started as a helper, does the
/// job and exits (never returns); otherwise returns at once.
pub fn run_helper_if_asked() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let num = |k: &str| -> u32 {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut out = io::stdout().lock();
    if mode == "discover" {
        let found = netns::discover(usize::MAX);
        for ns in &found.namespaces {
            writeln!(
                out,
                "SDTEST-NS label={} ino={} own={}",
                ns.label, ns.id.ino, ns.own
            )
            .unwrap();
        }
        for p in &found.problems {
            writeln!(out, "SDTEST-PROBLEM {p}").unwrap();
        }
        writeln!(out, "SDTEST-DENIED {}", found.denied_processes).unwrap();
        if let Some(other) = found.namespaces.iter().find(|ns| !ns.own) {
            match netns_enter::with_netns(other, || ()) {
                Ok(()) => writeln!(out, "SDTEST-ENTER {} ok", other.label).unwrap(),
                Err(e) => writeln!(out, "SDTEST-ENTER {} {:?} {e}", other.label, e.kind()).unwrap(),
            }
        }
        // What an unprivileged dump carries for a socket of our own.
        let mine = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = mine.local_addr().unwrap().port();
        if let Some(s) = dump_ipv4_tcp().into_iter().find(|s| s.local_port == port) {
            let cgroup = s.cgroup_id.map(|c| c.to_string()).unwrap_or("none".into());
            writeln!(out, "SDTEST-ATTRS {:?} cgroup={cgroup}", s.attrs).unwrap();
        }
        // A dump of the own namespace works without privilege.
        let dump = Netlink::open(Duration::from_secs(5)).map(|t| {
            let mut c = sockdiag_exporter::collectors::Collector::new(
                t,
                sockdiag_exporter::collectors::Options::tcp_only(
                    sockdiag_exporter::collectors::tcp::DumpMode::Auto,
                    Duration::from_secs(5),
                ),
            );
            c.collect_tcp().map(|_| ()).map_err(|e| e.to_string())
        });
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        writeln!(
            out,
            "SDTEST-READY uid={uid} dump_ok={}",
            matches!(dump, Ok(Ok(())))
        )
        .unwrap();
        out.flush().unwrap();
        std::process::exit(0);
    }
    if std::env::var("SDTEST_PRIVATE").as_deref() == Ok("1") {
        netns_enter::set_link_up("lo").expect("lo up in the helper's namespace");
        netns_enter::write_sysctl("net/ipv4/tcp_tw_reuse", "0").expect("tcp_tw_reuse=0");
    }
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut port = 0;
    let mut listener_inode = 0;
    let mut first: Option<TcpListener> = None;
    for i in 0..num("SDTEST_LISTENERS") {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        if i == 0 {
            port = l.local_addr().unwrap().port();
            listener_inode = socket_inode(&l);
            first = Some(l);
        } else {
            keep.push(Box::new(l));
        }
    }
    for _ in 0..num("SDTEST_PAIRS") {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (s, _) = first.as_ref().unwrap().accept().expect("accept");
        keep.push(Box::new(c));
        keep.push(Box::new(s));
    }
    for _ in 0..num("SDTEST_TIME_WAIT") {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = first.as_ref().unwrap().accept().expect("accept");
        // Client closes first: it ends in TIME_WAIT once the server closes.
        c.shutdown(Shutdown::Both).unwrap();
        drop(c);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        drop(s);
    }
    let syn_recv = num("SDTEST_SYN_RECV");
    if syn_recv > 0 {
        let deferred = TcpListener::bind("127.0.0.1:0").expect("bind");
        let secs: libc::c_int = 60;
        // SAFETY: setsockopt with a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&deferred),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "TCP_DEFER_ACCEPT: {}", io::Error::last_os_error());
        let port = deferred.local_addr().unwrap().port();
        for _ in 0..syn_recv {
            keep.push(Box::new(
                TcpStream::connect(("127.0.0.1", port)).expect("connect deferred"),
            ));
        }
        keep.push(Box::new(deferred));
    }
    if let Some(p) = std::env::var("SDTEST_CONNECT_TO")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    {
        keep.push(Box::new(
            TcpStream::connect(("127.0.0.1", p)).expect("connect_to"),
        ));
    }
    writeln!(
        out,
        "SDTEST-READY pid={} port={port} listener_inode={listener_inode}",
        std::process::id()
    )
    .unwrap();
    out.flush().unwrap();
    drop(out);
    // Hold everything until the parent closes stdin (or kills us).
    let mut sink = Vec::new();
    let _ = io::stdin().read_to_end(&mut sink);
    drop(keep);
    drop(first);
    std::process::exit(0);
}

/// The inode of a socket (as `socket:[INODE]` and inet_diag show it).
pub fn socket_inode(fd: &impl std::os::fd::AsRawFd) -> u64 {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::metadata(path).expect("stat socket fd").ino()
}

// ---------------------------------------------------------------------------
// Named namespaces and cgroups
// ---------------------------------------------------------------------------

/// An `ip netns add` namespace, deleted (only if still there) on drop.
pub struct NamedNs {
    pub name: String,
    deleted: bool,
}

impl NamedNs {
    pub fn add(name: &str) -> io::Result<NamedNs> {
        let status = Command::new("ip")
            .args(["netns", "add", name])
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("ip netns add {name}: {status}")));
        }
        Ok(NamedNs {
            name: name.to_string(),
            deleted: false,
        })
    }

    pub fn delete(&mut self) {
        if !self.deleted {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stdin(Stdio::null())
                .status();
            self.deleted = true;
        }
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A cgroup this test made; removed on drop, children first.
pub struct TestCgroup {
    pub path: PathBuf,
    root: PathBuf,
}

impl TestCgroup {
    pub fn create(root: &Path, rel: &str) -> io::Result<TestCgroup> {
        let path = root.join(rel);
        std::fs::create_dir(&path)?;
        Ok(TestCgroup {
            path,
            root: root.to_path_buf(),
        })
    }

    /// Removes the directory now. Processes still in it (only ours can be:
    /// the cgroup is ours) are moved to the root cgroup first.
    pub fn remove(&self) -> io::Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        // rmdir right after the last process left can see EBUSY briefly.
        let mut last = Ok(());
        for _ in 0..50 {
            last = std::fs::remove_dir(&self.path);
            if last.is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        last
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            let _ = writeln!(io::stderr(), "cannot remove {}: {e}", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------
// A raw dump that keeps attributes
// ---------------------------------------------------------------------------

/// One socket from a raw dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    pub state: u8,
    pub local_port: u16,
    pub remote_port: u16,
    pub inode: u32,
    /// Attribute types present, in order.
    pub attrs: Vec<u16>,
    pub cgroup_id: Option<u64>,
}

/// Dumps the IPv4 TCP sockets of the calling thread's namespace with
/// SOCK_DIAG_BY_FAMILY and no extensions requested, keeping each socket's
/// attribute types and its INET_DIAG_CGROUP_ID.
pub fn dump_ipv4_tcp() -> Vec<RawSocket> {
    let mut nl = Netlink::open(Duration::from_secs(5)).expect("open NETLINK_SOCK_DIAG");
    let seq = 4242;
    nl.send(&DumpRequest::ByFamily(Family::Ipv4).encode(seq))
        .expect("send");
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let n = nl.recv(&mut buf).expect("recv");
        assert!(n > 0 && n <= buf.len(), "recv returned {n}");
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
            assert!(len >= 16 && at + len <= n, "bad nlmsg_len {len} at {at}");
            assert_eq!(
                u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap()),
                seq
            );
            let payload = &buf[at + 16..at + len];
            match kind {
                3 => return out, // NLMSG_DONE
                2 => panic!("NLMSG_ERROR {:?}", &payload[..4.min(payload.len())]),
                SOCK_DIAG_BY_FAMILY => {
                    assert!(payload.len() >= INET_DIAG_MSG_LEN);
                    let attributes = &payload[INET_DIAG_MSG_LEN..];
                    let attrs: Vec<u16> = Attributes::new(attributes)
                        .map(|a| a.expect("well-formed attributes").0)
                        .collect();
                    out.push(RawSocket {
                        state: payload[1],
                        local_port: u16::from_be_bytes([payload[4], payload[5]]),
                        remote_port: u16::from_be_bytes([payload[6], payload[7]]),
                        inode: u32::from_ne_bytes(payload[68..72].try_into().unwrap()),
                        attrs,
                        cgroup_id: diag::cgroup_id(attributes).expect("CGROUP_ID well-formed"),
                    });
                }
                other => panic!("unexpected message type {other}"),
            }
            at += len.div_ceil(4) * 4;
        }
    }
    panic!("dump did not end");
}
