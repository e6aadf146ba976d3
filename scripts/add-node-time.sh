#!/usr/bin/env bash
# The time to add a node to a cluster holding KEYS keys (default 1,000,000): loads them into a
# fresh five-node cluster (config/cluster.toml), starts node 6 on an empty store at a new
# address, and times `paxkv member add 6 ADDR`, which returns once node 6 votes and holds every
# key (the close-fast settle and the rescan, see src/paxos/membership.rs). Then reads a few
# keys through node 6.
#   scripts/add-node-time.sh [KEYS]   (needs: cargo build --release)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
KEYS=${1:-1000000}
P=$repo/target/release/paxkv
CONFIG=$repo/config/cluster.toml
NEW=127.0.0.1:7406
work=$(mktemp -d)
"$P" cluster --config "$CONFIG" --data-dir "$work/data" > "$work/cluster.log" 2>&1 &
cluster=$!
node6=
trap 'kill -TERM $cluster ${node6:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do grep -q "nodes up" "$work/cluster.log" && break; sleep 0.2; done
grep -q "nodes up" "$work/cluster.log" || { echo "cluster did not start" >&2; exit 1; }

echo "load of $KEYS keys, 100-byte values, 256 clients"
"$P" bench --config "$CONFIG" --op load --keys "$KEYS" --concurrency 256 --value-size 100 --json > "$work/load.json"
python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print("load: %d ok, %d errors, %.1fs, %.0f keys/s" % (j["ok"], j["errors"], j["elapsed_s"], j["ops_per_s"]))
' "$work/load.json"

"$P" node --id 6 --addr "$NEW" --config "$CONFIG" --data-dir "$work/data/node-6" > "$work/node-6.log" 2>&1 &
node6=$!
for _ in $(seq 1 100); do "$P" --node "$NEW" status > /dev/null 2>&1 && break; sleep 0.1; done
start=$(date +%s.%N)
"$P" --config "$CONFIG" member add 6 "$NEW"
end=$(date +%s.%N)
python3 -c "
import sys
took = float(sys.argv[2]) - float(sys.argv[1]); keys = int(sys.argv[3])
print('member add 6: %.1f s for %d keys (%.0f keys/s, both steps: close-fast settle and rescan)' % (took, keys, keys / took))
" "$start" "$end" "$KEYS"
grep -h "settled" "$work/cluster.log" | sed 's/^/  /'
"$P" --node "$NEW" status
for k in 0 $((KEYS / 2)) $((KEYS - 1)); do
  "$P" --node "$NEW" get "k$(printf %08d $k)" > /dev/null && echo "key $k readable through node 6"
done
