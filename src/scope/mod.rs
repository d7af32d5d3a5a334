//! Where sockets are collected from and attributed to: network namespaces
//! (`netns` finds and enters them, `namespaces` keeps one collector per
//! namespace) and cgroups (`cgroup` maps the ids the tcp dump carries to
//! paths).

pub mod cgroup;
pub mod namespaces;
pub mod netns;
