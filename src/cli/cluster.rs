//! `paxkv node` (one node in the foreground) and `paxkv cluster` (every node of the config
//! on this machine, as child processes that are restarted when they die).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxkv::client::{Client, ClientOptions};
use paxkv::config::Config;
use paxkv::node::{NodeHandle, NodeOptions};
use paxkv::paxos::types::NodeId;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::{EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE};

/// How long `cluster` waits for every node to answer before it gives up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A node that ran this long before dying is restarted after the shortest backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// After SIGTERM, how long a node has to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn run_node(
    config_path: &Path,
    id: NodeId,
    data_dir: Option<PathBuf>,
    options: NodeOptions,
) -> i32 {
    let config = match Config::load(config_path).and_then(|c| c.check_runnable().map(|()| c)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("paxkv node: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("data/node-{id}")));
    // The handler first: SIGHUP's default would end a node still starting.
    let tls = Arc::new(std::sync::OnceLock::new());
    reload_on_sighup(id, tls.clone());
    match NodeHandle::start_with(Arc::new(config), id, &data_dir, None, options) {
        Ok(node) => {
            let _ = tls.set(node.tls());
            eprintln!(
                "paxkv node {id} listening on {} (data in {})",
                node.addr,
                data_dir.display()
            );
            node.wait();
            EXIT_OK
        }
        Err(e) => {
            eprintln!("paxkv node {id}: refusing to start: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// SIGHUP reads the node's certificate, key and CA bundle again (`paxkv::tls`), on a
/// thread of its own; a reload that fails keeps what the node had and says why. The handler
/// is in place before this returns (SIGHUP's default would end the node), TLS or not.
fn reload_on_sighup(id: NodeId, tls: Arc<std::sync::OnceLock<Option<Arc<paxkv::tls::Tls>>>>) {
    let handler = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            let hangup = runtime.block_on(async { signal(SignalKind::hangup()) })?;
            Ok((runtime, hangup))
        });
    let (runtime, mut hangup) = match handler {
        Ok(handler) => handler,
        Err(e) => {
            log::warn!("node {id}: no SIGHUP handler ({e}); certificates reload at a restart");
            return;
        }
    };
    std::thread::spawn(move || {
        runtime.block_on(async move {
            while hangup.recv().await.is_some() {
                match tls.get().and_then(Option::as_ref).map(|tls| tls.reload()) {
                    None => log::info!("node {id}: SIGHUP: no TLS to reload"),
                    Some(Ok(())) => log::info!("node {id}: SIGHUP: reloaded its TLS files"),
                    Some(Err(e)) => {
                        log::error!(
                            "node {id}: SIGHUP: TLS reload failed, keeping the old files: {e}"
                        )
                    }
                }
            }
        })
    });
}

pub fn run_cluster(config_path: &Path, data_dir: &Path) -> i32 {
    let config = match Config::load(config_path).and_then(|c| c.check_runnable().map(|()| c)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("paxkv cluster: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("paxkv cluster: cannot find my own binary: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    for node in &config.nodes {
        let dir = data_dir.join(format!("node-{}", node.id));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("paxkv cluster: data dir {}: {e}", dir.display());
            return EXIT_BAD_INPUT;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let (stop, stopped) = watch::channel(false);
        let mut children = Vec::new();
        for node in &config.nodes {
            let dir = data_dir.join(format!("node-{}", node.id));
            children.push(tokio::spawn(keep_node_running(
                exe.clone(),
                config_path.to_path_buf(),
                node.id,
                dir,
                stopped.clone(),
            )));
        }
        let mut sigterm = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        let ready = tokio::select! {
            ready = wait_until_all_answer(&config) => Some(ready),
            _ = tokio::signal::ctrl_c() => None,
            _ = sigterm.recv() => None,
        };
        let code = if ready == Some(true) {
            println!("paxkv cluster: {} nodes up", config.nodes.len());
            for node in &config.nodes {
                let dir = data_dir.join(format!("node-{}", node.id));
                println!(
                    "  node {} listening on {} (data in {})",
                    node.id,
                    node.addr,
                    dir.display()
                );
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
            EXIT_OK
        } else if ready == Some(false) {
            eprintln!(
                "paxkv cluster: not every node answered within {STARTUP_DEADLINE:?}; stopping"
            );
            EXIT_UNAVAILABLE
        } else {
            EXIT_OK
        };
        eprintln!("paxkv cluster: stopping all nodes");
        let _ = stop.send(true);
        for child in children {
            let _ = child.await;
        }
        code
    })
}

/// Polls every node until all answer and vote (the cluster is founded, or each restarted
/// node's start was confirmed by its peers), or the startup deadline passes.
async fn wait_until_all_answer(config: &Config) -> bool {
    let tls = match paxkv::tls::Tls::from_config(&config.tls, paxkv::tls::Role::Client) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("paxkv cluster: {e}");
            return false;
        }
    };
    let client = Client::new(
        config.addrs(),
        ClientOptions {
            attempt_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            tls,
            ..ClientOptions::default()
        },
    );
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let mut up = vec![false; config.nodes.len()];
    while Instant::now() < deadline {
        for (i, is_up) in up.iter_mut().enumerate() {
            if !*is_up {
                *is_up = matches!(client.status(i).await, Ok(s) if s.voting);
            }
        }
        if up.iter().all(|u| *u) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs `paxkv node --id ID` until told to stop, restarting it with backoff whenever it dies.
async fn keep_node_running(
    exe: PathBuf,
    config: PathBuf,
    id: NodeId,
    dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let mut child = Command::new(&exe);
        child
            .arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&dir)
            .kill_on_drop(true);
        // SAFETY: prctl in the forked child before exec: the node gets SIGTERM if `cluster`
        // itself dies (even by SIGKILL), so no node outlives its supervisor.
        unsafe {
            child.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = child.spawn();
        let exit = match child {
            Err(e) => format!("could not be started: {e}"),
            Ok(mut child) => {
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => format!("exited ({status})"),
                        Err(e) => format!("could not be waited for: {e}"),
                    },
                    _ = stop.changed() => {
                        terminate(&mut child).await;
                        return;
                    }
                }
            }
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = RESTART_BACKOFF_MIN;
        }
        log::warn!("node {id} {exit}; restarting it in {backoff:?}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// SIGTERM, then SIGKILL if the node has not exited within the grace period.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped (we still hold it).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
