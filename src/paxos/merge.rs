//! A k-way merge of several nodes' keys, in key order, a page of each at a time: a membership
//! change's rescan walks the nodes' digests (`NodeRequest::Digest`, `actors::digest_merge`), and
//! a listing walks their records under a prefix (`NodeRequest::Scan`, `paxos::listing`). The
//! merge itself ([`KeyMerge`]) does no IO: its caller fetches the pages it asks for, so the
//! simulation (`paxos::sim`) runs it as the nodes do.
//!
//! **Each key once, in order, with memory bounded by one page per source.** Every source
//! pages through its keys in order. A batch holds every entry up to the *horizon*: the
//! smallest last key among the pages of sources that have more to send. No source can later
//! send a key at or below the horizon (its pages come in key order and its current page
//! already reaches it), so every key of the batch is complete (one entry from each source
//! holding it) and no later batch holds it again. The source that set the horizon is emptied
//! by the batch and fetches its next page; so each round makes progress, and the merge ends
//! once no source has more. A source dropped midway (it stopped answering) sends no more: the
//! keys after its last page are merged from the others only.

use std::collections::VecDeque;

use crate::messages::{DigestEntry, SyncRecord};
use crate::paxos::types::Key;

/// An entry of a source's page: something of one key.
pub trait Keyed {
    fn key(&self) -> &Key;
}

impl Keyed for DigestEntry {
    fn key(&self) -> &Key {
        &self.key
    }
}

impl Keyed for SyncRecord {
    fn key(&self) -> &Key {
        &self.key
    }
}

/// One key of a merge, with the entry of every source that holds it (in source order) and
/// those sources' indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedKey<E> {
    pub key: Key,
    pub entries: Vec<E>,
    pub sources: Vec<usize>,
}

/// The merge of the pages of `sources` sources (indexes 0, 1, ...), fed by its caller.
pub struct KeyMerge<E> {
    cursors: Vec<Cursor<E>>,
}

impl<E: Keyed> KeyMerge<E> {
    /// A merge of `sources` sources, each read from after `after` (`None`: its first key).
    pub fn new(sources: usize, after: Option<Key>) -> KeyMerge<E> {
        KeyMerge {
            cursors: (0..sources)
                .map(|index| Cursor::new(index, after.clone()))
                .collect(),
        }
    }

    /// The sources whose page is used up and that have more, with the key to read after.
    pub fn wanting(&self) -> Vec<(usize, Option<Key>)> {
        self.cursors
            .iter()
            .filter(|c| c.entries.is_empty() && c.more)
            .map(|c| (c.index, c.after.clone()))
            .collect()
    }

    /// Source `source`'s next page. One that holds no entry ends the source whatever it
    /// says of more: a source pages through keys it has, and one that stayed "more" without
    /// a last key would stall the horizon for good. A page whose keys are not strictly
    /// increasing past the source's last key is refused (the merge and its horizon rest on
    /// that order): the source is left as it was, for its caller to drop.
    pub fn take(&mut self, source: usize, page: Vec<E>, more: bool) -> Result<(), String> {
        let cursor = &mut self.cursors[source];
        let mut last = cursor.entries.back().map(E::key).or(cursor.after.as_ref());
        for e in &page {
            if last.is_some_and(|last| e.key() <= last) {
                return Err(format!(
                    "source {source} sent a page whose keys are not in strictly increasing \
                     order after the last one"
                ));
            }
            last = Some(e.key());
        }
        cursor.more = more && !page.is_empty();
        if let Some(last) = page.last() {
            cursor.after = Some(last.key().clone());
        }
        cursor.entries.extend(page);
        Ok(())
    }

    /// Source `source` sends no more pages (it stopped answering).
    pub fn drop_source(&mut self, source: usize) {
        self.cursors[source].more = false;
    }

    /// Every entry up to the horizon (see the module doc), grouped by key, in key order. Feed
    /// every source [`KeyMerge::wanting`] asks for first, or the horizon stalls there.
    ///
    /// A k-way merge of the sources' pages (each in key order, [`KeyMerge::take`]): each entry
    /// is moved once, from its source's page into its key's group (no sort, no intermediate
    /// list: a listing's records carry their values, and moving them is what a batch costs).
    pub fn next_batch(&mut self) -> Vec<MergedKey<E>> {
        let horizon: Option<Key> = self
            .cursors
            .iter()
            .filter(|c| c.more)
            .filter_map(|c| c.entries.back().map(|e| e.key().clone()))
            .min();
        let mut merged = Vec::new();
        loop {
            let next = self
                .cursors
                .iter()
                .filter_map(|c| c.entries.front().map(E::key))
                .filter(|k| horizon.as_ref().is_none_or(|h| *k <= h))
                .min()
                .cloned();
            let Some(key) = next else {
                return merged;
            };
            let mut group = MergedKey {
                key,
                entries: Vec::with_capacity(self.cursors.len()),
                sources: Vec::with_capacity(self.cursors.len()),
            };
            for cursor in &mut self.cursors {
                if let Some(e) = cursor.entries.pop_front_if(|e| *e.key() == group.key) {
                    group.entries.push(e);
                    group.sources.push(cursor.index);
                }
            }
            merged.push(group);
        }
    }

