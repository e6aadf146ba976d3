//! The `paxkv` command: run nodes, run a local five-node cluster, and talk to a cluster.
//!
//! Exit codes: 0 success or found; 1 not found, or cas not swapped; 2 bad usage or bad input;
//! 3 unavailable (no quorum before the deadline) or outcome unknown, or the answer could not be
//! written to stdout.

mod cli;

/// mimalloc: a profile of a put showed glibc's malloc among the largest costs of a node.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
