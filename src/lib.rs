//! paxkv: a leaderless key-value store replicated with per-key Paxos (CASPaxos) on LMDB.
//! ARCHITECTURE.md has the module map and the path of a request through it.
//!
//! The public surface, deliberately: what the `paxkv` binary and the tests use.
//! - [`paxos`]: the protocol core, plain structs with no IO (types, quorums, register,
//!   acceptor, proposer);
//! - [`messages`]: the wire protocol, and [`frame`]: how it goes on a connection;
//! - [`client`]: the async client the CLI, the benchmark and the tests use;
//! - [`config`], [`error`]; [`tls`]: identities on connections, and [`certs`]: the
//!   development CA; [`metrics`]: the Prometheus endpoint;
//! - [`node::NodeHandle`]: one node, in-process; [`actors`] exposes only its supervisor and
//!   its messages (the test hooks among them exist only with the `testing` feature);
//! - [`storage`]: LMDB through heed (the tests open a node's store directly).

pub mod actors;
pub mod certs;
pub mod client;
pub mod config;
pub mod error;
pub mod frame;
pub mod json;
pub mod messages;
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod storage;
pub mod tls;
pub mod watch;

pub use error::{Error, Result};

/// Whether this build has the test hooks (the `testing` cargo feature).
pub const TEST_HOOKS: bool = cfg!(feature = "testing");
