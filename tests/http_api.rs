//! The HTTP API (`actors::http_api`) driven by clients nobody here wrote: Python's standard
//! library (`tests/http/api_check.py`: every route and status of the key-value API and the
//! listing, binary keys and values byte for byte, racing compare-and-sets, a value over the
//! limit refused from its length) and curl.

use paxkv_testkit as support;

use std::process::Command;
use std::time::Duration;

use paxkv::paxos::types::Outcome;
use support::{Cluster, TestCluster};

fn with_http() -> TestCluster {
    with_http_and(|_| {})
}

/// A cluster whose nodes serve the HTTP API, its config changed by `tweak` first.
fn with_http_and(tweak: impl FnOnce(&mut paxkv::config::Config)) -> TestCluster {
    TestCluster::start_with(|config| {
        let ports = support::free_ports(config.nodes.len());
        for (node, port) in config.nodes.iter_mut().zip(ports) {
            node.http_addr = Some(port.to_string());
        }
        tweak(config);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drives_every_key_value_route_with_its_statuses_and_headers() {
    if !support::tools_present(&["python3"]) {
        return;
    }
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
    if !support::tools_present(&["curl"]) {
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

/// `curl -N` follows a prefix's watch as server-sent events while a writer runs: one `data:`
/// line of `paxkv watch --json`'s JSON per change, in order, `null` for a delete.
#[test]
fn curl_follows_a_watch_as_server_sent_events() {
    use std::io::{BufRead, BufReader};
    if !support::tools_present(&["curl"]) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async { with_http() });
    let http = cluster.config.http_addr_of(3).expect("node 3 serves HTTP");
    let mut curl = Command::new("curl")
        .args(["-sN", &format!("http://{http}/v1/watch/sse%2F?prefix=true")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = curl.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data: ") {
                let _ = tx.send(data.to_string());
            }
        }
    });
    let client = cluster.client();
    // The watch has begun once a change of it arrives.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < until, "the watch sent nothing");
        runtime.block_on(client.put(b"sse/start", b"x")).unwrap();
        if lines
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_ok()
        {
            break;
        }
    }
    while lines
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_ok()
    {}
    runtime.block_on(async {
        client.put(b"sse/a", b"1").await.unwrap();
        client.put(b"other", b"1").await.unwrap();
        client.put(b"sse/a", b"2").await.unwrap();
        client.delete(b"sse/a").await.unwrap();
    });
    let got: Vec<serde_json::Value> = (0..3)
        .map(|_| {
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("an event");
            serde_json::from_str(&line).expect("JSON")
        })
        .collect();
    assert_eq!(
        got,
        vec![
            serde_json::json!({"key": "sse/a", "version": 1, "value": "1"}),
            serde_json::json!({"key": "sse/a", "version": 2, "value": "2"}),
            serde_json::json!({"key": "sse/a", "version": 3, "value": null}),
        ]
    );
    let _ = curl.kill();
    let _ = curl.wait();
    drop(cluster);
}

/// The OpenAPI document (`docs/openapi.yaml`, served at `GET /v1/openapi.yaml`) names exactly
/// the routes the API answers (`http_api::ROUTES`; `tests/http/api_check.py` calls each).
#[test]
fn the_openapi_document_and_the_routes_agree() {
    let mut documented = std::collections::BTreeSet::new();
    let mut path = None;
    for line in paxkv::actors::http_api::OPENAPI.lines() {
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end_matches(':')));
        } else if let (Some(path), Some(method)) = (&path, line.strip_prefix("    ")) {
            let method = method.trim_end_matches(':');
            if ["get", "put", "delete", "post"].contains(&method) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routes: std::collections::BTreeSet<(String, String)> = paxkv::actors::http_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routes);
}

