//! Cluster configuration: a TOML file (see `config/cluster.toml`, where every key is
//! commented), parsed with serde and checked by [`Config::validate`] before anything starts.
//! A mistake stops the program with a message that names the bad field.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::paxos::bootstrap::Founding;
use crate::paxos::register::RECENT_WRITES;
use crate::paxos::types::NodeId;

/// LMDB's default build refuses keys over 511 bytes; paxkv keys are stored as LMDB keys.
pub const LMDB_MAX_KEY_BYTES: usize = 511;

/// Room in a frame beyond one key and one value: ballots, versions, the remembered writes.
const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// Keys one watch follows at most by default (`watch::MAX_WATCH_KEYS`, the HTTP watches'
/// `limits.http_watch_max_keys`): its memory is a version per key it has seen, kept for as
/// long as it runs (a change of a key it forgot would look like a gap), so a prefix watch
/// over a keyspace without bound would grow without bound. Here, not in `watch`, which
/// depends on this module through the client.
pub const WATCH_MAX_KEYS: usize = 100_000;

/// The largest `limits.http_watch_buffer_bytes` (256 MiB): a watch holds several times it.
pub const MAX_HTTP_WATCH_BUFFER_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster's members; `[[node]]` tables in the file.
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub paxos: PaxosConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub testing: TestingConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: what makes this cluster's identity its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Mixed into the identity a bootstrap draws (`paxos::membership::cluster_id`), as
    /// etcd's `initial-cluster-token`: two clusters bootstrapped from the same node list
    /// (a staging copy of production's config, a config reused on new machines) get
    /// different identities only if their tokens differ. Read at bootstrap only.
    pub token: String,
}

/// `[tls]`: where a node's and a client's certificates are (see `crate::tls` for what each
/// must name). With none of `dir`, `ca`, `cert`, `key` set, connections are plaintext, which
/// a node allows only on loopback addresses unless `insecure = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The layout `paxkv certs` writes: `ca.pem`, `node-<id>.pem` and `node-<id>-key.pem`
    /// for each node, `client.pem` and `client-key.pem` for clients.
    pub dir: Option<std::path::PathBuf>,
    /// The CA bundle peers and clients are verified against (several certificates may be in
    /// it, while a CA is rotated). Overrides `dir/ca.pem`.
    pub ca: Option<std::path::PathBuf>,
    /// This program's certificate chain: a node's own, or the client's. Overrides the one in
    /// `dir` for whichever reads this config.
    pub cert: Option<std::path::PathBuf>,
    /// The private key of `cert`.
    pub key: Option<std::path::PathBuf>,
    /// Allow plaintext on addresses that are not loopback (anyone who can reach a node can
    /// then read and write every key, and forge Paxos messages).
    pub insecure: bool,
}

