//! The `paxkv` command: run nodes, run a local five-node cluster, and talk to a cluster.
//!
//! Exit codes: 0 success or found; 1 not found, or cas not swapped; 2 bad usage or bad input;
//! 3 unavailable (no quorum before the deadline) or outcome unknown.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