/// `DELETE /v1/members/{id}` and `POST /v1/members` carry out `paxkv member remove|add` (the
/// runbook of a lost disk, through curl): each answered with the membership once done.
#[test]
fn curl_removes_a_node_and_adds_it_back_on_an_empty_directory() {
    if !support::tools_present(&["curl"]) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = runtime.block_on(async { with_http() });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let curl = |args: &[&str]| -> (String, serde_json::Value) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or_default(),
        )
    };
    let states = |m: &serde_json::Value| -> Vec<(u64, String)> {
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["id"].as_u64().unwrap(),
                    x["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (code, removed) = curl(&["-X", "DELETE", &format!("http://{http}/v1/members/5")]);
    assert_eq!(code, "200", "{removed}");
    assert_eq!(states(&removed).len(), 4, "{removed}");
    runtime.block_on(async {
        cluster.stop(5).await;
        cluster.wipe(5);
        cluster.restart(5);
    });
    let body = format!("{{\"id\": 5, \"addr\": \"{}\"}}", cluster.addr(5));
    let (code, added) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        &format!("http://{http}/v1/members"),
    ]);
    assert_eq!(code, "200", "{added}");
    assert!(
        states(&added).contains(&(5, "voting".to_string())),
        "{added}"
    );
    let (code, error) = curl(&[
        "-X",
        "POST",
        "--data",
        "{",
        &format!("http://{http}/v1/members"),
    ]);
    assert_eq!(
        (code.as_str(), error["class"].as_str()),
        ("400", Some("bad_request"))
    );
    drop(cluster);
}

