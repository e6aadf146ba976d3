//! TLS on real `paxkv node` processes: the certificates of a running cluster are rotated to a
//! new CA, one node at a time with SIGHUP, while a checked workload runs; a reload that fails
//! keeps the old files; a node refuses to start on a non-loopback address without TLS, and
//! on a certificate that names another node.

use paxkv_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use paxkv::paxos::types::NodeId;
use paxkv::tls::{Role, Tls};
use support::processes::{ProcessCluster, ProcessOptions};
use support::workload::Workload;
use support::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_paxkv");
/// Operations the workload must get acknowledged after each step of the rotation.
const PROGRESS: u64 = 30;
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
}

/// Does a fresh TLS connection to node `addr` with this identity get a ping answered?
async fn answers(addr: std::net::SocketAddr, identity: &Arc<Tls>) -> bool {
    let client = paxkv::client::Client::new(
        vec![addr],
        paxkv::client::ClientOptions {
            op_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(1),
            pinned: true,
            tls: Some(identity.clone()),
            ..Default::default()
        },
    );
    client.ping(0).await.is_ok()
}

/// SIGHUP to node `id`, then wait for the workload to go on.
async fn reload(cluster: &ProcessCluster, workload: &Workload, id: NodeId, step: &str) {
    cluster.hang_up(id);
    workload
        .progress(PROGRESS, PROGRESS_DEADLINE, &format!("{step}, node {id}"))
        .await;
}

#[tokio::test]
async fn certificates_rotate_to_a_new_ca_one_node_at_a_time_while_a_checked_workload_runs() {
    let mut cluster = ProcessCluster::start_with(ProcessOptions {
        tls: true,
        ..ProcessOptions::default()
    })
    .await;
    let clients = |n| (0..n).map(|_| cluster.client()).collect::<Vec<_>>();
    let workload = Workload::start(clients(4), clients(2), 7);
    workload
        .progress(PROGRESS, PROGRESS_DEADLINE, "before the rotation")
        .await;

    let rotation = Rotation::prepare(&cluster);
    rotation.trust_both_cas(&cluster, &workload).await;
    rotation
        .present_the_new_cas_certificates(&cluster, &workload)
        .await;
    rotation.drop_the_old_ca(&cluster, &workload).await;
    rotation
        .a_failed_reload_keeps_the_old_files(&cluster, &workload)
        .await;
    rotation.every_node_speaks_the_new_ca_only(&cluster).await;

    // A restart re-dials every peer link, now with the new certificates on both sides.
    cluster.stop(3).await;
    cluster.restart(3);
    cluster.wait_voting(&[3]).await;
    workload
        .progress(PROGRESS, PROGRESS_DEADLINE, "after node 3's restart")
        .await;

    let checked = workload.finish(cluster.client(), "tls-rotation").await;
    println!("rotation under load: {checked:?}");
    assert!(checked.write_once_keys > 0);
}

/// A rotation of the cluster's CA: the files every node reads (`certs`), the new CA's with
/// a certificate for every node and the client (`new`), and the old client certificate
/// (`old`), to show at the end that the old CA is no longer trusted.
struct Rotation {
    certs: PathBuf,
    new: PathBuf,
    old: PathBuf,
    old_ca: String,
    new_ca: String,
}

impl Rotation {
    fn prepare(cluster: &ProcessCluster) -> Rotation {
        let certs = cluster.certs_dir();
        let new = cluster.dir().join("certs-new");
        let nodes: Vec<_> = cluster.ids().into_iter().zip(cluster.addrs()).collect();
        paxkv::certs::write(&nodes, &new, true).unwrap();
        let old = cluster.dir().join("certs-old");
        std::fs::create_dir_all(&old).unwrap();
        copy(&certs.join("client.pem"), &old.join("client.pem"));
        copy(&certs.join("client-key.pem"), &old.join("client-key.pem"));
        Rotation {
            old_ca: std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
            new_ca: std::fs::read_to_string(new.join("ca.pem")).unwrap(),
            certs,
            new,
            old,
        }
    }

    /// The client identity in `dir`, trusting the new CA only.
    fn new_client(&self, dir: &Path) -> Arc<Tls> {
        support::tls_identity(dir, &self.new.join("ca.pem"), "client", Role::Client)
    }

    /// Step 1: both CAs trusted everywhere (before any reload, a certificate of the new CA
    /// is refused).
    async fn trust_both_cas(&self, cluster: &ProcessCluster, workload: &Workload) {
        let both = format!("{}{}", self.old_ca, self.new_ca);
        std::fs::write(self.certs.join("ca.pem"), both).unwrap();
        assert!(
            !answers(cluster.addr(1), &self.new_client(&self.new)).await,
            "before any reload, a certificate of the new CA is refused"
        );
        cluster.client_tls().unwrap().reload().unwrap();
        for id in cluster.ids() {
            reload(cluster, workload, id, "trusting both CAs").await;
        }
    }

    /// Step 2: each node presents a certificate of the new CA (and so does the client).
    async fn present_the_new_cas_certificates(
        &self,
        cluster: &ProcessCluster,
        workload: &Workload,
    ) {
        for id in cluster.ids() {
            for suffix in ["", "-key"] {
                let name = format!("node-{id}{suffix}.pem");
                copy(&self.new.join(&name), &self.certs.join(&name));
            }
            reload(cluster, workload, id, "presenting the new CA's certificate").await;
        }
        copy(&self.new.join("client.pem"), &self.certs.join("client.pem"));
        copy(
            &self.new.join("client-key.pem"),
            &self.certs.join("client-key.pem"),
        );
        cluster.client_tls().unwrap().reload().unwrap();
    }

