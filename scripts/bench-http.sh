#!/usr/bin/env bash
# The HTTP API's cost, in one run on this machine (BENCHMARKS.md, "HTTP API"):
#   - etcd's JSON gateway (POST /v3/kv/put, /v3/kv/range) and paxkv's HTTP API (PUT and GET
#     /v1/kv/{key}), driven by the same HTTP load generator (examples/http_bench.rs) at the
#     same concurrency;
#   - paxkv's binary protocol (`paxkv bench`), the same workload: what HTTP and JSON cost.
# Each row: ops/s, p50/p99 ms, errors, and the whole machine's busy CPU per operation.
#
#   scripts/bench-http.sh        (OPS default 20000, C default 64, KEYS 10000, VALUE 100)
#
# Needs etcd (apt-get install -y etcd-server etcd-client) and a release build of paxkv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
OPS=${OPS:-20000}; C=${C:-64}; KEYS=${KEYS:-10000}; VALUE=${VALUE:-100}
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
print(f"{sys.argv[1]:34} {j['ops_per_s']:8.0f} {j['p50_ms']:7.2f}/{j['p99_ms']:<7.2f} {j['errors']:6} {int(sys.argv[3]) / max(1, j['ok']):7.0f}")
PY
}
http() { "$BENCH" --ops "$OPS" --concurrency "$C" --keys "$KEYS" --value-size "$VALUE" "$@"; }
binary() { "$PAXKV" bench --config "$CONFIG" --ops "$OPS" --concurrency "$C" --keys "$KEYS" --value-size "$VALUE" --json "$@"; }

printf '%-34s %8s %15s %6s %7s\n' "workload (c$C, ${VALUE}-byte values)" "ops/s" "p50/p99 ms" "errors" "cpu us/op"
"$etcd_cluster" start "$work/etcd" >/dev/null
etcd_eps=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793,127.0.0.1:23794,127.0.0.1:23795
# Every key written once first (not reported), so that each measured put overwrites.
http --target etcd --op put --endpoints "$etcd_eps" > /dev/null
row "etcd JSON gateway put" http --target etcd --op put --endpoints "$etcd_eps"
row "etcd JSON gateway get" http --target etcd --op get --endpoints "$etcd_eps"
"$etcd_cluster" stop "$work/etcd" >/dev/null

(cd "$work" && exec "$PAXKV" --config "$CONFIG" cluster > "$work/paxkv.log" 2>&1) &
pid=$!
for _ in $(seq 1 120); do
  "$PAXKV" --config "$CONFIG" put bench-ready 1 >/dev/null 2>&1 && break
  sleep 0.5
done
paxkv_eps=$(grep -o 'http_addr = "[^"]*"' "$CONFIG" | cut -d'"' -f2 | paste -sd,)
binary --op put > /dev/null
row "paxkv HTTP put" http --target paxkv --op put --endpoints "$paxkv_eps"
row "paxkv binary protocol put" binary --op put
row "paxkv HTTP get" http --target paxkv --op get --endpoints "$paxkv_eps"
row "paxkv binary protocol get" binary --op get
