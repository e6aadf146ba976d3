//! The listing's per-key rule, with no IO (argued in `actors::list`, which scans the voters and
//! runs the read rounds; the simulation, `paxos::sim`, runs the same rule over its own scans):
//! a key's state is taken from the scanned records where they show it chosen, exactly as the
//! quick read takes it from its acceptors' answers (`paxos::proposer::read_answers`); where
//! they do not, the caller reads the key with a Paxos round.

use std::collections::BTreeMap;

use crate::paxos::proposer::{read_answers, QuickRead, Vote};
use crate::paxos::quorum::Quorums;
use crate::paxos::record::AcceptorRecord;
use crate::paxos::types::NodeId;

/// Does a voter answer a list's scan: only at the caller's epoch (the scan's quorums are that
/// epoch's voters) and only from a store confirmed intact (a wiped, rolled back or unconfirmed
/// store may lack states it voted for, and its "no such key" would count)?
pub fn serves_scan(epoch: u64, caller_epoch: u64, store_confirmed_intact: bool) -> bool {
    epoch == caller_epoch && store_confirmed_intact
}

/// Did enough voters answer a scan for its merge to hold every key chosen before it: a
/// classic quorum of the epoch's voters (any two quorums meet)?
pub fn scan_is_complete(answered: usize, quorums: Quorums) -> bool {
    answered >= quorums.classic()
}

/// A key's live value and version (`None`: no value).
pub type Live = Option<(Vec<u8>, u64)>;

/// A key's value (`None`: deleted, or never written) and version, deleted keys' included.
pub type Versioned = (Option<Vec<u8>>, u64);

/// [`chosen_versioned`], for the live keys only, of borrowed records.
pub fn chosen<'a>(
    covering: impl IntoIterator<Item = Option<&'a AcceptorRecord>>,
    voters: usize,
    quorums: Quorums,
) -> Option<Live> {
    chosen_versioned(covering.into_iter().map(|r| r.cloned()), voters, quorums)
        .map(|(value, version)| value.map(|v| (v, version)))
}

/// The state of a key if the records of the voters whose scan covered it show it chosen
/// (`Some(None)`: chosen with no value); `None` if they do not (read it with a round). One
/// item per covering voter: its record of the key, or `None` if it holds none. `voters` is
/// the epoch's number of voters (those not covering count as not answered). The records are
/// taken, not copied: a listing decides thousands of keys a page, each from up to five.
pub fn chosen_versioned(
    covering: impl IntoIterator<Item = Option<AcceptorRecord>>,
    voters: usize,
    quorums: Quorums,
) -> Option<Versioned> {
    let votes: BTreeMap<NodeId, Vote> = covering
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let vote = match record {
                Some(r) => Vote {
                    accepted: r.accepted,
                    state: r.state,
                    fast_unknown: r.fast_unknown,
                    full: true,
                },
                None => Vote::none(),
            };
            (i as NodeId, vote)
        })
        .collect();
    match read_answers(&votes, voters, quorums.classic(), quorums.fast(), None) {
        QuickRead::Chosen(_, state) => Some((state.value, state.version)),
        QuickRead::Undecided | QuickRead::Impossible => None,
    }
}
