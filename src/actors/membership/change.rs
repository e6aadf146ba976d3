//! The executor of a membership change (`paxkv member add|remove`). The decisions (the
//! barrier, the fence, the joining store's admission, the step's work, the compare-and-set and
//! its retries) are `paxos::driver::ChangeDriver`'s, argued there; the procedure's safety is
//! argued in `paxos::membership`. This module checks what needs no register (this store may
//! drive; the node to be added answers as that node, of no other cluster) and carries out the
//! driver's actions: read and write the register, install everywhere, probe the joining node,
//! settle the keys of the step's sources.
//!
//! **Only intact stores count in a change.** A refused store (wiped, an older copy), or one
//! whose start its peers have not confirmed yet, still installs memberships and answers, but
//! says it is not intact (`NodeReply::Installed`): the executor counts it in no barrier and
//! scans none of its keys, since it may lack states it once voted for (review of issue 10:
//! counting one let a rescan miss a key chosen on a majority that included it). A node whose
//! own store is refused does not drive.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backon::ExponentialBuilder;

use crate::actors::digest_merge::DigestMerge;
use crate::actors::membership::installed::addr_of;
use crate::actors::membership::{retry, Failure, MembershipService, Register};
use crate::actors::messages::SettleKey;
use crate::actors::supervisor::NodeSupervisor;
use crate::actors::Stats;
use crate::error::{Error, Result};
use crate::messages::{MemberChangeRequest, NodeReply, NodeRequest};
use crate::paxos::driver::{Action, ChangeDriver, Event};
use crate::paxos::membership::{Change, JoiningStore, Membership};
use crate::paxos::types::{Ballot, Key, NodeId};

/// Settle rounds a rescan keeps in flight.
const RESCAN_CONCURRENCY: usize = 1_024;

/// Passes over the keys whose settle failed, before a rescan gives up, and the pause before
/// the second (doubling).
const RESCAN_PASSES: usize = 4;
const RESCAN_PAUSE: Duration = Duration::from_millis(400);

/// Attempts of one key's settle, and the pause after the first failure (doubling).
const SETTLE_ATTEMPTS: usize = 5;
const SETTLE_PAUSE: Duration = Duration::from_millis(50);

/// Drives membership changes from this node. Cheap to clone.
#[derive(Clone)]
pub struct ChangeExecutor {
    members: MembershipService,
    register: Register,
    supervisor: Addr<NodeSupervisor>,
}

/// The node to be added, as it answered before the change began.
struct Joining {
    addr: std::net::SocketAddr,
    installed: Option<Membership>,
}

impl ChangeExecutor {
    pub fn new(
        members: MembershipService,
        register: Register,
        supervisor: Addr<NodeSupervisor>,
    ) -> ChangeExecutor {
        ChangeExecutor {
            members,
            register,
            supervisor,
        }
    }

    /// Drives `request` to completion from whatever step the register shows (a rerun after
    /// a crash resumes it).
    pub async fn drive(
        &self,
        request: MemberChangeRequest,
        fence: Option<u64>,
    ) -> Result<Membership> {
        if !self.members.store_confirmed_intact() {
            return Err(Error::NotThisNode(format!(
                "node {} cannot drive a change: its store is refused, or its start not \
                 confirmed by its peers yet",
                self.members.view.me()
            )));
        }
        let (change, mut joining) = match request {
            MemberChangeRequest::Remove { id } => (Change::Remove { id }, None),
            MemberChangeRequest::Add { id, addr } => {
                let (store, joining) = self.check_joining(id, &addr).await?;
                (Change::Add { id, addr, store }, Some(joining))
            }
        };
        let mut driver = ChangeDriver::new(change, fence);
        let mut action = driver.start();
        loop {
            let event = match action {
                Action::Done(result) => return result,
                action => self.carry_out(action, &mut joining).await,
            };
            action = driver.on(event);
        }
    }

