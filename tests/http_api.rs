//! The HTTP API (`actors::http_api`) driven by clients nobody here wrote: Python's standard
//! library (`tests/http/api_check.py`: every route and status of the key-value API and the
//! listing, binary keys and values byte for byte, racing compare-and-sets, a value over the
//! limit refused from its length) and curl.

use paxkv_testkit as support;

use std::process::Command;

use support::{Cluster, TestCluster};

fn with_http() -> TestCluster {
    TestCluster::start_with(|config| {
        let ports = support::free_ports(config.nodes.len());
        for (node, port) in config.nodes.iter_mut().zip(ports) {
            node.http_addr = Some(port.to_string());
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drives_every_key_value_route_with_its_statuses_and_headers() {
    let cluster = with_http();
    let http = cluster.config.http_addr_of(2).expect("node 2 serves HTTP");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http/api_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(http.to_string())
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ok");
    // What the API wrote, the binary protocol reads.
    let got = cluster.client().get(b"py/new").await.unwrap();
    assert_eq!(got, support::got("x", 1));
}

#[test]
fn curl_puts_and_gets_a_value_with_its_etag() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed (.ci/run installs it): skipped");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async { with_http() });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
    };
    let put = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "v1",
        &format!("http://{http}/v1/kv/c%2Fk"),
    ]);
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    assert!(put.ends_with("{\"version\":1}"), "{put}");
    let get = curl(&[&format!("http://{http}/v1/kv/c%2Fk")]);
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.to_lowercase().contains("etag: \"1\""), "{get}");
    assert!(get.ends_with("\nv1"), "{get}");
    drop(cluster);
}
