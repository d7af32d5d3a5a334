//! Ad-hoc measurement (not a test, no target): the per-socket cost of
//! `TcpStats` cgroup counting, off vs on, over synthetic socket messages laid
//! out like a 6.x kernel's (`struct inet_diag_msg`, then SHUTDOWN, MARK,
//! CGROUP_ID, SOCKOPT on full sockets; TIME_WAIT sockets bare).
//!
//! `cargo run --release --example cgroup_cost [sockets] [cgroups] [rounds]`

use std::hint::black_box;
use std::time::Instant;

use sockdiag_exporter::collectors::tcp::TcpStats;
use sockdiag_exporter::config::PortSet;
use sockdiag_exporter::kernel::diag::{
    INET_DIAG_CGROUP_ID, INET_DIAG_MARK, INET_DIAG_MSG_LEN, INET_DIAG_SHUTDOWN, INET_DIAG_SOCKOPT,
};

fn rtattr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

/// Deterministic xorshift, so runs compare.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (sockets, cgroups, rounds) = (arg(1, 1_000_000), arg(2, 500), arg(3, 7));
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let r = next(&mut seed);
        // 10% TIME_WAIT (no attributes), the rest ESTABLISHED or LISTEN.
        let state: u8 = match r % 10 {
            0 => 6,
            1 => 10,
            _ => 1,
        };
        let mut m = vec![0u8; INET_DIAG_MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[1] = state;
        m[2] = if state == 6 { 3 } else { 0 };
        m[4..6].copy_from_slice(&((i % 60000) as u16 + 1024).to_be_bytes());
        m[6..8].copy_from_slice(&80u16.to_be_bytes());
        if state != 6 {
            let id = 10_000 + (next(&mut seed) % cgroups as u64);
            rtattr(&mut m, INET_DIAG_SHUTDOWN, &[0]);
            rtattr(&mut m, INET_DIAG_MARK, &0u32.to_ne_bytes());
            rtattr(&mut m, INET_DIAG_CGROUP_ID, &id.to_ne_bytes());
            rtattr(&mut m, INET_DIAG_SOCKOPT, &[0, 0]);
        }
        payloads.push(m);
    }
    // One contiguous buffer, like a recv buffer, to keep allocation layout
    // out of the comparison.
    let mut buffer = Vec::new();
    let mut spans = Vec::with_capacity(sockets);
    for p in &payloads {
        spans.push((buffer.len(), p.len()));
        buffer.extend_from_slice(p);
    }
    drop(payloads);
    let run = |stats: &mut TcpStats| {
        stats.clear();
        for &(at, len) in &spans {
            stats.add(black_box(&buffer[at..at + len])).unwrap();
        }
    };
    for on in [false, true, false, true] {
        let mut stats = TcpStats::new(PortSet::default()).with_cgroups(on);
        run(&mut stats); // warm: maps reach their size
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let t = Instant::now();
            run(&mut stats);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "cgroup counting {:3}: {:6.2} ns/socket (best of {rounds}, {sockets} sockets, {} cgroup ids seen)",
            if on { "on" } else { "off" },
            best * 1e9 / sockets as f64,
            stats.by_cgroup().count().saturating_sub(1)
        );
    }
}
