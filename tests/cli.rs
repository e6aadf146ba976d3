//! End-to-end tests of the built `paxkv` binary: a five-node `paxkv cluster` started as a
//! child process on free local ports, driven through the CLI (`put`, `get`, `delete`, `cas`,
//! `load`), checked for exact output and exit codes, one node killed with SIGKILL (the
//! cluster keeps serving and `cluster` restarts it), and stopped with SIGTERM (every node
//! process goes away).
//!
//! Exit codes: 0 success or found; 1 not found or cas not swapped; 2 bad usage or bad input;
//! 3 unavailable or outcome unknown.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use paxkv_testkit::{free_ports, nodes_toml};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_paxkv");
const NODES: usize = 5;
/// How long one CLI invocation may run before the test kills it and fails.
const CLI_DEADLINE: Duration = Duration::from_secs(30);
/// How long `paxkv cluster` may take to print "nodes up".
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long `paxkv cluster` may take to exit after SIGTERM (it gives each node 5 s).
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// How long the cluster may take to restart a killed node and have it serve again.
const RESTART_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Runs the binary with `args`, feeding it `stdin` if given, and returns its exit code,
/// stdout and stderr. Panics if it runs longer than [`CLI_DEADLINE`] or dies from a signal.
fn paxkv(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (code, stdout, stderr) = paxkv_bytes(&args, stdin.map(str::as_bytes));
    (code, String::from_utf8_lossy(&stdout).into_owned(), stderr)
}

/// [`paxkv`] with arguments and stdin of any bytes, returning stdout's bytes as they are.
fn paxkv_bytes(args: &[&OsStr], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let shown = || {
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paxkv");
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            // The command may exit without reading everything; that shows up in its output.
            let _ = pipe.write_all(&input);
        })
    });
    let stdout = read_all_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_all_in_background(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + CLI_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for paxkv") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`paxkv {}` did not finish within {CLI_DEADLINE:?}", shown());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(writer) = writer {
        writer.join().expect("stdin writer");
    }
    let stdout = stdout.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
    let code = status.code().unwrap_or_else(|| {
        panic!(
            "`paxkv {}` was killed by a signal ({status}); stderr: {stderr}",
            shown()
        )
    });
    (code, stdout, stderr)
}

fn read_all_in_background(
    mut pipe: impl Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// A config shaped like `config/cluster.toml`, with its nodes on `ports`.
fn config_text(nodes: &[(u32, SocketAddr)]) -> String {
    let mut text = String::from("# paxkv test cluster\n");
    text.push_str(&nodes_toml(nodes, None));
    text.push_str(
        "\n[paxos]\nrequest_timeout_ms = 3000\nphase_timeout_ms = 500\nread_grace_ms = 20\n\
         backoff_min_ms = 1\nbackoff_max_ms = 50\nmax_batch = 32\ntick_ms = 10\n\
         \n[limits]\nmax_key_bytes = 256\nmax_value_bytes = 1048576\nmax_live_keys = 100000\n\
         idle_timeout_ms = 10000\nmax_queued_per_key = 1024\npeer_queue_capacity = 8192\n\
         max_inflight_per_connection = 4096\nmax_client_connections = 1024\n\
         \n[storage]\nmap_size_mb = 4096\nmax_group_commit = 4096\n",
    );
    text
}

/// Live `paxkv node` processes started with `--config <config>`, as (pid, node id).
/// Found by scanning `/proc/*/cmdline`; zombies (empty cmdline) are not listed.
fn node_processes(config: &Path) -> Vec<(u32, u32)> {
    let config = config.to_str().expect("a UTF-8 temp path");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // The process may have gone meanwhile.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&str> = cmdline
            .split(|b| *b == 0)
            .filter_map(|a| std::str::from_utf8(a).ok())
            .collect();
        let value_of = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
        if args.iter().skip(1).any(|a| *a == "node") && value_of("--config") == Some(config) {
            if let Some(id) = value_of("--id").and_then(|id| id.parse().ok()) {
                found.push((pid, id));
            }
        }
    }
    found
}

