//! The k-way merge of several nodes' digests, a page of each at a time, for a membership
//! change's rescan (`NodeRequest::Digest`): the merge itself is `paxos::merge::KeyMerge`
//! (argued there, no IO, shared with the listing of keys), fed here from the nodes.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::messages::{DigestEntry, DIGEST_PAGE_ENTRIES};
use crate::paxos::merge::{KeyMerge, MergedKey};

/// A k-way merge of the digests of the nodes `client` dials (index 0, 1, ...).
pub struct DigestMerge<'a> {
    client: &'a Client,
    merge: KeyMerge<DigestEntry>,
}

impl<'a> DigestMerge<'a> {
    /// A merge of the digests of `client`'s first `sources` nodes.
    pub fn new(client: &'a Client, sources: usize) -> DigestMerge<'a> {
        DigestMerge {
            client,
            merge: KeyMerge::new(sources, None),
        }
    }

    /// The next keys, in key order, each once; `None` once every source is exhausted.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<MergedKey<DigestEntry>>>> {
        if self.merge.is_done() {
            return Ok(None);
        }
        for (index, after) in self.merge.wanting() {
            let page = self
                .client
                .digest_page(index, after, DIGEST_PAGE_ENTRIES as u32)
                .await?;
            self.merge
                .take(index, page.entries, page.more)
                .map_err(Error::Storage)?;
        }
        Ok(Some(self.merge.next_batch()))
    }
}
