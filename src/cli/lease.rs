//! `paxkv lease grant|keepalive|revoke|show` (`paxos::lease` has what a lease promises).
//!
//! - `grant TTL_SECONDS [--json]`: prints the new lease's id; with `--json`,
//!   `{"id": "<16 hex digits>", "ttl_s": N}`.
//! - `keepalive ID [--once]`: renews it every TTL/3 until interrupted (exit 0), or once;
//!   exit 1 as soon as the lease is gone.
//! - `revoke ID`: exit 0 if it was revoked, 1 if there was no such lease.
//! - `show ID [--keys] [--json]`: its TTL, version and the answering node's estimate of the
//!   time left, and with `--keys` the keys attached to it; exit 1 if there is none.
//!
//! Exit 2 for bad input (a TTL out of range, an id that is not hex), 3 when no node can
//! serve it (or its outcome is unknown).

use std::time::Duration;

use clap::Subcommand;
use paxkv::client::Client;
use paxkv::json::{lease_json, lease_keys_json};
use paxkv::paxos::lease::{format_id, parse_id};

use super::{exit_of, EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK};

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease that lasts TTL_SECONDS after its last keepalive; print its id.
    Grant { ttl_seconds: u64 },
    /// Keep lease ID alive, every TTL/3, until interrupted; exit 1 as soon as it is gone.
    Keepalive {
        id: String,
        /// Renew it once, and exit.
        #[arg(long)]
        once: bool,
    },
    /// Revoke lease ID now; exit 1 if there is none.
    Revoke { id: String },
    /// Lease ID's TTL, version and the time left as the answering node sees it; exit 1 if
    /// there is none.
    Show {
        id: String,
        /// Also the keys attached to it (`put --lease`), one per line after the lease's.
        #[arg(long)]
        keys: bool,
    },
}

/// clap's parser of a `--lease ID` argument.
pub fn parse_lease_id(text: &str) -> Result<u64, String> {
    parse_id(text).ok_or_else(|| {
        "a lease id is up to 16 hex digits, as `paxkv lease grant` prints it".to_string()
    })
}

fn failed(e: &paxkv::Error) -> i32 {
    eprintln!("error: {e}");
    exit_of(e).0
}

fn gone(id: u64) -> i32 {
    eprintln!(
        "lease {}: no such lease (expired, revoked, or never granted)",
        format_id(id)
    );
    EXIT_NOT_FOUND
}

pub async fn run(client: Client, command: LeaseCommand, json: bool) -> i32 {
    let id_of = |text: &str| {
        parse_id(text).ok_or_else(|| {
            eprintln!("error: a lease id is up to 16 hex digits, as `paxkv lease grant` prints it");
            EXIT_BAD_INPUT
        })
    };
    match command {
        LeaseCommand::Grant { ttl_seconds } => {
            match client.lease_grant(Duration::from_secs(ttl_seconds)).await {
                Ok(lease) if json => {
                    let line = serde_json::json!({"id": format_id(lease.id), "ttl_s": ttl_seconds});
                    println!("{line}");
                    EXIT_OK
                }
                Ok(lease) => {
                    println!("{}", format_id(lease.id));
                    EXIT_OK
                }
                Err(e) => failed(&e),
            }
        }
        LeaseCommand::Keepalive { id, once } => {
            let id = match id_of(&id) {
                Ok(id) => id,
                Err(code) => return code,
            };
            keepalive(&client, id, once, json).await
        }
        LeaseCommand::Revoke { id } => {
            let id = match id_of(&id) {
                Ok(id) => id,
                Err(code) => return code,
            };
            match client.lease_revoke(id).await {
                Ok(Some(_)) => EXIT_OK,
                Ok(None) => gone(id),
                Err(e) => failed(&e),
            }
        }
        LeaseCommand::Show { id, keys } => {
            let id = match id_of(&id) {
                Ok(id) => id,
                Err(code) => return code,
            };
            let attached = if keys {
                match client.lease_keys(id).await {
                    Ok(Some(keys)) => Some(keys),
                    Ok(None) => return gone(id),
                    Err(e) => return failed(&e),
                }
            } else {
                None
            };
            match client.lease_show(id).await {
                Ok(Some(lease)) if json => {
                    let mut object = lease_json(&lease);
                    if let Some(keys) = &attached {
                        object["keys"] = lease_keys_json(keys);
                    }
                    println!("{object}");
                    EXIT_OK
                }
                Ok(Some(lease)) => {
                    let left = lease
                        .remaining_ms
                        .map_or("not yet seen by its node".to_string(), |ms| {
                            format!("{:.1}s left", ms as f64 / 1000.0)
                        });
                    println!(
                        "lease {} ttl {}s version {} ({left})",
                        format_id(lease.id),
                        lease.ttl_ms / 1000,
                        lease.version
                    );
                    for key in attached.iter().flatten() {
                        println!("{}", String::from_utf8_lossy(key));
                    }
                    EXIT_OK
                }
                Ok(None) => gone(id),
                Err(e) => failed(&e),
            }
        }
    }
}

/// Renews lease `id` every TTL/3 (once with `once`) until interrupted; 1 as soon as it is
/// gone. A renewal that fails (no node answers) is retried at the next tick: the lease may
/// still be alive, and only the cluster can say it is not.
async fn keepalive(client: &Client, id: u64, once: bool, json: bool) -> i32 {
    let mut period = Duration::from_secs(1);
    loop {
        match client.lease_keepalive(id).await {
            Ok(Some(lease)) => {
                if json {
                    println!("{}", lease_json(&lease));
                }
                period = Duration::from_millis(lease.ttl_ms / 3).max(Duration::from_millis(100));
            }
            Ok(None) => return gone(id),
            Err(e) if once => return failed(&e),
            Err(e) => eprintln!("lease {}: keepalive failed, will retry: {e}", format_id(id)),
        }
        if once {
            return EXIT_OK;
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = tokio::signal::ctrl_c() => return EXIT_OK,
        }
    }
}
