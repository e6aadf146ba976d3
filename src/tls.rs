//! TLS with identities: who is on the other end of a connection, and what it may say.
//!
//! Without TLS a node trusts the `from` of every envelope: anyone who reaches its port can
//! send an Accept "from node 2" at a high ballot and overwrite any key, or an `Install` that
//! makes it the sole voter. With `[tls]` configured, every connection, peer and client alike,
//! is TLS 1.3 with certificates on both sides, verified against the cluster's CA bundle
//! (rustls, its `ring` provider):
//!
//! - **A node's certificate names it**: a subject alternative name `node-<id>.paxkv` (its
//!   identity) and the IP address it listens on (what a client dialing that address checks).
//!   `paxkv certs` writes such certificates; a production CA must issue the same names.
//! - **Three roles**, each told by the names its certificate carries, and what each may send
//!   ([`Peer::admits`], the one rule):
//!   - a **node** (`node-<id>.paxkv`): Paxos frames as itself, node-to-node calls
//!     (anti-entropy, `Hello` about itself, `Install` while it is a member), reads and writes;
//!     **not** a membership change. Stolen: it can vote as that node (and so break safety
//!     with other stolen keys: Paxos is not Byzantine-tolerant) and install memberships while
//!     it is a member; it cannot reconfigure the cluster through `paxkv member`.
//!   - the **operator** (`operator.paxkv`, `paxkv certs` writes `operator.pem`): membership
//!     changes (`paxkv member add|remove`: `MemberChange`, `MemberChangeFenced`), besides
//!     everything a client may. Nothing else is the operator's alone today: there is no
//!     other administrative request. Stolen: it can remove voters down to one and add
//!     nodes it controls; keep it off application hosts.
//!   - a **client** (any other certificate the CA signed): reads, writes, `status` and
//!     `member list`. Stolen: it can read and overwrite every key, never reconfigure.
//!
//!   Plaintext (TLS off, loopback only) trusts every local user with all three. The CA must
//!   be the cluster's own: one that issues `node-<id>.paxkv` or `operator.paxkv` names (or a
//!   wildcard `*.paxkv`) to anyone makes them nodes or operators.
//! - **What each connection may send** ([`Peer::admits`]), decided from the certificate the
//!   handshake verified, never from the frame: a `Frame::Peer` only if its `from` is the node
//!   the certificate names (a peer with node 2's certificate cannot speak for node 3); a
//!   `NodeRequest` (anti-entropy, membership `Install`, `Hello`, `Watching`) only from a node
//!   certificate, and a `Hello` only about that node, a `Watching` (announce chosen values
//!   to me) only for that node; client requests from any certificate.
//!   A refused frame is dropped and counted (`forged_frames`); the connection goes on.
//! - **A connection without a certificate the CA signed** (plaintext, another CA's, expired)
//!   fails its handshake and is closed before any frame is read, let alone decoded; counted
//!   (`refused_connections`). A handshake must finish within `limits.handshake_timeout_ms`,
//!   in one of `limits.max_handshakes` slots of which one source address may hold
//!   `limits.max_handshakes_per_source`; an authenticated node's connection then takes no
//!   client slot (the network actor), so clients cannot crowd out the peers. Idle sockets
//!   from one host cannot fill the slots; from many hosts (more than `max_handshakes /
//!   max_handshakes_per_source` addresses) they still can, each for the handshake deadline.
//! - **A membership is taken only from a member** of the membership the node has: an
//!   `Install` from a member's certificate ([`Peer::admits`]), and a pull only from members,
//!   each dialed as that node ([`Dial::Node`]) and still a member when its answer arrives
//!   (`actors::membership::MembershipService::install_newest`); config addresses are asked only by a node
//!   with no membership, `--join` addresses at a start. A removed node, or a certificate
//!   issued for a node never added, cannot make a node stop voting, except a node still
//!   behind by the change that removed it (issue 18).
//! - **Dialing a peer** checks that the certificate it answers with names the node it is
//!   for (`node-<id>.paxkv`): the Paxos links, and a node's anti-entropy, `Hello`, `Install`
//!   and rescan calls (`ClientOptions::nodes`). Where the node is not known yet (a start
//!   asking its `--join` or config addresses for the membership) and for clients, the
//!   certificate must name the IP address dialed, which every node on one host shares.
//!
//! What this does not defend against: a node whose key is stolen can say anything that node
//! may say (Paxos is not Byzantine-tolerant), until its certificate is no longer trusted;
//! there is no revocation list, so that means a new CA. Connections already up are never
//! checked again: a rotation that must cut off an old key restarts the nodes (peer links
//! stay up for as long as both ends do).
//!
//! **Rotation** ([`Tls::reload`], on SIGHUP or at a restart): the files are read again and
//! every later handshake uses them; a reload that fails (a missing file, a key that does not
//! match, a certificate naming another node) changes nothing and says why. Rotating to a new
//! CA without a pause: put both CAs in every node's bundle (reload each), give each node a
//! certificate of the new CA (reload each), then drop the old CA from the bundles.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;
use crate::error::{Error, Result};
use crate::messages::{Frame, NodeRequest};
use crate::paxos::types::NodeId;

