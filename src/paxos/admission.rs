//! The admission of a Paxos request by an acceptor: what it does with a request of another
//! membership epoch, and with a fast Accept while a change is in progress. One decision,
//! called by the acceptor actor (`actors::acceptor`) and by the simulation (`paxos::sim`), so
//! that the simulation tests the rule that runs. Why these rules make a change of the voters
//! safe is argued in `paxos::membership`.
//!
//! - A request of an **older** epoch is answered [`PeerMessage::Stale`] with the acceptor's
//!   epoch, never stepped: every reply a proposer counts was produced at the proposer's own
//!   epoch, and counted against that epoch's voters only.
//! - A request of a **newer** epoch is dropped, and the acceptor fetches that membership from
//!   the sender first (the proposer retries).
//! - A **fast Accept** while the membership has a change in progress is rejected at the fast
//!   ballot (the close-fast step of a change).
//!
//! What is checked before this, elsewhere: the sender is a member (the network actor), the
//! node votes and its store is recorded for the key (the key table's delivery,
//! `actors::routes`, `InstalledMembership::admits_key`).

use crate::messages::PeerMessage;
use crate::paxos::types::Ballot;

/// Does a node of cluster `mine` take a frame or call of cluster `theirs`? Only of its own
/// identity, requests and replies alike (`paxos::membership::cluster_id`); a node with no
/// membership yet (0) takes no Paxos frame at all, as it votes on nothing and proposes
/// nothing.
pub fn same_cluster(mine: u64, theirs: u64) -> bool {
    mine == theirs && mine != 0
}

/// Does a node of cluster `mine` serve a node call (`messages::NodeCall`) from a caller of
/// cluster `caller`? One that changes something (`Install`, `Hello`) only from its own
/// cluster; one that changes nothing (a membership, digest or record read) to a caller that
/// names no cluster, or by a node that has none, but never across two clusters: the caller
/// would take another cluster's membership or records for its own.
pub fn serves_call(mine: u64, caller: u64, changes_nothing: bool) -> bool {
    if changes_nothing {
        mine == 0 || caller == 0 || mine == caller
    } else {
        same_cluster(mine, caller)
    }
}

/// What an acceptor does with one Paxos request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Step the acceptor with it.
    Step,
    /// Answer this instead, without stepping.
    Answer(PeerMessage),
    /// Drop it, and fetch the sender's (newer) membership.
    FetchNewer,
}

/// The admission of `msg`, sent at `msg_epoch`, by an acceptor at `epoch`; `fast_allowed`
/// tells whether the acceptor's membership allows the fast ballot (asked only for a fast
/// Accept of the acceptor's own epoch, so the hot path reads one atomic).
pub fn admit(
    epoch: u64,
    msg_epoch: u64,
    msg: &PeerMessage,
    fast_allowed: impl FnOnce() -> bool,
) -> Admission {
    if msg_epoch < epoch {
        return Admission::Answer(PeerMessage::Stale { epoch });
    }
    if msg_epoch > epoch {
        return Admission::FetchNewer;
    }
    let fast_accept = matches!(msg, PeerMessage::Accept { ballot, .. } if *ballot == Ballot::FAST);
    if fast_accept && !fast_allowed() {
        return Admission::Answer(PeerMessage::Reject {
            ballot: Ballot::FAST,
            seen: Ballot::FAST,
        });
    }
    Admission::Step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare() -> PeerMessage {
        PeerMessage::Prepare {
            ballot: Ballot { round: 3, node: 1 },
        }
    }

    #[test]
    fn node_calls_are_served_within_one_cluster_and_reads_to_a_caller_without_one() {
        assert!(serves_call(7, 7, false) && serves_call(7, 7, true));
        assert!(!serves_call(7, 8, false) && !serves_call(7, 8, true));
        // Installs and Hellos need both sides to name the same cluster.
        assert!(!serves_call(7, 0, false) && !serves_call(0, 7, false));
        // Reads: a tool or a node still without a membership asks; a node without one answers.
        assert!(serves_call(7, 0, true) && serves_call(0, 7, true));
    }

    #[test]
    fn an_older_epoch_is_answered_stale_and_a_newer_one_fetched() {
        assert_eq!(
            admit(5, 4, &prepare(), || true),
            Admission::Answer(PeerMessage::Stale { epoch: 5 })
        );
        assert_eq!(admit(5, 6, &prepare(), || true), Admission::FetchNewer);
        assert_eq!(admit(5, 5, &prepare(), || false), Admission::Step);
    }
}
