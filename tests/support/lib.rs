//! paxkv's integration-test kit: the clusters the tests run (in process, and as `paxkv node`
//! processes) behind one trait of fault verbs ([`Cluster`], in `kit.rs`), the history of a
//! test's operations and the linearizability checker that judges it, and the helpers the
//! test files share (polling with a deadline, free ports, lost disks, seeds, fault decks).
//!
//! **Why a crate of its own** (a workspace member used as a dev-dependency, as tokio's
//! `tokio-test` or openraft's `tests` crate): each file in `tests/` is a binary of its own, and
//! a `mod support;` shared by all of them is compiled into each, where every helper that file
//! does not call is dead code. A library has no dead public items, so no
//! `#![allow(dead_code)]` hides anything: an item no test uses anywhere is still found (by
//! grepping, and the kit's own private items by the compiler). It is also compiled once
//! rather than once per test file. It lives in `tests/support/` beside the tests it serves;
//! cargo takes no test binary from a directory without a `main.rs`.
//!
//! `linearizability.rs` and `convert.rs` are also compiled into paxkv's own unit tests by path
//! (the protocol simulation, `src/paxos/sim.rs`, checks its histories with them): they use
//! nothing of the kit, and the checker's own tests run there.

mod convert;
pub mod history;
pub mod http_kv;
pub mod in_process;
pub mod kit;
pub mod leases;
pub mod linearizability;
pub mod net;
pub mod processes;
pub mod watching;
pub mod workload;

// The four types `convert.rs` takes from its parent module, and the lease record's functions
// `linearizability.rs` does.
use linearizability::{Input, Output};
use paxkv::paxos::lease as lease_model;
use paxkv::paxos::types::{Command, Outcome};

pub use history::{list_pages, random_command, write_once_keys, History};
pub use http_kv::{HttpKv, Kv};
pub use in_process::{growth_of_a_connection_that_never_reads, until_limited, TestCluster};
pub use kit::{
    assert_stays_refused, bound_ports, cut, drive_until_done, eventually, free_port, free_ports,
    got, member_add, nodes_toml, outgoing_paxos_cut, rejoin, resident_bytes, secs_from_env,
    seed_from_env, spawn_remove_and_add, spawn_replacement, tools_present,
    wait_for_a_change_under_way, Cluster, Deck,
};
pub use net::{http_get, metric_in, tls_dial, tls_identity};
pub use watching::WatchClient;
