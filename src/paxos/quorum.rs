//! Quorum arithmetic: the only place that says how many acceptors make a quorum, and the one
//! tally of equal answers. The proposer, the membership change, the simulation and the
//! benchmark all ask here, so that a change of the member set changes one type.
//!
//! With `n` acceptors:
//! - a **classic** quorum is a majority, `n/2 + 1`: any two intersect (Paxos);
//! - a **fast** quorum is `n - n/4` (4 of 5, 3 of 3): any classic quorum holds a state chosen
//!   at the fast ballot at least `fast - (n - classic)` times, and no other state that often,
//!   which is what lets a classic round recover it (Fast Paxos, Lamport 2006, §3).

/// The quorum sizes of a set of `n` acceptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorums {
    members: usize,
}

impl Quorums {
    /// The quorums of `members` acceptors (at least one).
    pub fn new(members: usize) -> Quorums {
        assert!(members > 0, "a cluster has at least one member");
        Quorums { members }
    }

    pub fn members(&self) -> usize {
        self.members
    }

    /// Acceptances (or promises) that make a classic quorum: a majority.
    pub fn classic(&self) -> usize {
        self.members / 2 + 1
    }

    /// Acceptances that choose a state at the fast ballot.
    pub fn fast(&self) -> usize {
        self.members - self.members / 4
    }

    /// Acceptances needed at `ballot`: fast at the fast ballot, classic otherwise.
    pub fn for_ballot(&self, fast: bool) -> usize {
        if fast {
            self.fast()
        } else {
            self.classic()
        }
    }
}

/// Counts equal answers, in the order each was first seen.
pub fn tally<T: PartialEq>(answers: impl IntoIterator<Item = T>) -> Vec<(T, usize)> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for answer in answers {
        match counts.iter_mut().find(|(seen, _)| *seen == answer) {
            Some((_, n)) => *n += 1,
            None => counts.push((answer, 1)),
        }
    }
    counts
}

/// The most frequent answer of a [`tally`] (the last seen among equals), and its count.
pub fn most<T>(counts: &[(T, usize)]) -> Option<(&T, usize)> {
    counts
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(answer, n)| (answer, *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes_for_one_to_seven_members() {
        // (members, classic, fast)
        let table = [
            (1, 1, 1),
            (2, 2, 2),
            (3, 2, 3),
            (4, 3, 3),
            (5, 3, 4),
            (6, 4, 5),
            (7, 4, 6),
        ];
        for (n, classic, fast) in table {
            let q = Quorums::new(n);
            assert_eq!((q.classic(), q.fast()), (classic, fast), "{n} members");
        }
    }

    /// The properties the protocol relies on, for every size up to 64: two classic quorums
    /// intersect; any two fast quorums and one classic quorum intersect (`2f + q > 2n`, Fast
    /// Paxos §3: so at most one state can look possibly chosen at the fast ballot to a
    /// classic round).
    #[test]
    fn quorums_intersect_as_paxos_and_fast_paxos_need() {
        for n in 1..=64 {
            let q = Quorums::new(n);
            assert!(2 * q.classic() > n, "{n}: classic quorums intersect");
            assert!(
                2 * q.fast() + q.classic() > 2 * n,
                "{n}: two fast quorums and a classic one intersect"
            );
        }
    }

    #[test]
    fn a_tally_counts_equal_answers_and_most_takes_the_last_of_equals() {
        let counts = tally(["a", "b", "a", "c", "b"]);
        assert_eq!(counts, vec![("a", 2), ("b", 2), ("c", 1)]);
        assert_eq!(most(&counts), Some((&"b", 2)));
        assert_eq!(most::<&str>(&[]), None);
    }
}
