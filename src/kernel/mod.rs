//! The kernel side: sock_diag's wire format (`diag`), netlink message
//! checks (`parse`), the socket (`transport`) and its stand-ins (`fixture`
//! replay and the `recorder`), and driving one dump to its end (`dump`).
//! Nothing here knows a collector.

pub mod diag;
pub mod dump;
pub mod fixture;
pub mod parse;
pub mod recorder;
pub mod sysctl;
pub mod transport;
