#!/usr/bin/env bash
# Watches: delivery latency at 1, 100 and 10,000 watchers, the effect of 1,000 watchers on put
# throughput, and node memory per watcher, on a fresh local five-node release cluster.
#
#   scripts/bench-watch.sh            (PUTS default 20000, ROUNDS default 2)
#
# Runs `examples/watch_bench.rs` (see its doc) once per watcher count; the put-throughput pair
# (0 and 1,000 watchers) alternates ROUNDS times, so that the machine's drift falls on both.
# Prints one JSON line per run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PUTS=${PUTS:-20000}; ROUNDS=${ROUNDS:-2}
PAXKV=${PAXKV:-$repo/target/release/paxkv}
BENCH=${BENCH:-$repo/target/release/examples/watch_bench}
[ -x "$PAXKV" ] || { echo "no paxkv binary at $PAXKV: cargo build --release" >&2; exit 2; }
[ -x "$BENCH" ] || (cd "$repo" && cargo build --release --example watch_bench --quiet)
work=$(mktemp -d)
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT
start_cluster() {
  cleanup; work=$(mktemp -d)
  (cd "$work" && exec "$PAXKV" --config "$repo/config/cluster.toml" cluster >"$work/cluster.log" 2>&1) &
  pid=$!
  for _ in $(seq 1 120); do
    grep -q "listening on" "$work/cluster.log" 2>/dev/null && "$PAXKV" --config "$repo/config/cluster.toml" put bench-ready 1 >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "the cluster did not start: $(tail -5 "$work/cluster.log")" >&2; exit 1
}
run() { "$BENCH" --config "$repo/config/cluster.toml" --puts "$PUTS" "$@"; }
for watchers in 1 100 10000; do
  start_cluster
  run --watchers "$watchers" --keys 100 --concurrency 16
done
for _ in $(seq 1 "$ROUNDS"); do
  for watchers in 0 1000; do
    start_cluster
    run --watchers "$watchers" --keys 1000 --concurrency 64
  done
done