/// How long a TLS handshake this node dials may take (one it accepts:
/// `limits.handshake_timeout_ms`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The DNS name a node's certificate carries as its identity: `node-<id>.paxkv`.
pub const NODE_NAME_SUFFIX: &str = ".paxkv";

/// The identity name of node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}{NODE_NAME_SUFFIX}")
}

/// The DNS name an operator's certificate carries (`paxkv certs` writes `operator.pem`).
pub const OPERATOR_NAME: &str = "operator.paxkv";

/// The DNS alternative names of a certificate (none if it does not parse).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(names)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

/// The node a certificate names (its `node-<id>.paxkv` alternative name), if exactly one.
pub fn node_of(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let mut ids = dns_names(cert).into_iter().filter_map(|dns| {
        // Exactly `node-<id>.paxkv` as `node_name` spells it: no `node-03`, no `node-+3`.
        dns.strip_prefix("node-")?
            .strip_suffix(NODE_NAME_SUFFIX)?
            .parse::<NodeId>()
            .ok()
            .filter(|id| *id != 0 && node_name(*id) == dns)
    });
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
}

/// Does the certificate name the operator ([`OPERATOR_NAME`]) and no node?
pub fn is_operator(cert: &CertificateDer<'_>) -> bool {
    node_of(cert).is_none() && dns_names(cert).iter().any(|n| n == OPERATOR_NAME)
}

/// Who a certificate is: a node, the operator, or a client.
fn peer_of(cert: &CertificateDer<'_>) -> Peer {
    match node_of(cert) {
        Some(id) => Peer::Node(id),
        None if is_operator(cert) => Peer::Operator,
        None => Peer::Client,
    }
}

/// Who reads a config: a node (which presents its own certificate), an operator (`paxkv
/// member`) or a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Node(NodeId),
    Operator,
    Client,
}

/// The three files of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `role` uses under `config`: the layout of `dir`, each overridden by an
    /// explicit path. `None` when TLS is off.
    pub fn of(config: &TlsConfig, role: Role) -> Option<TlsFiles> {
        if !config.enabled() {
            return None;
        }
        let in_dir = |name: String| config.dir.as_ref().map(|d| d.join(name));
        let (cert, key) = match role {
            Role::Node(id) => (format!("node-{id}.pem"), format!("node-{id}-key.pem")),
            Role::Operator => ("operator.pem".into(), "operator-key.pem".into()),
            Role::Client => ("client.pem".into(), "client-key.pem".into()),
        };
        // Validated: without `dir`, all three paths are given.
        Some(TlsFiles {
            ca: config
                .ca
                .clone()
                .or_else(|| in_dir("ca.pem".into()))
                .expect("validated"),
            cert: config
                .cert
                .clone()
                .or_else(|| in_dir(cert))
                .expect("validated"),
            key: config
                .key
                .clone()
                .or_else(|| in_dir(key))
                .expect("validated"),
        })
    }
}

/// What one load of the files produced.
struct Loaded {
    acceptor: TlsAcceptor,
    /// For dialing: a peer link, a node's own calls to its peers, a client's connections.
    client: Arc<ClientConfig>,
}

/// One identity's TLS state, reloadable. Shared by every connection of a node (or client).
pub struct Tls {
    files: TlsFiles,
    role: Role,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("role", &self.role)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(field: &str, path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{field} ({}): {why}", path.display()))
}

fn read_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(field, path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_error(field, path, e))?;
    if certs.is_empty() {
        return Err(file_error(field, path, "no certificate in the file"));
    }
    Ok(certs)
}

impl Tls {
    /// Loads the files of `role` under `config`; `None` when TLS is off.
    pub fn from_config(config: &TlsConfig, role: Role) -> Result<Option<Arc<Tls>>> {
        TlsFiles::of(config, role)
            .map(|files| Tls::load(files, role))
            .transpose()
    }