    /// Every source exhausted, every entry merged.
    pub fn is_done(&self) -> bool {
        self.cursors.iter().all(|c| !c.more && c.entries.is_empty())
    }
}

/// One source's pages.
struct Cursor<E> {
    index: usize,
    entries: VecDeque<E>,
    after: Option<Key>,
    more: bool,
}

impl<E> Cursor<E> {
    fn new(index: usize, after: Option<Key>) -> Cursor<E> {
        Cursor {
            index,
            entries: VecDeque::new(),
            after,
            more: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::Ballot;

    fn entry(key: &str, promised: u64) -> DigestEntry {
        DigestEntry {
            key: key.as_bytes().to_vec(),
            promised: Ballot::new(promised, 1),
            accepted: Ballot::ZERO,
        }
    }

    /// Sources of keys in order, paged `page` at a time, merged as `DigestMerge` does (with
    /// the pages read from memory): every key of every source comes once, in order, with one
    /// entry per source holding it.
    fn merge_in_memory(sources: &[Vec<&str>], page: usize) -> Vec<(String, Vec<usize>)> {
        let mut merge = KeyMerge::new(sources.len(), None);
        let mut out = Vec::new();
        while !merge.is_done() {
            for (index, after) in merge.wanting() {
                let rest: Vec<DigestEntry> = sources[index]
                    .iter()
                    .filter(|k| after.as_deref().is_none_or(|a| k.as_bytes() > a))
                    .map(|k| entry(k, 1))
                    .collect();
                let more = rest.len() > page;
                merge
                    .take(index, rest.into_iter().take(page).collect(), more)
                    .unwrap();
            }
            for m in merge.next_batch() {
                out.push((String::from_utf8(m.key).unwrap(), m.sources));
            }
        }
        out
    }

    #[test]
    fn a_merge_yields_every_key_once_in_order_whatever_the_page_size() {
        let sources = vec![
            vec!["a", "c", "d", "f", "g", "h"],
            vec!["b", "c", "e", "h"],
            vec![],
            vec!["a", "h", "z"],
        ];
        let expected: Vec<(String, Vec<usize>)> = [
            ("a", vec![0, 3]),
            ("b", vec![1]),
            ("c", vec![0, 1]),
            ("d", vec![0]),
            ("e", vec![1]),
            ("f", vec![0]),
            ("g", vec![0]),
            ("h", vec![0, 1, 3]),
            ("z", vec![3]),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_string(), s))
        .collect();
        for page in 1..=7 {
            assert_eq!(merge_in_memory(&sources, page), expected, "pages of {page}");
        }
    }

    #[test]
    fn an_empty_page_that_says_more_ends_its_source() {
        let mut merge = KeyMerge::new(2, None);
        merge
            .take(0, vec![entry("a", 1), entry("c", 1)], false)
            .unwrap();
        merge.take(1, Vec::new(), true).unwrap();
        assert!(
            merge.wanting().is_empty(),
            "no last key: nothing more to ask after it"
        );
        let keys: Vec<Key> = merge.next_batch().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(merge.is_done());
    }

    #[test]
    fn a_dropped_source_stops_holding_the_horizon() {
        let mut merge = KeyMerge::new(2, None);
        merge
            .take(0, vec![entry("a", 1), entry("b", 1)], true)
            .unwrap();
        merge
            .take(1, vec![entry("c", 1), entry("d", 1)], true)
            .unwrap();
        let keys: Vec<Key> = merge.next_batch().into_iter().map(|m| m.key).collect();
        assert_eq!(
            keys,
            vec![b"a".to_vec(), b"b".to_vec()],
            "up to the horizon b"
        );
        assert_eq!(merge.wanting(), vec![(0, Some(b"b".to_vec()))]);
        merge.drop_source(0);
        assert!(merge.wanting().is_empty());
        let keys: Vec<Key> = merge.next_batch().into_iter().map(|m| m.key).collect();
        assert_eq!(
            keys,
            vec![b"c".to_vec(), b"d".to_vec()],
            "source 1 alone, up to d"
        );
        assert_eq!(merge.wanting(), vec![(1, Some(b"d".to_vec()))]);
        merge.take(1, vec![entry("e", 1)], false).unwrap();
        let keys: Vec<Key> = merge.next_batch().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec![b"e".to_vec()]);
        assert!(merge.is_done());
    }

    #[test]
    fn a_page_out_of_order_or_behind_its_source_is_refused_and_changes_nothing() {
        let mut merge = KeyMerge::new(2, Some(b"b".to_vec()));
        assert!(
            merge.take(0, vec![entry("a", 1)], true).is_err(),
            "at or before after"
        );
        assert!(
            merge.take(0, vec![entry("b", 1)], true).is_err(),
            "at or before after"
        );
        assert!(merge
            .take(0, vec![entry("d", 1), entry("c", 1)], true)
            .is_err());
        assert!(merge
            .take(0, vec![entry("d", 1), entry("d", 1)], true)
            .is_err());
        merge.take(0, vec![entry("c", 1)], true).unwrap();
        assert!(
            merge.take(0, vec![entry("c", 1)], false).is_err(),
            "behind its page"
        );
        merge.take(0, vec![entry("e", 1)], false).unwrap();
        merge.take(1, vec![entry("d", 1)], false).unwrap();
        let keys: Vec<Key> = merge.next_batch().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]);
        assert!(merge.is_done());
    }
}
