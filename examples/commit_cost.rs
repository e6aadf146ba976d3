//! What one storage commit costs, by how many records it carries: `Store::write` (the storage
//! actor's group commit: an append to the write-ahead log, committed and fsynced) of `--group`
//! records, `--commits` times, on a fresh store in `--dir` (a temporary directory on the
//! data disk by default). Prints one JSON line: the calling thread's CPU time per commit
//! (user and system, `getrusage(RUSAGE_THREAD)`) and per record, the wall time per commit,
//! and the writes the block device completed per commit (all of the machine's: run it on a
//! quiet machine). Run under `strace -f -c` to count the syscalls (fdatasync, pwrite) per commit.
//!
//! The records are the size of a benchmark put's (a 100-byte value, a few remembered writes).

use std::time::Instant;

use clap::Parser;
use paxkv::paxos::record::AcceptorRecord;
use paxkv::paxos::types::{Ballot, Register};
use paxkv::storage::Store;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2_000)]
    commits: usize,
    #[arg(long, default_value_t = 1)]
    group: usize,
    /// Directory for the store (default: a temporary one under the current directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Commits made first and not measured (a store past its first growth).
    #[arg(long, default_value_t = 0)]
    warm: usize,
    /// The block device the store is on, whose completed writes are counted
    /// (`/sys/block/DEV/stat`; 0 when it has none).
    #[arg(long, default_value = "vda")]
    device: String,
}

/// Writes the device completed so far, and the 512-byte sectors they wrote.
fn device_writes(dev: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).unwrap_or_default();
    let fields: Vec<u64> = stat
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (
        fields.get(4).copied().unwrap_or(0),
        fields.get(6).copied().unwrap_or(0),
    )
}

/// This thread's CPU time (user, system) in microseconds.
fn thread_cpu() -> (u64, u64) {
    // SAFETY: getrusage writes the struct it is given; RUSAGE_THREAD is Linux's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(usage.ru_utime), us(usage.ru_stime))
}

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(|| ".".into()))
        .expect("a temporary directory");
    let mut store = Store::open(tmp.path(), 1 << 30, 1).expect("the store opens");
    let record = AcceptorRecord {
        promised: Ballot::new(7, 1),
        accepted: Ballot::new(7, 1),
        state: Register {
            version: 3,
            value: Some(vec![b'v'; 100]),
            ..Register::default()
        },
        ..AcceptorRecord::default()
    };
    let keys: Vec<Vec<u8>> = (0..args.commits * args.group)
        .map(|i| format!("k{:08}", i % 10_000).into_bytes())
        .collect();
    let commit = |store: &mut Store, group: &[Vec<u8>]| {
        let records: Vec<(&[u8], &AcceptorRecord)> =
            group.iter().map(|k| (k.as_slice(), &record)).collect();
        store.write(&records).expect("the commit");
    };
    for group in keys.chunks(args.group).cycle().take(args.warm) {
        commit(&mut store, group);
    }
    let (w0, sectors0) = device_writes(&args.device);
    let (u0, s0, t0) = {
        let (u, s) = thread_cpu();
        (u, s, Instant::now())
    };
    for group in keys.chunks(args.group) {
        commit(&mut store, group);
    }
    let wall = t0.elapsed().as_micros() as f64;
    let (u1, s1) = thread_cpu();
    let (w1, sectors1) = device_writes(&args.device);
    let n = args.commits as f64;
    println!(
        "{{\"group\":{},\"commits\":{},\"user_us_per_commit\":{:.1},\"sys_us_per_commit\":{:.1},\
         \"cpu_us_per_record\":{:.1},\"wall_us_per_commit\":{:.1},\
         \"device_writes_per_commit\":{:.2},\"device_kib_per_commit\":{:.1}}}",
        args.group,
        args.commits,
        (u1 - u0) as f64 / n,
        (s1 - s0) as f64 / n,
        ((u1 - u0) + (s1 - s0)) as f64 / (n * args.group as f64),
        wall / n,
        (w1 - w0) as f64 / n,
        (sectors1 - sectors0) as f64 / 2.0 / n,
    );
}
