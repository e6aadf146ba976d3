#!/usr/bin/env bash
# Leases against etcd, in one run on this machine (BENCHMARKS.md, "Leases"), through each
# one's HTTP/JSON API with the same load generator (examples/http_bench.rs) at the same
# concurrency: grants per second, then keepalives per second over LEASES live leases.
# Each row: ops/s, p50/p99 ms, errors, and the whole machine's busy CPU per operation.
#
#   scripts/bench-leases.sh      (OPS default 20000, C default 64, LEASES 10000, TTL 60)
#
# Needs etcd (apt-get install -y etcd-server etcd-client) and a release build of paxkv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
OPS=${OPS:-20000}; C=${C:-64}; LEASES=${LEASES:-10000}; TTL=${TTL:-60}
PAXKV=${PAXKV:-$repo/target/release/paxkv}
BENCH=${BENCH:-$repo/target/release/examples/http_bench}
CONFIG=$repo/config/cluster.toml
etcd_cluster=$repo/../shared/bench/etcd-cluster.sh
command -v etcd >/dev/null || { echo "etcd not installed: apt-get install -y etcd-server etcd-client" >&2; exit 2; }
[ -x "$PAXKV" ] || { echo "no paxkv binary at $PAXKV: cargo build --release" >&2; exit 2; }
[ -x "$BENCH" ] || (cd "$repo" && cargo build --release --example http_bench --quiet)

work=$(mktemp -d)
pid=""
cleanup() {
  "$etcd_cluster" stop "$work/etcd" >/dev/null 2>&1 || true
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

busy_us() { python3 -c 'import os
f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
print((sum(f[:8]) - f[3] - f[4]) * 1000000 // os.sysconf("SC_CLK_TCK"))'; }
# row NAME COMMAND...: runs COMMAND (one JSON line with ops_per_s, p50_ms, p99_ms, errors, ok)
row() {
  local name=$1; shift
  local b0; b0=$(busy_us)
  "$@" > "$work/run.json"
  python3 - "$name" "$work/run.json" "$(( $(busy_us) - b0 ))" <<'PY'
import json, sys
j = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
cpu = j.get("cpu_us_per_op") or int(sys.argv[3]) / max(1, j['ok'])
print(f"{sys.argv[1]:34} {j['ops_per_s']:8.0f} {j['p50_ms']:7.2f}/{j['p99_ms']:<7.2f} {j['errors']:6} {cpu:7.0f}")
PY
}
http() { "$BENCH" --ops "$OPS" --concurrency "$C" --leases "$LEASES" --ttl "$TTL" "$@"; }

printf '%-34s %8s %15s %6s %7s\n' "workload (c$C, TTL ${TTL}s)" "ops/s" "p50/p99 ms" "errors" "cpu us/op"
"$etcd_cluster" start "$work/etcd" >/dev/null
etcd_eps=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793,127.0.0.1:23794,127.0.0.1:23795
row "etcd lease grant" http --target etcd --op lease-grant --endpoints "$etcd_eps"
row "etcd lease keepalive ($LEASES live)" http --target etcd --op lease-keepalive --endpoints "$etcd_eps"
"$etcd_cluster" stop "$work/etcd" >/dev/null

(cd "$work" && exec "$PAXKV" --config "$CONFIG" cluster > "$work/paxkv.log" 2>&1) &
pid=$!
for _ in $(seq 1 120); do
  "$PAXKV" --config "$CONFIG" put bench-ready 1 >/dev/null 2>&1 && break
  sleep 0.5
done
paxkv_eps=$(grep -o 'http_addr = "[^"]*"' "$CONFIG" | cut -d'"' -f2 | paste -sd,)
row "paxkv lease grant" http --target paxkv --op lease-grant --endpoints "$paxkv_eps"
row "paxkv lease keepalive ($LEASES live)" http --target paxkv --op lease-keepalive --endpoints "$paxkv_eps"
