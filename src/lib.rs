//! paxkv: a leaderless key-value store replicated with per-key Paxos (CASPaxos) on LMDB.
//!
//! - [`paxos`]: the protocol core, plain structs with no IO;
//! - [`actors`]: the actix runtime of one node (supervisor, per-key proposer and acceptor,
//!   network, storage), started by [`node::NodeHandle`];
//! - [`storage`]: LMDB through heed;
//! - [`client`]: the async client the CLI and the tests use;
//! - [`messages`]: every wire and actor message.

pub mod actors;
pub mod client;
pub mod config;
pub mod error;
pub mod frame;
pub mod messages;
pub mod node;
pub mod paxos;
pub mod storage;

pub use error::{Error, Result};
