//! The membership at run time. What a membership means and why a change is safe is argued in
//! `paxos::membership`; every decision is the sans-IO core's (`paxos::bootstrap` founds a
//! cluster, `paxos::identity` tells an older copy of a store, `paxos::driver` steps a change,
//! `paxos::admission` admits a vote). These modules carry the decisions out, one job each:
//!
//! | module | its job |
//! |---|---|
//! | [`installed`] | the node's installed membership ([`InstalledMembership`]) and what every actor does with it ([`MembershipService`]): install a newer one (the barrier of a change), fetch one from a member, answer a peer's `Hello` |
//! | [`start`] | the node's start: a membership (fetched, or a cluster founded), then whether this store may vote |
//! | [`register`] | the membership register ([`Register`]): read and compare-and-set through this node's supervisor |
//! | [`change`] | the executor of a change, `paxkv member add|remove` ([`ChangeExecutor`]) |
//!
//! The k-way merge of peers' key digests that a change's rescan walks is
//! `actors::digest_merge`, shared with the listing of keys.
//!
//! **Names.** A [`Membership`] is a value: one epoch's members, voters and phase, as the
//! register holds it. The [`InstalledMembership`] is the one this node installed. A
//! [`MembershipAnswer`] is what a node answers a peer (or the CLI) that asks for it, on the
//! wire. Whether this node's acceptors vote is one flag, [`crate::actors::Readiness`].
//!
//! [`Membership`]: crate::paxos::membership::Membership
//! [`MembershipAnswer`]: crate::messages::MembershipAnswer

pub(crate) mod change;
pub(crate) mod installed;
pub(crate) mod register;
pub(crate) mod start;

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, Retryable};

pub use change::ChangeExecutor;
pub use installed::{InstalledMembership, MembershipService};
pub use register::Register;

use crate::error::Error;

/// Why one attempt of a retried step failed: worth another attempt, or for good.
#[derive(Debug)]
pub(crate) enum Failure {
    Again(Error),
    Final(Error),
}

impl Failure {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Failure::Again(e) | Failure::Final(e) => e,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `backoff` gives up (then with its last
/// failure, `Again` when the attempts ran out): the one retry loop of the membership tasks
/// (recording a store, settling a key, the passes of a rescan), on `backon`.
pub(crate) async fn retry<T, Fut>(
    backoff: impl BackoffBuilder,
    attempt: impl FnMut() -> Fut,
) -> std::result::Result<T, Failure>
where
    Fut: Future<Output = std::result::Result<T, Failure>>,
{
    attempt
        .retry(backoff)
        .sleep(pause)
        .when(|failure| matches!(failure, Failure::Again(_)))
        .await
}

/// The pause between attempts; none at all for a zero delay (a timer of 0 still waits for
/// the timer's next tick).
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
