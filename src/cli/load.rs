//! `paxkv load`: puts `key value` lines from standard input (the first space separates the
//! key from the value, as in the original pocdb-load), many requests in flight.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use paxkv::client::Client;
use tokio::sync::mpsc;

use super::{EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE};

/// Lines read ahead of the workers.
const LINE_QUEUE_CAPACITY: usize = 4_096;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    unavailable: AtomicU64,
    rejected: AtomicU64,
    malformed: AtomicU64,
}

pub async fn run(client: Client, concurrency: usize, json: bool) -> i32 {
    let concurrency = concurrency.max(1);
    let counts = Arc::new(Counts::default());
    let (lines_tx, lines_rx) = mpsc::channel::<(u64, Vec<u8>, Vec<u8>)>(LINE_QUEUE_CAPACITY);
    let reader_counts = counts.clone();
    let reader = std::thread::spawn(move || {
        let stdin = std::io::stdin().lock();
        for (n, line) in stdin.split(b'\n').enumerate() {
            let Ok(mut line) = line else { break };
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                continue;
            }
            let Some(space) = line.iter().position(|b| *b == b' ') else {
                eprintln!("line {}: no space between key and value; skipped", n + 1);
                reader_counts.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let value = line.split_off(space + 1);
            line.pop();
            if lines_tx.blocking_send((n as u64 + 1, line, value)).is_err() {
                break;
            }
        }
    });
    let lines = Arc::new(tokio::sync::Mutex::new(lines_rx));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, lines, counts) = (client.clone(), lines.clone(), counts.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = lines.lock().await.recv().await;
                let Some((n, key, value)) = next else { break };
                match client.put(&key, &value).await {
                    Ok(_) => counts.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.is_bad_input() => {
                        eprintln!("line {n}: {e}");
                        counts.rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("line {n}: {e}");
                        counts.unavailable.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let _ = reader.join();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = counts.ok.load(Ordering::Relaxed);
    let unavailable = counts.unavailable.load(Ordering::Relaxed);
    let rejected = counts.rejected.load(Ordering::Relaxed);
    let malformed = counts.malformed.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed.max(1e-9);
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": ok, "unavailable": unavailable, "rejected": rejected,
                "malformed": malformed, "elapsed_s": elapsed, "ops_per_s": rate})
        );
    } else {
        println!(
            "loaded {ok} keys in {elapsed:.2}s ({rate:.0}/s); errors: {unavailable} unavailable, \
             {rejected} rejected, {malformed} malformed lines"
        );
    }
    if unavailable > 0 {
        EXIT_UNAVAILABLE
    } else if rejected + malformed > 0 {
        EXIT_BAD_INPUT
    } else {
        EXIT_OK
    }
}
