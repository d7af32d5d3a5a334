//! The HTTP server: the poll loop and its limits (`serve`), the
//! exporter-toolkit web configuration file (`webconfig`) and basic auth
//! (`auth`).

pub mod auth;
pub mod serve;
pub mod webconfig;
