//! `paxkv watch KEY [--prefix] [--from-version V] [--json]`: one line per change of KEY (of
//! every key under it with `--prefix`) until interrupted (`Client::watch`; what a watch
//! promises is argued in `actors::watch` and `paxkv::watch`).
//!
//! JSON: `{"key", "version", "value"}` per change, `"value": null` for a delete, and
//! `{"key", "skipped_to": V}` where changes were lost to this watch (the next line for the key
//! is version V); `key_base64`/`value_base64` for bytes that are not UTF-8, as `get --json`.
//! Text: `key version value` per change (`key version` and nothing else for a delete), and
//! `key skipped_to V`; keys and values that are not UTF-8 printed `base64:` and their base64,
//! as `list` prints them (use `--json` when a key or value may hold a space or a newline).
//! Exit 0 on Ctrl-C, 3 when no node can serve the watch, 2 for a key no watch may have or a
//! watch past `--max-keys` keys.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::ffi::OsStringExt as _;
use std::time::Duration;

use futures_util::StreamExt;
use paxkv::client::Client;
use paxkv::watch::{WatchItem, WatchOptions};

use super::{report_error, EXIT_UNAVAILABLE};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The key (with `--prefix`: the prefix; empty for every key).
    key: OsString,
    /// Watch every key that starts with KEY.
    #[arg(long)]
    prefix: bool,
    /// Print changes from this version on (per key), not only those after the watch began;
    /// paxkv keeps no history, so older ones are reported `skipped_to` the current one.
    #[arg(long)]
    from_version: Option<u64>,
    /// How often the watch reads where its keys stand, so that a change whose announcement
    /// was lost is reported even when no change follows it.
    #[arg(long, default_value_t = 30_000)]
    reconcile_ms: u64,
    /// Keys the watch follows at most (it keeps a version per key it has seen): past it the
    /// watch ends with an error, exit 2.
    #[arg(long, default_value_t = std::num::NonZeroUsize::new(paxkv::watch::MAX_WATCH_KEYS).expect("not zero"))]
    max_keys: std::num::NonZeroUsize,
}

pub async fn run(client: Client, args: WatchArgs, json: bool) -> i32 {
    let key = args.key.into_vec();
    let options = WatchOptions {
        prefix: args.prefix,
        from_version: args.from_version,
        reconcile_every: Duration::from_millis(args.reconcile_ms.max(1)),
        max_keys: args.max_keys.get(),
        ..WatchOptions::default()
    };
    let mut stream = client.watch(&key, options);
    let mut stdout = std::io::stdout().lock();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = &mut interrupted => return 0,
        };
        let line = match item {
            Some(Ok(item)) => line(&item, json),
            Some(Err(e)) => return report_error(&key, &e, json),
            None => return 0,
        };
        if let Err(e) = stdout.write_all(&line).and_then(|()| stdout.flush()) {
            eprintln!("error: writing the output: {e}");
            return EXIT_UNAVAILABLE;
        }
    }
}

fn line(item: &WatchItem, json: bool) -> Vec<u8> {
    let mut out = if json {
        paxkv::json::watch_item_json(item).to_string()
    } else {
        match item {
            WatchItem::Change {
                key,
                version,
                value: Some(value),
            } => format!(
                "{} {version} {}",
                super::list::text(key),
                super::list::text(value)
            ),
            WatchItem::Change { key, version, .. } => {
                format!("{} {version}", super::list::text(key))
            }
            WatchItem::Skipped { key, skipped_to } => {
                format!("{} skipped_to {skipped_to}", super::list::text(key))
            }
        }
    };
    out.push('\n');
    out.into_bytes()
}
