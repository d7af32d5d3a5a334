//! The HTTP server: the poll loop and its limits (`serve`), a listening
//! socket systemd passes instead (`activation`), one connection's driving
//! of sockets, TLS and deadlines (`conn`), its I/O-free protocol state
//! machine (`session`), request heads (`request`), the answers
//! (`respond`; the HTML landing page in `landing`), the exporter-toolkit
//! web configuration file (`webconfig`, its TLS section in `tls`) and
//! basic auth (`auth`).

pub mod activation;
pub mod auth;
pub mod body;
pub mod conn;
pub mod filter;
pub mod landing;
pub mod request;
pub mod respond;
pub mod serve;
pub mod session;
pub mod tls;
pub mod webconfig;
