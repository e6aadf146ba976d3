//! `paxkv member list|add|remove`, and how every client command finds the current members
//! (the config only tells where to start).

use std::time::Duration;

use clap::Subcommand;
use paxkv::client::{Client, ClientOptions};
use paxkv::error::Error;
use paxkv::messages::{MemberChangeRequest, MembershipAnswer, Reply, RequestBody};
use paxkv::paxos::membership::Membership;
use paxkv::paxos::types::NodeId;

use super::EXIT_OK;

/// How long a change may take: a rescan of every key (a minute or two per million keys).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(3_600);
/// A driving node that answers no ping for this long is given up for the next one.
const DRIVER_SILENCE: Duration = Duration::from_secs(10);
/// How often the driving node is pinged.
const DRIVER_PING_INTERVAL: Duration = Duration::from_secs(1);
const NOT_ANSWERING: &str = "stopped answering pings";

/// Resolves (with why) once node `index` has answered no ping for [`DRIVER_SILENCE`]; never
/// while it answers.
async fn unresponsive(client: &Client, index: usize) -> String {
    let mut last_answer = std::time::Instant::now();
    loop {
        tokio::time::sleep(DRIVER_PING_INTERVAL).await;
        match tokio::time::timeout(DRIVER_PING_INTERVAL, client.ping(index)).await {
            Ok(Ok(())) => last_answer = std::time::Instant::now(),
            _ if last_answer.elapsed() >= DRIVER_SILENCE => {
                return format!(
                    "node {} {NOT_ANSWERING} for {}s while driving the change",
                    client.addrs()[index],
                    DRIVER_SILENCE.as_secs()
                )
            }
            _ => {}
        }
    }
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// The membership epoch and every member with its id, address and state.
    List,
    /// Make node ID, listening at ADDR (started with `paxkv node --id ID --addr ADDR`), a
    /// voting member. Returns once it counts in quorums; exit 3 if it cannot complete (run
    /// it again).
    Add { id: NodeId, addr: String },
    /// Make node ID count in no quorum. Returns once it does; exit 3 if it cannot complete.
    Remove { id: NodeId },
}

/// Asks the client's nodes, in order, for their membership; the newest answer.
async fn members(client: &Client) -> Result<MembershipAnswer, Error> {
    let mut best: Option<MembershipAnswer> = None;
    let mut last = None;
    for index in 0..client.addrs().len() {
        match client.request(index, RequestBody::Members).await {
            Ok(Reply::Members(info)) => {
                let epoch = |i: &MembershipAnswer| i.membership.as_ref().map_or(0, |m| m.epoch);
                if best.as_ref().is_none_or(|b| epoch(b) < epoch(&info)) {
                    best = Some(info);
                }
            }
            Ok(other) => last = Some(Error::Frame(format!("unexpected answer {other:?}"))),
            Err(e) => last = Some(e),
        }
    }
    best.ok_or_else(|| last.unwrap_or_else(|| Error::Unavailable("no node answered".into())))
}

/// A client for the cluster's current members (see `Client::with_current_members`).
pub async fn current(client: Client) -> Client {
    client.with_current_members().await
}

fn print_membership(m: &Membership, json: bool) {
    if json {
        println!("{}", paxkv::json::membership_json(m));
        return;
    }
    let phase = match m.phase {
        None => String::new(),
        Some(p) => format!(" (change in progress: {p:?})"),
    };
    println!("epoch {}{phase}", m.epoch);
    for x in &m.members {
        println!("{} {} {}", x.id, x.addr, x.state.as_str());
    }
}

fn fail(e: &Error, json: bool) -> i32 {
    let (code, kind) = super::exit_of(e);
    if json {
        println!(
            "{}",
            serde_json::json!({"error": kind, "message": e.to_string()})
        );
    }
    eprintln!("error: {e}");
    code
}

pub async fn run(client: Client, command: MemberCommand, json: bool) -> i32 {
    let client = current(client).await;
    let change = match command {
        MemberCommand::List => {
            return match installed(&client).await {
                Ok(m) => {
                    print_membership(&m, json);
                    EXIT_OK
                }
                Err(e) => fail(&e, json),
            }
        }
        MemberCommand::Add { id, addr } => MemberChangeRequest::Add { id, addr },
        MemberCommand::Remove { id } => MemberChangeRequest::Remove { id },
    };
    // The fence: the change may begin only from the membership read now (see
    // `RequestBody::MemberChangeFenced`), so a request left behind in a node that stopped
    // answering can never be carried out later, after the operator moved on.
    let epoch = match installed(&client).await {
        Ok(m) => m.epoch,
        Err(e) => return fail(&e, json),
    };
    drive_change(&client, change, epoch, json).await
}

/// The newest membership the client's nodes have installed.
async fn installed(client: &Client) -> Result<Membership, Error> {
    match members(client).await? {
        MembershipAnswer {
            membership: Some(m),
            ..
        } => Ok(m),
        _ => Err(Error::Unavailable(
            "no node has a membership installed yet".into(),
        )),
    }
}

/// Asks the nodes in turn to drive `change` from `epoch`, and prints the membership it
/// completes with; returns the exit code.
///
/// One node drives the change; any voting member may. The next node is asked when one
/// cannot be reached, answers that it cannot drive (`NotThisNode`: its store is refused,
/// ...), or stops answering pings while it drives (paused, cut off): a change is rerunnable
/// from any node, and the fence keeps the one left behind from acting later.
async fn drive_change(client: &Client, change: MemberChangeRequest, epoch: u64, json: bool) -> i32 {
    let options = ClientOptions {
        attempt_timeout: CHANGE_TIMEOUT,
        op_timeout: CHANGE_TIMEOUT,
        pinned: true,
        ..client.options().clone()
    };
    let driver = Client::new(client.addrs().to_vec(), options);
    let mut last = Error::Unavailable("no node answered".into());
    for index in 0..driver.addrs().len() {
        let body = RequestBody::MemberChangeFenced {
            change: change.clone(),
            epoch,
        };
        let answer = tokio::select! {
            answer = driver.request(index, body) => answer,
            why = unresponsive(client, index) => Err(Error::Unavailable(why)),
        };
        match answer {
            Ok(Reply::MemberChanged(m)) => {
                print_membership(&m, json);
                return EXIT_OK;
            }
            Ok(other) => last = Error::Frame(format!("unexpected answer {other:?}")),
            Err(e) if e.is_bad_input() => return fail(&e, json),
            Err(e) => {
                let next_node = matches!(e, Error::NotThisNode(_))
                    || matches!(e, Error::Unavailable(ref m)
                        if m.contains("connect") || m.contains(NOT_ANSWERING));
                last = e;
                // A driver that answered "unavailable" got as far as it could; the next node
                // would only fail the same way (the change is rerunnable).
                if !next_node {
                    break;
                }
                eprintln!("{}: {last}; asking the next node", driver.addrs()[index]);
            }
        }
    }
    fail(&last, json)
}
