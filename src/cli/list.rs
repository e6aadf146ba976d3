//! `paxkv list [PREFIX] [--limit N] [--after KEY] [--keys-only] [--json] [--all]`: one page of
//! the live keys under a prefix (`Client::list`, argued in `actors::list`); with `--all`, every
//! page until the prefix is exhausted, from one process and one connection per node (what
//! `etcdctl get --prefix` does), each page printed as it arrives while the next is asked
//! for, so memory stays two pages.
//!
//! Text: one line per key, `key value` (the key alone with `--keys-only`); a key or value
//! that is not UTF-8 is printed `base64:` and its standard base64 (the encoding of `get
//! --json`'s `_base64` fields). A key or value holding a space or a newline cannot be told
//! apart in text: use `--json`. When more keys follow, `(more: --after KEY)` goes to stderr
//! (`(more: --after-base64 B64)` for a key that is not UTF-8: pass it on as it is).
//! JSON: `{"items": [{"key" (or "key_base64"), "value" (or "value_base64"), "version"}, ...],
//! "next": KEY or null}` (`"next_base64"` for a key that is not UTF-8); with `--all`, one such
//! page per line, the last with `"next": null`.
//!
//! A page that fails with `--all` ends the listing with the error's exit code; the pages
//! printed before it stand (each is a page as `--after` would give it), and stderr says where
//! to go on (`(listed up to KEY: go on with --after KEY)`).

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::ffi::OsStringExt as _;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use paxkv::client::Client;
use paxkv::messages::ListPage;

use super::{report_error, EXIT_UNAVAILABLE};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only keys that start with these bytes (default: every key).
    prefix: Option<OsString>,
    /// At most this many keys (default and most: the cluster's `limits.list_default_limit`
    /// and `limits.list_max_limit`).
    #[arg(long)]
    limit: Option<u32>,
    /// Only keys after this one: the previous page's `next`.
    #[arg(long, conflicts_with = "after_base64")]
    after: Option<OsString>,
    /// `--after` in standard base64: for a key that is not UTF-8 (the page's `next_base64`)
    /// or holds a NUL (a `next` where a page ended among the cluster's own keys, `\u0000paxkv/`
    /// in JSON), which no command line can carry; `(more: ...)` says it so.
    #[arg(long)]
    after_base64: Option<String>,
    /// Print the keys without their values.
    #[arg(long)]
    keys_only: bool,
    /// Every page, until the prefix is exhausted (`--limit` is then the size of each page).
    #[arg(long)]
    all: bool,
}

pub async fn run(client: Client, args: ListArgs, json: bool) -> i32 {
    let prefix = args.prefix.map(OsString::into_vec).unwrap_or_default();
    let after = match (args.after, args.after_base64) {
        (Some(after), _) => Some(after.into_vec()),
        (None, Some(b64)) => match BASE64_STANDARD.decode(b64.trim()) {
            Ok(after) => Some(after),
            Err(e) => {
                eprintln!("error: --after-base64: {e}");
                return super::EXIT_BAD_INPUT;
            }
        },
        (None, None) => None,
    };
    let limit = args.limit.unwrap_or(0);
    let mut after = after;
    // With `--all`, the next page is asked for while this one is formatted and written on a
    // blocking thread: the node builds one page while this process prints the one before
    // (at most two pages in memory). A page is written only once the one before it was.
    let mut writing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
    loop {
        let asked = client
            .list(&prefix, after.as_deref(), limit, args.keys_only)
            .await;
        if !written(&mut writing).await {
            return EXIT_UNAVAILABLE;
        }
        let page = match asked {
            Ok(page) => page,
            Err(e) => {
                if let Some(reached) = after.as_deref().filter(|_| args.all) {
                    eprintln!(
                        "(listed up to {}: go on with {})",
                        text(reached),
                        resume(reached)
                    );
                }
                return report_error(&prefix, &e, json);
            }
        };
        if let Some(next) = page.next.as_deref().filter(|_| !args.all) {
            eprintln!("(more: {})", resume(next));
        }
        after = page.next.clone().filter(|_| args.all);
        writing = Some(tokio::task::spawn_blocking(move || write_page(&page, json)));
        if after.is_none() {
            return if written(&mut writing).await {
                0
            } else {
                EXIT_UNAVAILABLE
            };
        }
    }
}

/// Waits for the page being written, if one is; false (said on stderr) if its write failed.
async fn written(writing: &mut Option<tokio::task::JoinHandle<std::io::Result<()>>>) -> bool {
    let Some(handle) = writing.take() else {
        return true;
    };
    match handle
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            false
        }
    }
}

/// A page to stdout: one JSON object on a line, or one line per item.
fn write_page(page: &ListPage, json: bool) -> std::io::Result<()> {
    let out = if json {
        let mut line = paxkv::json::page_json(page).to_string().into_bytes();
        line.push(b'\n');
        line
    } else {
        page_text(page)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).and_then(|()| stdout.flush())
}

/// The argument that lists the keys after `key`: `--after KEY`, or `--after-base64 B64` for a
/// key that is not UTF-8 or holds a NUL (no command line can carry one: a page cut among the
/// cluster's own keys, `\0paxkv/...`, says one of them as its `next`).
fn resume(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(key) if !key.contains('\0') => format!("--after {key}"),
        _ => format!("--after-base64 {}", BASE64_STANDARD.encode(key)),
    }
}

/// The bytes as text: as they are if UTF-8, else `base64:` and their standard base64.
pub(super) fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("base64:{}", BASE64_STANDARD.encode(bytes)),
    }
}

fn page_text(page: &ListPage) -> Vec<u8> {
    let mut out = String::new();
    for item in &page.items {
        out.push_str(&text(&item.key));
        if let Some(value) = &item.value {
            out.push(' ');
            out.push_str(&text(value));
        }
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::resume;

    #[test]
    fn a_key_no_command_line_can_carry_is_resumed_in_base64() {
        assert_eq!(resume(b"app/b"), "--after app/b");
        assert_eq!(resume(b"\xff"), "--after-base64 /w==");
        assert_eq!(
            resume(b"\0paxkv/lease/1"),
            "--after-base64 AHBheGt2L2xlYXNlLzE="
        );
    }
}
