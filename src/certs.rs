//! `paxkv certs`: a development CA and the certificates of a config's nodes and of a client,
//! in the layout `[tls] dir` reads (`crate::tls`). The quick start; production users bring
//! their own CA, issuing the same names.
//!
//! - `ca.pem`, `ca-key.pem`: the CA (ten years). If `DIR` already holds both, they are kept
//!   and only the other certificates are issued again: that is how certificates are renewed
//!   from the same CA, and (`--id`, only some nodes) how a node added later gets one.
//! - `node-<id>.pem`, `node-<id>-key.pem` for each node of the config: the names
//!   `node-<id>.paxkv` (its identity) and its IP address; for server and client
//!   authentication (a node is both). One year.
//! - `client.pem`, `client-key.pem`: a client certificate naming no node: reads and writes.
//!   One year.
//! - `operator.pem`, `operator-key.pem`: the operator's certificate (the name
//!   `operator.paxkv`): membership changes besides what a client may do. One year.
//!
//! Keys are ECDSA P-256, written with mode 0600.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::paxos::types::NodeId;
use crate::tls::{node_name, OPERATOR_NAME};

/// What [`write()`] did.
#[derive(Debug)]
pub struct Written {
    /// The CA was made now (false: an existing one in the directory was kept).
    pub new_ca: bool,
    pub files: Vec<PathBuf>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("certs: {what}: {e}"))
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| failed(&path.display().to_string(), e))?;
    if secret {
        // `mode` applies only to a file created now; a key written over an older file is
        // made private too.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed(&path.display().to_string(), e))?;
    }
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| failed(&path.display().to_string(), e))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks that are a little behind the one that made it.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// The CA in `out`, made if it is not there (true: made now), as an issuer.
fn ca(out: &Path) -> Result<(bool, Issuer<'static, KeyPair>)> {
    let (cert_path, key_path) = (out.join("ca.pem"), out.join("ca-key.pem"));
    if cert_path.exists() && key_path.exists() {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| failed(&p.display().to_string(), e));
        let (cert, key) = (read(&cert_path)?, read(&key_path)?);
        let key = KeyPair::from_pem(&key).map_err(|e| failed("ca-key.pem", e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(|e| failed("ca.pem", e))?;
        return Ok((false, issuer));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "paxkv development CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, 3650);
    let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
    let cert = params.self_signed(&key).map_err(|e| failed("CA", e))?;
    write_file(&cert_path, &cert.pem(), false)?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    Ok((true, Issuer::new(params, key)))
}

/// Issues one leaf certificate and writes it and its key as `<stem>.pem`, `<stem>-key.pem`.
fn leaf(
    out: &Path,
    stem: &str,
    common_name: &str,
    names: Vec<SanType>,
    node: bool,
    issuer: &Issuer<'static, KeyPair>,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed(stem, e))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if node {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    validity(&mut params, 365);
    let key = KeyPair::generate().map_err(|e| failed(stem, e))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| failed(stem, e))?;
    let (cert_path, key_path) = (
        out.join(format!("{stem}.pem")),
        out.join(format!("{stem}-key.pem")),
    );
    write_file(&cert_path, &cert.pem(), false)?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    files.extend([cert_path, key_path]);
    Ok(())
}

/// Writes the CA (unless `out` has one), a certificate for each of `nodes`, and (if
/// `client`) a client and an operator certificate into `out` (created if missing). `files` lists what was
/// written besides the CA.
pub fn write(nodes: &[(NodeId, SocketAddr)], out: &Path, client: bool) -> Result<Written> {
    std::fs::create_dir_all(out).map_err(|e| failed(&out.display().to_string(), e))?;
    let (new_ca, issuer) = ca(out)?;
    let mut files = Vec::new();
    for &(id, addr) in nodes {
        let names = vec![
            SanType::DnsName(
                node_name(id)
                    .try_into()
                    .map_err(|e| failed("node name", e))?,
            ),
            SanType::IpAddress(addr.ip()),
        ];
        let common = format!("paxkv node {id}");
        leaf(
            out,
            &format!("node-{id}"),
            &common,
            names,
            true,
            &issuer,
            &mut files,
        )?;
    }
    if client {
        leaf(
            out,
            "client",
            "paxkv client",
            Vec::new(),
            false,
            &issuer,
            &mut files,
        )?;
        let operator = vec![SanType::DnsName(
            OPERATOR_NAME
                .try_into()
                .map_err(|e| failed("operator name", e))?,
        )];
        leaf(
            out,
            "operator",
            "paxkv operator",
            operator,
            false,
            &issuer,
            &mut files,
        )?;
    }
    Ok(Written { new_ca, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    fn node_in(dir: &Path, stem: &str) -> Option<NodeId> {
        let cert = CertificateDer::from_pem_file(dir.join(format!("{stem}.pem"))).unwrap();
        crate::tls::node_of(&cert)
    }

    #[test]
    fn each_node_certificate_names_its_node_and_the_client_one_names_none() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [
            (1, "127.0.0.1:7001".parse().unwrap()),
            (7, "10.1.2.3:7007".parse().unwrap()),
        ];
        let written = write(&nodes, dir.path(), true).unwrap();
        assert!(written.new_ca);
        assert_eq!(node_in(dir.path(), "node-1"), Some(1));
        assert_eq!(node_in(dir.path(), "node-7"), Some(7));
        assert_eq!(node_in(dir.path(), "client"), None);
        let mode = std::fs::metadata(dir.path().join("node-7-key.pem")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // A second run keeps the CA: certificates issued before and after verify alike.
        let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let client_before = std::fs::read(dir.path().join("client.pem")).unwrap();
        let again = write(&nodes[..1], dir.path(), false).unwrap();
        assert!(!again.new_ca);
        assert_eq!(again.files.len(), 2, "node 1's certificate and key only");
        assert_eq!(
            std::fs::read(dir.path().join("client.pem")).unwrap(),
            client_before
        );
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    }
}
