//! Network namespaces: moving the calling thread into a fresh, private one.
//!
//! `unshare(CLONE_NEWNET)` changes only the calling thread's namespace, and a
//! socket stays in the namespace of the thread that created it. Tests and the
//! benchmark load generator use this to build an exact socket mix that nothing
//! else on the host can disturb; a netlink socket opened afterwards on the same
//! thread (and any child process spawned from it) sees only that namespace.

use std::io;

/// Moves the calling thread into a new, empty network namespace and brings
/// its loopback interface up (127.0.0.1 and, where IPv6 is enabled, ::1).
///
/// Needs CAP_SYS_ADMIN (root). The namespace disappears when the last thread,
/// process or socket holding it is gone, so the caller never has to delete it.
pub fn enter_private() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it only changes this thread's nsproxy.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_link_up("lo")
}

/// Sets IFF_UP on the named interface of the calling thread's namespace.
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
pub fn write_sysctl(name: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{name}"), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_interface_names() {
        assert!(set_link_up("").is_err());
        assert!(set_link_up("a-name-that-is-far-too-long").is_err());
    }
}
