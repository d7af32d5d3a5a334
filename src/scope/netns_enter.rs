//! Entering network namespaces: running code inside another one and, for
//! tests and benchmarks, moving the calling thread into a fresh, private
//! one. This is the only module that changes a thread's namespace, and a
//! thread left in the wrong namespace would label that namespace's sockets
//! as its own without any error, so it is kept small and apart from
//! discovery ([`netns`](super::netns)).
//!
//! `unshare(CLONE_NEWNET)` and `setns` change only the calling thread's
//! namespace, and a socket stays in the namespace of the thread that created
//! it. So collecting from a namespace only needs a thread inside it while
//! its socket is opened: the netns pool's threads enter each namespace for
//! good ([`enter_for_good`]; they do nothing else and end with the
//! collection), [`run_on_new_thread`] runs one call inside a namespace on a
//! short-lived thread, and `with_netns` (tests only) enters and returns.

//! ## Cost
//!
//! Entering costs little (measured, release build, busy host: opening a
//! netlink socket through [`run_on_new_thread`] 49 us per namespace, through
//! `with_netns` 156 us, which pays two setns). The dumps are what cost:
//! the kernel's TCP hash tables are shared by all namespaces, so a dump of
//! even an empty namespace walks every TCP socket on the host and skips the
//! foreign ones. N namespaces cost N such walks (measured: an empty
//! namespace's dump took 0.15 ms on a quiet host and 150-300 ms while
//! another process held 810k TCP sockets elsewhere).
//!
//! The private-namespace helpers (`enter_private`, `set_link_up`,
//! `write_sysctl`) let tests and the benchmark load generator build an
//! exact socket mix that nothing else on the host can disturb. They, like
//! `with_netns`, exist only with the `testing` feature (on for tests,
//! benches and the fuzz harness), not in the binary's API.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::scope::netns::Namespace;
#[cfg(any(test, feature = "testing"))]
use crate::scope::netns::{NsId, THREAD_SELF_NET};

/// Moves the calling thread into a new, empty network namespace and brings
/// its loopback interface up (127.0.0.1 and, where IPv6 is enabled, ::1).
///
/// Needs CAP_SYS_ADMIN (root). The namespace disappears when the last thread,
/// process or socket holding it is gone, so the caller never has to delete it.
#[cfg(any(test, feature = "testing"))]
pub fn enter_private() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it only changes this thread's nsproxy.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_link_up("lo")
}

/// Sets IFF_UP on the named interface of the calling thread's namespace.
#[cfg(any(test, feature = "testing"))]
pub fn set_link_up(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: a plain datagram socket used only for the two ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is open, ifr is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            Err(io::Error::last_os_error())
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    result
}

/// Writes a per-namespace sysctl such as `net/ipv4/tcp_tw_reuse`, as seen by
/// the calling thread's network namespace.
#[cfg(any(test, feature = "testing"))]
pub fn write_sysctl(name: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{name}"), value)
}

fn setns(fd: &File) -> io::Result<()> {
    // SAFETY: setns takes an open fd and a flag; no pointers.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the thread back into its own namespace when dropped, also while a
/// panic unwinds.
#[cfg(any(test, feature = "testing"))]
struct GoBack {
    home: File,
}

#[cfg(any(test, feature = "testing"))]
impl Drop for GoBack {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home) {
            // A thread left in another namespace would label that
            // namespace's sockets as its own and open every later socket
            // there: silently wrong numbers. Nothing can make that safe, so
            // the process stops and the service manager restarts it.
            // Returning uses a descriptor opened before leaving and needs
            // the capability entering needed, so this is not expected.
            let _ = io::Write::write_all(
                &mut io::stderr(),
                format!(
                    "level=error msg=\"cannot return to the own network namespace after entering another; aborting\" err=\"{e}\"\n"
                )
                .as_bytes(),
            );
            std::process::abort();
        }
    }
}

/// Runs `f` on the calling thread inside `ns`, then returns the thread to
/// the namespace it was in, also when `f` panics. If `ns` is the thread's
/// current namespace, `f` just runs.
///
/// Err if `ns` is gone (see [`Namespace::open`]) or cannot be entered
/// (EPERM without CAP_SYS_ADMIN); `f` has not run then. If returning fails
/// the process aborts, because no caller could go on safely on a thread in
/// the wrong namespace. [`run_on_new_thread`] avoids that case altogether.
#[cfg(any(test, feature = "testing"))]
pub fn with_netns<R>(ns: &Namespace, f: impl FnOnce() -> R) -> io::Result<R> {
    let home = File::open(THREAD_SELF_NET)?;
    if NsId::of(&home.metadata()?) == ns.id {
        return Ok(f());
    }
    let target = ns.open()?;
    setns(&target).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot enter network namespace {}: {e}", ns.label),
        )
    })?;
    let back = GoBack { home };
    let result = f();
    drop(back);
    Ok(result)
}

/// Moves the calling thread into `ns` with no way back: only for threads
/// that do nothing but collect namespaces and end afterwards (the netns
/// pool, [`netns_pool`](super::netns_pool)), which enter the next namespace
/// before touching anything. Err if `ns` is gone (NotFound) or cannot be
/// entered (EPERM without CAP_SYS_ADMIN); the thread's namespace is then
/// unchanged.
pub fn enter_for_good(ns: &Namespace) -> io::Result<()> {
    let target = ns.open()?;
    setns(&target).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot enter network namespace {}: {e}", ns.label),
        )
    })
}

/// Runs `f` on a new, short-lived thread inside `ns` and returns its
/// result. The calling thread never changes namespace, and the helper
/// thread ends instead of returning, so nothing can be left in the wrong
/// namespace. Costs one thread start; meant for opening a socket that is
/// then cached. A panic in `f` is passed on to the caller.
pub fn run_on_new_thread<R: Send>(ns: &Namespace, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let target = ns.open()?;
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, move || -> io::Result<R> {
                setns(&target).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot enter network namespace {}: {e}", ns.label),
                    )
                })?;
                Ok(f())
            })
            .map(|handle| handle.join())
    });
    match outcome {
        Err(spawn) => Err(spawn),
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::netns::{current, discover};

    #[test]
    fn current_namespace_matches_discovery() {
        let me = current().unwrap();
        let found = discover(1);
        assert_eq!(found.namespaces[0].id, me);
        assert_eq!(found.namespaces[0].label, "host");
        // Entering the own namespace runs in place.
        assert_eq!(with_netns(&found.namespaces[0], || 7).unwrap(), 7);
        assert_eq!(current().unwrap(), me);
    }

    #[test]
    fn rejects_bad_interface_names() {
        assert!(set_link_up("").is_err());
        assert!(set_link_up("a-name-that-is-far-too-long").is_err());
    }
}
