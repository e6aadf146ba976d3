//! The console (`GET /`, `src/console/index.html`) in a real browser (issue 21): headless
//! Chromium, driven through chromedriver's W3C WebDriver endpoint by
//! `tests/http/console_check.py` (Python's standard library, nothing else), finds the five
//! members voting, creates a key through the form and finds it in the list, sees the watch
//! event of a put made by the `paxkv` CLI, is shown the 412 of an edit of a version the CLI
//! replaced, and deletes the key (the version it opened again). The screenshots of each step (and chromedriver's log) are saved in
//! `target/tmp/http_console/`; the test prints where.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs) and `python3`: without them the test fails under CI (`CI` set) and is
//! skipped elsewhere.

use paxkv_testkit as support;

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, TestCluster};

/// How long the browser's whole check may take (a cold Chromium on a busy machine included;
/// each of its steps has a deadline of its own).
const CHECK_DEADLINE: Duration = Duration::from_secs(300);
/// How often the test looks whether the check has finished.
const POLL: Duration = Duration::from_millis(50);
/// What the check needs on the machine.
const TOOLS: [&str; 3] = ["chromium", "chromedriver", "python3"];

fn with_http() -> TestCluster {
    TestCluster::start_with(|config| {
        let ports = support::free_ports(config.nodes.len());
        for (node, port) in config.nodes.iter_mut().zip(ports) {
            node.http_addr = Some(port.to_string());
        }
    })
}

/// chromedriver in a process group of its own, with everything started in that group:
/// the Chromium it starts, the check script and the CLI the script runs. Dropping it kills
/// the whole group, whether the test passed or failed.
struct Browser {
    chromedriver: Child,
}

impl Browser {
    /// Starts chromedriver on `port`, logging to `log`.
    fn start(port: u16, log: &Path) -> Browser {
        let chromedriver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        Browser { chromedriver }
    }

    fn group(&self) -> i32 {
        self.chromedriver.id() as i32
    }

    /// Runs `command` in the group until it exits or [`CHECK_DEADLINE`] passes (then it is
    /// killed): whether it succeeded, and its stdout and stderr.
    fn run(&self, command: &mut Command) -> (bool, String) {
        let mut child = command
            .process_group(self.group())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the check starts");
        let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
        let stderr = read_in_background(child.stderr.take().expect("piped stderr"));
        let until = Instant::now() + CHECK_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the check") {
                break Some(status);
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(POLL);
        };
        let output = format!(
            "{}{}",
            stdout.join().expect("stdout reader"),
            stderr.join().expect("stderr reader")
        );
        match status {
            Some(status) => (status.success(), output),
            None => (
                false,
                format!("{output}\n(killed: still running after {CHECK_DEADLINE:?})"),
            ),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the negative pid names the
        // process group this guard made for chromedriver (`process_group(0)`).
        unsafe {
            libc::kill(-self.group(), libc::SIGKILL);
        }
        let _ = self.chromedriver.wait();
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

#[test]
fn a_browser_sees_the_members_voting_writes_and_follows_a_key_and_is_shown_a_stale_edit() {
    if !support::tools_present(&TOOLS) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(async { with_http() });
    let http = cluster.config.http_addr_of(1).expect("node 1 serves HTTP");
    // The CLI finds the cluster as an operator's does: through a config naming its nodes.
    let config = cluster.dir.path().join("cli.toml");
    let nodes = cluster.config.nodes_and_addrs();
    std::fs::write(&config, support::nodes_toml(&nodes, None)).unwrap();
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_console");
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();

    // Chromium's profile, removed with the cluster's directory even if the check is killed.
    let profile = cluster.dir.path().join("chromium-profile");
    std::fs::create_dir(&profile).unwrap();
    let port = support::free_port().port();
    let browser = Browser::start(port, &screenshots.join("chromedriver.log"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http/console_check.py");
    let (passed, output) = browser.run(
        Command::new("python3")
            .arg(script)
            .arg(format!("--console=http://{http}/"))
            .arg(format!("--webdriver=http://127.0.0.1:{port}"))
            .arg(format!("--paxkv={}", env!("CARGO_BIN_EXE_paxkv")))
            .arg(format!("--config={}", config.display()))
            .arg(format!("--screenshots={}", screenshots.display()))
            .arg(format!("--profile={}", profile.display())),
    );
    drop(browser);
    println!("{output}");
    println!(
        "screenshots and chromedriver.log: {}",
        screenshots.display()
    );
    assert!(
        passed,
        "the browser's check failed (screenshots and chromedriver.log in {}):\n{output}",
        screenshots.display()
    );
    assert_eq!(output.lines().last(), Some("ok"), "{output}");
    // The binary protocol reads what the page left: the CLI's value (version 2, the page's
    // stale edit refused) deleted by the page (version 3).
    let got = runtime
        .block_on(cluster.client().get(b"console/greeting"))
        .unwrap();
    assert_eq!(
        got,
        paxkv::paxos::types::Outcome::Get {
            value: None,
            version: 3
        }
    );
    drop(cluster);
}
