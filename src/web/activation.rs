//! systemd socket activation (`--web.systemd-socket`): the listening socket
//! systemd (or `systemd-socket-activate`) opened and passed as fd 3, named
//! by `LISTEN_FDS` and `LISTEN_PID` (sd_listen_fds(3)). Lives apart from
//! `serve` so that binding and inheriting a socket stay separate: the
//! socket unit, not the exporter, then owns the address, and the exporter
//! can start on the first connection.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// The first passed descriptor (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// Why no socket could be taken over.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// LISTEN_PID or LISTEN_FDS is missing: not started by socket activation.
    NotActivated,
    /// LISTEN_PID names another process (the variables were inherited).
    OtherPid { listen_pid: String, own: u32 },
    /// LISTEN_FDS is not a count of at least 1.
    BadCount(String),
    /// More than one socket was passed; one is served.
    TooMany(u32),
    /// fd 3 is not a listening TCP socket.
    NotTcpListener(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotActivated => write!(
                f,
                "no socket was passed (LISTEN_FDS and LISTEN_PID are not set): \
                 start it from a systemd .socket unit or systemd-socket-activate"
            ),
            Refused::OtherPid { listen_pid, own } => write!(
                f,
                "the passed socket belongs to process {listen_pid} (LISTEN_PID), not this one ({own})"
            ),
            Refused::BadCount(count) => {
                write!(f, "LISTEN_FDS={count} is not a number of sockets above 0")
            }
            Refused::TooMany(n) => write!(
                f,
                "{n} sockets were passed (LISTEN_FDS); one is served: give the .socket unit one ListenStream="
            ),
            Refused::NotTcpListener(why) => write!(
                f,
                "the passed socket (fd 3) is not a listening TCP socket: {why}"
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// Checks the activation variables: the number of sockets passed to this
/// process (`own_pid`), which must be exactly one.
pub fn check_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    own_pid: u32,
) -> Result<(), Refused> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Err(Refused::NotActivated);
    };
    if pid.trim().parse::<u32>().ok() != Some(own_pid) {
        return Err(Refused::OtherPid {
            listen_pid: pid.to_string(),
            own: own_pid,
        });
    }
    match fds.trim().parse::<u32>() {
        Ok(1) => Ok(()),
        Ok(0) | Err(_) => Err(Refused::BadCount(fds.to_string())),
        Ok(n) => Err(Refused::TooMany(n)),
    }
}

fn sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len describe a valid int buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Takes over the socket systemd passed: checks the variables, checks that
/// fd 3 is a listening TCP socket, and unsets the variables so that no
/// child inherits them. The listener is nonblocking, close-on-exec and
/// has TCP_NODELAY, as `serve::bind` makes its own.
pub fn listener() -> Result<TcpListener, Refused> {
    let var = |name| std::env::var(name).ok();
    check_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    )?;
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let fd = FIRST_FD;
    let not = |why: String| Refused::NotTcpListener(why);
    let domain = sockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| not(e.to_string()))?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(not(format!(
            "address family {domain}, not IPv4 or IPv6 (ListenStream= must be a port or address:port)"
        )));
    }
    let kind = sockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| not(e.to_string()))?;
    if kind != libc::SOCK_STREAM {
        return Err(not(format!("socket type {kind}, not a stream")));
    }
    if sockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(|e| not(e.to_string()))? != 1 {
        return Err(not("it is not listening".into()));
    }
    let one: libc::c_int = 1;
    // SAFETY: fd is an open socket (checked above); the option is an int.
    let rc = unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(not(io::Error::last_os_error().to_string()));
    }
    // SAFETY: fd 3 was passed to this process to own (LISTEN_PID), and is
    // taken over once: the variables are gone now.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|e| not(e.to_string()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_variables_are_checked() {
        assert_eq!(check_env(Some("42"), Some("1"), 42), Ok(()));
        assert_eq!(check_env(None, Some("1"), 42), Err(Refused::NotActivated));
        assert_eq!(check_env(Some("42"), None, 42), Err(Refused::NotActivated));
        assert_eq!(
            check_env(Some("7"), Some("1"), 42),
            Err(Refused::OtherPid {
                listen_pid: "7".into(),
                own: 42
            })
        );
        for bad in ["0", "x", "", "-1"] {
            assert_eq!(
                check_env(Some("42"), Some(bad), 42),
                Err(Refused::BadCount(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            check_env(Some("42"), Some("2"), 42),
            Err(Refused::TooMany(2))
        );
        let text = Refused::OtherPid {
            listen_pid: "7".into(),
            own: 42,
        }
        .to_string();
        assert!(
            text.contains("process 7") && text.contains("(42)"),
            "{text}"
        );
    }
}