/// With `[tls]` the API is HTTPS and asks for a certificate of the cluster's CA: curl with
/// the CLI's `client.pem` reads and writes; without a certificate, or with another CA's, the
/// handshake fails and nothing is answered; a client's certificate may not change the
/// membership (403, the node port's rule), the operator's may.
#[test]
fn curl_over_https_needs_a_certificate_of_the_clusters_ca() {
    if !support::tools_present(&["curl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async {
        TestCluster::with_tls_and(3, certs.path(), |config| {
            let ports = support::free_ports(config.nodes.len());
            for (node, port) in config.nodes.iter_mut().zip(ports) {
                node.http_addr = Some(port.to_string());
            }
        })
    });
    let http = cluster.config.http_addr_of(2).expect("node 2 serves HTTP");
    let other = tempfile::tempdir().unwrap();
    paxkv::certs::write(&[(9, "127.0.0.1:1".parse().unwrap())], other.path(), true).unwrap();
    let file = |dir: &tempfile::TempDir, name: &str| dir.path().join(name).display().to_string();
    let ca = file(&certs, "ca.pem");
    // (exit code, "status\nbody")
    let curl = |identity: Option<(&tempfile::TempDir, &str)>, args: &[&str]| {
        let mut command = Command::new("curl");
        command.args(["-s", "-w", "\n%{http_code}", "--cacert", &ca]);
        if let Some((dir, stem)) = identity {
            command
                .args(["--cert", &file(dir, &format!("{stem}.pem"))])
                .args(["--key", &file(dir, &format!("{stem}-key.pem"))]);
        }
        let out = command.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let url = |path: &str| format!("https://{http}{path}");

    let (code, put) = curl(
        Some((&certs, "client")),
        &["-X", "PUT", "--data-binary", "v", &url("/v1/kv/tls")],
    );
    assert_eq!((code, put.as_str()), (Some(0), "{\"version\":1}\n200"));
    let (_, get) = curl(Some((&certs, "client")), &[&url("/v1/kv/tls")]);
    assert_eq!(get, "v\n200");

    // No certificate, or another CA's: no answer at all (curl's exit code, not a status).
    for identity in [None, Some((&other, "client"))] {
        let (code, out) = curl(identity, &[&url("/v1/kv/tls")]);
        assert_ne!(
            code,
            Some(0),
            "answered without the CA's certificate: {out}"
        );
        assert!(!out.contains("\nv\n"), "{out}");
    }
    // Plain HTTP on the HTTPS port is not served either.
    let (_, plain) = curl(None, &[&format!("http://{http}/v1/kv/tls")]);
    assert!(!plain.ends_with("200"), "{plain}");

    // A client's certificate may not remove a member; the operator's may.
    let (_, refused) = curl(
        Some((&certs, "client")),
        &["-X", "DELETE", &url("/v1/members/3")],
    );
    assert!(refused.ends_with("\n403"), "{refused}");
    assert!(refused.contains("\"class\":\"forbidden\""), "{refused}");
    let (_, removed) = curl(
        Some((&certs, "operator")),
        &["-X", "DELETE", &url("/v1/members/3")],
    );
    assert!(removed.ends_with("\n200"), "{removed}");
    let members: serde_json::Value =
        serde_json::from_str(removed.rsplit_once('\n').unwrap().0).unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");
    drop(cluster);
}

/// One request on a connection of its own to `http`, answered to its end (30 s at most).
async fn exchange(http: std::net::SocketAddr, request: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 30 s")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Input the API cannot mean is refused with 400 before anything runs, never taken another
/// way (review, 2026-12-08): a `%` not followed by two hex digits was taken literally (a
/// key other than the client meant), a misspelt `?lease=` was ignored (the value written
/// without its lease, detaching the key), `prefix=1` was quietly false (a prefix watch became
/// a watch of one key), a watch of a key it cannot watch answered 200 and then an error
/// event (which an EventSource retries for ever), and a `limit` over 2^32 was refused where
/// the README says it is capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_api_cannot_mean_is_refused_with_400() {
    let cluster = with_http();
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let ask = |method: &str, target: &str, body: &str| {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(http, request.into_bytes())
    };
    let status = |answer: &str| answer.get(9..12).unwrap_or("").to_string();
    for (method, target, body) in [
        ("GET", "/v1/kv/100%", ""),
        ("PUT", "/v1/kv/%zz", "v"),
        ("GET", "/v1/kv/k%4", ""),
        ("PUT", "/v1/kv/k?lease_id=1", "v"),
        ("PUT", "/v1/kv/k?lease=1&Lease=2", "v"),
        ("GET", "/v1/kv/k?x=1", ""),
        ("DELETE", "/v1/kv/k?lease=1", ""),
        ("GET", "/v1/kv?prefix=a&keys_only=yes", ""),
        ("GET", "/v1/kv?prefix=%g0", ""),
        ("GET", "/v1/watch/k?prefix=1", ""),
        ("GET", "/v1/watch/", ""),
        ("GET", "/v1/watch/%00paxkv%2Fmembers", ""),
        ("GET", "/v1/watch/%zz", ""),
        ("GET", "/v1/leases/1?keys=1", ""),
        ("GET", "/v1/leases/1?key=true", ""),
    ] {
        let answer = ask(method, target, body).await;
        assert_eq!(status(&answer), "400", "{method} {target}: {answer}");
        assert!(answer.contains("\"class\":\"bad_request\""), "{answer}");
    }
    // Nothing was written by any of them.
    let answer = ask("GET", "/v1/kv/k", "").await;
    assert_eq!(status(&answer), "404", "{answer}");
    // What they meant, said right, is served.
    let answer = ask("PUT", "/v1/kv/100%25", "v").await;
    assert_eq!(status(&answer), "200", "{answer}");
    let answer = ask(
        "GET",
        "/v1/kv?prefix=100&keys_only=true&limit=5000000000",
        "",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert!(answer.contains("\"key\":\"100%\""), "{answer}");
    drop(cluster);
}

/// A membership change asked over HTTP runs to its end when its client goes away mid-way
/// (Ctrl-C on curl, a client's timeout): hyper drops the answer's future then, and the change
/// ran inside it, so it stopped between two steps and left the membership mid-change until
/// someone reran it (review, 2026-12-08). Node 1's messages are slowed so that the change is
/// seen under way, from node 2, before its client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_whose_client_goes_away_still_runs_to_its_end() {
    use paxkv::messages::{FaultPlan, LinkFaults};
    use tokio::io::AsyncWriteExt;
    let cluster = with_http_and(|config| config.testing.allow_fault_injection = true);
    let (http1, http2) = (
        cluster.config.http_addr_of(1).expect("node 1 serves HTTP"),
        cluster.config.http_addr_of(2).expect("node 2 serves HTTP"),
    );
    let members = || async move {
        let request =
            format!("GET /v1/members HTTP/1.1\r\nHost: {http2}\r\nConnection: close\r\n\r\n");
        let answer = exchange(http2, request.into_bytes()).await;
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()
    };
    let epoch = members().await["epoch"].as_u64().expect("an epoch");
    let slow = FaultPlan {
        default: LinkFaults {
            delay_min_ms: 100,
            delay_max_ms: 100,
            ..LinkFaults::default()
        },
        ..FaultPlan::default()
    };
    cluster.set_faults(1, slow).await;
    let mut client = tokio::net::TcpStream::connect(http1).await.unwrap();
    let remove = format!("DELETE /v1/members/5 HTTP/1.1\r\nHost: {http1}\r\n\r\n");
    client.write_all(remove.as_bytes()).await.unwrap();
    let has_five = |m: &serde_json::Value| {
        m["members"]
            .as_array()
            .is_some_and(|all| all.iter().any(|x| x["id"] == 5))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = members().await;
        if now["epoch"].as_u64().is_some_and(|e| e > epoch) {
            assert!(
                has_five(&now),
                "the change ended before its client could leave: {now}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change never began: {now}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    loop {
        let now = members().await;
        if !has_five(&now) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change stopped when its client went away: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(cluster);
}

/// A client that stops sending a request's body, or stops reading its answers, gives its
/// connection back: the body is answered 408 after `http_header_timeout_ms` of silence (and
/// nothing is written), and a connection whose answers go unread is closed once one write
/// waited `slow_reader_timeout_ms`, so a client waiting for a connection slot is served.
/// Before, each kept its slot for good (review, 2026-12-08): 64 of them locked every other
/// client of their address out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_or_reading_gives_its_connection_back() {
    use tokio::io::AsyncWriteExt;
    let cluster = with_http_and(|config| {
        // Long enough that the test's own 1 MiB put never pauses that long on a busy machine.
        config.limits.http_header_timeout_ms = 1_500;
        config.limits.http_request_timeout_ms = 4_000;
        config.limits.slow_reader_timeout_ms = 1_000;
        config.limits.http_max_connections = 2;
    });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let exchange = |request: Vec<u8>| exchange(http, request);
    let head = |method: &str, key: &str, extra: &str| {
        format!(
            "{method} /v1/kv/{key} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n{extra}\r\n"
        )
    };

    // A body that stops after 10 of its 1,000 bytes.
    let half = head("PUT", "b", "Content-Length: 1000\r\n") + "0123456789";
    let answer = exchange(half.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let answer = exchange(head("GET", "b", "").into_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "half a body was written: {answer}"
    );
    // A body that trickles, a byte every 300 ms (each pause within the limit): 408 once the
    // request's time is up, not after its 1,000 bytes (five minutes).
    let mut trickle = tokio::net::TcpStream::connect(http).await.unwrap();
    let started = std::time::Instant::now();
    let opening = head("PUT", "b", "Content-Length: 1000\r\n");
    trickle.write_all(opening.as_bytes()).await.unwrap();
    let answer = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "still open");
        if trickle.write_all(b"x").await.is_err() {
            break String::new();
        }
        let mut first = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(300), trickle.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => break String::from_utf8_lossy(&first[..n]).into_owned(),
            Ok(_) => break String::new(),
            Err(_) => {}
        }
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    drop(trickle);

    // Two connections that ask for a 1 MiB value 32 times and read nothing (a small receive
    // buffer, so that the node's writes wait): they hold both slots until they are closed.
    let big = vec![b'x'; 1 << 20];
    let mut put = head("PUT", "big", &format!("Content-Length: {}\r\n", big.len())).into_bytes();
    put.extend_from_slice(&big);
    let answer = exchange(put).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(http).await.unwrap();
        let get = format!("GET /v1/kv/big HTTP/1.1\r\nHost: {http}\r\n\r\n").repeat(32);
        stream.write_all(get.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // A third client is served once the node has closed one of them.
    let answer = exchange(head("GET", "b", "").into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    drop(stalled);
    drop(cluster);
}

/// What one HTTP watch holds for a client that stops reading is bounded by
/// `limits.http_watch_buffer_bytes` at each stage (`watch::WatchOptions::buffer_bytes`), not by
/// the 8 MiB a program's watch takes by default: a client that reads nothing (a 4 KiB receive
/// buffer) while sixteen changes of 1 MB are put is told a gap once it reads on. With 8 MiB at
/// each stage about 22 MB would be held (items ready, answers read, hyper's chunk and the
/// socket's buffer), and no gap said (mutant `http-watch-buffer-ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_watch_whose_client_stops_reading_holds_its_buffer_bytes_and_says_the_gap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = with_http_and(|config| {
        config.limits.http_watch_buffer_bytes = 1 << 20;
        // The client's pause is not a stalled reader's, and the nodes hold far more than the
        // 16 MB for it: a gap can only come from the watch's own bound.
        config.limits.slow_reader_timeout_ms = 120_000;
        config.limits.watch_buffer_bytes = 256 << 20;
        config.limits.max_connection_bytes = 256 << 20;
    });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let client = cluster.client();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(http).await.unwrap();
    let watch = format!("GET /v1/watch/hw HTTP/1.1\r\nHost: {http}\r\n\r\n");
    stream.write_all(watch.as_bytes()).await.unwrap();
    // Reads the events until `seen` says so; false at the deadline. Looks only at what is
    // new (and a little before it, for a pattern across two reads).
    async fn read_until(
        stream: &mut tokio::net::TcpStream,
        text: &mut String,
        within: Duration,
        mut seen: impl FnMut(&str) -> bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + within;
        let mut chunk = vec![0u8; 64 << 10];
        let mut from = text.len().saturating_sub(64);
        loop {
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            if seen(&text[from..]) {
                return true;
            }
            from = text.len().saturating_sub(64);
            match tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => text.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Ok(_) => panic!("the stream ended: {}", &text[..text.len().min(2_000)]),
                Err(_) => return false,
            }
        }
    }
    let version_seen = |version: u64| {
        move |text: &str| {
            text.contains(&format!("\"version\":{version},"))
                || text.contains(&format!("\"version\":{version}}}"))
        }
    };
    // Started once a marker put after the 200 arrives.
    let mut text = String::new();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < until,
            "the watch never started: {text}"
        );
        let Outcome::Put { version } = client.put(b"hw", b"marker").await.unwrap() else {
            panic!("a put answered something else");
        };
        if read_until(
            &mut stream,
            &mut text,
            Duration::from_millis(500),
            version_seen(version),
        )
        .await
        {
            break;
        }
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let value = vec![b'x'; 1_000_000];
    let mut last = 0;
    for _ in 0..16 {
        let Outcome::Put { version } = client.put(b"hw", &value).await.unwrap() else {
            panic!("a put answered something else");
        };
        last = version;
    }
    let mut events = String::new();
    let mut gap = false;
    let found = read_until(&mut stream, &mut events, Duration::from_secs(60), |text| {
        gap |= text.contains("\"skipped_to\"");
        version_seen(last)(text)
    })
    .await;
    assert!(found, "the last change never came");
    assert!(
        gap,
        "all sixteen changes were held for a client that read nothing"
    );
    drop(cluster);
}