    pub fn load(files: TlsFiles, role: Role) -> Result<Arc<Tls>> {
        let loaded = Tls::read(&files, role)?;
        Ok(Arc::new(Tls {
            files,
            role,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Reads the files again; later handshakes use them. On an error nothing changes.
    pub fn reload(&self) -> Result<()> {
        let loaded = Tls::read(&self.files, self.role)?;
        *self.current.write().expect("tls lock") = Arc::new(loaded);
        Ok(())
    }

    fn read(files: &TlsFiles, role: Role) -> Result<Loaded> {
        let cas = read_certs("tls.ca", &files.ca)?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| file_error("tls.ca", &files.ca, e))?;
        }
        let roots = Arc::new(roots);
        let chain = read_certs("tls.cert", &files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| file_error("tls.key", &files.key, e))?;
        if role == Role::Operator && !is_operator(&chain[0]) {
            return Err(file_error(
                "tls.cert",
                &files.cert,
                format!("the certificate does not name the operator ({OPERATOR_NAME})"),
            ));
        }
        if let Role::Node(id) = role {
            match node_of(&chain[0]) {
                Some(named) if named == id => {}
                Some(named) => {
                    return Err(file_error(
                        "tls.cert",
                        &files.cert,
                        format!("the certificate names node {named}, not node {id}"),
                    ))
                }
                None => {
                    return Err(file_error(
                        "tls.cert",
                        &files.cert,
                        format!(
                            "the certificate names no node (it needs the name {})",
                            node_name(id)
                        ),
                    ))
                }
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| file_error("tls.ca", &files.ca, e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(format!("tls: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| file_error("tls.key", &files.key, e))?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| file_error("tls.ca", &files.ca, e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(format!("tls: {e}")))?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| file_error("tls.key", &files.key, e))?;
        Ok(Loaded {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            client: Arc::new(client),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("tls lock").clone()
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current().acceptor.clone()
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.current().client.clone())
    }
}

/// A connection's byte stream, plaintext or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// Whom a stream is dialed to: what its certificate must name.
#[derive(Debug, Clone, Copy)]
pub enum Dial {
    /// Node `id` (a peer link).
    Node(NodeId),
    /// Whatever node listens on this IP address (a client).
    Address(IpAddr),
}

/// Wraps a dialed TCP stream in TLS if `tls` is on.
pub async fn dial(tls: Option<&Tls>, stream: TcpStream, to: Dial) -> std::io::Result<BoxStream> {
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let name = match to {
        Dial::Node(id) => ServerName::try_from(node_name(id))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        Dial::Address(ip) => ServerName::IpAddress(ip.into()),
    };
    let handshake = tls.connector().connect(name, stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(stream) => Ok(Box::new(stream?)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Plaintext (TLS off): trusted, as on loopback.
    Unauthenticated,
    /// A certificate naming this node.
    Node(NodeId),
    /// A certificate naming the operator ([`OPERATOR_NAME`]).
    Operator,
    /// A certificate of the CA naming neither a node nor the operator.
    Client,
}

impl Peer {
    /// Accepts a connection: plaintext when `tls` is off, else a TLS handshake that verifies
    /// the client's certificate (its deadline, `limits.handshake_timeout_ms`, is the caller's).
    /// `Err` (the connection is refused) for a failed handshake.
    pub async fn accept(
        tls: Option<&Tls>,
        stream: TcpStream,
    ) -> std::result::Result<(BoxStream, Peer), String> {
        let Some(tls) = tls else {
            return Ok((Box::new(stream), Peer::Unauthenticated));
        };
        let stream = tls
            .acceptor()
            .accept(stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map_or(Peer::Client, peer_of);
        Ok((Box::new(stream), peer))
    }

    /// May this peer send `frame`? `Err` says why not. `is_member(id)`: is node `id` a member
    /// of the membership this node has (true while it has none); asked for an `Install` only.
    pub fn admits(
        &self,
        frame: &Frame,
        is_member: impl FnOnce(NodeId) -> bool,
    ) -> std::result::Result<(), String> {
        match (self, frame) {
            (Peer::Unauthenticated, _) => Ok(()),
            (Peer::Operator, Frame::Request(_)) => Ok(()),
            (_, Frame::Request(request)) if request.body.is_member_change() => Err(format!(
                "a membership change from {}: only the operator's certificate ({OPERATOR_NAME}) \
                 may change the membership",
                match self {
                    Peer::Node(id) => format!("node {id}'s certificate"),
                    _ => "a client certificate".to_string(),
                }
            )),
            (_, Frame::Request(_)) => Ok(()),
            (Peer::Node(id), Frame::Peer(envelope)) if envelope.from != *id => Err(format!(
                "a Paxos frame from node {} on the connection of node {id}",
                envelope.from
            )),
            (Peer::Node(id), Frame::Call(call)) => match &call.body {
                NodeRequest::Hello { node, .. } if node != id => Err(format!(
                    "a Hello of node {node} on the connection of node {id}"
                )),
                // A node asks for announcements to itself only: another's certificate would
                // have them sent to a node that never asked (work, and its link's bytes).
                NodeRequest::Watching { node, .. } if node != id => Err(format!(
                    "a request to announce to node {node} on the connection of node {id}"
                )),
                // The driver of a change is a member; a node behind by more than a change
                // fetches the newer membership itself.
                NodeRequest::Install(_) if !is_member(*id) => {
                    Err(format!("an Install from node {id}, which is no member"))
                }
                _ => Ok(()),
            },
            (Peer::Node(_), _) => Ok(()),
            (Peer::Client | Peer::Operator, Frame::Peer(envelope)) => Err(format!(
                "a Paxos frame from node {} on a client's connection",
                envelope.from
            )),
            (Peer::Client | Peer::Operator, Frame::Call(_)) => {
                Err("a node-to-node request on a client's connection".into())
            }
            (Peer::Client | Peer::Operator, _) => Ok(()),
        }
    }
}
