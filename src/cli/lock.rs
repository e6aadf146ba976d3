//! `paxkv lock NAME [--ttl S] -- COMMAND [ARGS...]` and `paxkv elect NAME VALUE` /
//! `paxkv elect NAME --listen`: the lock and leader-election recipes, built on a key attached
//! to a lease (`paxos::lease`). Both hold key NAME while it is theirs.
//!
//! **Holding.** A holder grants a lease of TTL (10 s unless `--ttl`), keeps it alive every
//! TTL/3 for as long as it runs, and takes NAME with a create (a compare-and-set on "no value")
//! attached to the lease. A create that finds NAME taken waits for its next change (a watch
//! from the version it found, not a poll) and tries again. The holder leaves by revoking its
//! lease, which deletes NAME; if it dies, NAME goes when its lease expires. Waiters are not
//! served in order: whoever creates NAME first after it goes holds it.
//!
//! **The fencing token** is NAME's version when the holder created it. Versions of a key
//! never go down, and every acquisition is a create after a delete, so each acquisition's
//! token is above every earlier one's. `paxkv lock` passes it to COMMAND as
//! `PAXKV_FENCING_TOKEN` (and the lease as `PAXKV_LEASE_ID`).
//!
//! **Losing it.** The holder counts its lease from the moment it *sent* its last keepalive
//! that succeeded (`paxos::lease`: never expired before TTL has passed since then). Once a
//! keepalive answers that the lease is gone, or TTL has passed since that moment with no
//! keepalive confirmed, it may no longer hold NAME: `lock` sends COMMAND SIGTERM, waits for
//! it and exits [`EXIT_LOST`]; `elect` says so and exits [`EXIT_LOST`]. A COMMAND that ends
//! after that moment (its `paxkv lock` was paused past it, say) also ends in [`EXIT_LOST`]:
//! the lock may not have been held throughout.
//!
//! **What this cannot promise, and what the token is for** (Kleppmann, "How to do
//! distributed locking", 2016): a process paused after it checked its lease (a GC pause, a
//! stopped VM, a slow disk) acts when it resumes, maybe after its lease expired and another
//! holder took NAME. No lock service can stop that, so a lock alone does not make a resource
//! safe; the resource must refuse work from an older holder: it remembers the highest token
//! it has seen and refuses a request carrying a lower one. paxkv's own keys do that with a
//! compare-and-set (`tests/locks.rs`: a counter whose write is conditional on the version it
//! read, a read that refuses a newer token).
//!
//! Exit codes: `lock` exits with COMMAND's status (128 + the signal when a signal ended it);
//! both exit 4 ([`EXIT_LOST`]) when the lease was lost while holding, 3 when no node could
//! serve a request, 2 for bad input, 130 when interrupted (Ctrl-C) while waiting.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paxkv::client::Client;
use paxkv::paxos::lease::format_id;
use paxkv::paxos::types::Outcome;
use paxkv::watch::WatchOptions;
use tokio::sync::watch;

use super::{exit_of, EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE};

/// The lease was lost while holding (see the module doc).
pub const EXIT_LOST: i32 = 4;
/// Interrupted (Ctrl-C) while waiting: 128 + SIGINT, as a shell reports it.
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The lock's name: the key that its holder holds.
    name: OsString,
    /// The lease's time to live, seconds: how long after a holder stops (or is cut off) the
    /// lock can be taken by another.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// The command to run while holding the lock, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct ElectArgs {
    /// The election's name: the key that its leader holds.
    name: OsString,
    /// What this candidate announces as leader (NAME's value while it leads).
    #[arg(required_unless_present = "listen")]
    value: Option<OsString>,
    /// Do not campaign: print each leader as it changes, until interrupted.
    #[arg(long, conflicts_with = "value")]
    listen: bool,
    /// The lease's time to live, seconds (as `paxkv lock --ttl`).
    #[arg(long, default_value_t = 10)]
    ttl: u64,
}

