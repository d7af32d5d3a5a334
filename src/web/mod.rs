//! The HTTP server: the poll loop and its limits (`serve`), one connection's
//! driving of sockets, TLS and deadlines (`conn`), its I/O-free protocol
//! state machine (`session`), request heads (`request`), the answers
//! (`respond`), the exporter-toolkit web configuration file (`webconfig`,
//! its TLS section in `tls`) and basic auth (`auth`).

pub mod auth;
pub mod conn;
pub mod request;
pub mod respond;
pub mod serve;
pub mod session;
pub mod tls;
pub mod webconfig;