/// The API's bounds (`[limits]`): a request whose headers do not arrive within
/// `http_header_timeout_ms` is closed (a silent connection too: it would hold a slot for
/// ever); past `http_max_connections` a connection waits until one closes; past
/// `http_max_watches` a watch is answered 429.
#[test]
fn the_api_bounds_its_connections_header_time_and_watch_streams() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async {
        with_http_and(|config| {
            config.limits.http_header_timeout_ms = 500;
            config.limits.http_max_connections = 2;
            config.limits.http_max_watches = 1;
            config.limits.http_watch_max_keys = 1;
        })
    });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let closed_within = |mut stream: std::net::TcpStream, deadline: Duration| {
        stream
            .set_read_timeout(Some(deadline + Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        (
            started.elapsed(),
            String::from_utf8_lossy(&rest).to_string(),
        )
    };
    // Half a request's headers, then nothing; and nothing at all.
    let mut half = std::net::TcpStream::connect(http).unwrap();
    half.write_all(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let silent = std::net::TcpStream::connect(http).unwrap();
    for stream in [half, silent] {
        let (took, answer) = closed_within(stream, Duration::from_millis(500));
        assert!(took < Duration::from_secs(4), "still open after {took:?}");
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    // Two connections held open: a third is not answered until one of them closes.
    let request = format!("GET /v1/kv/a HTTP/1.1\r\nHost: {http}\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = std::net::TcpStream::connect(http).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 404");
        held.push(stream);
    }
    let mut third = std::net::TcpStream::connect(http).unwrap();
    third.write_all(request.as_bytes()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut answer = [0u8; 12];
    assert!(
        third.read_exact(&mut answer).is_err(),
        "a third connection was served"
    );
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 404");
    drop(third);

    // One watch stream at a time.
    let watch = format!("GET /v1/watch/w HTTP/1.1\r\nHost: {http}\r\n\r\n");
    let mut first = std::net::TcpStream::connect(http).unwrap();
    first.write_all(watch.as_bytes()).unwrap();
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let mut second = std::net::TcpStream::connect(http).unwrap();
    second.write_all(watch.as_bytes()).unwrap();
    second.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 429");
    drop(first);
    // Its slot comes back once the stream is gone.
    let until = Instant::now() + Duration::from_secs(30);
    let started = Instant::now();
    loop {
        let mut again = std::net::TcpStream::connect(http).unwrap();
        again.write_all(watch.as_bytes()).unwrap();
        again.read_exact(&mut answer).unwrap();
        if &answer == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < until, "the watch's slot never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("the slot came back after {:?}", started.elapsed());

    // A watch follows at most `http_watch_max_keys` keys (1 here, enough for the key watched
    // above): a prefix that holds two ends its stream with an error event naming the limit.
    runtime.block_on(async {
        let client = cluster.client();
        client.put(b"wk/a", b"1").await.unwrap();
        client.put(b"wk/b", b"2").await.unwrap();
    });
    let watch = format!("GET /v1/watch/wk%2F?prefix=true HTTP/1.1\r\nHost: {http}\r\n\r\n");
    let until = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        let mut stream = std::net::TcpStream::connect(http).unwrap();
        stream.write_all(watch.as_bytes()).unwrap();
        stream.read_exact(&mut answer).unwrap();
        if &answer == b"HTTP/1.1 200" {
            break stream;
        }
        assert!(Instant::now() < until, "the watch's slot never came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Read until the error event or a deadline (the stream's heartbeats would keep a plain
    // read going for ever if the watch never ended).
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let mut events = String::new();
    while !events.contains("its most") {
        assert!(Instant::now() < until, "no error event in 30 s: {events}");
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => events.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {} // a read timeout: look at the deadline again
        }
    }
    assert!(
        events.contains("event: error") && events.contains("follows 1 keys, its most"),
        "{events}"
    );
    drop(cluster);
}

/// One source address holds at most `http_max_connections_per_source` of the API's
/// connections (`actors::sources`): one more from it is closed at once, unanswered, while
/// another address is served; a connection given back makes room; and a kept-alive
/// connection that falls idle is closed after `http_header_timeout_ms`, giving its slot back
/// (hyper restarts the header clock once an answer is sent).
#[test]
fn one_address_holds_at_most_its_share_of_the_apis_connections() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async {
        with_http_and(|config| {
            config.limits.http_header_timeout_ms = 2_000;
            config.limits.http_max_connections = 8;
            config.limits.http_max_connections_per_source = 2;
        })
    });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    let request = format!("GET /v1/kv/a HTTP/1.1\r\nHost: {http}\r\n\r\n");
    // A connection from `local` (port 0: any) that sends one request: its status line, or
    // `None` if the connection was closed without one.
    let connect_from = |local: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let stream = runtime.block_on(socket.connect(http)).unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    };
    let status = |stream: &mut std::net::TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(request.as_bytes());
        let mut answer = [0u8; 12];
        stream
            .read_exact(&mut answer)
            .ok()
            .map(|()| String::from_utf8_lossy(&answer).to_string())
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from("127.0.0.1");
        assert_eq!(status(&mut stream).as_deref(), Some("HTTP/1.1 404"));
        held.push(stream);
    }
    let started = Instant::now();
    let mut third = connect_from("127.0.0.1");
    assert_eq!(
        status(&mut third),
        None,
        "a third connection from one address"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not closed at once"
    );
    let mut other = connect_from("127.0.0.2");
    assert_eq!(
        status(&mut other).as_deref(),
        Some("HTTP/1.1 404"),
        "another address is served"
    );
    // One given back: the address is served again (the node sees the close when it reads).
    drop(held.pop());
    let until = Instant::now() + Duration::from_secs(30);
    let mut again = loop {
        let mut stream = connect_from("127.0.0.1");
        if status(&mut stream).is_some() {
            break stream;
        }
        assert!(Instant::now() < until, "the slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Both held connections now sit idle after their answers: closed by the node within the
    // header time (and a margin), each slot given back with it.
    let mut rest = Vec::new();
    let idle = Instant::now();
    for stream in [&mut held[0], &mut again] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok(), "an idle connection not closed: {read:?}");
    }
    assert!(
        idle.elapsed() < Duration::from_secs(8),
        "{:?}",
        idle.elapsed()
    );
    let mut fresh = connect_from("127.0.0.1");
    assert_eq!(status(&mut fresh).as_deref(), Some("HTTP/1.1 404"));
    drop(cluster);
}