    /// What can be checked of node `id` at `addr` before its add begins: not a member at
    /// another address, answering as node `id`, of no other cluster. Answers its store.
    async fn check_joining(&self, id: NodeId, addr: &str) -> Result<(u64, Joining)> {
        if let Some(x) = self.members.view.get().and_then(|m| m.member(id).cloned()) {
            if x.addr != addr {
                return Err(Error::BadRequest(format!(
                    "node {id} is already a member (at {}); remove it first",
                    x.addr
                )));
            }
        }
        let parsed: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| Error::BadRequest(format!("address {addr}: {e}")))?;
        let asked = self
            .members
            .client_of(&[(id, parsed)])
            .node_call(0, NodeRequest::Membership)
            .await;
        let info = match asked {
            Ok(NodeReply::Membership(info)) => info,
            Ok(other) => return Err(Error::Frame(format!("unexpected {other:?}"))),
            Err(Error::NotThisNode(why)) => {
                // It serves another cluster (`NodeCall::cluster`), whose records and
                // membership must never enter this one.
                return Err(Error::BadRequest(format!(
                    "node {id} at {addr} belongs to another cluster ({why}); start it on an \
                     empty data directory with `--join` of this cluster's nodes"
                )));
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "node {id} at {addr} does not answer (start it first with `paxkv node \
                     --id {id} --addr {addr} ...`): {}",
                    e.message()
                )))
            }
        };
        if info.node != id {
            return Err(Error::BadRequest(format!(
                "the node at {addr} is node {}, not node {id}",
                info.node
            )));
        }
        let joining = Joining {
            addr: parsed,
            installed: info.membership,
        };
        Ok((info.store, joining))
    }

    /// Carries out one of the driver's actions (not `Done`), and says how it went.
    async fn carry_out(&self, action: Action, joining: &mut Option<Joining>) -> Event {
        let me = self.members.view.me();
        match action {
            Action::ReadRegister { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Event::Register(self.register.read_or_installed(&self.members.view).await)
            }
            Action::Install {
                membership,
                previous,
            } => Event::Installed(
                self.members
                    .install_everywhere(&membership, &previous)
                    .await,
            ),
            Action::ProbeJoining { id } => Event::Probed(self.probe_joining(id, joining).await),
            Action::Settle {
                membership,
                sources,
                fast_only,
            } => {
                let started = Instant::now();
                let settled = self.rescan(&membership, &sources, fast_only).await;
                if let Ok(n) = &settled {
                    log::info!(
                        "node {me}: epoch {} ({:?}): settled {n} keys of nodes {sources:?} in \
                         {:.2}s",
                        membership.epoch,
                        membership.phase,
                        started.elapsed().as_secs_f64()
                    );
                }
                Event::Settled(settled)
            }
            Action::Write { expect, next } => {
                let written = self.register.cas(expect, &next).await;
                if let Ok(true) = written {
                    log::info!(
                        "node {me}: membership epoch {} written ({:?})",
                        next.epoch,
                        next.phase
                    );
                }
                Event::Written(written)
            }
            Action::Done(_) => unreachable!("`drive` returns on Done"),
        }
    }

    /// What the joining node `id` holds: the membership it had installed when the add began
    /// (told once), and whether its store holds any record.
    async fn probe_joining(
        &self,
        id: NodeId,
        joining: &mut Option<Joining>,
    ) -> Result<JoiningStore> {
        let Some(addr) = joining.as_ref().map(|j| j.addr) else {
            return Err(Error::BadRequest(format!("node {id} is not being added")));
        };
        let digest = self
            .members
            .client_of(&[(id, addr)])
            .digest_page(0, None, 1)
            .await?;
        Ok(JoiningStore {
            installed: joining.as_mut().and_then(|j| j.installed.take()),
            holds_records: !digest.entries.is_empty(),
        })
    }

    /// Settles the keys of `sources` (only those held at the fast ballot if `fast_only`), each
    /// once, walking a merge of the sources' digests in key order. Returns how many.
    async fn rescan(&self, m: &Membership, sources: &[NodeId], fast_only: bool) -> Result<u64> {
        let addrs = sources
            .iter()
            .map(|n| Ok((*n, addr_of(m, *n)?)))
            .collect::<Result<Vec<_>>>()?;
        let client = self.members.client_of(&addrs);
        let mut merge = DigestMerge::new(&client, sources.len());
        let mut total = 0u64;
        while let Some(batch) = merge.next_batch().await? {
            let keys: Vec<Key> = batch
                .into_iter()
                .filter(|k| !fast_only || k.entries.iter().any(|e| e.accepted == Ballot::FAST))
                .map(|k| k.key)
                .collect();
            total += keys.len() as u64;
            settle_all(&self.supervisor, keys).await?;
        }
        Stats::add(&self.members.stats.keys_settled, total);
        Ok(total)
    }
}