fn node_pids(config: &Path, id: u32) -> Vec<u32> {
    node_processes(config)
        .into_iter()
        .filter(|(_, node)| *node == id)
        .map(|(pid, _)| pid)
        .collect()
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one this test started
    // (the cluster) or found running with this test's own temporary config path.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Polls `condition` every [`POLL`] until it holds or `deadline` passes.
fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A temporary config file for `nodes` (see [`config_text`]).
fn write_config(nodes: &[(u32, SocketAddr)]) -> tempfile::NamedTempFile {
    let mut config_file = tempfile::Builder::new()
        .prefix("paxkv-cli-test-")
        .suffix(".toml")
        .tempfile()
        .expect("a temp config file");
    config_file
        .write_all(config_text(nodes).as_bytes())
        .expect("write the config");
    config_file.flush().expect("flush the config");
    config_file
}

/// The lines `pipe` prints, read on a thread of their own until it closes.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Everything `pipe` prints, collected on a thread of its own.
fn collected(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    text
}

/// A running `paxkv cluster` child process. Dropping it stops the cluster and every node
/// process it started, also when the test panics.
struct Cluster {
    child: Child,
    config: PathBuf,
    addrs: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stopped: bool,
    _config_file: tempfile::NamedTempFile,
    _data_dir: tempfile::TempDir,
}

enum Startup {
    Up(Cluster),
    /// A port was taken between finding it free and the node binding it: try other ports.
    PortTaken,
}

impl Cluster {
    fn start() -> Cluster {
        for _ in 0..3 {
            if let Startup::Up(cluster) = Cluster::try_start() {
                return cluster;
            }
        }
        panic!("paxkv cluster could not bind free ports three times in a row");
    }

    fn try_start() -> Startup {
        let ports = free_ports(NODES);
        let nodes: Vec<(u32, SocketAddr)> = (1..=NODES as u32).zip(ports.iter().copied()).collect();
        let config_file = write_config(&nodes);
        let config = config_file.path().to_path_buf();
        let data_dir = tempfile::tempdir().expect("a temp data dir");
        let mut child = Command::new(BIN)
            .arg("cluster")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paxkv cluster");
        // The node processes inherit both pipes; keep draining them so no writer blocks.
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        let stderr = collected(child.stderr.take().expect("piped stderr"));
        let mut cluster = Cluster {
            child,
            config,
            addrs: nodes.iter().map(|(_, addr)| addr.to_string()).collect(),
            stderr,
            stopped: false,
            _config_file: config_file,
            _data_dir: data_dir,
        };
        let Some(listed) = cluster.wait_until_listed(&lines) else {
            // Dropping the cluster stops it and its nodes.
            return Startup::PortTaken;
        };
        for (i, line) in listed.iter().enumerate() {
            let prefix = format!(
                "  node {} listening on {} (data in ",
                i + 1,
                cluster.addrs[i]
            );
            assert!(
                line.starts_with(&prefix),
                "{line:?} should start with {prefix:?}"
            );
        }
        Startup::Up(cluster)
    }

    /// Waits for "paxkv cluster: 5 nodes up" and then one line per node: those lines; `None`
    /// if a node could not bind its port.
    fn wait_until_listed(&mut self, lines: &mpsc::Receiver<String>) -> Option<Vec<String>> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let mut up = false;
        let mut listed = Vec::new();
        while listed.len() < NODES {
            if self.stderr.lock().unwrap().contains("cannot listen on") {
                return None;
            }
            if let Some(status) = self.child.try_wait().expect("wait for the cluster") {
                self.stopped = true;
                panic!(
                    "paxkv cluster exited during startup ({status}); stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "paxkv cluster did not print 'nodes up' and its {NODES} nodes within \
                 {STARTUP_DEADLINE:?}; stdout so far: up={up}, {listed:?}"
            );
            match lines.recv_timeout(left.min(POLL)) {
                Ok(line) if !up => {
                    if line.contains("nodes up") {
                        assert_eq!(line, format!("paxkv cluster: {NODES} nodes up"));
                        up = true;
                    }
                }
                Ok(line) => listed.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(POLL);
                }
            }
        }
        Some(listed)
    }

    fn config(&self) -> &str {
        self.config.to_str().expect("a UTF-8 temp path")
    }

    /// `paxkv --config <this cluster's config> ARGS`.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_with_stdin(args, None)
    }

    fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut all = vec!["--config", self.config()];
        all.extend_from_slice(args);
        paxkv(&all, stdin)
    }

    /// [`Cluster::cli`] with arguments and stdin of any bytes, and stdout's bytes as they are.
    fn cli_bytes(&self, args: &[&OsStr], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
        let mut all = vec![OsStr::new("--config"), OsStr::new(self.config())];
        all.extend_from_slice(args);
        paxkv_bytes(&all, stdin)
    }

    /// [`Cluster::cli_bytes`] with UTF-8 arguments.
    fn cli_stdin_bytes(&self, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.cli_bytes(&args, stdin)
    }

    /// Asserts that `get KEY` finds nothing: exit 1, nothing on stdout, the version on stderr.
    fn expect_get_not_found(&self, key: &str, version: u64) {
        let (code, stdout, stderr) = self.cli(&["get", key]);
        assert_eq!(
            (code, stdout.as_str(), stderr.as_str()),
            (1, "", format!("(not found, version {version})\n").as_str()),
            "`paxkv get {key}`"
        );
    }

    /// Runs `args` and asserts its exit code and exact stdout.
    fn expect(&self, args: &[&str], code: i32, stdout: &str) {
        let (got_code, got_stdout, got_stderr) = self.cli(args);
        assert_eq!(
            (got_code, got_stdout.as_str()),
            (code, stdout),
            "`paxkv {}`; stderr: {got_stderr}",
            args.join(" ")
        );
    }

    /// Runs `args` (which include `--json`) and asserts its exit code and its JSON output.
    fn expect_json(&self, args: &[&str], code: i32, expected: Value) {
        let (got_code, stdout, stderr) = self.cli(args);
        assert_eq!(
            got_code,
            code,
            "`paxkv {}`; stderr: {stderr}",
            args.join(" ")
        );
        let got: Value = serde_json::from_str(stdout.trim_end())
            .unwrap_or_else(|e| panic!("`paxkv {}` printed {stdout:?}: {e}", args.join(" ")));
        assert_eq!(got, expected, "`paxkv {}`", args.join(" "));
        assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout:?}");
    }

    /// SIGTERM; asserts that the cluster exits 0 within [`STOP_DEADLINE`] and that none of its
    /// node processes remains.
    fn stop(mut self) {
        send_signal(self.child.id(), libc::SIGTERM);
        let exited = wait_until(STOP_DEADLINE, || {
            self.child
                .try_wait()
                .expect("wait for the cluster")
                .is_some()
        });
        assert!(
            exited,
            "paxkv cluster still running {STOP_DEADLINE:?} after SIGTERM"
        );
        self.stopped = true;
        let status = self.child.wait().expect("the cluster's status");
        assert_eq!(status.code(), Some(0), "the cluster's exit after SIGTERM");
        let gone = wait_until(Duration::from_secs(5), || {
            node_processes(&self.config).is_empty()
        });
        assert!(
            gone,
            "node processes left after the cluster stopped: {:?}",
            node_processes(&self.config)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
            let tail: String = {
                let chars: Vec<char> = stderr.chars().collect();
                chars[chars.len().saturating_sub(8_000)..].iter().collect()
            };
            eprintln!("--- paxkv cluster stderr (tail) ---\n{tail}\n---");
        }
        if !self.stopped {
            send_signal(self.child.id(), libc::SIGTERM);
            let exited = wait_until(STOP_DEADLINE, || !matches!(self.child.try_wait(), Ok(None)));
            if !exited {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        // Whatever happened to the cluster, leave no node of this test running.
        for (pid, _) in node_processes(&self.config) {
            send_signal(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn cli_round_trips_with_exact_output_and_exit_codes() {
    let cluster = Cluster::start();
    put_get_cas_and_delete_answer_exactly_in_text_and_json(&cluster);
    values_and_keys_are_any_bytes(&cluster);
    a_key_over_the_limit_is_bad_input(&cluster);
    node_and_nodes_choose_whom_to_ask(&cluster);
    load_puts_lines_and_reports_bad_ones(&cluster);
    list_prints_pages_in_text_and_json(&cluster);
    watch_streams_one_json_line_per_change_until_interrupted(&cluster);
    cluster.stop();
}

/// put, get, cas and delete on one key: each answer and exit code exact, in text and in JSON.
fn put_get_cas_and_delete_answer_exactly_in_text_and_json(cluster: &Cluster) {
    // put / get, text and JSON.
    cluster.expect(&["put", "k1", "v1"], 0, "ok (version 1)\n");
    cluster.expect(&["get", "k1"], 0, "v1\n");
    cluster.expect_get_not_found("missing", 0);
    cluster.expect_json(
        &["--json", "get", "k1"],
        0,
        json!({"key": "k1", "value": "v1", "version": 1}),
    );
    cluster.expect_json(
        &["--json", "put", "k1", "v2"],
        0,
        json!({"key": "k1", "version": 2}),
    );

    // cas: wrong version, right version, create-if-absent.
    cluster.expect(
        &["cas", "k1", "v3", "--expect-version", "1"],
        1,
        "not swapped (current version 2)\n",
    );
    cluster.expect_json(
        &["--json", "cas", "k1", "v3", "--expect-version", "1"],
        1,
        json!({"key": "k1", "swapped": false, "version": 2}),
    );
    cluster.expect(
        &["cas", "k1", "v3", "--expect-version", "2"],
        0,
        "swapped (version 3)\n",
    );
    cluster.expect(&["get", "k1"], 0, "v3\n");
    cluster.expect(
        &["cas", "newkey", "x", "--expect-version", "0"],
        0,
        "swapped (version 1)\n",
    );
    cluster.expect(
        &["cas", "newkey", "x", "--expect-version", "0"],
        1,
        "not swapped (current version 1)\n",
    );

    // delete, twice; the version survives the value.
    cluster.expect(&["delete", "k1"], 0, "deleted (version 4)\n");
    cluster.expect(&["delete", "k1"], 1, "(not found, version 4)\n");
    cluster.expect_json(
        &["get", "k1", "--json"],
        1,
        json!({"key": "k1", "value": null, "version": 4}),
    );
}

/// values and keys of any bytes, through stdin and arguments, printed exactly or as base64.
fn values_and_keys_are_any_bytes(cluster: &Cluster) {
    // Any bytes. `put KEY -` takes the value from stdin as it is (NUL, invalid UTF-8, a
    // trailing newline); `get` prints exactly those bytes and one newline, nothing else;
    // `--json` gives them as value_base64 (standard alphabet, padded) and no "value".
    let binary: &[u8] = b"\0nul\xff\xfe>?\0\n";
    let (code, stdout, stderr) = cluster.cli_stdin_bytes(&["put", "bin", "-"], Some(binary));
    assert_eq!(
        (code, stdout.as_slice()),
        (0, &b"ok (version 1)\n"[..]),
        "{stderr}"
    );
    let (code, stdout, stderr) = cluster.cli_stdin_bytes(&["get", "bin"], None);
    assert_eq!((code, stdout), (0, [binary, b"\n"].concat()), "{stderr}");
    assert_eq!(stderr, "", "a found get says nothing on stderr");
    let (code, stdout, stderr) = cluster.cli_stdin_bytes(&["--json", "get", "bin"], None);
    assert_eq!(code, 0, "{stderr}");
    let reply: Value = serde_json::from_slice(&stdout).expect("a JSON get");
    assert_eq!(
        reply,
        json!({"key": "bin", "value_base64": "AG51bP/+Pj8ACg==", "version": 1}),
    );
    let decoded = BASE64_STANDARD.decode(reply["value_base64"].as_str().expect("a string"));
    assert_eq!(decoded.expect("valid base64"), binary);
    // `cas KEY - --expect-version V` reads stdin too; a non-UTF-8 VALUE argument is taken
    // byte for byte.
    let cas = ["cas", "bin", "-", "--expect-version", "1"];
    let (code, stdout, stderr) = cluster.cli_stdin_bytes(&cas, Some(b"\xff"));
    assert_eq!(
        (code, stdout.as_slice()),
        (0, &b"swapped (version 2)\n"[..]),
        "{stderr}"
    );
    let (_, stdout, _) = cluster.cli_stdin_bytes(&["get", "bin"], None);
    assert_eq!(stdout, b"\xff\n");
    let (code, stdout, stderr) = cluster.cli_bytes(
        &[
            OsStr::new("put"),
            OsStr::new("bin"),
            OsStr::from_bytes(b"arg\x80\xff"),
        ],
        None,
    );
    assert_eq!(
        (code, stdout.as_slice()),
        (0, &b"ok (version 3)\n"[..]),
        "{stderr}"
    );
    let (_, stdout, _) = cluster.cli_stdin_bytes(&["get", "bin"], None);
    assert_eq!(stdout, b"arg\x80\xff\n");
    // A UTF-8 value read from stdin comes back in "value".
    let (code, _, stderr) = cluster.cli_with_stdin(&["put", "text", "-"], Some("grüße ✓"));
    assert_eq!(code, 0, "{stderr}");
    cluster.expect(&["get", "text"], 0, "grüße ✓\n");
    cluster.expect_json(
        &["--json", "get", "text"],
        0,
        json!({"key": "text", "value": "grüße ✓", "version": 1}),
    );

    // A key that is not UTF-8 is taken as its bytes too; `--json` gives it as key_base64.
    let key = OsStr::from_bytes(b"k\xff");
    let (code, _, stderr) =
        cluster.cli_bytes(&[OsStr::new("put"), key, OsStr::new("raw-key")], None);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) =
        cluster.cli_bytes(&[OsStr::new("--json"), OsStr::new("get"), key], None);
    assert_eq!(code, 0, "{stderr}");
    let reply: serde_json::Value = serde_json::from_slice(&stdout).expect("one JSON object");
    assert_eq!(
        reply,
        json!({"key_base64": "a/8=", "value": "raw-key", "version": 1})
    );
}

/// a key of 256 bytes is taken, one of 257 is bad input (exit 2, in JSON too).
fn a_key_over_the_limit_is_bad_input(cluster: &Cluster) {
    // Keys: 256 bytes is the limit and is accepted; one more byte is bad input.
    let longest = "k".repeat(256);
    cluster.expect(&["put", &longest, "fits"], 0, "ok (version 1)\n");
    cluster.expect(&["get", &longest], 0, "fits\n");
    let too_long = "k".repeat(257);
    let (code, stdout, stderr) = cluster.cli(&["put", &too_long, "v"]);
    assert_eq!(
        code, 2,
        "a 257-byte key; stdout {stdout:?}, stderr {stderr:?}"
    );
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("257 bytes") && stderr.contains("limit of 256 bytes"),
        "the error should name the limit: {stderr:?}"
    );
    let (code, stdout, stderr) = cluster.cli(&["--json", "get", &too_long]);
    assert_eq!(code, 2, "stderr {stderr:?}");
    let reply: Value = serde_json::from_str(stdout.trim_end()).expect("a JSON error");
    assert_eq!(reply["error"], "bad_request", "{reply}");
    assert_eq!(reply["key"], too_long.as_str(), "{reply}");
}

/// `--node` pins one node; `--nodes` replaces the config's list.
fn node_and_nodes_choose_whom_to_ask(cluster: &Cluster) {
    // --node pins one node, and it serves reads and writes.
    let node1 = cluster.addrs[0].clone();
    cluster.expect(
        &["--node", &node1, "put", "pinned", "p1"],
        0,
        "ok (version 1)\n",
    );
    cluster.expect(&["--node", &node1, "get", "pinned"], 0, "p1\n");
    // --nodes instead of the config's list.
    let nodes = cluster.addrs.join(",");
    let (code, stdout, stderr) = paxkv(&["--nodes", &nodes, "get", "pinned"], None);
    assert_eq!((code, stdout.as_str()), (0, "p1\n"), "stderr {stderr:?}");
}

/// `list`: `key value` lines (keys only with `--keys-only`; bytes that are not UTF-8 as
/// `base64:`), the JSON page shape, paging with `--limit` and `--after`, and a prefix over
/// the key limit refused with exit 2.
fn list_prints_pages_in_text_and_json(cluster: &Cluster) {
    for (key, value) in [("ls/b", "2"), ("ls/a", "1"), ("ls/c", "3"), ("lt", "x")] {
        cluster.expect(&["put", key, value], 0, "ok (version 1)\n");
    }
    cluster.expect(&["delete", "ls/c"], 0, "deleted (version 2)\n");
    let (code, _, stderr) = cluster.cli_bytes(
        &[
            OsStr::new("put"),
            OsStr::from_bytes(b"ls/\xff"),
            OsStr::from_bytes(b"\xfe"),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    cluster.expect(
        &["list", "ls/"],
        0,
        "ls/a 1\nls/b 2\nbase64:bHMv/w== base64:/g==\n",
    );
    cluster.expect(
        &["list", "ls/", "--keys-only"],
        0,
        "ls/a\nls/b\nbase64:bHMv/w==\n",
    );
    cluster.expect_json(
        &["--json", "list", "ls/", "--limit", "2"],
        0,
        json!({"items": [
            {"key": "ls/a", "value": "1", "version": 1},
            {"key": "ls/b", "value": "2", "version": 1},
        ], "next": "ls/b"}),
    );
    cluster.expect_json(
        &["--json", "list", "ls/", "--after", "ls/b", "--keys-only"],
        0,
        json!({"items": [{"key_base64": "bHMv/w==", "version": 1}], "next": null}),
    );
    let (code, stdout, stderr) = cluster.cli(&["list", "ls/", "--limit", "1"]);
    assert_eq!((code, stdout.as_str()), (0, "ls/a 1\n"), "{stderr}");
    assert!(stderr.contains("(more: --after ls/a)"), "{stderr:?}");
    // `--all` pages through the whole prefix: every key once, in order, nothing about more.
    let (code, stdout, stderr) = cluster.cli(&["list", "ls/", "--limit", "1", "--all"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "ls/a 1\nls/b 2\nbase64:bHMv/w== base64:/g==\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("more"), "{stderr:?}");
    let (code, stdout, stderr) = cluster.cli(&["--json", "list", "ls/", "--limit", "2", "--all"]);
    assert_eq!(code, 0, "{stderr}");
    let pages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON page per line"))
        .collect();
    assert_eq!(
        pages,
        vec![
            json!({"items": [
                {"key": "ls/a", "value": "1", "version": 1},
                {"key": "ls/b", "value": "2", "version": 1},
            ], "next": "ls/b"}),
            json!({"items": [
                {"key_base64": "bHMv/w==", "value_base64": "/g==", "version": 1},
            ], "next": null}),
        ]
    );
    // A page that ends at a key that is not UTF-8 says how to go on: `--after-base64`.
    for (key, value) in [(&b"lb/\xff"[..], "x"), (&b"lb/\xffz"[..], "y")] {
        let (code, _, stderr) = cluster.cli_bytes(
            &[OsStr::new("put"), OsStr::from_bytes(key), OsStr::new(value)],
            None,
        );
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, stdout, stderr) = cluster.cli(&["list", "lb/", "--limit", "1"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "base64:bGIv/w== x\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(more: --after-base64 bGIv/w==)"),
        "{stderr:?}"
    );
    cluster.expect(
        &["list", "lb/", "--after-base64", "bGIv/w=="],
        0,
        "base64:bGIv/3o= y\n",
    );
    // A prefix over the key limit is bad input. (The reserved prefix, refused too, starts with
    // a NUL, which no argument can hold: `tests/listing.rs` asks for it through the client.)
    let (code, _, stderr) = cluster.cli(&["list", &"k".repeat(257)]);
    assert_eq!(code, 2, "a 257-byte prefix: {stderr}");
    assert!(stderr.contains("over the key limit"), "{stderr:?}");
}

/// `list --all` cut off midway: once three of five nodes are paused no page can be scanned;
/// the pages printed before stand, in order, and stderr names the `--after` to go on with
/// (exit 3 within the client's timeout).
#[test]
fn list_all_cut_off_midway_says_where_to_go_on() {
    let cluster = Cluster::start();
    let keys: Vec<String> = (0..300).map(|i| format!("la/{i:04}")).collect();
    let input: String = keys.iter().map(|k| format!("{k} v\n")).collect();
    let (code, _, stderr) = cluster.cli_with_stdin(&["load"], Some(&input));
    assert_eq!(code, 0, "load: {stderr}");
    let mut child = Command::new(BIN)
        .args(["--config", cluster.config(), "--timeout-ms", "3000"])
        .args(["list", "la/", "--limit", "1", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paxkv list");
    let stderr = collected(child.stderr.take().expect("piped stderr"));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("a first page").expect("a line");
    // Paused, not killed: `paxkv cluster` restarts a node that dies.
    let paused: Vec<u32> = [3, 4, 5]
        .into_iter()
        .flat_map(|id| node_pids(&cluster.config, id))
        .collect();
    assert_eq!(paused.len(), 3, "one process per node: {paused:?}");
    for &pid in &paused {
        send_signal(pid, libc::SIGSTOP);
    }
    let mut listed = vec![first];
    listed.extend(lines.map_while(Result::ok));
    let exited = wait_until(CLI_DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
    for &pid in &paused {
        send_signal(pid, libc::SIGCONT);
    }
    assert!(
        exited,
        "list --all still running {CLI_DEADLINE:?} after the pause"
    );
    let code = child.wait().expect("its status").code();
    // Its stderr ends with the error line, after the one that says where to go on.
    let said = || stderr.lock().map(|s| s.clone()).unwrap_or_default();
    wait_until(Duration::from_secs(5), || said().contains("error:"));
    let stderr = said();
    assert_eq!(code, Some(3), "stderr {stderr:?}");
    let listed: Vec<String> = listed
        .iter()
        .map(|line| line.strip_suffix(" v").expect("`key v`").to_string())
        .collect();
    assert!(
        listed.len() < keys.len(),
        "the listing finished before the pause: {} keys",
        listed.len()
    );
    assert_eq!(
        listed,
        keys[..listed.len()],
        "a prefix of the keys, in order"
    );
    let last = listed.last().expect("a key");
    assert!(
        stderr.contains(&format!("(listed up to {last}: go on with --after {last})")),
        "{stderr:?}"
    );
    cluster.stop();
}

/// `list --all` asks for at most one page ahead of what it has written, and writes the pages
/// in order: with its stdout not read (a pipe holds 64 KiB, and each page here is one value of
/// 200 KB), the nodes serve it two pages and no more; read, every page comes, in order.
/// (Mutant `list-all-writes-pages-unawaited`: a client that does not wait for a page's write
/// before the next asks for every page at once.)
#[test]
fn list_all_reads_at_most_one_page_ahead_of_its_reader() {
    let cluster = Cluster::start();
    let value = "x".repeat(200_000);
    let keys: Vec<String> = (0..12).map(|i| format!("big/{i:02}")).collect();
    let input: String = keys.iter().map(|k| format!("{k} {value}\n")).collect();
    let (code, _, stderr) = cluster.cli_with_stdin(&["load"], Some(&input));
    assert_eq!(code, 0, "load: {stderr}");
    // Client requests the nodes served, all of them together (`status`'s `requests`).
    let served = || -> u64 {
        let (code, stdout, stderr) = cluster.cli(&["--json", "status"]);
        assert_eq!(code, 0, "status: {stderr}");
        stdout
            .lines()
            .map(|line| {
                let node: Value = serde_json::from_str(line).expect("a status line");
                node["requests"].as_u64().expect("requests")
            })
            .sum()
    };
    // What a `status` itself adds, to take out of the counts below.
    let before = served();
    let baseline = served();
    let per_status = baseline - before;
    let mut child = Command::new(BIN)
        .args(["--config", cluster.config()])
        .args(["list", "big/", "--limit", "1", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paxkv list");
    let mut statuses = 0;
    let mut from_list = || {
        statuses += 1;
        served() - baseline - per_status * statuses
    };
    // (Its own `members` request, and one per page.)
    assert!(
        wait_until(CLI_DEADLINE, || from_list() >= 3),
        "the list asked for fewer than two pages"
    );
    assert!(
        !wait_until(Duration::from_secs(3), || from_list() > 4),
        "with nothing read of its output, the list asked for more than two pages"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("its output");
    let status = child.wait().expect("its status");
    assert_eq!(status.code(), Some(0));
    let listed: Vec<&str> = out
        .lines()
        .map(|line| {
            let (key, v) = line.split_once(' ').expect("`key value`");
            assert_eq!(v.len(), value.len(), "{key}'s value whole");
            key
        })
        .collect();
    assert_eq!(listed, keys, "every page, in order");
    cluster.stop();
}

/// `load` puts `key value` lines, reports a malformed line or a value over the limit with exit
/// 2, and puts the others.
fn load_puts_lines_and_reports_bad_ones(cluster: &Cluster) {
    // load: `key value` lines, the first space splits.
    let (code, stdout, stderr) = cluster.cli_with_stdin(&["load"], Some("a 1\nb hello world\n"));
    assert_eq!(code, 0, "load; stdout {stdout:?}, stderr {stderr:?}");
    assert!(
        stdout.starts_with("loaded 2 keys in ")
            && stdout.ends_with("errors: 0 unavailable, 0 rejected, 0 malformed lines\n"),
        "load summary: {stdout:?}"
    );
    cluster.expect(&["get", "a"], 0, "1\n");
    cluster.expect(&["get", "b"], 0, "hello world\n");

    // load reports a malformed line with exit 2 but still puts the others.
    let (code, stdout, stderr) =
        cluster.cli_with_stdin(&["--json", "load"], Some("c 3\nnospace\n"));
    assert_eq!(code, 2, "stdout {stdout:?}, stderr {stderr:?}");
    let summary: Value = serde_json::from_str(stdout.trim_end()).expect("a JSON summary");
    assert_eq!(summary["ok"], 1, "{summary}");
    assert_eq!(summary["malformed"], 1, "{summary}");
    assert!(stderr.contains("line 2"), "{stderr:?}");
    cluster.expect(&["get", "c"], 0, "3\n");

    // Values: 1 MiB is the limit (too long for an argument, so through load).
    let input = format!(
        "too-big {}\nlargest {}\n",
        "x".repeat((1 << 20) + 1),
        "y".repeat(1 << 20)
    );
    let (code, stdout, stderr) = cluster.cli_with_stdin(&["--json", "load"], Some(&input));
    assert_eq!(code, 2, "stdout {stdout:?}, stderr {stderr:?}");
    let summary: Value = serde_json::from_str(stdout.trim_end()).expect("a JSON summary");
    assert_eq!(
        (&summary["ok"], &summary["rejected"]),
        (&json!(1), &json!(1)),
        "{summary}"
    );
    assert!(
        stderr.contains("value of 1048577 bytes is over the limit of 1048576 bytes"),
        "{stderr:?}"
    );
    cluster.expect_get_not_found("too-big", 0);
    let (code, stdout, _) = cluster.cli(&["get", "largest"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("{}\n", "y".repeat(1 << 20)));

    // bench reports the node processes' own CPU per operation, from their statuses.
    let (code, stdout, stderr) = cluster.cli(&[
        "--json",
        "bench",
        "--op",
        "put",
        "--ops",
        "300",
        "--concurrency",
        "4",
    ]);
    assert_eq!(code, 0, "stderr {stderr:?}");
    let run: Value = serde_json::from_str(stdout.trim_end()).expect("a JSON summary");
    let cpu = run["node_cpu_us_per_op"]
        .as_f64()
        .expect("the nodes' CPU per op");
    // Each put is an fsync-backed accept on five nodes and a dozen messages: not free, and
    // not a second either.
    assert!(cpu > 1.0 && cpu < 1_000_000.0, "{run}");
}

#[test]
fn cli_rejects_bad_usage_and_bad_config_with_exit_2() {
    // A missing argument is a usage error.
    let (code, _, stderr) = paxkv(&["put", "onlykey"], None);
    assert_eq!(code, 2, "stderr {stderr:?}");
    assert!(stderr.contains("required"), "{stderr:?}");
    let (code, _, stderr) = paxkv(&["frobnicate"], None);
    assert_eq!(code, 2, "stderr {stderr:?}");
    let (code, _, stderr) = paxkv(&["cas", "k", "v", "--expect-version", "two"], None);
    assert_eq!(code, 2, "stderr {stderr:?}");

    // A config with a duplicate node id is refused, naming the field, before anything runs.
    let dir = tempfile::tempdir().expect("a temp dir");
    let ports = free_ports(3);
    let bad = config_text(&[(1, ports[0]), (2, ports[1]), (2, ports[2])]);
    let path = dir.path().join("duplicate.toml");
    std::fs::write(&path, bad).expect("write the config");
    let path = path.to_str().expect("a UTF-8 temp path");
    let (code, stdout, stderr) = paxkv(&["--config", path, "get", "k"], None);
    assert_eq!(code, 2, "stdout {stdout:?}, stderr {stderr:?}");
    assert!(
        stderr.contains("node[2].id: duplicate node id 2"),
        "the error should name the field: {stderr:?}"
    );
    let data = dir.path().join("data");
    let data = data.to_str().expect("a UTF-8 temp path");
    let (code, _, stderr) = paxkv(&["cluster", "--config", path, "--data-dir", data], None);
    assert_eq!(code, 2, "stderr {stderr:?}");
    assert!(stderr.contains("duplicate node id"), "{stderr:?}");
    let (code, _, stderr) = paxkv(&["node", "--id", "1", "--config", path], None);
    assert_eq!(code, 2, "stderr {stderr:?}");
    assert!(stderr.contains("duplicate node id"), "{stderr:?}");

    // A config file that does not exist.
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    let (code, _, stderr) = paxkv(&["--config", missing, "get", "k"], None);
    assert_eq!(code, 2, "stderr {stderr:?}");
    assert!(stderr.contains("missing.toml"), "{stderr:?}");
}

/// `paxkv watch w/ --prefix --json`: one line per change, `"value": null` for a delete, each
/// key's versions in order, keys of other prefixes left out; exit 0 on Ctrl-C (SIGINT).
fn watch_streams_one_json_line_per_change_until_interrupted(cluster: &Cluster) {
    let mut watch = Command::new(BIN)
        .args([
            "--config",
            cluster.config(),
            "watch",
            "w/",
            "--prefix",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start paxkv watch");
    let lines = lines_of(watch.stdout.take().expect("stdout"));
    // The watch has begun once a change of it is printed (changes before that are not its).
    let begun = wait_until(Duration::from_secs(30), || {
        let _ = cluster.cli(&["put", "w/start", "x"]);
        lines.recv_timeout(Duration::from_millis(300)).is_ok()
    });
    assert!(begun, "the watch printed nothing");
    while lines.recv_timeout(Duration::from_millis(300)).is_ok() {}
    cluster.expect(&["put", "w/a", "1"], 0, "ok (version 1)\n");
    cluster.expect(&["put", "x/other", "1"], 0, "ok (version 1)\n");
    cluster.expect(&["put", "w/a", "2"], 0, "ok (version 2)\n");
    cluster.expect(&["delete", "w/a"], 0, "deleted (version 3)\n");
    let got: Vec<Value> = (0..3)
        .map(|_| {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("a watch line");
            serde_json::from_str(&line).expect("a JSON line")
        })
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"key": "w/a", "version": 1, "value": "1"}),
            json!({"key": "w/a", "version": 2, "value": "2"}),
            json!({"key": "w/a", "version": 3, "value": null}),
        ]
    );
    send_signal(watch.id(), libc::SIGINT);
    let status = watch.wait().expect("paxkv watch exits");
    assert_eq!(status.code(), Some(0), "exit 0 on Ctrl-C");
    // `--max-keys 1` over a prefix holding two keys (`w/start`, and `w/a`, deleted: a watch
    // follows deleted keys too): the watch ends at once, exit 2, naming its limit.
    // (Spawned and waited for with a deadline: a watch that does not end would run for ever.)
    let mut watch = Command::new(BIN)
        .args(["--config", cluster.config(), "watch", "w/", "--prefix"])
        .args(["--max-keys", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start paxkv watch");
    let ended = wait_until(Duration::from_secs(30), || {
        watch.try_wait().expect("the watch's status").is_some()
    });
    if !ended {
        let _ = watch.kill();
    }
    let output = watch.wait_with_output().expect("paxkv watch's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(ended, "the watch past its keys did not end: {stderr:?}");
    assert_eq!(output.status.code(), Some(2), "stderr {stderr:?}");
    assert!(stderr.contains("follows 1 keys, its most"), "{stderr:?}");
}

#[test]
fn cli_exits_3_when_no_node_answers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Ports bound and never listened on, held for the whole test: a connection to one is
    // refused, and no node of a test running beside this one can take one meanwhile (a free
    // port released at once could be, and once answered "1 of 5 nodes").
    let held: Vec<tokio::net::TcpSocket> = (0..NODES)
        .map(|_| {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("bind an ephemeral port");
            socket
        })
        .collect();
    let ports = held.iter().map(|s| s.local_addr().expect("its address"));
    let nodes: Vec<(u32, SocketAddr)> = (1..=NODES as u32).zip(ports).collect();
    let path = dir.path().join("nobody.toml");
    std::fs::write(&path, config_text(&nodes)).expect("write the config");
    let path = path.to_str().expect("a UTF-8 temp path");
    for args in [
        &["get", "k"][..],
        &["put", "k", "v"],
        &["delete", "k"],
        &["cas", "k", "v", "--expect-version", "0"],
        &["watch", "k"],
    ] {
        let mut all = vec!["--config", path, "--timeout-ms", "300"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = paxkv(&all, None);
        assert_eq!(code, 3, "`paxkv {}`; stderr {stderr:?}", all.join(" "));
        assert_eq!(stdout, "");
        assert!(stderr.starts_with("error: unavailable: "), "{stderr:?}");
    }
    let (code, stdout, stderr) = paxkv(
        &[
            "--config",
            path,
            "--timeout-ms",
            "300",
            "--json",
            "get",
            "k",
        ],
        None,
    );
    assert_eq!(code, 3, "stderr {stderr:?}");
    let reply: Value = serde_json::from_str(stdout.trim_end()).expect("a JSON error");
    assert_eq!(
        (&reply["key"], &reply["error"]),
        (&json!("k"), &json!("unavailable")),
        "{reply}"
    );
    // bench says so at once rather than waiting out every operation's timeout.
    let (code, stdout, stderr) = paxkv(
        &[
            "--config",
            path,
            "--timeout-ms",
            "300",
            "bench",
            "--op",
            "put",
            "--ops",
            "50",
            "--concurrency",
            "1",
        ],
        None,
    );
    assert_eq!(code, 3, "stderr {stderr:?}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("error: unavailable: 0 of {NODES} nodes answer; a majority is needed\n")
    );
    let (code, stdout, _) = paxkv(&["--config", path, "--timeout-ms", "300", "status"], None);
    assert_eq!(code, 3);
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": down (")).count(),
        NODES,
        "{stdout:?}"
    );
}

#[test]
fn cluster_survives_a_killed_node_restarts_it_and_stops_every_node_on_sigterm() {
    let cluster = Cluster::start();
    for i in 0..3 {
        let (key, value) = (format!("before-{i}"), format!("value-{i}"));
        cluster.expect(&["put", &key, &value], 0, "ok (version 1)\n");
    }

    // Every node runs as its own process, one per id.
    let mut ids: Vec<u32> = node_processes(&cluster.config)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4, 5], "one process per node");

    let old = kill_node_3(&cluster);
    four_of_five_serve_and_a_peer_logs_the_loss(&cluster);
    node_3_is_restarted_and_serves(&cluster, old);

    // SIGTERM: the cluster exits 0 in time and takes every node process with it.
    let config = cluster.config.clone();
    cluster.stop();
    assert_eq!(
        node_processes(&config),
        vec![],
        "no node process of this test remains"
    );
}

/// SIGKILL of node 3's process, gone within 10 s; its pid.
fn kill_node_3(cluster: &Cluster) -> u32 {
    let old = node_pids(&cluster.config, 3);
    assert_eq!(old.len(), 1, "exactly one process for node 3: {old:?}");
    let old = old[0];
    send_signal(old, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || !node_pids(&cluster.config, 3)
            .contains(&old)),
        "node 3 (pid {old}) still running after SIGKILL"
    );
    old
}

/// Four of five nodes: reads and writes go on, whichever node the client tries first, and
/// another node's log names its lost peer 3.
fn four_of_five_serve_and_a_peer_logs_the_loss(cluster: &Cluster) {
    for i in 0..5 {
        let (key, value) = (format!("after-{i}"), format!("value-{i}"));
        cluster.expect(&["put", &key, &value], 0, "ok (version 1)\n");
        cluster.expect(&["get", &key], 0, &format!("{value}\n"));
    }
    for i in 0..3 {
        let (key, value) = (format!("before-{i}"), format!("value-{i}"));
        cluster.expect(&["get", &key], 0, &format!("{value}\n"));
    }
    // The nodes' logs are interleaved on the cluster's stderr; each line names its node, so
    // the warnings about the lost peer tell which node saw it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            cluster.stderr.lock().unwrap().lines().any(|line| {
                (1..=NODES)
                    .filter(|n| *n != 3)
                    .any(|n| line.contains(&format!(" node {n} paxkv::actors::network] ")))
                    && line.contains("node 3")
            })
        }),
        "no node's log line names the node and its lost peer 3: {}",
        cluster.stderr.lock().unwrap()
    );
}

/// `cluster` restarts node 3 (a new pid, one process), which then answers requests sent to
/// it alone.
fn node_3_is_restarted_and_serves(cluster: &Cluster, old: u32) {
    let node3 = cluster.addrs[2].clone();
    let mut last = (0, String::new(), String::new());
    let restarted = wait_until(RESTART_DEADLINE, || {
        let pids = node_pids(&cluster.config, 3);
        if pids.is_empty() || pids.contains(&old) {
            return false;
        }
        last = cluster.cli(&["--node", &node3, "--timeout-ms", "2000", "get", "after-0"]);
        last.0 != 3
    });
    assert!(
        restarted,
        "node 3 was not restarted and serving within {RESTART_DEADLINE:?}: pids {:?}, \
         last get {last:?}",
        node_pids(&cluster.config, 3)
    );
    assert_eq!(
        (last.0, last.1.as_str()),
        (0, "value-0\n"),
        "read through the restarted node 3; stderr {:?}",
        last.2
    );
    cluster.expect(
        &["--node", &node3, "put", "after-restart", "r"],
        0,
        "ok (version 1)\n",
    );
    let new = node_pids(&cluster.config, 3);
    assert_eq!(
        new.len(),
        1,
        "exactly one process for node 3 after the restart: {new:?}"
    );
}

/// `paxkv member`: the JSON shape of `list` (keys in the documented order), a change refused
/// as bad input (exit 2, naming why), `remove` through the CLI, and a client reading the old
/// config (which still lists the removed node first) working with the current members.
#[test]
fn member_commands_list_remove_and_refuse_with_the_documented_shapes_and_codes() {
    let cluster = Cluster::start();
    let (code, stdout, stderr) = cluster.cli(&["--json", "member", "list"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let line = stdout.trim_end();
    assert!(line.starts_with("{\"epoch\":"), "{line}");
    assert!(
        line.contains("{\"id\":1,\"addr\":"),
        "keys in order: {line}"
    );
    let list: Value = serde_json::from_str(line).unwrap();
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), NODES);
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m["id"], json!(i + 1));
        assert_eq!(m["addr"], json!(cluster.addrs[i]));
        assert_eq!(m["state"], json!("voting"));
    }
    // A node id already in the membership, at another address: refused, exit 2.
    let (code, _, stderr) = cluster.cli(&["member", "add", "2", "127.0.0.1:1"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("already a member"), "{stderr}");
    // A node that does not answer: cannot complete, exit 3 (nothing changed).
    let (code, _, stderr) = cluster.cli(&["member", "add", "9", "127.0.0.1:1"]);
    assert_eq!(code, 3, "stderr: {stderr}");
    assert!(stderr.contains("does not answer"), "{stderr}");
    // Remove node 1; the text output lists the others.
    let (code, stdout, stderr) = cluster.cli(&["member", "remove", "1"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.starts_with("epoch "), "{stdout}");
    assert_eq!(stdout.lines().count(), NODES, "{stdout}");
    assert!(
        !stdout.contains(&format!(" {} ", cluster.addrs[0])),
        "{stdout}"
    );
    let after: Value =
        serde_json::from_str(cluster.cli(&["--json", "member", "list"]).1.trim_end()).unwrap();
    assert!(after["epoch"].as_u64() > list["epoch"].as_u64());
    assert_eq!(after["members"].as_array().unwrap().len(), NODES - 1);
    // The config still lists node 1 first; writes and reads go to the current members.
    cluster.expect(&["put", "after-remove", "v"], 0, "ok (version 1)\n");
    cluster.expect(&["get", "after-remove"], 0, "v\n");
    cluster.stop();
}

#[test]
fn lease_commands_grant_show_keep_alive_and_revoke_with_the_documented_shapes_and_codes() {
    let cluster = Cluster::start();
    let (code, out, err) = cluster.cli(&["lease", "grant", "30", "--json"]);
    assert_eq!(code, 0, "{err}");
    let granted: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    let id = granted["id"].as_str().expect("an id").to_string();
    assert_eq!(id.len(), 16, "{granted}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{granted}");
    assert_eq!(granted["ttl_s"], 30, "{granted}");

    let (code, out, _) = cluster.cli(&["lease", "show", &id, "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (shown["id"].as_str(), shown["version"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    cluster.expect(&["lease", "keepalive", &id, "--once"], 0, "");
    let (_, out, _) = cluster.cli(&["lease", "show", &id, "--json"]);
    let shown: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(shown["version"], 2, "a keepalive raises the version");

    cluster.expect(&["lease", "revoke", &id], 0, "");
    let (code, out, err) = cluster.cli(&["lease", "show", &id]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("no such lease"), "{err}");
    let (code, _, err) = cluster.cli(&["lease", "keepalive", &id]);
    assert_eq!(
        code, 1,
        "keepalive exits 1 as soon as the lease is gone: {err}"
    );
    cluster.expect(&["lease", "revoke", &id], 1, "");

    // Bad input: exit 2, nothing granted.
    for args in [
        vec!["lease", "grant", "0"],
        vec!["lease", "grant", "999999999"],
        vec!["lease", "show", "not-hex"],
        vec!["lease", "keepalive", "00112233445566778"],
    ] {
        let (code, _, err) = cluster.cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    cluster.stop();
}

/// A `paxkv` process left running, whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(cluster: &Cluster, args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(cluster.config())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn paxkv");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(CLI_DEADLINE)
            .unwrap_or_else(|_| panic!("no line: {what}"))
    }

    /// SIGINT (Ctrl-C), then its exit code.
    fn interrupt(mut self) -> i32 {
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keys_attached_to_a_lease_locks_and_elections_with_the_documented_shapes_and_codes() {
    let cluster = Cluster::start();
    let (code, out, err) = cluster.cli(&["lease", "grant", "60", "--json"]);
    assert_eq!(code, 0, "{err}");
    let lease: Value = serde_json::from_str(out.trim()).unwrap();
    let id = lease["id"].as_str().unwrap().to_string();
    cluster.expect(
        &["put", "svc/a", "1", "--lease", &id],
        0,
        "ok (version 1)\n",
    );
    cluster.expect(
        &["cas", "svc/b", "2", "--expect-version", "0", "--lease", &id],
        0,
        "swapped (version 1)\n",
    );
    let (code, out, _) = cluster.cli(&["lease", "show", &id, "--keys", "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(shown["keys"], json!([{"key": "svc/a"}, {"key": "svc/b"}]));
    // A lease that is gone: exit 1, nothing written.
    let (code, _, err) = cluster.cli(&["put", "svc/c", "3", "--lease", "00000000000000ff"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not found"), "{err}");
    cluster.expect(&["get", "svc/c"], 1, "");
    cluster.expect(&["put", "x", "1", "--lease", "not-hex"], 2, "");
    // Revoked: its keys go, as deletes.
    cluster.expect(&["lease", "revoke", &id], 0, "");
    for key in ["svc/a", "svc/b"] {
        cluster.expect_json(
            &["get", key, "--json"],
            1,
            json!({"key": key, "value": null, "version": 2}),
        );
    }

    // A lock: its command runs with the token, and its status is the lock's.
    cluster.expect(
        &["lock", "L", "--", "sh", "-c", "echo $PAXKV_FENCING_TOKEN"],
        0,
        "1\n",
    );
    cluster.expect(
        &[
            "lock",
            "L",
            "--",
            "sh",
            "-c",
            "echo $PAXKV_FENCING_TOKEN; exit 7",
        ],
        7,
        "3\n",
    );
    cluster.expect(&["get", "L"], 1, "");

    // An election: a leader, a listener, a second candidate that leads once the first
    // resigns.
    let alpha = Running::start(&cluster, &["elect", "E", "alpha", "--ttl", "2"]);
    assert_eq!(
        alpha.next_line("alpha elected"),
        "elected: E is alpha (version 1)"
    );
    let listen = Running::start(&cluster, &["elect", "E", "--listen", "--json"]);
    let leader: Value = serde_json::from_str(&listen.next_line("the leader now")).unwrap();
    assert_eq!(leader, json!({"key": "E", "leader": "alpha", "version": 1}));
    let beta = Running::start(&cluster, &["elect", "E", "beta", "--ttl", "2"]);
    assert_eq!(
        alpha.interrupt(),
        0,
        "a leader interrupted resigns and exits 0"
    );
    assert_eq!(
        beta.next_line("beta elected"),
        "elected: E is beta (version 3)"
    );
    let gone: Value = serde_json::from_str(&listen.next_line("no leader")).unwrap();
    assert_eq!(gone, json!({"key": "E", "leader": null, "version": 2}));
    let next: Value = serde_json::from_str(&listen.next_line("beta")).unwrap();
    assert_eq!(next, json!({"key": "E", "leader": "beta", "version": 3}));
    drop((beta, listen));
    cluster.stop();
}
