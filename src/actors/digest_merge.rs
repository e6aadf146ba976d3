//! A k-way merge of several nodes' key digests (`NodeRequest::Digest`), in key order, a page
//! of each at a time: what a membership change's rescan walks (`actors::membership::change`),
//! and what a listing of keys by prefix will walk.
//!
//! **Each key once, in order, with memory bounded by one page per source.** Every source
//! pages through its keys in order. A batch holds every entry up to the *horizon*: the
//! smallest last key among the pages of sources that have more to send. No source can later
//! send a key at or below the horizon (its pages come in key order and its current page
//! already reaches it), so every key of the batch is complete (one entry from each source
//! holding it) and no later batch holds it again. The source that set the horizon is emptied
//! by the batch and fetches its next page; so each round makes progress, and the merge ends
//! once no source has more.

use std::collections::VecDeque;

use crate::client::Client;
use crate::error::Result;
use crate::messages::{DigestEntry, DIGEST_PAGE_ENTRIES};
use crate::paxos::types::Key;

/// One key of a merge, with the entry of every source that holds it (in source order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedKey {
    pub key: Key,
    pub entries: Vec<DigestEntry>,
}

/// A k-way merge of the digests of the nodes `client` dials (index 0, 1, ...).
pub struct DigestMerge<'a> {
    client: &'a Client,
    cursors: Vec<Cursor>,
}

impl<'a> DigestMerge<'a> {
    /// A merge of the digests of `client`'s first `sources` nodes.
    pub fn new(client: &'a Client, sources: usize) -> DigestMerge<'a> {
        DigestMerge {
            client,
            cursors: (0..sources).map(Cursor::new).collect(),
        }
    }

    /// The next keys, in key order, each once; `None` once every source is exhausted.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<MergedKey>>> {
        if self.is_done() {
            return Ok(None);
        }
        for cursor in self.cursors.iter_mut() {
            cursor.fill(self.client).await?;
        }
        Ok(Some(take_batch(&mut self.cursors)))
    }

    fn is_done(&self) -> bool {
        self.cursors.iter().all(|c| !c.more && c.entries.is_empty())
    }
}

/// Every entry up to the horizon (see the module doc), grouped by key, in key order.
fn take_batch(cursors: &mut [Cursor]) -> Vec<MergedKey> {
    let horizon: Option<Key> = cursors
        .iter()
        .filter(|c| c.more)
        .filter_map(|c| c.entries.back().map(|e| e.key.clone()))
        .min();
    let mut entries: Vec<DigestEntry> = Vec::new();
    for cursor in cursors.iter_mut() {
        while let Some(e) = cursor.entries.front() {
            if horizon.as_ref().is_some_and(|h| e.key > *h) {
                break;
            }
            entries.extend(cursor.entries.pop_front());
        }
    }
    // Stable: each key's entries stay in source order.
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    group_by_key(entries)
}

fn group_by_key(entries: Vec<DigestEntry>) -> Vec<MergedKey> {
    let mut merged: Vec<MergedKey> = Vec::new();
    for e in entries {
        match merged.last_mut() {
            Some(last) if last.key == e.key => last.entries.push(e),
            _ => merged.push(MergedKey {
                key: e.key.clone(),
                entries: vec![e],
            }),
        }
    }
    merged
}

/// One source's digest, a page at a time.
struct Cursor {
    index: usize,
    entries: VecDeque<DigestEntry>,
    after: Option<Key>,
    more: bool,
}

impl Cursor {
    fn new(index: usize) -> Cursor {
        Cursor {
            index,
            entries: VecDeque::new(),
            after: None,
            more: true,
        }
    }

    /// The source's next page, if this one is used up and more follow.
    async fn fill(&mut self, client: &Client) -> Result<()> {
        if !self.entries.is_empty() || !self.more {
            return Ok(());
        }
        let page = client
            .digest_page(self.index, self.after.clone(), DIGEST_PAGE_ENTRIES as u32)
            .await?;
        self.take(page.entries, page.more);
        Ok(())
    }

    /// A page taken in. One that holds no entry ends the source whatever it says of more: a
    /// node pages through keys it has (`limit` is never 0 here), and a source that stayed
    /// "more" without a last key would stall the horizon for good.
    fn take(&mut self, page: Vec<DigestEntry>, more: bool) {
        self.more = more && !page.is_empty();
        if let Some(last) = page.last() {
            self.after = Some(last.key.clone());
        }
        self.entries.extend(page);
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
    fn merge_in_memory(sources: &[Vec<&str>], page: usize) -> Vec<(String, usize)> {
        let mut cursors: Vec<Cursor> = (0..sources.len()).map(Cursor::new).collect();
        let mut out = Vec::new();
        while !cursors.iter().all(|c| !c.more && c.entries.is_empty()) {
            for c in cursors.iter_mut() {
                if c.entries.is_empty() && c.more {
                    let after = c.after.clone();
                    let rest: Vec<DigestEntry> = sources[c.index]
                        .iter()
                        .filter(|k| after.as_deref().is_none_or(|a| k.as_bytes() > a))
                        .map(|k| entry(k, 1))
                        .collect();
                    let more = rest.len() > page;
                    c.take(rest.into_iter().take(page).collect(), more);
                }
            }
            for m in take_batch(&mut cursors) {
                out.push((String::from_utf8(m.key).unwrap(), m.entries.len()));
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
        let expected: Vec<(String, usize)> = [
            ("a", 2),
            ("b", 1),
            ("c", 2),
            ("d", 1),
            ("e", 1),
            ("f", 1),
            ("g", 1),
            ("h", 3),
            ("z", 1),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
        for page in 1..=7 {
            assert_eq!(merge_in_memory(&sources, page), expected, "pages of {page}");
        }
    }

    #[test]
    fn an_empty_page_that_says_more_ends_its_source() {
        let mut cursors = vec![Cursor::new(0), Cursor::new(1)];
        cursors[0].take(vec![entry("a", 1), entry("c", 1)], false);
        cursors[1].take(Vec::new(), true);
        assert!(
            !cursors[1].more,
            "no last key: nothing more can be asked after it"
        );
        let keys: Vec<Key> = take_batch(&mut cursors)
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn entries_of_one_key_group_together_in_source_order() {
        let mut entries = vec![entry("b", 1), entry("a", 1), entry("b", 2), entry("a", 3)];
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let merged = group_by_key(entries);
        assert_eq!(
            merged,
            vec![
                MergedKey {
                    key: b"a".to_vec(),
                    entries: vec![entry("a", 1), entry("a", 3)],
                },
                MergedKey {
                    key: b"b".to_vec(),
                    entries: vec![entry("b", 1), entry("b", 2)],
                },
            ]
        );
    }
}