/// NAME, held: the lease it is attached to and its fencing token.
struct Held {
    lease: u64,
    token: u64,
    /// Says why, once the lease may be lost.
    lost: watch::Receiver<Option<String>>,
    /// Until when the lease is surely held: TTL after the last keepalive that succeeded was
    /// sent.
    promised: Arc<Mutex<Instant>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Why the lease may be lost by now (`None`: it is surely held). A process paused past
    /// its lease finds its promise over when it resumes, before its keeper says so.
    fn lost_by_now(&self) -> Option<String> {
        if let Some(why) = self.lost.borrow().clone() {
            return Some(why);
        }
        let promised = *self.promised.lock().expect("the promise");
        (Instant::now() >= promised).then(|| "no keepalive confirmed within the TTL".to_string())
    }
}

/// Why a holder stopped before it held NAME.
enum NotHeld {
    Failed(paxkv::Error),
    Lost(String),
    Interrupted,
}

impl NotHeld {
    fn exit(self) -> i32 {
        match self {
            NotHeld::Failed(e) => {
                eprintln!("error: {e}");
                exit_of(&e).0
            }
            NotHeld::Lost(why) => {
                eprintln!("error: {why}");
                EXIT_LOST
            }
            NotHeld::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

pub async fn lock(client: Client, args: LockArgs) -> i32 {
    let name = args.name.into_vec();
    let Some(ttl) = ttl_of(args.ttl) else {
        return EXIT_BAD_INPUT;
    };
    let me = format!("paxkv lock, pid {}", std::process::id());
    let held = match acquire(&client, &name, me.as_bytes(), ttl).await {
        Ok(held) => held,
        Err(e) => return e.exit(),
    };
    let mut program = args.command.into_iter();
    let mut child = match tokio::process::Command::new(program.next().expect("clap: required"))
        .args(program)
        .env("PAXKV_FENCING_TOKEN", held.token.to_string())
        .env("PAXKV_LEASE_ID", format_id(held.lease))
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: starting the command: {e}");
            release(&client, held).await;
            return EXIT_BAD_INPUT;
        }
    };
    let mut lost = held.lost.clone();
    let code = tokio::select! {
        status = child.wait() => match status {
            // Done, but the lock may have been lost while it ran (this process paused past
            // the lease, say): said, as a loss is.
            Ok(_) if held.lost_by_now().is_some() => {
                let why = held.lost_by_now().unwrap_or_default();
                eprintln!("error: the lock {} may have been lost while the command ran ({why})", text(&name));
                EXIT_LOST
            }
            Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            Err(e) => {
                eprintln!("error: waiting for the command: {e}");
                EXIT_UNAVAILABLE
            }
        },
        why = lost.wait_for(Option::is_some) => {
            let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
            eprintln!("error: the lock {} may be lost ({why}): stopping the command", text(&name));
            if let Some(pid) = child.id() {
                // SAFETY: a plain kill(2) of our own child, which has not been reaped (its
                // id is still known), so the pid is not reused.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            let _ = child.wait().await;
            EXIT_LOST
        }
    };
    release(&client, held).await;
    code
}

pub async fn elect(client: Client, args: ElectArgs, json: bool) -> i32 {
    let name = args.name.into_vec();
    let Some(value) = args.value.map(OsString::into_vec) else {
        return listen(client, &name, json).await;
    };
    let Some(ttl) = ttl_of(args.ttl) else {
        return EXIT_BAD_INPUT;
    };
    let held = match acquire(&client, &name, &value, ttl).await {
        Ok(held) => held,
        Err(e) => return e.exit(),
    };
    if json {
        let mut object = super::keyed(&name, serde_json::json!({"elected": true}));
        super::bytes_field(&mut object, "value", &value);
        object["version"] = serde_json::json!(held.token);
        object["lease"] = serde_json::json!(format_id(held.lease));
        println!("{object}");
    } else {
        println!(
            "elected: {} is {} (version {})",
            text(&name),
            text(&value),
            held.token
        );
    }
    let mut lost = held.lost.clone();
    let code = tokio::select! {
        why = lost.wait_for(Option::is_some) => {
            let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
            eprintln!("error: no longer the leader of {} ({why})", text(&name));
            EXIT_LOST
        }
        _ = tokio::signal::ctrl_c() => EXIT_OK,
    };
    release(&client, held).await;
    code
}

/// `elect NAME --listen`: NAME's leader now, then each new one, until interrupted. Text: the
/// leader's value per line, `(no leader)` when there is none; JSON: `{"key", "leader"
/// (or "leader_base64"), "version"}`, `"leader": null` when there is none.
async fn listen(client: Client, name: &[u8], json: bool) -> i32 {
    let print = |value: Option<&[u8]>, version: u64| {
        if json {
            let mut object = super::keyed(name, serde_json::json!({"version": version}));
            match value {
                Some(value) => super::bytes_field(&mut object, "leader", value),
                None => object["leader"] = serde_json::Value::Null,
            }
            println!("{object}");
        } else {
            println!("{}", value.map_or("(no leader)".to_string(), text));
        }
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let version = match client.get(name).await {
        Ok(Outcome::Get { value, version }) => {
            print(value.as_deref(), version);
            version
        }
        Ok(other) => return super::report_error(name, &unexpected(other), json),
        Err(e) => return super::report_error(name, &e, json),
    };
    let options = WatchOptions {
        from_version: Some(version + 1),
        ..WatchOptions::default()
    };
    let mut changes = client.watch(name, options);
    loop {
        let item = tokio::select! {
            item = changes.next() => item,
            _ = &mut interrupted => return EXIT_OK,
        };
        match item {
            Some(Ok(paxkv::watch::WatchItem::Change { value, version, .. })) => {
                print(value.as_deref(), version);
            }
            // A gap: the leader now is the next change's.
            Some(Ok(_)) => {}
            Some(Err(e)) => return super::report_error(name, &e, json),
            None => return EXIT_UNAVAILABLE,
        }
    }
}

/// Takes `name` with `value`, attached to a new lease of `ttl` kept alive from now on,
/// waiting for as long as another holds it (see the module doc).
async fn acquire(
    client: &Client,
    name: &[u8],
    value: &[u8],
    ttl: Duration,
) -> Result<Held, NotHeld> {
    let sent = Instant::now();
    let lease = client.lease_grant(ttl).await.map_err(NotHeld::Failed)?.id;
    let (lost_tx, lost) = watch::channel(None);
    let promised = Arc::new(Mutex::new(sent + ttl));
    let keeper = tokio::spawn(keep_alive(
        client.clone(),
        lease,
        ttl,
        promised.clone(),
        lost_tx,
    ));
    let mut held = Held {
        lease,
        token: 0,
        lost,
        promised,
        keeper,
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // A create whose outcome was not known may have taken NAME: then its retry finds NAME
    // taken, by this lease.
    let mut maybe_ours = false;
    loop {
        let taken = tokio::select! {
            taken = client.put_leased(name, value, Some(0), lease) => taken,
            _ = &mut interrupted => {
                release(client, held).await;
                return Err(NotHeld::Interrupted);
            }
        };
        let version = match taken {
            Ok(Outcome::Cas {
                swapped: true,
                version,
            }) => {
                held.token = version;
                return held_unless_lost(client, held).await;
            }
            Ok(Outcome::Cas { version, .. })
                if maybe_ours && ours(client, name, lease).await.map_err(NotHeld::Failed)? =>
            {
                held.token = version;
                return held_unless_lost(client, held).await;
            }
            Ok(Outcome::Cas { version, .. }) => version,
            Ok(other) => {
                release(client, held).await;
                return Err(NotHeld::Failed(unexpected(other)));
            }
            Err(paxkv::Error::NotFound(_)) => {
                held.keeper.abort();
                return Err(NotHeld::Lost("the lease expired while waiting".into()));
            }
            // Unavailable, or an outcome not known: try again (the create is on "no value",
            // and a create of ours that took effect answers as such on the retry).
            // Unless the lease may be lost by now (the keeper gave up: cut off), which no
            // retry of the create can mend.
            Err(e) if !e.is_bad_input() && held.lost_by_now().is_none() => {
                maybe_ours |= e.may_have_applied();
                eprintln!("{}: will retry: {e}", text(name));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) if !e.is_bad_input() => {
                let why = held.lost_by_now().unwrap_or_default();
                release(client, held).await;
                return Err(NotHeld::Lost(format!("{why} (the last attempt: {e})")));
            }
            Err(e) => {
                release(client, held).await;
                return Err(NotHeld::Failed(e));
            }
        };
        // Held by another: wait for NAME's next change (its holder's release, or its
        // lease's end), then try again.
        let options = WatchOptions {
            from_version: Some(version + 1),
            // A change whose announcement was lost is found by this read at the latest.
            reconcile_every: ttl,
            ..WatchOptions::default()
        };
        let mut changes = client.watch(name, options);
        let mut lost = held.lost.clone();
        tokio::select! {
            _ = changes.next() => {}
            why = lost.wait_for(Option::is_some) => {
                let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
                return Err(NotHeld::Lost(why));
            }
            _ = &mut interrupted => {
                release(client, held).await;
                return Err(NotHeld::Interrupted);
            }
        }
    }
}

/// NAME, taken: held, unless the lease may have been lost meanwhile (the keeper gave up
/// while the create was retried, then the create went through): then COMMAND must not
/// start, nor a leader be announced. NAME goes with the lease, revoked here.
async fn held_unless_lost(client: &Client, held: Held) -> Result<Held, NotHeld> {
    match held.lost_by_now() {
        None => Ok(held),
        Some(why) => {
            release(client, held).await;
            Err(NotHeld::Lost(format!(
                "taken after the lease may have been lost ({why})"
            )))
        }
    }
}

/// Is `name` attached to `lease` (created by an attempt whose answer was lost)?
async fn ours(client: &Client, name: &[u8], lease: u64) -> Result<bool, paxkv::Error> {
    let keys = client.lease_keys(lease).await?.unwrap_or_default();
    Ok(keys.iter().any(|k| k.as_slice() == name))
}

/// Keeps `lease` alive every TTL/3 until it may be lost: a keepalive answers it is gone, or
/// TTL passes since the last keepalive that succeeded was sent (`promised`).
async fn keep_alive(
    client: Client,
    lease: u64,
    ttl: Duration,
    promised: Arc<Mutex<Instant>>,
    lost: watch::Sender<Option<String>>,
) {
    let keepalive = || {
        let client = client.clone();
        async move { client.lease_keepalive(lease).await.map(|l| l.is_some()) }
    };
    let why = keep_until_lost(keepalive, lease, ttl, &promised).await;
    let _ = lost.send(Some(why));
}

/// After a keepalive that failed, the next goes this long after (or TTL/3, if sooner).
const KEEPALIVE_RETRY: Duration = Duration::from_millis(500);

/// The keeper's loop, `keepalive` its request (`Ok(false)`: the lease is gone); returns why
/// the lease may be lost. **It says so at the promise at the latest**, whatever the requests
/// do: each waits until the promise at most, and so does each pause between them. (Before,
/// a keepalive that failed before the promise was followed by a full TTL/3 of sleep: with a
/// TTL of 20 s and requests that give up after the client's 10 s, the loss was said 3.3 s
/// after the promise, while another holder could already hold NAME; with 61 s, 20 s after.)
async fn keep_until_lost<K, F>(
    mut keepalive: K,
    lease: u64,
    ttl: Duration,
    promised: &Mutex<Instant>,
) -> String
where
    K: FnMut() -> F,
    F: std::future::Future<Output = paxkv::Result<bool>>,
{
    // tokio's clock (the same as std's, but one a test can pause and advance).
    use tokio::time::Instant;
    let mut next = Instant::now() + ttl / 3;
    loop {
        let until = Instant::from_std(*promised.lock().expect("the promise"));
        tokio::time::sleep_until(next.min(until)).await;
        if Instant::now() >= until {
            return "no keepalive confirmed within the TTL".to_string();
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(until, keepalive()).await {
            Ok(Ok(true)) => {
                *promised.lock().expect("the promise") = (sent + ttl).into_std();
                next = sent + ttl / 3;
            }
            Ok(Ok(false)) => return "the lease is gone".to_string(),
            Ok(Err(e)) if Instant::now() < until => {
                eprintln!(
                    "lease {}: keepalive failed, will retry: {e}",
                    format_id(lease)
                );
                next = Instant::now() + KEEPALIVE_RETRY.min(ttl / 3);
            }
            Ok(Err(e)) => return format!("no keepalive confirmed within the TTL: {e}"),
            Err(_) => return "no keepalive confirmed within the TTL".to_string(),
        }
    }
}

/// Leaves: stops keeping the lease alive and revokes it, which deletes NAME if it holds it.
/// A revoke that fails leaves the lease to expire.
async fn release(client: &Client, held: Held) {
    held.keeper.abort();
    if let Err(e) = client.lease_revoke(held.lease).await {
        eprintln!(
            "lease {}: revoke failed ({e}); it expires after its TTL",
            format_id(held.lease)
        );
    }
}

fn ttl_of(seconds: u64) -> Option<Duration> {
    let ttl = Duration::from_secs(seconds);
    let range = paxkv::paxos::lease::MIN_TTL..=paxkv::paxos::lease::MAX_TTL;
    if range.contains(&ttl) {
        Some(ttl)
    } else {
        eprintln!(
            "error: --ttl: {} to {} seconds",
            range.start().as_secs(),
            range.end().as_secs()
        );
        None
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unexpected(outcome: Outcome) -> paxkv::Error {
    paxkv::Error::Unknown(format!("an unexpected answer: {outcome:?}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// The keeper of a lease of TTL `ttl` whose first keepalive succeeds and every later one
    /// fails after `fails_after` (a client cut off from the cluster, giving up at its
    /// deadline): how long after the last success was sent it says the lease may be lost,
    /// and the promise it held then. Simulated time.
    async fn lost_after(ttl: Duration, fails_after: Duration) -> (Duration, Duration) {
        let start = tokio::time::Instant::now();
        let promised = Mutex::new((start + ttl).into_std());
        let calls = AtomicU32::new(0);
        let last_ok = Mutex::new(start);
        let keepalive = || {
            let first = calls.fetch_add(1, Ordering::Relaxed) == 0;
            if first {
                *last_ok.lock().unwrap() = tokio::time::Instant::now();
            }
            async move {
                if first {
                    return Ok(true);
                }
                tokio::time::sleep(fails_after).await;
                Err(paxkv::Error::Unavailable("cut off".into()))
            }
        };
        keep_until_lost(keepalive, 1, ttl, &promised).await;
        let now = tokio::time::Instant::now();
        let sent = *last_ok.lock().unwrap();
        let promise = tokio::time::Instant::from_std(*promised.lock().unwrap()) - sent;
        (now - sent, promise)
    }

    /// A holder cut off from the cluster says its lease may be lost exactly when its promise
    /// ends (TTL after its last keepalive that succeeded was sent), not later: another
    /// holder may take NAME from then on. With a TTL of 20 s and keepalives that fail after
    /// 10 s (the client's deadline), it was said 3.3 s late; with 61 s, 20 s late.
    #[tokio::test(start_paused = true)]
    async fn a_cut_off_holder_says_its_lease_may_be_lost_when_the_promise_ends() {
        for (ttl, fails_after) in [
            (20, 10_000),
            (61, 10_000),
            (10, 10_000),
            (3, 100),
            (6, 1_900),
        ] {
            let ttl = Duration::from_secs(ttl);
            let (lost, promise) = lost_after(ttl, Duration::from_millis(fails_after)).await;
            assert_eq!(promise, ttl, "the promise of the last keepalive");
            assert_eq!(
                lost, ttl,
                "TTL {ttl:?}, keepalives failing after {fails_after} ms: said lost {lost:?} \
                 after the last keepalive was sent"
            );
        }
    }
}