/// Settles every key of `keys` (at most [`RESCAN_CONCURRENCY`] at once), or fails.
///
/// **A key that fails does not abort the others.** Before, the first failed settle dropped
/// every other one in flight and failed the step; the driver (or the next one, on another
/// node) began the rescan again from the first key, while the dropped settles' rounds still
/// ran in their proposers until their deadlines: the new rescan's rounds duelled with them
/// on every key, failed in turn, and so on (the 60 s nemesis soak, seed 101: settles accepted
/// by four of five voters, never by the driver's own acceptor, which had promised a higher
/// ballot of the previous driver's round, for the driver's whole two minutes). Now the keys
/// that failed are settled again, after the others, in up to [`RESCAN_PASSES`] passes with a
/// pause between them; only a key that fails every pass fails the step.
async fn settle_all(supervisor: &Addr<NodeSupervisor>, keys: Vec<Key>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let todo = Mutex::new(keys);
    let pass = || async {
        let keys = std::mem::take(&mut *todo.lock().expect("todo lock"));
        let (failed, last_error) = settle_pass(supervisor, keys).await;
        let left = failed.len();
        *todo.lock().expect("todo lock") = failed;
        match last_error {
            None => Ok(()),
            Some(e) => {
                log::debug!("a rescan pass left {left} key(s) unsettled: {e}");
                Err(Failure::Again(e))
            }
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(RESCAN_PAUSE)
        .with_max_times(RESCAN_PASSES - 1);
    retry(backoff, pass)
        .await
        .map_err(Failure::into_error)
        .inspect_err(|e| {
            let todo = todo.lock().expect("todo lock");
            let key = todo
                .first()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            log::warn!(
                "a membership change could not settle {} key(s) in {RESCAN_PASSES} passes (key \
             {key:?}: {e})",
                todo.len()
            );
        })
}

/// One pass of [`settle_all`]: the keys whose settle failed, and the last error.
async fn settle_pass(
    supervisor: &Addr<NodeSupervisor>,
    keys: Vec<Key>,
) -> (Vec<Key>, Option<Error>) {
    use futures_util::stream::{self, StreamExt};
    let results: Vec<(Key, Result<()>)> = stream::iter(keys.into_iter().map(|key| async move {
        let result = settle(supervisor, &key).await;
        (key, result)
    }))
    .buffer_unordered(RESCAN_CONCURRENCY)
    .collect()
    .await;
    let mut failed = Vec::new();
    let mut last_error = None;
    for (key, result) in results {
        if let Err(e) = result {
            failed.push(key);
            last_error = Some(e);
        }
    }
    (failed, last_error)
}

/// Settles `key` once, retrying what may succeed on another try: a settle is an identity
/// round, so one whose Accept may have been taken ("outcome unknown") is retried like one
/// that certainly was not.
async fn settle(supervisor: &Addr<NodeSupervisor>, key: &Key) -> Result<()> {
    let attempt = || async {
        let (reply, settled) = tokio::sync::oneshot::channel();
        let sent = supervisor
            .send(SettleKey {
                key: key.clone(),
                reply,
            })
            .await;
        if let Err(e) = sent {
            return Err(Failure::Final(Error::Unavailable(format!(
                "node supervisor: {e}"
            ))));
        }
        match settled.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_bad_input() => Err(Failure::Final(e)),
            Ok(Err(e)) => Err(Failure::Again(e)),
            Err(_) => Err(Failure::Final(Error::Unavailable(
                "the key's proposer stopped".into(),
            ))),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(SETTLE_PAUSE)
        .with_max_times(SETTLE_ATTEMPTS - 1);
    retry(backoff, attempt).await.map_err(Failure::into_error)
}
