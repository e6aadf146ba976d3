#!/usr/bin/env bash
# Where a workload's CPU goes in the node processes: starts a fresh five-node `paxkv cluster`
# of BIN (release build, which keeps symbols: `debug = 1`), loads KEYS keys, runs one
# `paxkv bench` workload, samples the five `paxkv node` processes with `perf record` while it
# runs, and prints the top frames by self time (and by DSO), as BENCHMARKS.md reports them.
#
#   scripts/profile.sh BIN put|get|mixed [SECONDS]     (SECONDS of sampling, default 8)
#
# put: 256 clients; get: 64 clients; mixed: 64 clients, 90 % gets (the rows of issue 23).
# Needs `perf` (Debian's linux-perf). Uses config/cluster.toml's ports (7401-7405).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
BIN=$(realpath "$1"); OP=$2; SECS=${3:-8}
repo=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$repo/config/cluster.toml}
KEYS=${KEYS:-10000}
case $OP in
  put) args=(--op put --concurrency 256) ;;
  get) args=(--op get --concurrency 64) ;;
  mixed) args=(--op mixed --read-ratio 0.9 --concurrency 64) ;;
  *) echo "op: put, get or mixed" >&2; exit 2 ;;
esac

# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
start_cluster "$BIN" "$CONFIG" "$work"
"$BIN" bench --config "$CONFIG" --op load --keys "$KEYS" --concurrency 64 --json > /dev/null

# Enough operations to outlast the sampling; the bench is stopped once it is done.
"$BIN" bench --config "$CONFIG" "${args[@]}" --keys "$KEYS" --ops 100000000 --json \
  > "$work/bench.json" 2>/dev/null &
bench_pid=$!
sleep 2 # the load settles before sampling starts (a fixed warm-up, not a condition)
pids=$(pgrep -P "$cluster_pid" | paste -sd, -)
# CALLGRAPH="--call-graph dwarf" gives whole call chains (Rust keeps no frame pointers), at
# a cost: sample fewer seconds then.
# shellcheck disable=SC2086
perf record -F "${FREQ:-499}" ${CALLGRAPH:--g} -o "$work/perf.data" -p "$pids" -- sleep "$SECS" > /dev/null 2>&1
kill "$bench_pid" 2>/dev/null; wait "$bench_pid" 2>/dev/null || true
# (KEEP=FILE keeps the samples, for `perf report -i FILE` with call graphs)
if [ -n "${KEEP:-}" ]; then cp "$work/perf.data" "$KEEP"; fi
set +o pipefail # `head` ends the reports early
echo "# $OP (${args[*]}), $SECS s sampled at ${FREQ:-499} Hz in the five node processes"
echo "## by DSO"
perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -8
echo "## top frames, self time"
perf report -i "$work/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -"${TOP:-30}"
