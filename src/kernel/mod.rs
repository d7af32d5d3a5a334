//! The kernel side: sock_diag's wire format (`diag`), netlink message
//! checks (`parse`), the socket and its stand-ins (`transport`), and
//! driving one dump to its end (`dump`). Nothing here knows a collector.

pub mod diag;
pub mod dump;
pub mod parse;
pub mod transport;
