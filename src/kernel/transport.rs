//! Where dump bytes come from, as the collector sees it: the [`Transport`]
//! trait, and its one real implementation, the kernel's NETLINK_SOCK_DIAG
//! socket ([`Netlink`], the only place this crate does netlink syscalls).
//! The stand-ins live beside it: recorded answers replayed by
//! `kernel::fixture`, and `kernel::recorder` wrapping either.
//!
//! The collector only sees the [`Transport`] trait, so fixtures and tests go
//! through exactly the same parsing and checking as a live dump.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use crate::kernel::sysctl::{LocalPorts, SysctlFiles};

/// A message-oriented channel to something that answers dump requests.
pub trait Transport {
    /// Sends one encoded request.
    fn send(&mut self, request: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf` and returns its full length, which
    /// exceeds `buf.len()` when the datagram did not fit (it was truncated).
    /// Ok(0) means end of stream.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Bounds how long the next recv may block: the collector passes what
    /// is left of the dump's deadline, so a stuck dump ends on time. A recv
    /// that times out fails with [`io::ErrorKind::WouldBlock`]. Transports
    /// that never block need not implement it.
    fn set_recv_timeout(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
    /// Our netlink port id, which answers must carry; 0 disables the check.
    fn port(&self) -> u32;
    /// Drops any half-read dump so the next request starts clean (the
    /// kernel answers EBUSY to a new dump while one is still running).
    fn reset(&mut self) -> io::Result<()>;
    /// The namespace's `ip_local_port_range` and `ip_local_reserved_ports`
    /// (the namespace the dumps see). Transports that cannot tell say
    /// Unsupported, and the ephemeral-port series are left out.
    fn local_ports(&mut self) -> io::Result<LocalPorts> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this transport does not read sysctls",
        ))
    }
}

/// The kernel: one NETLINK_SOCK_DIAG socket, reused until an error forces a
/// reset. Dumps need no privilege; they see the namespace of the thread
/// that opened the socket.
pub struct Netlink {
    socket: Socket,
    port: u32,
    recv_timeout: Duration,
    /// The port sysctls, opened with the socket, so in its namespace.
    sysctls: io::Result<SysctlFiles>,
}

impl Netlink {
    /// Opens and binds the socket. `recv_timeout` bounds every recv, so a
    /// dump that never ends cannot hang the caller.
    pub fn open(recv_timeout: Duration) -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        let address = socket.bind_auto()?;
        set_timeout(&socket, libc::SO_RCVTIMEO, recv_timeout)?;
        Ok(Netlink {
            socket,
            port: address.port_number(),
            recv_timeout,
            sysctls: SysctlFiles::open(),
        })
    }
}

/// Sets SO_RCVTIMEO or SO_SNDTIMEO on any socket. A zero timeval would mean
/// "block for ever", so timeouts under a microsecond are rounded up to one.
pub fn set_timeout(fd: &impl AsRawFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let timeout = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a valid timeval that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Transport for Netlink {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        let sent = self.socket.send_to(request, &SocketAddr::new(0, 0), 0)?;
        if sent != request.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} request bytes", request.len()),
            ));
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // MSG_TRUNC makes recv return the datagram's real length, so a
        // datagram larger than the buffer is detected instead of cut short.
        self.socket.recv(&mut &mut buf[..], libc::MSG_TRUNC)
    }

    fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        set_timeout(&self.socket, libc::SO_RCVTIMEO, timeout)
    }

    fn port(&self) -> u32 {
        self.port
    }

    fn reset(&mut self) -> io::Result<()> {
        *self = Netlink::open(self.recv_timeout)?;
        Ok(())
    }

    fn local_ports(&mut self) -> io::Result<LocalPorts> {
        match &mut self.sysctls {
            Ok(files) => files.read(),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        (**self).send(request)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).recv(buf)
    }
    fn set_recv_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).set_recv_timeout(timeout)
    }
    fn port(&self) -> u32 {
        (**self).port()
    }
    fn reset(&mut self) -> io::Result<()> {
        (**self).reset()
    }
    fn local_ports(&mut self) -> io::Result<LocalPorts> {
        (**self).local_ports()
    }
}
