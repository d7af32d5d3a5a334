//! Where sockets are collected from and attributed to: network namespaces
//! (`netns` finds and labels them, `netns_enter` enters them,
//! `netns_sockstat` reads their own counters to skip empty ones,
//! `netns_pool` collects them on a few threads, `netns_cache` keeps their
//! counts, `netns_problem` says what went wrong, and `namespaces` ties it
//! together with the budget) and cgroups (`cgroup`
//! holds the labels and problems shared by `cgroup_mount`, which finds the
//! cgroup2 mount, `cgroup_paths`, which maps the ids the tcp dump carries
//! to paths, `cgroup_attribution`, which turns per-id counts into
//! capped rows, and `cgroup_health`, which does the same for tcp_info
//! health and keeps each cgroup label's retransmission counter).

pub mod cgroup;
pub mod cgroup_attribution;
pub mod cgroup_health;
pub mod cgroup_mount;
pub mod cgroup_paths;
pub mod namespaces;
pub mod netns;
pub mod netns_cache;
pub mod netns_enter;
pub mod netns_pool;
pub mod netns_problem;
pub mod netns_sockstat;
