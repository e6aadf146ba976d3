//! What one storage commit costs, by how many records it carries: `Store::write` (the storage
//! actor's group commit: an append to the write-ahead log, committed and fsynced) of `--group`
//! records, `--commits` times, on a fresh store in `--dir` (a temporary directory on the
//! data disk by default). Prints one JSON line: the calling thread's CPU time per commit
//! (user and system, `getrusage(RUSAGE_THREAD)`) and per record, and the wall time per
//! commit. Run under `strace -f -c` to count the syscalls (fdatasync, pwrite) per commit.
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
    let (u0, s0, t0) = {
        let (u, s) = thread_cpu();
        (u, s, Instant::now())
    };
    for group in keys.chunks(args.group) {
        let records: Vec<(&[u8], &AcceptorRecord)> =
            group.iter().map(|k| (k.as_slice(), &record)).collect();
        store.write(&records).expect("the commit");
    }
    let wall = t0.elapsed().as_micros() as f64;
    let (u1, s1) = thread_cpu();
    let n = args.commits as f64;
    println!(
        "{{\"group\":{},\"commits\":{},\"user_us_per_commit\":{:.1},\"sys_us_per_commit\":{:.1},\
         \"cpu_us_per_record\":{:.1},\"wall_us_per_commit\":{:.1}}}",
        args.group,
        args.commits,
        (u1 - u0) as f64 / n,
        (s1 - s0) as f64 / n,
        ((u1 - u0) + (s1 - s0)) as f64 / (n * args.group as f64),
        wall / n
    );
}
