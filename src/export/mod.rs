//! What a collection becomes for its readers: the Prometheus series
//! (`metrics`, around the collectors' own) and the human summary and
//! landing page (`render`).

pub mod metrics;
pub mod render;
