//! The membership register: the reserved key [`MEMBERSHIP_KEY`], a CASPaxos register like any
//! other, read and written (compare-and-set only) through the key's proposer on this node
//! (`supervisor::Keys`), so that its rounds are the per-key proposer's and its votes the
//! acceptors' (`paxos::admission` admits a store not recorded yet to vote on this key alone).
//!
//! Its writes carry ids of this node's own [`WriteIdMint`], as a client's do: a retried
//! compare-and-set takes effect once, and the register keeps one de-duplication floor for the
//! node rather than one per write (`paxos::register`).

use std::sync::Arc;

use crate::actors::membership::InstalledMembership;
use crate::actors::supervisor::{run_command, Keys};
use crate::error::{Error, Result};
use crate::paxos::membership::{Membership, MEMBERSHIP_KEY};
use crate::paxos::types::{Command, Outcome, WriteIdMint};

/// The membership register, as this node reads and writes it. Cheap to clone.
#[derive(Clone)]
pub struct Register {
    keys: Keys,
    write_ids: Arc<WriteIdMint>,
}

impl Register {
    pub fn new(keys: Keys) -> Register {
        Register {
            keys,
            write_ids: Arc::new(WriteIdMint::new(rand::random())),
        }
    }

    /// The register's membership (`None`: never written, the bootstrap one holds) and its
    /// version.
    pub async fn read(&self) -> Result<(Option<Membership>, u64)> {
        match self.run(Command::Get).await? {
            Outcome::Get {
                value: None,
                version,
            } => Ok((None, version)),
            Outcome::Get {
                value: Some(bytes),
                version,
            } => {
                let m = Membership::decode(&bytes)
                    .map_err(|e| Error::Storage(format!("the membership register: {e}")))?;
                Ok((Some(m), version))
            }
            other => Err(Error::Storage(format!("unexpected {other:?}"))),
        }
    }

    /// [`Register::read`], the membership `installed` holds (as it is once the read is done)
    /// standing for a register never written: the bootstrap membership.
    pub async fn read_or_installed(
        &self,
        installed: &InstalledMembership,
    ) -> Result<(Membership, u64)> {
        let (written, version) = self.read().await?;
        match written.or_else(|| installed.get().map(|m| (*m).clone())) {
            Some(m) => Ok((m, version)),
            None => Err(Error::Unavailable("no membership installed".into())),
        }
    }

    /// Compare-and-set: `next` if the register is at version `expect`; true if it swapped.
    pub async fn cas(&self, expect: u64, next: &Membership) -> Result<bool> {
        let value = next.encode();
        match self.run(Command::Cas { expect, value }).await? {
            Outcome::Cas { swapped, .. } => Ok(swapped),
            other => Err(Error::Storage(format!("unexpected {other:?}"))),
        }
    }

    async fn run(&self, command: Command) -> Result<Outcome> {
        let write_id = command.is_write().then(|| self.write_ids.mint());
        run_command(&self.keys, MEMBERSHIP_KEY.to_vec(), command, write_id).await
    }
}
