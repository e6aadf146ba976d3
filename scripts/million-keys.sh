#!/usr/bin/env bash
# Loads KEYS distinct keys (default 1,000,000) into a fresh five-node cluster and reports each
# node's resident memory and live per-key actors during the load and after the idle actors
# have been retired.   scripts/million-keys.sh [KEYS]   (needs: cargo build --release)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KEYS=${1:-1000000}
P=$repo/target/release/paxkv
CONFIG=$repo/config/cluster.toml
work=$(mktemp -d)
"$P" cluster --config "$CONFIG" --data-dir "$work/data" > "$work/cluster.log" 2>&1 &
cluster=$!
trap 'kill -TERM $cluster 2>/dev/null; wait $cluster 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do grep -q "nodes up" "$work/cluster.log" && break; sleep 0.2; done
grep -q "nodes up" "$work/cluster.log" || { echo "cluster did not start" >&2; exit 1; }

sample() { # label
  "$P" status --config "$CONFIG" --json | python3 -c '
import sys, json
rows = [json.loads(l) for l in sys.stdin]
cells = []
for r in rows:
    if "error" in r:
        cells.append("%s: down" % r["addr"])
    else:
        cells.append("n%d: %4d MiB %6da %6dp" % (r["node"], r["rss_bytes"] >> 20, r["live_acceptors"], r["live_proposers"]))
print("%14s  %s" % (sys.argv[1], "  ".join(cells)))
' "$1" || true
}

echo "load of $KEYS keys, 100-byte values, 256 clients"
"$P" bench --config "$CONFIG" --op load --keys "$KEYS" --concurrency 256 --value-size 100 --json > "$work/load.json" &
load=$!
start=$(date +%s)
while kill -0 $load 2>/dev/null; do
  sample "t+$(( $(date +%s) - start ))s"
  sleep 10
done
wait $load || echo "the load reported errors (exit $?)"
python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print("load: %d ok, %d errors, %.1fs, %.0f keys/s, p50 %s ms, p99 %s ms"
      % (j["ok"], j["errors"], j["elapsed_s"], j["ops_per_s"], j["p50_ms"], j["p99_ms"]))
' "$work/load.json"
sample "after load"
# idle per-key actors are retired after limits.idle_timeout_ms (10 s by default): wait for
# every node to have none left (at most 60 s)
idle_start=$(date +%s)
until "$P" status --config "$CONFIG" --json | python3 -c '
import sys, json
sys.exit(0 if all(json.loads(l).get("live_acceptors", 1) == 0 for l in sys.stdin) else 1)'; do
  [ $(( $(date +%s) - idle_start )) -lt 60 ] || { echo "actors still live after 60 s idle"; break; }
  sleep 1
done
sample "idle after $(( $(date +%s) - idle_start ))s"
"$P" get k00000000 --config "$CONFIG" > /dev/null && echo "first key still readable"
"$P" get "k$(printf %08d $((KEYS - 1)))" --config "$CONFIG" > /dev/null && echo "last key still readable"
du -sh "$work/data"/node-* | sed 's/^/disk: /'
