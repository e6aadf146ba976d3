//! Command-line parsing and the client commands (`put`, `get`, `delete`, `cas`, `load`,
//! `bench`, `status`). `cluster` and `node` live in [`cluster`], `lock` and `elect` in
//! [`lock`].

mod bench;
mod cluster;
mod lease;
mod list;
mod load;
mod lock;
mod member;
mod watch;

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use paxkv::client::{Client, ClientOptions};
use paxkv::config::Config;
use paxkv::error::ErrorClass;
use paxkv::node::NodeOptions;
use paxkv::paxos::types::Outcome;
use paxkv::tls::{Role, Tls, TlsFiles};

pub const EXIT_OK: i32 = 0;
pub const EXIT_NOT_FOUND: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_UNAVAILABLE: i32 = 3;

#[derive(Parser)]
#[command(
    name = "paxkv",
    // The wire protocol's version beside the build's, so that an operator can tell before an
    // upgrade whether two builds talk to each other (ARCHITECTURE.md, "Mixed versions"); kept
    // equal to `frame::PROTOCOL_VERSION` by the test below.
    version = concat!(env!("CARGO_PKG_VERSION"), " (wire protocol 100)"),
    about = "A leaderless key-value store on per-key Paxos"
)]
struct Cli {
    /// Cluster configuration file.
    #[arg(long, global = true, default_value = "config/cluster.toml")]
    config: PathBuf,
    /// Comma-separated node addresses, instead of reading them from --config.
    #[arg(long, global = true, value_delimiter = ',')]
    nodes: Vec<SocketAddr>,
    /// Send every request to this node only.
    #[arg(long, global = true)]
    node: Option<SocketAddr>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// How long one operation may take, retries across nodes included.
    #[arg(long, global = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the config's nodes on this machine as child processes; restart any that dies.
    Cluster {
        /// Node N keeps its data in DIR/node-N.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Run one node: one of the config's, or (with --addr) a new one that joins the cluster
    /// the config lists once `paxkv member add` admits it.
    Node {
        #[arg(long)]
        id: u32,
        /// Listen here (required for a node the config does not list).
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Where this node keeps its data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Learn the membership from these nodes (default: the config's nodes).
        #[arg(long, value_delimiter = ',')]
        join: Vec<SocketAddr>,
        /// Serve GET /metrics and /health here (default: the node's metrics_addr in the
        /// config, if any).
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// Serve the HTTP API here (default: the node's http_addr in the config, if any).
        #[arg(long)]
        http_addr: Option<SocketAddr>,
    },
    /// Write a development CA, a certificate for each node of --config, a client certificate
    /// (reads and writes) and an operator certificate (membership changes) into DIR (the
    /// layout `[tls] dir` reads). A CA already in DIR is kept.
    Certs {
        #[arg(long)]
        out: PathBuf,
        /// Only these nodes of the config (say, one added later, with the CA already in
        /// DIR); the client's and the operator's certificates are then left as they are.
        #[arg(long, value_delimiter = ',')]
        id: Vec<u32>,
    },
    /// The cluster's membership: list it, add a node, remove one.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Set KEY to VALUE (`-`: read the value from standard input, byte for byte).
    Put {
        /// The key's bytes as given.
        key: OsString,
        /// The value's bytes as given, or `-` for standard input.
        value: OsString,
        /// Attach the key to this lease (16 hex digits): deleted when it expires or is
        /// revoked. A lease that is gone: exit 1, nothing written. Without it, a put
        /// detaches the key from any lease.
        #[arg(long, value_parser = lease::parse_lease_id)]
        lease: Option<u64>,
    },
    /// Read KEY (linearizable): print its value's bytes and a newline, nothing else.
    Get { key: OsString },
    /// Remove KEY's value.
    Delete { key: OsString },
    /// Set KEY to VALUE only if its version is V (V = 0: only if KEY has no value).
    Cas {
        key: OsString,
        /// The value's bytes as given, or `-` for standard input.
        value: OsString,
        #[arg(long)]
        expect_version: u64,
        /// Attach the key to this lease, as `put --lease`.
        #[arg(long, value_parser = lease::parse_lease_id)]
        lease: Option<u64>,
    },
    /// Put `key value` lines from standard input, many in flight.
    Load {
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Closed-loop benchmark: C workers share N operations on K keys, one request each in flight.
    Bench(bench::BenchArgs),
    /// Show every node's counters.
    Status,
    /// The live keys that start with PREFIX, in byte order, one page at a time: `key value`
    /// lines (see `--after` for the next page). Each is a state chosen during the call; a
    /// page is not a snapshot across keys.
    List(list::ListArgs),
    /// Stream the changes of KEY (of every key under it with --prefix) until interrupted, one
    /// line each, in version order per key; a gap is said (`skipped_to`), never silent.
    Watch(watch::WatchArgs),
    /// Leases: grant one, keep it alive, revoke it, show it (a lease lasts its TTL after its
    /// last keepalive; see `paxkv lease --help`).
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Run COMMAND while holding lock NAME (waiting for it first), with
    /// PAXKV_FENCING_TOKEN set; exit with its status, or 4 if the lock was lost (COMMAND then
    /// gets SIGTERM). See `paxkv lock --help`.
    Lock(lock::LockArgs),
    /// Campaign to lead election NAME with VALUE: print when elected, lead until interrupted
    /// (exit 0) or the lease is lost (exit 4). With --listen, print each leader instead.
    Elect(lock::ElectArgs),
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_BAD_INPUT
            } else {
                EXIT_OK
            };
        }
    };
    if !matches!(cli.command, Command::Node { .. } | Command::Cluster { .. }) {
        // Like any Unix filter: `paxkv status | head -1` ends quietly when the reader goes
        // away. Never for a node: a peer that hangs up must not kill it (a TLS stream writes
        // with writev(2), which, unlike send(2) with MSG_NOSIGNAL, raises SIGPIPE).
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let default_log = match cli.command {
        Command::Cluster { .. } | Command::Node { .. } => "info",
        _ => "warn",
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_log));
    if let Command::Node { id, .. } = cli.command {
        // `paxkv cluster` interleaves the logs of its nodes: each line names its node.
        logger.format(move |buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "[{} {:<5} node {id} {}] {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    logger.init();
    match cli.command {
        Command::Cluster { ref data_dir } => cluster::run_cluster(&cli.config, data_dir),
        Command::Node {
            id,
            addr,
            ref data_dir,
            ref join,
            metrics_addr,
            http_addr,
        } => cluster::run_node(
            &cli.config,
            id,
            data_dir.clone(),
            NodeOptions {
                addr,
                join: join.clone(),
                metrics_addr,
                http_addr,
            },
        ),
        Command::Certs { ref out, ref id } => run_certs(&cli.config, out, id),
        _ => run_client_command(cli),
    }
}

fn run_client_command(cli: Cli) -> i32 {
    let client = match make_client(&cli) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_BAD_INPUT;
        }
    };
    // `bench --conns M`: M - 1 more independent clients (their own connections).
    let more_clients = match &cli.command {
        Command::Bench(args) => match (1..args.conns).map(|_| make_client(&cli)).collect() {
            Ok(clients) => clients,
            Err(e) => {
                eprintln!("error: {e:#}");
                return EXIT_BAD_INPUT;
            }
        },
        _ => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let json = cli.json;
    runtime.block_on(async move {
        match cli.command {
            Command::Put { key, value, lease } => {
                let client = member::current(client).await;
                let key = key.into_vec();
                let value = match value_bytes(value) {
                    Ok(value) => value,
                    Err(code) => return code,
                };
                let r = match lease {
                    Some(lease) => client.put_leased(&key, &value, None, lease).await,
                    None => client.put(&key, &value).await,
                };
                report(&key, r, json)
            }
            Command::Get { key } => {
                let client = member::current(client).await;
                let key = key.into_vec();
                report(&key, client.get(&key).await, json)
            }
            Command::Delete { key } => {
                let client = member::current(client).await;
                let key = key.into_vec();
                report(&key, client.delete(&key).await, json)
            }
            Command::Cas {
                key,
                value,
                expect_version,
                lease,
            } => {
                let client = member::current(client).await;
                let key = key.into_vec();
                let value = match value_bytes(value) {
                    Ok(value) => value,
                    Err(code) => return code,
                };
                let r = match lease {
                    Some(lease) => {
                        client
                            .put_leased(&key, &value, Some(expect_version), lease)
                            .await
                    }
                    None => client.cas(&key, &value, expect_version).await,
                };
                report(&key, r, json)
            }
            Command::Load { concurrency } => load::run(client, concurrency, json).await,
            Command::Bench(args) => {
                let clients = std::iter::once(client).chain(more_clients).collect();
                bench::run(clients, args, json).await
            }
            Command::Status => status(client, json).await,
            Command::List(args) => list::run(member::current(client).await, args, json).await,
            Command::Watch(args) => watch::run(member::current(client).await, args, json).await,
            Command::Member(command) => member::run(client, command, json).await,
            Command::Lease(command) => {
                lease::run(member::current(client).await, command, json).await
            }
            Command::Lock(args) => lock::lock(member::current(client).await, args).await,
            Command::Elect(args) => lock::elect(member::current(client).await, args, json).await,
            Command::Cluster { .. } | Command::Node { .. } | Command::Certs { .. } => {
                unreachable!()
            }
        }
    })
}

fn make_client(cli: &Cli) -> anyhow::Result<Client> {
    // The config gives the addresses (unless --nodes or --node do) and the client's TLS
    // identity; with --nodes or --node, a config file that is not there means plaintext.
    let explicit = cli.node.is_some() || !cli.nodes.is_empty();
    let config = if explicit && !cli.config.exists() {
        None
    } else {
        Some(
            Config::load(&cli.config)
                .with_context(|| "reading the cluster config (or give --nodes)")?,
        )
    };
    let (addrs, pinned) = match (cli.node, cli.nodes.is_empty(), &config) {
        (Some(node), _, _) => (vec![node], true),
        (None, false, _) => (cli.nodes.clone(), false),
        (None, true, Some(config)) => (config.addrs(), false),
        (None, true, None) => unreachable!("the config is read when no address is given"),
    };
    // `paxkv member` presents the operator's certificate when the config's `[tls] dir`
    // holds one (only it may change the membership, `paxkv::tls`); every other command,
    // and `member` without one, the client's.
    let operator = matches!(cli.command, Command::Member(_))
        && config.as_ref().is_some_and(|config| {
            TlsFiles::of(&config.tls, Role::Operator)
                .is_some_and(|files| files.cert.exists() && files.key.exists())
        });
    let role = if operator {
        Role::Operator
    } else {
        Role::Client
    };
    let tls = match &config {
        Some(config) => Tls::from_config(&config.tls, role).with_context(|| {
            format!(
                "loading the {} certificate ([tls] in the config)",
                if operator { "operator's" } else { "client's" }
            )
        })?,
        None => None,
    };
    let op_timeout = Duration::from_millis(cli.timeout_ms);
    let options = ClientOptions {
        op_timeout,
        attempt_timeout: op_timeout.min(ClientOptions::default().attempt_timeout),
        pinned,
        tls,
        ..ClientOptions::default()
    };
    Ok(Client::new(addrs, options))
}

/// `paxkv certs --config FILE --out DIR`.
fn run_certs(config: &std::path::Path, out: &std::path::Path, only: &[u32]) -> i32 {
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("paxkv certs: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Some(missing) = only.iter().find(|id| config.node(**id).is_err()) {
        eprintln!("paxkv certs: --id {missing}: node {missing} is not in the config");
        return EXIT_BAD_INPUT;
    }
    let nodes: Vec<_> = config
        .node_ids()
        .into_iter()
        .zip(config.addrs())
        .filter(|(id, _)| only.is_empty() || only.contains(id))
        .collect();
    match paxkv::certs::write(&nodes, out, only.is_empty()) {
        Ok(written) => {
            if written.new_ca {
                println!("a new CA: {}", out.join("ca.pem").display());
            } else {
                println!("kept the CA in {}", out.join("ca.pem").display());
            }
            for file in &written.files {
                println!("wrote {}", file.display());
            }
            println!(
                "turn TLS on with [tls] dir = \"{}\" in the config of every node and client",
                out.display()
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("paxkv certs: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// The bytes of a VALUE argument: standard input read to its end for `-`, else the
/// argument's own bytes (on Unix an argument need not be UTF-8). Err is the exit code, after
/// a message on stderr.
fn value_bytes(arg: OsString) -> Result<Vec<u8>, i32> {
    if arg != "-" {
        return Ok(arg.into_vec());
    }
    let mut value = Vec::new();
    match std::io::stdin().lock().read_to_end(&mut value) {
        Ok(_) => Ok(value),
        Err(e) => {
            eprintln!("error: reading the value from standard input: {e}");
            Err(EXIT_BAD_INPUT)
        }
    }
}

pub(crate) use paxkv::json::{bytes_field, keyed};

/// The JSON object of a value found for `key`.
fn found_json(key: &[u8], value: &[u8], version: u64) -> serde_json::Value {
    let mut object = keyed(key, serde_json::json!({"version": version}));
    bytes_field(&mut object, "value", value);
    object
}

/// What a command prints without `--json`.
enum Text {
    /// One line on stdout: these bytes, then a newline.
    Stdout(Vec<u8>),
    /// Nothing on stdout (a `get` that finds nothing); this message on stderr.
    Stderr(String),
}

impl Text {
    fn line(line: String) -> Text {
        Text::Stdout(line.into_bytes())
    }
}

/// The exit code and the JSON `error` kind of a failed command (one classifier for every
/// command, `Error::class`).
pub(crate) fn exit_of(e: &paxkv::Error) -> (i32, &'static str) {
    if let paxkv::Error::NotFound(_) = e {
        return (EXIT_NOT_FOUND, "not_found");
    }
    match e.class() {
        ErrorClass::BadInput => (EXIT_BAD_INPUT, "bad_request"),
        ErrorClass::MayHaveApplied | ErrorClass::Storage => (EXIT_UNAVAILABLE, "unknown"),
        ErrorClass::Retry => (EXIT_UNAVAILABLE, "unavailable"),
    }
}

/// Prints an outcome and returns the exit code.
///
/// Without `--json`: one line on stdout; for a found `get`, that line is exactly the value's
/// bytes (the version is only in `--json`), and a `get` that finds nothing prints nothing on
/// stdout and its `(not found, version N)` on stderr. With `--json`: one JSON object on stdout.
fn report(key: &[u8], result: paxkv::Result<Outcome>, json: bool) -> i32 {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => return report_error(key, &e, json),
    };
    let (text, value, code) = outcome_text(key, outcome);
    let line = match (json, text) {
        (true, _) => value.to_string().into_bytes(),
        (false, Text::Stdout(line)) => line,
        (false, Text::Stderr(message)) => {
            eprintln!("{message}");
            return code;
        }
    };
    // A script reads this output as the answer: if it cannot be written whole (a full disk),
    // the command did not deliver it, so it must not exit as if it had.
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(&line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        eprintln!("error: writing the output: {e}");
        return EXIT_UNAVAILABLE;
    }
    code
}

/// A failed command's error: on stderr, and as a JSON object on stdout with `--json`; its
/// exit code.
pub(crate) fn report_error(key: &[u8], e: &paxkv::Error, json: bool) -> i32 {
    let (code, kind) = exit_of(e);
    if json {
        println!(
            "{}",
            keyed(
                key,
                serde_json::json!({"error": kind, "message": e.to_string()})
            )
        );
    }
    eprintln!("error: {e}");
    code
}

/// What an outcome prints, without `--json` and with it, and its exit code.
fn outcome_text(key: &[u8], outcome: Outcome) -> (Text, serde_json::Value, i32) {
    match outcome {
        Outcome::Get {
            value: Some(value),
            version,
        } => {
            let v = found_json(key, &value, version);
            (Text::Stdout(value), v, EXIT_OK)
        }
        Outcome::Get {
            value: None,
            version,
        } => {
            let v = keyed(key, serde_json::json!({"value": null, "version": version}));
            let message = format!("(not found, version {version})");
            (Text::Stderr(message), v, EXIT_NOT_FOUND)
        }
        Outcome::Put { version } => {
            let v = keyed(key, serde_json::json!({"version": version}));
            (Text::line(format!("ok (version {version})")), v, EXIT_OK)
        }
        Outcome::Delete { deleted, version } => {
            let v = keyed(key, serde_json::json!({"version": version}));
            if deleted {
                let line = format!("deleted (version {version})");
                (Text::line(line), v, EXIT_OK)
            } else {
                let line = format!("(not found, version {version})");
                (Text::line(line), v, EXIT_NOT_FOUND)
            }
        }
        // Answers to the lease machinery's own commands, which no client sends.
        other @ (Outcome::Fenced { .. } | Outcome::Inspect(_)) => {
            let message = format!("an unexpected answer: {other:?}");
            (
                Text::Stderr(message),
                serde_json::json!({"error": "unknown"}),
                EXIT_UNAVAILABLE,
            )
        }
        Outcome::Cas { swapped, version } => {
            let v = keyed(
                key,
                serde_json::json!({"swapped": swapped, "version": version}),
            );
            if swapped {
                let line = format!("swapped (version {version})");
                (Text::line(line), v, EXIT_OK)
            } else {
                let line = format!("not swapped (current version {version})");
                (Text::line(line), v, EXIT_NOT_FOUND)
            }
        }
    }
}

async fn status(client: Client, json: bool) -> i32 {
    let mut code = EXIT_OK;
    for (i, addr) in client.addrs().to_vec().into_iter().enumerate() {
        match client.status(i).await {
            Ok(s) if json => {
                let mut v = serde_json::to_value(&s).expect("a status serializes");
                v["addr"] = serde_json::json!(addr.to_string());
                println!("{v}");
            }
            Ok(s) => println!(
                "node {} at {addr}: up, {}, {} proposers and {} acceptors live, {} commits \
                 ({} records), {} records stored, {} restarts, {} peer frames dropped, {} bad \
                 frames, rss {} MiB",
                s.node,
                match (s.voting, s.store_refused) {
                    (true, _) => format!("voting at epoch {}", s.epoch),
                    (false, true) => "store refused (a lost or older disk: remove this node \
                                      and add it again on an empty directory)"
                        .to_string(),
                    (false, false) => format!("not voting (epoch {})", s.epoch),
                },
                s.live_proposers,
                s.live_acceptors,
                s.commits,
                s.records_written,
                s.records_stored
                    .map_or_else(|| "unknown".to_string(), |n| n.to_string()),
                s.acceptor_restarts + s.proposer_restarts,
                s.peer_frames_dropped,
                s.bad_frames,
                s.rss_bytes >> 20
            ),
            Err(e) => {
                code = EXIT_UNAVAILABLE;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"addr": addr.to_string(), "error": e.to_string()})
                    );
                } else {
                    println!("{addr}: down ({e})");
                }
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_version_names_the_wire_protocol_this_build_speaks() {
        let version = super::Cli::command().get_version().unwrap().to_string();
        let protocol = format!("(wire protocol {})", paxkv::frame::PROTOCOL_VERSION);
        assert!(version.ends_with(&protocol), "{version}");
    }
}
