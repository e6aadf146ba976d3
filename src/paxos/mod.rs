//! The protocol core: CASPaxos roles as plain structs with no IO.
//!
//! [`acceptor::Acceptor`] and [`proposer::Proposer`] take messages (and, for the proposer, the
//! current time) and return the messages to send and the records to persist. The actors in
//! `crate::actors` only carry those between the core, the network and storage, which is what
//! lets the tests here drive every message by hand: deliver, drop, duplicate, reorder,
//! restart.

pub mod acceptor;
pub mod admission;
pub mod bootstrap;
pub mod driver;
pub mod identity;
pub mod lease;
pub mod listing;
pub mod membership;
pub mod merge;
pub mod proposer;
pub mod quorum;
pub mod recent;
pub mod record;
pub mod register;
pub mod types;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_start;
