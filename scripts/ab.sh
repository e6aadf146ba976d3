#!/usr/bin/env bash
# Paired A/B of two release builds of paxkv, as BENCHMARKS.md asks for any "no regression"
# claim: ROUNDS rounds, each running build A then build B (alternating, so drift of this noisy
# machine hits both alike), each on a fresh five-node `paxkv cluster` with a new data
# directory: a load of KEYS keys, then put at 256 clients, get at 64 clients and (MIXED_OPS
# above 0) a mixed 90 % get workload at 64 clients with `paxkv bench`. For every run it prints op/s, p99, the node processes' own CPU per operation
# (utime + stime of the five `paxkv node` processes, /proc/PID/stat) and the whole machine's
# busy CPU per operation (/proc/stat, load generator included).
#
#   scripts/ab.sh BIN_A BIN_B [ROUNDS]        (ROUNDS default 3)
#
# CONFIG_B=FILE runs build B's clusters with another config (an A/B of a setting: pass the
# same binary twice).
#
# PUT_ROWS="C:N ..." adds, after that, N puts at C clients for each pair (e.g. "2:3000 16:20000":
# the concurrencies between one client and many).
#
# PUT64_OPS=N adds N puts at 64 clients after the put row (the pure row a mixed row at 64
# clients is predicted from, with the get row: 1 / (0.9 / get + 0.1 / put)).
#
# DATA_B=DIR keeps build B's data directories under DIR (e.g. /dev/shm, where an fsync costs
# almost nothing: an A/B of what the commits cost, the same binary on both sides).
#
# FRESH_GET_OPS=N first runs N gets at 64 clients on the keys just loaded (each written once,
# at the fast ballot, through its home node: the first get-c64 row of each cluster).
#
# C1_OPS=N first runs N puts at one client on the loaded keys (overwrites: compare-etcd's
# overwrite-c1 row; its p50 is the figure).
#
# Each row also prints `waits`: the commits that waited for company among reads on the five
# nodes during the row (`paxkv_commit_lingers_total{reason="among_reads"}`, from each node's
# `GET /metrics`: both configs are copied with `metrics_addr` 127.0.0.1:940N added for the
# node at port 740N; a build without the series shows 0).
#
# PAUSE=1 stops one node (SIGSTOP) after the load and resumes it after the last row: the
# rows then measure a cluster with a paused minority (p99 under a fault).
#
# Build the two binaries first, e.g. `git worktree add /tmp/a REV && cargo build --release`
# there, and pass both target/release/paxkv paths. Uses config/cluster.toml's ports (7401-7405):
# nothing else may run on them.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,32p "$0"; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$repo/config/cluster.toml}  # a config both builds read (an older build refuses newer keys)
CONFIG_B=${CONFIG_B:-$CONFIG}
KEYS=${KEYS:-10000}; PUT_OPS=${PUT_OPS:-60000}; GET_OPS=${GET_OPS:-150000}; MIXED_OPS=${MIXED_OPS:-0}
C1_OPS=${C1_OPS:-0}; FRESH_GET_OPS=${FRESH_GET_OPS:-0}; PUT64_OPS=${PUT64_OPS:-0}
PAUSE=${PAUSE:-0}
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
work_b=$work
if [ -n "${DATA_B:-}" ]; then work_b=$(mktemp -d -p "$DATA_B"); extra_dirs+=("$work_b"); fi
tck=$(getconf CLK_TCK)
with_metrics() { # CONFIG OUT: CONFIG with metrics_addr 127.0.0.1:940N after each node's addr 740N
  grep -v '^metrics_addr' "$1" | sed -E 's/^(addr = "127\.0\.0\.1:740([0-9])".*)$/\1\nmetrics_addr = "127.0.0.1:940\2"/' > "$2"
}
with_metrics "$CONFIG" "$work/a.toml"; CONFIG=$work/a.toml
with_metrics "$CONFIG_B" "$work/b.toml"; CONFIG_B=$work/b.toml
waits() { # commits that waited among reads, summed over the five nodes
  local total=0 port n
  for port in 9401 9402 9403 9404 9405; do
    n=$(curl -s --max-time 2 "127.0.0.1:$port/metrics" | awk -F' ' '/^paxkv_commit_lingers_total\{reason="among_reads"\}/ {print $2}')
    total=$((total + ${n:-0}))
  done
  echo "$total"
}
busy_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
nodes_ticks() { # the utime+stime of the `paxkv node` children of the cluster process
  local total=0 pid
  for pid in $(pgrep -P "$cluster_pid"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

run() { # bin label op ops concurrency [more bench arguments]
  local bin=$1 label=$2 op=$3 ops=$4 c=$5 m0 n0 w0 out
  shift 5
  w0=$(waits); m0=$(busy_ticks); n0=$(nodes_ticks)
  out=$("$bin" bench --config "$CONFIG" --op "$op" --ops "$ops" --concurrency "$c" --keys "$KEYS" "$@" --json | tail -1)
  python3 - "$label" "$op-c$c" "$out" "$(( $(busy_ticks) - m0 ))" "$(( $(nodes_ticks) - n0 ))" "$tck" "$(( $(waits) - w0 ))" <<'EOF'
import json, sys
label, row, out, machine, nodes, tck, waits = sys.argv[1:]
j = json.loads(out)
ok = max(1, j["ok"])
us = lambda ticks: round(int(ticks) * 1e6 / int(tck) / ok, 1)
print(f"{label:2} {row:9} {round(j['ops_per_s']):>7} op/s  p50 {j['p50_ms']:>6} p99 {j['p99_ms']:>7} ms  errors {j['errors']:>3}"
      f"  nodes {us(nodes):>6} us/op  machine {us(machine):>6} us/op  waits {waits:>5}")
EOF
}

one() { # bin label
  local bin=$1 label=$2 config=$CONFIG dir=$work
  [ "$label" = B ] && config=$CONFIG_B
  [ "$label" = B ] && [ -n "${DATA_B:-}" ] && dir=$work_b
  start_cluster "$bin" "$config" "$dir"
  "$bin" bench --config "$CONFIG" --op load --keys "$KEYS" --concurrency 64 --json > /dev/null
  [ "$FRESH_GET_OPS" -gt 0 ] && run "$bin" "$label" get "$FRESH_GET_OPS" 64
  [ "$C1_OPS" -gt 0 ] && run "$bin" "$label" put "$C1_OPS" 1
  local row
  for row in ${PUT_ROWS:-}; do run "$bin" "$label" put "${row#*:}" "${row%%:*}"; done
  local paused=
  [ "$PAUSE" = 1 ] && { paused=$(pgrep -P "$cluster_pid" | sort -n | tail -1); kill -STOP "$paused"; }
  run "$bin" "$label" put "$PUT_OPS" 256
  [ "$PUT64_OPS" -gt 0 ] && run "$bin" "$label" put "$PUT64_OPS" 64
  run "$bin" "$label" get "$GET_OPS" 64
  [ "$MIXED_OPS" -gt 0 ] && run "$bin" "$label" mixed "$MIXED_OPS" 64 --read-ratio 0.9
  [ -n "$paused" ] && kill -CONT "$paused"
  kill "$cluster_pid"; wait "$cluster_pid" 2>/dev/null || true; cluster_pid=
}

echo "# A = $A"; echo "# B = $B"
for round in $(seq 1 "$ROUNDS"); do
  echo "# round $round"
  one "$A" A
  one "$B" B
done