    /// Step 3: the old CA dropped.
    async fn drop_the_old_ca(&self, cluster: &ProcessCluster, workload: &Workload) {
        std::fs::write(self.certs.join("ca.pem"), &self.new_ca).unwrap();
        cluster.client_tls().unwrap().reload().unwrap();
        for id in cluster.ids() {
            reload(cluster, workload, id, "trusting the new CA only").await;
        }
    }

    /// A reload that fails keeps what the node had: node 1 given node 2's certificate.
    async fn a_failed_reload_keeps_the_old_files(
        &self,
        cluster: &ProcessCluster,
        workload: &Workload,
    ) {
        copy(&self.new.join("node-2.pem"), &self.certs.join("node-1.pem"));
        cluster.hang_up(1);
        support::eventually(
            "node 1 logs the failed reload",
            Duration::from_secs(10),
            || async { cluster.log_tail(1).contains("TLS reload failed") },
        )
        .await;
        assert!(
            cluster.log_tail(1).contains("names node 2, not node 1"),
            "{}",
            cluster.log_tail(1)
        );
        workload
            .progress(PROGRESS, PROGRESS_DEADLINE, "after a failed reload")
            .await;
        copy(&self.new.join("node-1.pem"), &self.certs.join("node-1.pem"));
    }

    /// Every node now speaks the new CA only: a fresh connection that trusts only the new CA
    /// is answered, one presenting the old CA's client certificate is refused.
    async fn every_node_speaks_the_new_ca_only(&self, cluster: &ProcessCluster) {
        let new_client = self.new_client(&self.new);
        let old_client = self.new_client(&self.old);
        for id in cluster.ids() {
            assert!(
                answers(cluster.addr(id), &new_client).await,
                "node {id} does not present a certificate of the new CA"
            );
            assert!(
                !answers(cluster.addr(id), &old_client).await,
                "node {id} still trusts the old CA"
            );
        }
    }
}

fn node_refusal(config: &str, dir: &Path) -> (i32, String) {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["node", "--id", "1", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_node_refuses_plaintext_beyond_loopback_and_a_certificate_naming_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = "[[node]]\nid = 1\naddr = \"10.99.0.1:7401\"\n\
                 [[node]]\nid = 2\naddr = \"10.99.0.2:7401\"\n\
                 [[node]]\nid = 3\naddr = \"10.99.0.3:7401\"\n";
    let (code, stderr) = node_refusal(nodes, dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("tls: 10.99.0.1:7401 is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("tls.insecure = true"), "{stderr}");

    // Certificates swapped: node 1's files hold node 2's certificate and key.
    let certs = dir.path().join("certs");
    let local: Vec<_> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 17400 + id).parse().unwrap()))
        .collect();
    paxkv::certs::write(&local, &certs, true).unwrap();
    copy(&certs.join("node-2.pem"), &certs.join("node-1.pem"));
    copy(&certs.join("node-2-key.pem"), &certs.join("node-1-key.pem"));
    let config = format!(
        "{}\n[tls]\ndir = {:?}\n",
        nodes.replace("10.99.0.", "127.0.0.").replace(":7401", ""),
        certs.display().to_string()
    );
    let config = config
        .replace("127.0.0.1\"", "127.0.0.1:17401\"")
        .replace("127.0.0.2\"", "127.0.0.1:17402\"")
        .replace("127.0.0.3\"", "127.0.0.1:17403\"");
    let (code, stderr) = node_refusal(&config, dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("tls.cert") && stderr.contains("names node 2, not node 1"),
        "{stderr}"
    );
}

/// A client that hangs up while the node still writes its answers must not kill the node: a
/// TLS stream writes with writev(2), which raises SIGPIPE on a closed connection where
/// send(2) with MSG_NOSIGNAL would not (found by the rotation test, whose refused handshakes
/// did it by chance; this does it on purpose).
#[tokio::test]
async fn a_tls_client_that_hangs_up_mid_answer_does_not_kill_the_node() {
    use tokio::io::AsyncWriteExt;
    let mut cluster = ProcessCluster::start_with(ProcessOptions {
        tls: true,
        ..ProcessOptions::default()
    })
    .await;
    let identity = cluster.client_tls().unwrap();
    // A fast answer (a ping) and a slow one (a put: an fsync on a majority), so that the
    // node writes twice: the first write draws a reset from the closed socket, the second
    // fails with EPIPE.
    let request = |id, body| {
        paxkv::frame::encode(&paxkv::messages::Frame::Request(
            paxkv::messages::ClientRequest { id, body },
        ))
    };
    let put = paxkv::messages::RequestBody::Kv {
        key: b"hangup".to_vec(),
        command: paxkv::paxos::types::Command::Put {
            value: b"v".to_vec(),
        },
        write_id: None,
        maybe_applied: false,
    };
    let mut burst = request(1, paxkv::messages::RequestBody::Ping).to_vec();
    burst.extend_from_slice(&request(2, put));
    for _ in 0..20 {
        // (Errors here are the node dying, which the checks below report.)
        let Ok(tcp) = tokio::net::TcpStream::connect(cluster.addr(1)).await else {
            break;
        };
        let ip = cluster.addr(1).ip();
        let dial = paxkv::tls::dial(Some(&identity), tcp, paxkv::tls::Dial::Address(ip));
        let Ok(mut stream) = dial.await else { break };
        let _ = stream.write_all(&burst).await;
        drop(stream);
    }
    // Node 1 is alive and answering (wait_voting fails at once if its process exited).
    cluster.wait_voting(&[1]).await;
    cluster.client_for(1).put(b"still", b"here").await.unwrap();
    cluster.wait_voting(&[1]).await;
}