/// A node's API sends each key to the key's home node as paxkv's client does, and on to the
/// next when that one is down: with the first member down, every key is still written and
/// read through another node's API, and the key-value requests reach more than one node
/// (the requests each node counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_nodes_api_serves_every_key_while_a_member_is_down() {
    if !support::tools_present(&["curl"]) {
        return;
    }
    let mut cluster = with_http();
    let http = cluster.config.http_addr_of(2).expect("node 2 serves HTTP");
    let served_before: Vec<u64> = {
        let mut counts = Vec::new();
        for id in 2..=5 {
            counts.push(cluster.status(id).await.requests);
        }
        counts
    };
    for i in 0..30 {
        let url = format!("http://{http}/v1/kv/spread-{i}");
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-w",
                " %{http_code}",
                "-X",
                "PUT",
                "--data-binary",
                "v",
                &url,
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "{\"version\":1} 200",
            "a put through node 2"
        );
    }
    let mut grew = 0;
    for (i, id) in (2..=5).enumerate() {
        if cluster.status(id).await.requests > served_before[i] + 1 {
            grew += 1;
        }
    }
    assert!(grew > 1, "only {grew} node(s) served the keys' requests");

    cluster.stop(1).await;
    for i in 0..30 {
        let url = format!("http://{http}/v1/kv/spread-{i}");
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-w", " %{http_code}", &url])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "v 200",
            "a get through node 2 with node 1 down"
        );
    }
}