impl TlsConfig {
    /// Is TLS on?
    pub fn enabled(&self) -> bool {
        self.dir.is_some() || self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Accept `SetFaults` requests that make the node drop, delay or duplicate its outgoing
    /// Paxos messages. Never set this in production.
    pub allow_fault_injection: bool,
    /// Tests only: the storage actor sleeps this long before every commit (a slow disk).
    /// Honoured only with `allow_fault_injection`.
    pub commit_delay_ms: u64,
    /// Tests only: a node's lease keeper waits this long between finding a lease due and
    /// sending its expiry (so that a test can land a keepalive in between). Honoured only
    /// with `allow_fault_injection`.
    pub lease_expiry_delay_ms: u64,
    /// Tests only: a node that ends a lease (expiry or revoke) stops there, as if it crashed,
    /// and leaves the release of its keys to the keepers that find it ended. Honoured only
    /// with `allow_fault_injection`.
    pub lease_stop_after_end: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: NodeId,
    /// `ip:port` the node listens on for peers and clients.
    pub addr: String,
    /// `ip:port` of the node's HTTP endpoint for `GET /metrics` (Prometheus) and
    /// `GET /health`; none if absent.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// `ip:port` of the node's HTTP/JSON API and console (`actors::http_api`); none if
    /// absent. HTTPS with `[tls]`; without it, loopback only, as `addr`.
    #[serde(default)]
    pub http_addr: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaxosConfig {
    pub request_timeout_ms: u64,
    pub phase_timeout_ms: u64,
    pub read_grace_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub max_batch: usize,
    pub tick_ms: u64,
    pub sync_interval_ms: u64,
    pub fast_path: bool,
    /// After a write chosen at the fast ballot, settle the key at a classic ballot at once.
    pub settle_fast_writes: bool,
    /// Quick reads and classic Accepts go to one majority first, the rest only if it does not
    /// do (see `paxos::proposer`, "Thrifty rounds").
    pub thrifty: bool,
}

impl Default for PaxosConfig {
    fn default() -> Self {
        PaxosConfig {
            request_timeout_ms: 3_000,
            phase_timeout_ms: 500,
            read_grace_ms: 20,
            backoff_min_ms: 1,
            backoff_max_ms: 50,
            max_batch: 32,
            tick_ms: 10,
            sync_interval_ms: 30_000,
            fast_path: true,
            settle_fast_writes: false,
            thrifty: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_live_keys: usize,
    pub idle_timeout_ms: u64,
    pub max_queued_per_key: usize,
    pub peer_queue_capacity: usize,
    pub max_inflight_per_connection: usize,
    pub max_client_connections: usize,
    /// Bytes one peer's queue may hold (frames beyond are dropped; Paxos retries).
    pub peer_queue_bytes: usize,
    /// Connections in their TLS handshake at once, from everywhere, and from one source
    /// address; and how long a handshake may take.
    pub max_handshakes: usize,
    pub max_handshakes_per_source: usize,
    pub handshake_timeout_ms: u64,
    /// Bytes in flight on one connection (requests read and not yet answered, counted at
    /// their largest possible answer, plus answers not yet written), and on the whole node.
    pub max_connection_bytes: usize,
    pub max_node_bytes: usize,
    /// Bytes of peers' Paxos frames waiting in the mailboxes of the node's key actors (and of
    /// its supervisor, for keys with no live actor).
    pub max_inbox_bytes: usize,
    /// A connection whose answers wait this long to be written (a reader that stopped
    /// reading) is closed.
    pub slow_reader_timeout_ms: u64,
    /// Keys a `list` page holds when it asks for no number, and at most.
    pub list_default_limit: usize,
    pub list_max_limit: usize,
    /// Keys a `list` page passes over (deleted, or the cluster's own) before it ends early,
    /// its `next` the last one (`actors::list`): bounds a page's work by the page.
    pub list_max_skipped: usize,
    /// Watches a node serves at once, and one connection holds (a tenth: no one client takes
    /// every watch a node serves).
    pub max_watchers: usize,
    pub max_watchers_per_connection: usize,
    /// Bytes of changes one watcher may have waiting to be sent: a watcher whose client
    /// reads slower than its keys change is ended past it (`actors::watch`).
    pub watch_buffer_bytes: usize,
    /// The HTTP API (`actors::http_api`): connections it serves at once (more wait in the
    /// kernel's backlog), how long a request's headers may take, and the watch streams it
    /// serves at once (more are answered 429). Its bodies are bounded by
    /// `max_value_bytes` (a value) and a few KiB (a member).
    pub http_max_connections: usize,
    /// HTTP API connections one source address holds at once (one more is closed at once):
    /// one host cannot take every connection from the others (`actors::sources`).
    pub http_max_connections_per_source: usize,
    pub http_header_timeout_ms: u64,
    pub http_max_watches: usize,
    /// Keys one HTTP watch follows at most (a version per key seen, kept while it runs): a
    /// watch whose prefix holds more ends with an error saying so (`watch::MAX_WATCH_KEYS`).
    pub http_watch_max_keys: usize,
    /// Bytes of changes one HTTP watch holds at each stage for a client behind or a gap
    /// (`watch::WatchOptions::buffer_bytes`; at most [`MAX_HTTP_WATCH_BUFFER_BYTES`]): one
    /// watch holds at most about `(3 + watch::READ_HOLD_FACTOR)` times it, and about eight of
    /// its largest changes in flight (`watch`'s module doc), so the API's watches at most
    /// `min(http_max_watches, http_max_connections)` times that (a watch stream holds its
    /// connection).
    pub http_watch_buffer_bytes: usize,
    /// `Idempotency-Key`s the HTTP API remembers (the oldest is forgotten first;
    /// `actors::idempotency`).
    pub http_idempotency_keys: usize,
    /// How long the HTTP API works on a key's request (retrying across nodes) before it
    /// answers 503 (it did not take effect) or 504 (it may have).
    pub http_request_timeout_ms: u64,
    /// Leases a node tracks (`paxos::lease`): a grant is refused ("busy") while this many
    /// are live as the node last scanned them. Bounds each node's keeper (100 to 150 bytes a
    /// lease, `examples/lease_tracker_memory.rs`) and a scan's time.
    pub max_leases: usize,
    /// Keys one lease lists (attached while it lived); one more is refused (exit 2). At most
    /// as many as fit in one value ([`Limits::keys_per_lease`]).
    pub max_keys_per_lease: usize,
}

impl Limits {
    /// The keys one lease may list: `max_keys_per_lease`, or fewer if that many keys of
    /// `max_key_bytes` would not fit in one value (a lease's record lists its keys, each
    /// with a few bytes of length, and travels as a value), but at least one.
    pub fn keys_per_lease(&self) -> usize {
        let fit = self.max_value_bytes.saturating_sub(16) / (self.max_key_bytes + 3);
        self.max_keys_per_lease.min(fit).max(1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 256,
            max_value_bytes: 1 << 20,
            max_live_keys: 100_000,
            idle_timeout_ms: 10_000,
            max_queued_per_key: 1_024,
            peer_queue_capacity: 8_192,
            max_inflight_per_connection: 4_096,
            max_client_connections: 1_024,
            peer_queue_bytes: 64 << 20,
            max_handshakes: 256,
            max_handshakes_per_source: 16,
            handshake_timeout_ms: 2_000,
            max_connection_bytes: 64 << 20,
            max_node_bytes: 1 << 30,
            max_inbox_bytes: 256 << 20,
            slow_reader_timeout_ms: 10_000,
            list_default_limit: 100,
            list_max_limit: 10_000,
            list_max_skipped: 16_384,
            max_watchers: 10_000,
            max_watchers_per_connection: 1_000,
            watch_buffer_bytes: 1 << 20,
            http_max_connections: 256,
            http_max_connections_per_source: 64,
            http_header_timeout_ms: 5_000,
            http_max_watches: 1_024,
            http_watch_max_keys: WATCH_MAX_KEYS,
            http_watch_buffer_bytes: 1 << 20,
            http_idempotency_keys: 100_000,
            http_request_timeout_ms: 10_000,
            max_leases: 1_000_000,
            max_keys_per_lease: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub map_size_mb: usize,
    pub max_group_commit: usize,
    /// How long a commit waits for more writes while the machine is busy with work that does
    /// not wait on commits (`actors::linger`); 0: never for that reason.
    pub commit_wait_among_reads_us: u64,
}

/// The default `storage.commit_wait_among_reads_us` (measured: BENCHMARKS.md, "commits wait
/// for company while reads keep the machine busy").
pub const DEFAULT_COMMIT_WAIT_US: u64 = 1_000;
/// The longest `storage.commit_wait_among_reads_us`: a commit that waits longer holds every
/// write in it that long.
pub const MAX_COMMIT_WAIT_US: u64 = 10_000;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            map_size_mb: 4_096,
            max_group_commit: 4_096,
            commit_wait_among_reads_us: DEFAULT_COMMIT_WAIT_US,
        }
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{field}: {why}"))
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.validate_nodes()?;
        self.validate_tls()?;
        self.validate_paxos()?;
        self.validate_limits()?;
        self.validate_storage()
    }

    /// `[[node]]`: at least 3, ids above 0 and unique, and every address (peer and metrics)
    /// a valid `ip:port`, not port 0, used once.
    fn validate_nodes(&self) -> Result<()> {
        if self.nodes.len() < 3 {
            return Err(invalid(
                "node",
                format!(
                    "{} node(s) configured; a cluster needs at least 3 to survive a failure",
                    self.nodes.len()
                ),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id == 0 {
                return Err(invalid(&format!("node[{i}].id"), "must not be 0"));
            }
            if !ids.insert(node.id) {
                return Err(invalid(
                    &format!("node[{i}].id"),
                    format!("duplicate node id {}", node.id),
                ));
            }
            let addr: SocketAddr = node.addr.parse().map_err(|_| {
                invalid(
                    &format!("node[{i}].addr"),
                    format!("{:?} is not an ip:port address", node.addr),
                )
            })?;
            if addr.port() == 0 {
                return Err(invalid(&format!("node[{i}].addr"), "port 0 is not allowed"));
            }
            if !addrs.insert(addr) {
                return Err(invalid(
                    &format!("node[{i}].addr"),
                    format!("address {addr} is used twice"),
                ));
            }
            for (name, extra) in [
                ("metrics_addr", &node.metrics_addr),
                ("http_addr", &node.http_addr),
            ] {
                let Some(extra) = extra else { continue };
                let field = format!("node[{i}].{name}");
                let extra: SocketAddr = extra
                    .parse()
                    .map_err(|_| invalid(&field, format!("{extra:?} is not an ip:port address")))?;
                if extra.port() == 0 {
                    return Err(invalid(&field, "port 0 is not allowed"));
                }
                if !addrs.insert(extra) {
                    return Err(invalid(&field, format!("address {extra} is used twice")));
                }
            }
        }
        Ok(())
    }

    /// `[tls]`: without `dir`, all of `ca`, `cert` and `key` or none; `cert` and `key`
    /// together.
    fn validate_tls(&self) -> Result<()> {
        let t = &self.tls;
        if t.dir.is_none() {
            for (field, path) in [
                ("tls.ca", &t.ca),
                ("tls.cert", &t.cert),
                ("tls.key", &t.key),
            ] {
                if path.is_none() && t.enabled() {
                    return Err(invalid(
                        field,
                        "missing: without tls.dir, give all of tls.ca, tls.cert and tls.key",
                    ));
                }
            }
        }
        if t.cert.is_some() != t.key.is_some() {
            let field = if t.cert.is_some() {
                "tls.key"
            } else {
                "tls.cert"
            };
            return Err(invalid(field, "tls.cert and tls.key are given together"));
        }
        Ok(())
    }

    /// `[paxos]`: timeouts above 0 and ordered, a batch within the de-duplication window.
    fn validate_paxos(&self) -> Result<()> {
        let p = &self.paxos;
        positive("paxos.request_timeout_ms", p.request_timeout_ms)?;
        positive("paxos.phase_timeout_ms", p.phase_timeout_ms)?;
        positive("paxos.backoff_min_ms", p.backoff_min_ms)?;
        if p.read_grace_ms >= p.phase_timeout_ms {
            return Err(invalid(
                "paxos.read_grace_ms",
                "must be below paxos.phase_timeout_ms",
            ));
        }
        positive("paxos.tick_ms", p.tick_ms)?;
        if p.backoff_max_ms < p.backoff_min_ms {
            return Err(invalid(
                "paxos.backoff_max_ms",
                "below paxos.backoff_min_ms",
            ));
        }
        if !(1..=RECENT_WRITES).contains(&p.max_batch) {
            return Err(invalid(
                "paxos.max_batch",
                format!("must be within 1..={RECENT_WRITES}, the de-duplication window"),
            ));
        }
        Ok(())
    }

    /// `[limits]`: sizes within what LMDB and a frame allow, counts and timeouts above 0,
    /// byte budgets that fit the largest request, and an idle timeout above the request
    /// timeout.
    fn validate_limits(&self) -> Result<()> {
        let l = &self.limits;
        if !(1..=LMDB_MAX_KEY_BYTES).contains(&l.max_key_bytes) {
            return Err(invalid(
                "limits.max_key_bytes",
                format!("must be within 1..={LMDB_MAX_KEY_BYTES} (LMDB's key limit)"),
            ));
        }
        if !(1..=64 << 20).contains(&l.max_value_bytes) {
            return Err(invalid(
                "limits.max_value_bytes",
                "must be within 1..=64 MiB",
            ));
        }
        positive("limits.max_live_keys", l.max_live_keys as u64)?;
        positive("limits.max_queued_per_key", l.max_queued_per_key as u64)?;
        positive("limits.peer_queue_capacity", l.peer_queue_capacity as u64)?;
        positive(
            "limits.max_inflight_per_connection",
            l.max_inflight_per_connection as u64,
        )?;
        positive(
            "limits.max_client_connections",
            l.max_client_connections as u64,
        )?;
        positive("limits.max_handshakes", l.max_handshakes as u64)?;
        positive(
            "limits.max_handshakes_per_source",
            l.max_handshakes_per_source as u64,
        )?;
        positive("limits.handshake_timeout_ms", l.handshake_timeout_ms)?;
        positive("limits.slow_reader_timeout_ms", l.slow_reader_timeout_ms)?;
        positive("limits.list_default_limit", l.list_default_limit as u64)?;
        if l.list_max_limit < l.list_default_limit {
            return Err(invalid(
                "limits.list_max_limit",
                "must be at least limits.list_default_limit",
            ));
        }
        positive("limits.list_max_skipped", l.list_max_skipped as u64)?;
        positive("limits.max_watchers", l.max_watchers as u64)?;
        positive(
            "limits.max_watchers_per_connection",
            l.max_watchers_per_connection as u64,
        )?;
        positive("limits.watch_buffer_bytes", l.watch_buffer_bytes as u64)?;
        positive("limits.http_max_connections", l.http_max_connections as u64)?;
        positive(
            "limits.http_max_connections_per_source",
            l.http_max_connections_per_source as u64,
        )?;
        positive("limits.http_header_timeout_ms", l.http_header_timeout_ms)?;
        positive("limits.http_max_watches", l.http_max_watches as u64)?;
        positive("limits.http_watch_max_keys", l.http_watch_max_keys as u64)?;
        if !(1..=MAX_HTTP_WATCH_BUFFER_BYTES).contains(&l.http_watch_buffer_bytes) {
            return Err(invalid(
                "limits.http_watch_buffer_bytes",
                format!("must be within 1..={MAX_HTTP_WATCH_BUFFER_BYTES}"),
            ));
        }
        positive(
            "limits.http_idempotency_keys",
            l.http_idempotency_keys as u64,
        )?;
        positive("limits.http_request_timeout_ms", l.http_request_timeout_ms)?;
        positive("limits.max_leases", l.max_leases as u64)?;
        positive("limits.max_keys_per_lease", l.max_keys_per_lease as u64)?;
        self.validate_byte_budgets()?;
        if l.idle_timeout_ms <= self.paxos.request_timeout_ms {
            return Err(invalid(
                "limits.idle_timeout_ms",
                "must be above paxos.request_timeout_ms (an actor is never stopped mid-request)",
            ));
        }
        Ok(())
    }

    /// The byte budgets of `[limits]`: each holds one request at its largest and its answer
    /// (or it would wait for ever) and fits a `u32`; a connection's is within the node's.
    fn validate_byte_budgets(&self) -> Result<()> {
        let l = &self.limits;
        let largest = 2 * self.frame_limit();
        for (field, bytes) in [
            ("limits.peer_queue_bytes", l.peer_queue_bytes),
            ("limits.max_connection_bytes", l.max_connection_bytes),
            ("limits.max_node_bytes", l.max_node_bytes),
            ("limits.max_inbox_bytes", l.max_inbox_bytes),
        ] {
            if bytes < largest || bytes > u32::MAX as usize {
                return Err(invalid(
                    field,
                    format!(
                        "must be within {largest}..={} (twice the largest frame: one key, \
                         one value)",
                        u32::MAX
                    ),
                ));
            }
        }
        if l.max_connection_bytes > l.max_node_bytes {
            return Err(invalid(
                "limits.max_connection_bytes",
                "must not be above limits.max_node_bytes",
            ));
        }
        Ok(())
    }

    /// `[storage]`: above 0, a map large enough for a few of the largest records, and a
    /// commit wait of at most [`MAX_COMMIT_WAIT_US`].
    fn validate_storage(&self) -> Result<()> {
        positive("storage.map_size_mb", self.storage.map_size_mb as u64)?;
        positive(
            "storage.max_group_commit",
            self.storage.max_group_commit as u64,
        )?;
        if self.storage.commit_wait_among_reads_us > MAX_COMMIT_WAIT_US {
            return Err(invalid(
                "storage.commit_wait_among_reads_us",
                format!(
                    "must be at most {MAX_COMMIT_WAIT_US} ({} ms)",
                    MAX_COMMIT_WAIT_US / 1_000
                ),
            ));
        }
        let needed = (self.frame_limit() as u64 * 4) >> 20;
        if (self.storage.map_size_mb as u64) < needed.max(16) {
            return Err(invalid(
                "storage.map_size_mb",
                format!("must be at least {} MiB", needed.max(16)),
            ));
        }
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> Result<&NodeConfig> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| invalid("--id", format!("node {id} is not in the config")))
    }

    pub fn addr_of(&self, id: NodeId) -> Result<SocketAddr> {
        Ok(self.node(id)?.addr.parse().expect("validated"))
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// What node `me` founds if it finds no cluster running (`paxos::bootstrap`): `None`
    /// when the config does not list it.
    pub fn founding(&self, me: NodeId) -> Option<Founding> {
        let nodes: Vec<(NodeId, String)> =
            self.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        Founding::of(me, &self.cluster.token, &nodes)
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .map(|n| n.addr.parse().expect("validated"))
            .collect()
    }

    /// Each configured node with its address.
    pub fn nodes_and_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        self.node_ids().into_iter().zip(self.addrs()).collect()
    }

    /// The largest frame a node accepts: one key, one value and the protocol around them.
    /// Can this build run a node of this config? A build without the test hooks refuses a
    /// config that asks for fault injection (clients reading the same file are not refused).
    pub fn check_runnable(&self) -> Result<()> {
        if self.testing.allow_fault_injection && !crate::TEST_HOOKS {
            return Err(invalid(
                "testing.allow_fault_injection",
                "this build has no fault injection (it is built without the cargo feature \
                 `testing`, as a production binary should be)",
            ));
        }
        Ok(())
    }

    /// May a node listening on `listen` run with this config's transport? Plaintext only
    /// where every address involved (its own, every configured node's) is loopback, or
    /// where the config says `tls.insecure = true`.
    pub fn check_transport(&self, listen: SocketAddr) -> Result<()> {
        if self.tls.enabled() || self.tls.insecure {
            return Ok(());
        }
        let exposed = std::iter::once(listen)
            .chain(self.addrs())
            .find(|a| !a.ip().is_loopback());
        match exposed {
            None => Ok(()),
            Some(addr) => Err(invalid(
                "tls",
                format!(
                    "{addr} is not a loopback address, and the config has no [tls]: anyone \
                     who reaches it could read and write every key and forge Paxos messages. \
                     Set tls.dir (`paxkv certs` writes one), or tls.insecure = true to run \
                     plaintext anyway"
                ),
            )),
        }
    }

    /// The metrics endpoint of node `id`, if the config gives one.
    pub fn metrics_addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.node(id)
            .ok()?
            .metrics_addr
            .as_ref()
            .map(|a| a.parse().expect("validated"))
    }

    /// The HTTP API's address of node `id`, if the config gives one.
    pub fn http_addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.node(id)
            .ok()?
            .http_addr
            .as_ref()
            .map(|a| a.parse().expect("validated"))
    }

    pub fn frame_limit(&self) -> usize {
        self.limits.max_key_bytes + self.limits.max_value_bytes + FRAME_OVERHEAD_BYTES
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.paxos.request_timeout_ms)
    }

    /// A five-node config on the given addresses with default settings (tests, tools).
    pub fn local(addrs: &[SocketAddr]) -> Config {
        Config {
            nodes: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| NodeConfig {
                    id: i as NodeId + 1,
                    addr: a.to_string(),
                    metrics_addr: None,
                    http_addr: None,
                })
                .collect(),
            paxos: PaxosConfig::default(),
            limits: Limits::default(),
            storage: StorageConfig::default(),
            testing: TestingConfig::default(),
            tls: TlsConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

fn positive(field: &str, v: u64) -> Result<()> {
    if v == 0 {
        return Err(invalid(field, "must be above 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[node]]
        id = 1
        addr = "127.0.0.1:7001"
        [[node]]
        id = 2
        addr = "127.0.0.1:7002"
        [[node]]
        id = 3
        addr = "127.0.0.1:7003"
    "#;

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_config_is_valid_and_has_five_nodes() {
        let text = include_str!("../config/cluster.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.node_ids(), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn plaintext_is_refused_beyond_loopback_unless_insecure() {
        let local = Config::parse(GOOD).unwrap();
        local.check_transport(local.addr_of(1).unwrap()).unwrap();
        let remote = Config::parse(&GOOD.replace("127.0.0.1:7003", "10.0.0.3:7003")).unwrap();
        let err = remote
            .check_transport(remote.addr_of(1).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls: 10.0.0.3:7003 is not a loopback address"),
            "{err}"
        );
        let own = local.check_transport("0.0.0.0:7001".parse().unwrap());
        assert!(
            own.is_err(),
            "a node listening on every interface is exposed"
        );
        let insecure = Config::parse(&format!(
            "{}\n[tls]\ninsecure = true\n",
            GOOD.replace("127.0.0.1:7003", "10.0.0.3:7003")
        ))
        .unwrap();
        insecure
            .check_transport(insecure.addr_of(1).unwrap())
            .unwrap();
        let with_tls = Config::parse(&format!(
            "{}\n[tls]\ndir = \"certs\"\n",
            GOOD.replace("127.0.0.1:7003", "10.0.0.3:7003")
        ))
        .unwrap();
        with_tls
            .check_transport(with_tls.addr_of(1).unwrap())
            .unwrap();
    }

    #[test]
    fn a_minimal_config_takes_defaults() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.limits.max_key_bytes, 256);
        assert_eq!(config.addr_of(2).unwrap().port(), 7002);
        assert_eq!(
            config.storage.commit_wait_among_reads_us,
            DEFAULT_COMMIT_WAIT_US
        );
        let longest = format!("{GOOD}\n[storage]\ncommit_wait_among_reads_us = 10000\n");
        assert!(
            Config::parse(&longest).is_ok(),
            "the longest wait is allowed"
        );
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            (
                GOOD.replace("id = 2", "id = 1"),
                "node[1].id: duplicate node id 1",
            ),
            (
                GOOD.replace("id = 2", "id = 0"),
                "node[1].id: must not be 0",
            ),
            (
                GOOD.replace("127.0.0.1:7002", "localhost"),
                "node[1].addr: \"localhost\" is not an ip:port",
            ),
            (
                GOOD.replace("127.0.0.1:7002", "127.0.0.1:7001"),
                "node[1].addr: address 127.0.0.1:7001 is used twice",
            ),
            (
                GOOD.replace("id = 3", "")
                    .replace("addr = \"127.0.0.1:7003\"", ""),
                "missing field `id`",
            ),
            (
                GOOD.split("[[node]]")
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("[[node]]"),
                "2 node(s) configured",
            ),
            (
                format!("{GOOD}\n[limits]\nmax_key_bytes = 600\n"),
                "limits.max_key_bytes",
            ),
            (
                format!("{GOOD}\n[limits]\nmax_kye_bytes = 6\n"),
                "unknown field `max_kye_bytes`",
            ),
            (
                format!("{GOOD}\n[paxos]\nmax_batch = 1000\n"),
                "paxos.max_batch",
            ),
            (
                format!("{GOOD}\n[limits]\nidle_timeout_ms = 10\n"),
                "limits.idle_timeout_ms",
            ),
            (
                format!("{GOOD}\n[storage]\ncommit_wait_among_reads_us = 10001\n"),
                "storage.commit_wait_among_reads_us: must be at most 10000 (10 ms)",
            ),
        ];
        let cases = cases.into_iter().chain([
            (
                format!("{GOOD}\n[tls]\ncert = \"a.pem\"\n"),
                "tls.ca: missing",
            ),
            (
                format!("{GOOD}\n[tls]\ndir = \"certs\"\ncert = \"a.pem\"\n"),
                "tls.key: tls.cert and tls.key are given together",
            ),
            (
                GOOD.replacen(
                    "addr = \"127.0.0.1:7001\"",
                    "addr = \"127.0.0.1:7001\"\nmetrics_addr = \"127.0.0.1:7002\"",
                    1,
                ),
                "node[1].addr: address 127.0.0.1:7002 is used twice",
            ),
            (
                GOOD.replacen(
                    "addr = \"127.0.0.1:7001\"",
                    "addr = \"127.0.0.1:7001\"\nmetrics_addr = \"nowhere\"",
                    1,
                ),
                "node[0].metrics_addr: \"nowhere\" is not an ip:port",
            ),
        ]);
        for (text, expected) in cases {
            let err = error_of(&text);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }
}
