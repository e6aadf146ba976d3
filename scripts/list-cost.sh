#!/usr/bin/env bash
# What listing a whole prefix costs paxkv alone, round after round on one quiet cluster: KEYS
# keys of 100 bytes loaded into a fresh five-node cluster of BIN, the nodes left to settle
# (`wait_quiet`), then ROUNDS listings of the prefix with `paxkv list k --all --json` (pages of
# PAGE keys) into a file. Prints, per round, keys per second, the whole machine's busy CPU per
# key and the node processes' own (their `cpu_us` in `status`). For paired A/Bs of two builds:
# run it for each, alternating. PERF=FILE records the last round with `perf record -a` into
# FILE instead of timing it (PERF_OPTS, default "-F 999 -g").
#
#   scripts/list-cost.sh BIN [ROUNDS]        (KEYS default 100000, PAGE default 10000)
#
# Uses config/cluster.toml's ports (7401-7405).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,11p "$0"; exit 2; }
BIN=$(realpath "$1"); ROUNDS=${2:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$repo/config/cluster.toml}
KEYS=${KEYS:-100000}; PAGE=${PAGE:-10000}
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
start_cluster "$BIN" "$CONFIG" "$work"
"$BIN" bench --config "$CONFIG" --op load --ops "$KEYS" --keys "$KEYS" --concurrency 64 \
  --value-size 100 --json > /dev/null
wait_quiet "$BIN" "$CONFIG"
list_all() { "$BIN" --config "$CONFIG" --json list k --limit "$PAGE" --all > "$work/pages.json"; }
node_cpu_us() { "$BIN" --config "$CONFIG" --json status 2>/dev/null | python3 -c '
import json, sys
print(sum(json.loads(l).get("cpu_us", 0) for l in sys.stdin if l.strip()))'; }
busy_us() { python3 -c 'import os
f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
print((sum(f[:8]) - f[3] - f[4]) * 1000000 // os.sysconf("SC_CLK_TCK"))'; }
for round in $(seq 1 "$ROUNDS"); do
  if [ -n "${PERF:-}" ] && [ "$round" = "$ROUNDS" ]; then
    # shellcheck disable=SC2086
    perf record -a ${PERF_OPTS:--F 999 -g} -o "$PERF" -- \
      "$BIN" --config "$CONFIG" --json list k --limit "$PAGE" --all > /dev/null
    continue
  fi
  n0=$(node_cpu_us); b0=$(busy_us); t0=$(date +%s.%N)
  list_all
  t1=$(date +%s.%N); b1=$(busy_us); n1=$(node_cpu_us)
  listed=$(python3 -c 'import json, sys; print(sum(len(json.loads(l)["items"]) for l in sys.stdin))' < "$work/pages.json")
  [ "$listed" -eq "$KEYS" ] || { echo "round $round listed $listed keys of $KEYS" >&2; exit 1; }
  python3 -c "print(f'round $round: {$KEYS / ($t1 - $t0):,.0f} keys/s, machine {($b1 - $b0) / $KEYS:.1f} us/key, nodes {($n1 - $n0) / $KEYS:.2f} us/key')"
done
