//! Pieces of the `collect` benchmark: the socket load generator, the
//! comparison programs (run as helper-mode subprocesses), subprocess
//! measurement, and node_exporter.

pub mod load;
pub mod measure;
pub mod nodeexp;
pub mod probes;
