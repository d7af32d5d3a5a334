//! The kernel's numbers for what we label: address families (`AF_*`),
//! TCP states (include/net/tcp_states.h), and the UDP and unix states and
//! unix socket types, each mapped from the kernel's value to a fixed index
//! and a label value. One table per dimension, so a collector's arrays and
//! the exporter's label order cannot disagree.

pub const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;
pub const AF_UNIX: u8 = libc::AF_UNIX as u8;

/// An address family we report, as an index into per-family arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// Maps the kernel's `idiag_family`; anything but AF_INET/AF_INET6 is None.
    pub fn from_kernel(af: u8) -> Option<Family> {
        match af {
            AF_INET => Some(Family::Ipv4),
            AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        }
    }

    /// The `family` label value.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// The TCP states the kernel reports (include/net/tcp_states.h), in kernel
/// order, which is also the order of [`TcpState::ALL`] and of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = 0,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
}

impl TcpState {
    pub const COUNT: usize = 11;
    pub const ALL: [TcpState; TcpState::COUNT] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// Maps the kernel's `idiag_state` (TCP_ESTABLISHED = 1 ... TCP_CLOSING = 11).
    /// TCP_NEW_SYN_RECV (12) is a request socket; the kernel normally reports
    /// those as SYN_RECV already, and so do we. Anything else is None.
    pub fn from_kernel(state: u8) -> Option<TcpState> {
        match state {
            1..=11 => Some(TcpState::ALL[usize::from(state - 1)]),
            12 => Some(TcpState::SynRecv),
            _ => None,
        }
    }

    /// The kernel's number for this state.
    pub fn kernel(self) -> u8 {
        self as u8 + 1
    }

    /// The `state` label value, lowercase as `ss` prints it (with underscores).
    pub fn label(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::FinWait1 => "fin_wait1",
            TcpState::FinWait2 => "fin_wait2",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
        }
    }
}

/// A UDP socket's state. The kernel reuses TCP state numbers: a socket
/// with a default destination (`connect()`) is TCP_ESTABLISHED, any other
/// (bound or not) is TCP_CLOSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UdpState {
    Unconnected = 0,
    Connected = 1,
}

impl UdpState {
    pub const COUNT: usize = 2;
    pub const ALL: [UdpState; 2] = [UdpState::Unconnected, UdpState::Connected];

    pub fn from_kernel(state: u8) -> Option<UdpState> {
        match state {
            7 => Some(UdpState::Unconnected),
            1 => Some(UdpState::Connected),
            _ => None,
        }
    }

    /// The `state` label value.
    pub fn label(self) -> &'static str {
        match self {
            UdpState::Unconnected => "unconnected",
            UdpState::Connected => "connected",
        }
    }
}

/// A unix socket's type (`udiag_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixType {
    Stream = 0,
    Dgram = 1,
    Seqpacket = 2,
}

impl UnixType {
    pub const COUNT: usize = 3;
    pub const ALL: [UnixType; 3] = [UnixType::Stream, UnixType::Dgram, UnixType::Seqpacket];

    pub fn from_kernel(kind: u8) -> Option<UnixType> {
        match i32::from(kind) {
            libc::SOCK_STREAM => Some(UnixType::Stream),
            libc::SOCK_DGRAM => Some(UnixType::Dgram),
            libc::SOCK_SEQPACKET => Some(UnixType::Seqpacket),
            _ => None,
        }
    }

    /// The `type` label value.
    pub fn label(self) -> &'static str {
        match self {
            UnixType::Stream => "stream",
            UnixType::Dgram => "dgram",
            UnixType::Seqpacket => "seqpacket",
        }
    }
}

/// A unix socket's state (`udiag_state`, TCP numbers): TCP_LISTEN,
/// TCP_ESTABLISHED (connected, accepted, pending in a listener's queue, or
/// a socketpair end) and TCP_CLOSE (not connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixState {
    Listen = 0,
    Connected = 1,
    Unconnected = 2,
}

impl UnixState {
    pub const COUNT: usize = 3;
    pub const ALL: [UnixState; 3] = [
        UnixState::Listen,
        UnixState::Connected,
        UnixState::Unconnected,
    ];

    pub fn from_kernel(state: u8) -> Option<UnixState> {
        match state {
            10 => Some(UnixState::Listen),
            1 => Some(UnixState::Connected),
            7 => Some(UnixState::Unconnected),
            _ => None,
        }
    }

    /// The `state` label value.
    pub fn label(self) -> &'static str {
        match self {
            UnixState::Listen => "listen",
            UnixState::Connected => "connected",
            UnixState::Unconnected => "unconnected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_in_kernel_order() {
        for (i, state) in TcpState::ALL.iter().enumerate() {
            assert_eq!(state.kernel() as usize, i + 1);
            assert_eq!(TcpState::from_kernel(state.kernel()), Some(*state));
        }
        assert_eq!(TcpState::from_kernel(12), Some(TcpState::SynRecv));
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }
}
