//! What a node's lease keeper holds per lease (`paxos::lease::Tracker`): fills a tracker with
//! `--leases` leases, as a scan would, and prints the process's resident memory growth per
//! lease (`/proc/self/statm`). The figure behind `limits.max_leases`'s bound.

use std::time::{Duration, Instant};

use clap::Parser;
use paxkv::paxos::lease::{LeaseRecord, Tracker};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    leases: u64,
}

/// Resident bytes now.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let args = Args::parse();
    let record = LeaseRecord::new(Duration::from_secs(10));
    let before = resident();
    let mut tracker = Tracker::default();
    let now = Instant::now();
    for id in 0..args.leases {
        tracker.saw(
            id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            1,
            &record,
            0,
            now,
            1,
        );
    }
    let after = resident();
    println!(
        "{{\"leases\": {}, \"tracked\": {}, \"bytes_per_lease\": {:.1}}}",
        args.leases,
        tracker.len(),
        (after - before) as f64 / args.leases as f64
    );
}
