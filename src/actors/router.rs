//! The request router: the one place where a client request becomes work on this node. A
//! new operation is a new `RequestBody` variant (appended at the end, see `messages`) and one
//! arm of [`Router::serve`]. Key-value commands are checked against the limits, given a write
//! id if they came without one (the node's own [`WriteIdMint`]), and handed to the key's
//! live proposer (`actors::routes`), or to the supervisor, which starts one; everything else
//! is answered here.

use std::sync::Arc;
use std::time::Instant;

use crate::actors::lease::Leases;
use crate::actors::list::{ListRequest, Lister};
use crate::actors::membership::{ChangeExecutor, MembershipService};
use crate::actors::messages::GetStatus;
use crate::actors::outbox::Outbox;
use crate::actors::supervisor::{start_command, Keys, PendingCommand};
use crate::actors::watch::WatchHub;
use crate::config::Config;
use crate::error::Error;
use crate::messages::{ClientRequest, ClientResponse, MemberChangeRequest, Reply, RequestBody};
use crate::paxos::membership::{Membership, RESERVED_PREFIX};
use crate::paxos::types::{Command, Key, NodeId, RequestId, WriteIdMint};

/// Serves client requests. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Shared>,
}

struct Shared {
    node: NodeId,
    /// The keys' proposers, and the supervisor.
    keys: Keys,
    /// For `SetFaults` (test builds only).
    #[cfg(feature = "testing")]
    outbox: Outbox,
    config: Arc<Config>,
    /// Write ids for client writes that came without one.
    write_ids: WriteIdMint,
    members: MembershipService,
    changes: ChangeExecutor,
    lister: Lister,
    watch: Arc<WatchHub>,
    leases: Leases,
    /// One membership change driven by this node at a time ([`drive`]).
    driving: tokio::sync::Mutex<()>,
}

