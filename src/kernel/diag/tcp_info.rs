//! `struct tcp_info` (include/uapi/linux/tcp.h), the payload of the
//! `INET_DIAG_INFO` attribute the kernel appends to each full TCP socket
//! when a dump asks for it (bit `1 << (INET_DIAG_INFO - 1)` of idiag_ext):
//! a borrowed, length-checked view of the fields the `tcp.info` option
//! reads, with their offsets and kernel meanings next to the accessors.
//!
//! The struct has only ever grown at its end, and the kernel copies
//! `min(sizeof(struct tcp_info), what it has)`; an older kernel sends a
//! shorter attribute. So every accessor returns `None` when the attribute
//! does not cover its field: a field the kernel did not send is never read
//! as a zero. Zero-copy, no allocation.

/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info` for TCP.
pub const INET_DIAG_INFO: u16 = 2;
/// idiag_ext bit that asks for [`INET_DIAG_INFO`].
pub const INET_DIAG_INFO_EXT: u8 = 1 << (INET_DIAG_INFO - 1);

/// `TCP_CA_*` congestion-avoidance states of `tcpi_ca_state`.
pub const TCP_CA_OPEN: u8 = 0;
/// Loss recovery after an RTO: everything outstanding is marked lost.
pub const TCP_CA_LOSS: u8 = 4;

/// A borrowed `struct tcp_info` as sent (x86-64 layout, host byte order;
/// the sizes below are where each field ends, i.e. the attribute length a
/// kernel must send for it to be present):
///
/// | offset | size | field               | meaning                                             | since |
/// |--------|------|---------------------|-----------------------------------------------------|-------|
/// | 0      | 1    | tcpi_state          | TCP state, kernel numbering                         | 2.6   |
/// | 1      | 1    | tcpi_ca_state       | TCP_CA_Open 0, Disorder 1, CWR 2, Recovery 3, Loss 4 | 2.6   |
/// | 2      | 1    | tcpi_retransmits    | consecutive RTOs of the head segment                | 2.6   |
/// | 24     | 4    | tcpi_unacked        | segments in flight (packets_out)                    | 2.6   |
/// | 32     | 4    | tcpi_lost           | segments now marked lost (lost_out)                 | 2.6   |
/// | 36     | 4    | tcpi_retrans        | retransmitted segments not yet acked (retrans_out)  | 2.6   |
/// | 68     | 4    | tcpi_rtt            | smoothed RTT, microseconds (srtt >> 3)              | 2.6   |
/// | 72     | 4    | tcpi_rttvar         | RTT mean deviation, microseconds                    | 2.6   |
/// | 100    | 4    | tcpi_total_retrans  | segments retransmitted over the socket's life       | 2.6 (struct ends at 104) |
/// | 144    | 4    | tcpi_notsent_bytes  | bytes written by the application, not yet sent      | 4.6   |
/// | 148    | 4    | tcpi_min_rtt        | minimum RTT seen, microseconds                      | 4.6   |
/// | 176    | 8    | tcpi_rwnd_limited   | time limited by the peer's receive window, µs       | 4.19  |
/// | 208    | 8    | tcpi_bytes_retrans  | bytes retransmitted over the socket's life          | 4.19  |
/// | 228    | 4    | tcpi_snd_wnd        | peer's advertised window after scaling, bytes       | 5.4   |
///
/// A kernel that has not yet measured an RTT (no ACK of data yet) reports
/// tcpi_rtt 0: [`rtt_us`](Self::rtt_us) returns it as sent.
#[derive(Clone, Copy)]
pub struct TcpInfo<'a>(&'a [u8]);

impl<'a> TcpInfo<'a> {
    /// Offsets of the fields read (see the table).
    pub const CA_STATE: usize = 1;
    pub const LOST: usize = 32;
    pub const RETRANS: usize = 36;
    pub const RTT: usize = 68;
    pub const TOTAL_RETRANS: usize = 100;
    pub const NOTSENT_BYTES: usize = 144;
    /// Length of the oldest `struct tcp_info` (2.6 to 3.x): up to
    /// tcpi_total_retrans.
    pub const MIN_LEN: usize = 104;

    /// Views an INET_DIAG_INFO payload of any length: fields past its end
    /// read as None.
    pub fn new(payload: &'a [u8]) -> TcpInfo<'a> {
        TcpInfo(payload)
    }

    /// The attribute's length as sent.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8_at(&self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.0.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// tcpi_ca_state.
    pub fn ca_state(&self) -> Option<u8> {
        self.u8_at(Self::CA_STATE)
    }
    /// tcpi_lost: segments currently marked lost.
    pub fn lost(&self) -> Option<u32> {
        self.u32_at(Self::LOST)
    }
    /// tcpi_retrans: retransmitted segments still unacknowledged.
    pub fn retrans(&self) -> Option<u32> {
        self.u32_at(Self::RETRANS)
    }
    /// tcpi_rtt: smoothed RTT in microseconds.
    pub fn rtt_us(&self) -> Option<u32> {
        self.u32_at(Self::RTT)
    }
    /// tcpi_total_retrans: segments retransmitted since the socket began.
    pub fn total_retrans(&self) -> Option<u32> {
        self.u32_at(Self::TOTAL_RETRANS)
    }
    /// tcpi_notsent_bytes (4.6+).
    pub fn notsent_bytes(&self) -> Option<u32> {
        self.u32_at(Self::NOTSENT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6.x `struct tcp_info` (248 bytes on 6.18) with the fields read set
    /// to recognisable values at their documented offsets.
    fn full() -> Vec<u8> {
        let mut b = vec![0u8; 248];
        b[0] = 1; // tcpi_state: ESTABLISHED
        b[TcpInfo::CA_STATE] = TCP_CA_LOSS;
        b[32..36].copy_from_slice(&3u32.to_ne_bytes()); // tcpi_lost
        b[36..40].copy_from_slice(&2u32.to_ne_bytes()); // tcpi_retrans
        b[68..72].copy_from_slice(&45u32.to_ne_bytes()); // tcpi_rtt 45 µs
        b[100..104].copy_from_slice(&17u32.to_ne_bytes()); // tcpi_total_retrans
        b[144..148].copy_from_slice(&4096u32.to_ne_bytes()); // tcpi_notsent_bytes
        b
    }

    #[test]
    fn reads_fields_at_their_kernel_offsets() {
        let b = full();
        let info = TcpInfo::new(&b);
        assert_eq!(info.len(), 248);
        assert_eq!(info.ca_state(), Some(TCP_CA_LOSS));
        assert_eq!(info.lost(), Some(3));
        assert_eq!(info.retrans(), Some(2));
        assert_eq!(info.rtt_us(), Some(45));
        assert_eq!(info.total_retrans(), Some(17));
        assert_eq!(info.notsent_bytes(), Some(4096));
    }

    #[test]
    fn a_shorter_struct_has_only_the_fields_it_covers() {
        let b = full();
        // A 3.x kernel: 104 bytes, up to tcpi_total_retrans.
        let old = TcpInfo::new(&b[..TcpInfo::MIN_LEN]);
        assert_eq!(old.total_retrans(), Some(17));
        assert_eq!(old.rtt_us(), Some(45));
        assert_eq!(old.notsent_bytes(), None, "4.6 field, not sent");
        // Cut inside tcpi_total_retrans: that field is absent, not 0 or
        // a partial value.
        let cut = TcpInfo::new(&b[..102]);
        assert_eq!(cut.total_retrans(), None);
        assert_eq!(cut.rtt_us(), Some(45));
        // Cut inside tcpi_rtt.
        let cut = TcpInfo::new(&b[..70]);
        assert_eq!((cut.rtt_us(), cut.retrans()), (None, Some(2)));
        let empty = TcpInfo::new(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.ca_state(), None);
        assert_eq!(TcpInfo::new(&b[..1]).ca_state(), None);
        assert_eq!(TcpInfo::new(&b[..2]).ca_state(), Some(TCP_CA_LOSS));
    }

    #[test]
    fn info_extension_bit_matches_the_kernel() {
        // INET_DIAG_INFO is 2 in enum inet_diag_attr; ss asks for it with
        // idiag_ext |= 1 << (INET_DIAG_INFO - 1).
        assert_eq!(INET_DIAG_INFO_EXT, 0x02);
        assert_eq!(TCP_CA_OPEN, 0);
    }
}