/// The statuses that tell an HTTP client what it may do, each produced for real: 503 with
/// `Retry-After` when a request certainly did not take effect (no quorum to read from), 504
/// when a write's outcome is unknown (its Accept went out, no quorum answered), 429 when a
/// key's queue is full; each with the `{"error", "class"}` body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_says_unavailable_unknown_and_busy_apart() {
    if !support::tools_present(&["curl"]) {
        return;
    }
    let cluster = with_http_and(|config| {
        config.limits.http_request_timeout_ms = 1_500;
        config.limits.max_queued_per_key = 1;
        config.paxos.max_batch = 1;
    });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    // (status, headers and body) of one request
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-i"])
            .args(args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        (status, text)
    };
    let url = |key: &str| format!("http://{http}/v1/kv/{key}");
    let (status, _) = curl(vec![
        "-X".into(),
        "PUT".into(),
        "-d".into(),
        "v".into(),
        url("old"),
    ])
    .await;
    assert_eq!(status, 200);

    // Every node's Paxos messages dropped: nothing reaches a quorum.
    for id in 1..=5 {
        cluster.set_faults(id, support::outgoing_paxos_cut()).await;
    }
    // A read: certainly not applied.
    let (status, text) = curl(vec![url("old")]).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.to_lowercase().contains("retry-after: "), "{text}");
    assert!(text.contains("\"class\":\"unavailable\""), "{text}");
    // A fresh key's first write goes straight to Accept (the fast ballot): unknown.
    let (status, text) = curl(vec![
        "-X".into(),
        "PUT".into(),
        "-d".into(),
        "v".into(),
        url("fresh"),
    ])
    .await;
    assert_eq!(status, 504, "{text}");
    assert!(text.contains("\"class\":\"unknown\""), "{text}");
    assert!(!text.to_lowercase().contains("retry-after"), "{text}");
    // Many reads at once of one key whose queue holds one: some are told busy (a write
    // whose attempt was lost is unknown whatever comes after).
    let answers = futures_util::future::join_all((0..8).map(|_| curl(vec![url("old")]))).await;
    let busy: Vec<&String> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, text)| text)
        .collect();
    assert!(!busy.is_empty(), "no 429 among {answers:#?}");
    assert!(busy[0].contains("\"class\":\"busy\""), "{}", busy[0]);
}