impl Router {
    pub fn new(
        keys: Keys,
        outbox: Outbox,
        members: MembershipService,
        changes: ChangeExecutor,
        lister: Lister,
        watch: Arc<WatchHub>,
    ) -> Router {
        let leases = Leases::new(keys.clone(), lister.clone(), members.clone());
        Router {
            inner: Arc::new(Shared {
                node: outbox.me(),
                keys,
                #[cfg(feature = "testing")]
                outbox,
                config: members.config.clone(),
                write_ids: WriteIdMint::new(rand::random()),
                members,
                changes,
                lister,
                watch,
                leases,
                driving: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// This node's leases (the node runs their keeper).
    pub fn leases(&self) -> Leases {
        self.inner.leases.clone()
    }

    /// This node's watchers (the connections register theirs).
    pub fn watch_hub(&self) -> Arc<WatchHub> {
        self.inner.watch.clone()
    }

    /// Serves one request; the response carries its id. Counted and timed by operation and
    /// outcome (`paxkv_request_duration_seconds`).
    ///
    /// A get, put, delete or compare-and-set is handed to its key's proposer here, and only
    /// its outcome awaited; every other request is served by [`Router::serve_rest`], boxed.
    /// An async fn's future is as large as its largest branch's state, and a membership
    /// change's or a lease's is several KiB: when they were inline, every get and put's task
    /// was allocated and copied at 3.5 KiB (`memmove` a tenth of a get's node CPU;
    /// BENCHMARKS.md, issue 23). The rare requests pay one allocation of their own.
    pub async fn serve(&self, request: ClientRequest) -> ClientResponse {
        let started = Instant::now();
        let op = op_label(&request.body);
        let result = match request.body {
            RequestBody::Kv {
                key,
                command,
                write_id,
                maybe_applied,
            } => self.run_kv(key, command, write_id, maybe_applied).await,
            body => Box::pin(self.serve_rest(body)).await,
        };
        let response = ClientResponse {
            id: request.id,
            result,
        };
        let outcome = match &response.result {
            Ok(_) => "ok",
            Err(Error::Unavailable(_)) => "unavailable",
            Err(Error::Busy(_)) => "busy",
            Err(Error::Unknown(_)) => "unknown",
            Err(Error::Storage(_)) => "storage_error",
            Err(_) => "bad_request",
        };
        self.inner
            .members
            .stats
            .metrics
            .request(op, outcome, started.elapsed());
        response
    }

    /// A key's command, run: handed over now ([`Router::start_kv`]), its outcome awaited.
    async fn run_kv(
        &self,
        key: Key,
        command: Command,
        write_id: Option<RequestId>,
        maybe_applied: bool,
    ) -> Result<Reply, Error> {
        let pending = self.start_kv(key, command, write_id, maybe_applied)?;
        pending.outcome().await.map(Reply::Kv)
    }

    /// A key's command: checked, given a write id if it is a write without one, and handed
    /// to the key's proposer. A proposer that stops with it in flight: unknown for a write,
    /// unavailable for a read (it changed nothing).
    fn start_kv(
        &self,
        key: Key,
        command: Command,
        write_id: Option<RequestId>,
        maybe_applied: bool,
    ) -> Result<PendingCommand, Error> {
        let shared = &*self.inner;
        check_request(&key, command.value_len(), &shared.config)?;
        if !command.is_for_clients() {
            // The lease machinery's commands: a touch on a client's key would raise a
            // version no watch is told of (`KeyChange::of`), a leased write without its
            // lease's record could outlive the lease (`paxos::lease`).
            return Err(Error::BadRequest(format!(
                "{} is the lease machinery's, not a client's (paxkv lease, put --lease)",
                op_label_of(&command)
            )));
        }
        let write_id = match (command.is_write(), write_id) {
            (false, _) => None,
            (true, Some(id)) => Some(id),
            (true, None) => Some(shared.write_ids.mint()),
        };
        Ok(start_command(
            &shared.keys,
            key,
            command,
            write_id,
            maybe_applied,
        ))
    }

    /// Every request but a key's command ([`Router::serve`]).
    async fn serve_rest(&self, body: RequestBody) -> Result<Reply, Error> {
        let shared = &*self.inner;
        match body {
            RequestBody::Ping => Ok(Reply::Pong { node: shared.node }),
            RequestBody::LeaseGrant { ttl_ms, id } => shared
                .leases
                .grant(ttl_ms, id)
                .await
                .map(|l| Reply::Lease(Some(l))),
            RequestBody::LeaseKeepAlive { id } => {
                shared.leases.keepalive(id).await.map(Reply::Lease)
            }
            RequestBody::LeaseRevoke { id } => shared.leases.revoke(id).await.map(Reply::Lease),
            RequestBody::LeaseShow { id } => shared.leases.show(id).await.map(Reply::Lease),
            RequestBody::LeaseKeys { id } => shared.leases.keys(id).await.map(|keys| {
                Reply::LeaseKeys(
                    keys.map(|k| k.into_iter().map(serde_bytes::ByteBuf::from).collect()),
                )
            }),
            RequestBody::LeasedWrite {
                key,
                value,
                expect,
                lease,
                write_id,
                maybe_applied,
            } => match check_request(&key, value.len(), &shared.config) {
                Err(e) => Err(e),
                Ok(()) => shared
                    .leases
                    .write(key, value, expect, lease, write_id, maybe_applied)
                    .await
                    .map(Reply::Kv),
            },
            RequestBody::SetFaults(plan) => shared.set_faults(plan),
            RequestBody::RetiredSyncDigest { .. } | RequestBody::RetiredSyncFetch { .. } => {
                Err(Error::BadRequest(
                    "a retired request: anti-entropy uses Frame::Call (the peer runs an \
                     older build; see ARCHITECTURE.md, mixed versions)"
                        .into(),
                ))
            }
            RequestBody::Members => Ok(Reply::Members(shared.members.answer())),
            RequestBody::List {
                prefix,
                after,
                limit,
                keys_only,
            } => {
                let request = ListRequest {
                    prefix,
                    after,
                    limit,
                    keys_only,
                    with_deleted: false,
                    reserved: false,
                };
                shared.lister.list(request).await.map(Reply::Listed)
            }
            RequestBody::ListVersions {
                prefix,
                after,
                limit,
            } => {
                let request = ListRequest {
                    prefix,
                    after,
                    limit,
                    keys_only: false,
                    with_deleted: true,
                    reserved: false,
                };
                shared.lister.list(request).await.map(Reply::Listed)
            }
            // A watch lives with its connection, which serves it (`actors::network`).
            RequestBody::Watch { .. } | RequestBody::Unwatch { .. } => Err(Error::BadRequest(
                "a watch is served by the connection that asks for it".into(),
            )),
            RequestBody::MemberChange(change) => {
                drive(shared, change, None).await.map(Reply::MemberChanged)
            }
            RequestBody::MemberChangeFenced { change, epoch } => drive(shared, change, Some(epoch))
                .await
                .map(Reply::MemberChanged),
            RequestBody::Status => match shared.keys.supervisor().send(GetStatus).await {
                Ok(status) => Ok(Reply::Status(status)),
                Err(e) => Err(Error::Unavailable(e.to_string())),
            },
            RequestBody::Kv {
                key,
                command,
                write_id,
                maybe_applied,
            } => self.run_kv(key, command, write_id, maybe_applied).await,
        }
    }
}

/// Drives one membership change, one at a time on this node (the register serializes
/// changes across nodes; this keeps one node from running two executors of the same one).
async fn drive(
    shared: &Shared,
    change: MemberChangeRequest,
    fence: Option<u64>,
) -> Result<Membership, Error> {
    match shared.driving.try_lock() {
        Err(_) => Err(Error::Busy(
            "this node is already driving a membership change".into(),
        )),
        Ok(_guard) => shared.changes.drive(change, fence).await,
    }
}

/// The `op` label of a request.
fn op_label(body: &RequestBody) -> &'static str {
    match body {
        RequestBody::Kv { command, .. } => op_label_of(command),
        RequestBody::LeasedWrite { expect: None, .. } => "put",
        RequestBody::LeasedWrite { .. } => "cas",
        RequestBody::LeaseKeys { .. } => "lease_keys",
        RequestBody::Ping => "ping",
        RequestBody::Status => "status",
        RequestBody::SetFaults(_) => "set_faults",
        RequestBody::Members => "members",
        RequestBody::List { .. } | RequestBody::ListVersions { .. } => "list",
        RequestBody::Watch { .. } => "watch",
        RequestBody::Unwatch { .. } => "unwatch",
        RequestBody::MemberChange(_) | RequestBody::MemberChangeFenced { .. } => "member_change",
        RequestBody::RetiredSyncDigest { .. } | RequestBody::RetiredSyncFetch { .. } => "retired",
        RequestBody::LeaseGrant { .. } => "lease_grant",
        RequestBody::LeaseKeepAlive { .. } => "lease_keepalive",
        RequestBody::LeaseRevoke { .. } => "lease_revoke",
        RequestBody::LeaseShow { .. } => "lease_show",
    }
}

/// The `op` label of a command.
fn op_label_of(command: &Command) -> &'static str {
    match command {
        Command::Get | Command::Inspect => "get",
        Command::LeasedWrite(w) if w.expect.is_none() => "put",
        Command::Put { .. } => "put",
        Command::Delete | Command::DeleteIf { .. } | Command::Release { .. } => "delete",
        Command::Cas { .. } | Command::LeasedWrite(_) => "cas",
        Command::Touch => "touch",
        Command::LeaseAttach { .. } => "lease_attach",
        Command::LeaseEnd { .. } => "lease_end",
    }
}

impl Shared {
    /// Test builds only, and only where the config allows it (`testing.allow_fault_injection`).
    #[cfg(feature = "testing")]
    fn set_faults(&self, plan: crate::messages::FaultPlan) -> Result<Reply, Error> {
        if !self.config.testing.allow_fault_injection {
            return Err(Error::BadRequest(
                "fault injection is off (testing.allow_fault_injection)".into(),
            ));
        }
        log::warn!("node {}: injecting faults {plan:?}", self.node);
        self.outbox.set_faults(plan);
        Ok(Reply::FaultsSet)
    }

    #[cfg(not(feature = "testing"))]
    fn set_faults(&self, _: crate::messages::FaultPlan) -> Result<Reply, Error> {
        Err(Error::BadRequest(
            "fault injection is not in this build (cargo feature `testing`)".into(),
        ))
    }
}

/// Checks a client's key and value against the limits.
pub fn check_request(key: &[u8], value_len: usize, config: &Config) -> Result<(), Error> {
    let limits = &config.limits;
    if key.is_empty() {
        return Err(Error::BadRequest("the key is empty".into()));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(Error::BadRequest(
            "keys starting with \\0paxkv/ are the cluster's own (its membership)".into(),
        ));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Error::BadRequest(format!(
            "key of {} bytes is over the limit of {} bytes",
            key.len(),
            limits.max_key_bytes
        )));
    }
    if value_len > limits.max_value_bytes {
        return Err(Error::BadRequest(format!(
            "value of {value_len} bytes is over the limit of {} bytes",
            limits.max_value_bytes
        )));
    }
    Ok(())
}
