#!/usr/bin/env bash
# System calls, context switches and CPU migrations per operation, machine-wide (`perf stat
# -a`), for one `paxkv bench` row on a fresh five-node cluster of BIN: KEYS keys loaded, 30,000
# gets of warm-up, then OPS operations of OP at 64 clients (mixed: 90 % gets). Prints the
# bench's JSON line (op/s, percentiles, the nodes' CPU per operation), then the counts.
#
#   scripts/census.sh BIN get|put|mixed OPS
#
# Needs `perf` (Debian's linux-perf). Uses config/cluster.toml's ports (7401-7405).
set -euo pipefail
[ $# -eq 3 ] || { sed -n 2,8p "$0"; exit 2; }
BIN=$(realpath "$1"); OP=$2; OPS=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$repo/config/cluster.toml}
KEYS=${KEYS:-10000}
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
start_cluster "$BIN" "$CONFIG" "$work"
bench() { "$BIN" bench --config "$CONFIG" --keys "$KEYS" --value-size 100 --json "$@"; }
bench --op load --ops "$KEYS" --concurrency 64 > /dev/null
bench --op get --ops 30000 --concurrency 64 > /dev/null
perf stat -a -x, -o "$work/stat" -e raw_syscalls:sys_enter,context-switches,cpu-migrations \
  "$BIN" bench --config "$CONFIG" --keys "$KEYS" --value-size 100 --json \
  --op "$OP" --ops "$OPS" --concurrency 64 --read-ratio 0.9
awk -F, -v ops="$OPS" '/^[0-9]/ { printf "%s: %.2f per operation\n", $3, $1 / ops }' "$work/stat"
