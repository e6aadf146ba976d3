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
. "$repo/scripts/bench-lib.sh"
http() { "$BENCH" --ops "$OPS" --concurrency "$C" --keys "$KEYS" --value-size "$VALUE" "$@"; }
binary() { "$PAXKV" bench --config "$CONFIG" --ops "$OPS" --concurrency "$C" --keys "$KEYS" --value-size "$VALUE" --json "$@"; }

printf '%-34s %8s %15s %6s %7s\n' "workload (c$C, ${VALUE}-byte values)" "ops/s" "p50/p99 ms" "errors" "cpu us/op"
start_etcd
# Every key written once first (not reported), so that each measured put overwrites.
http --target etcd --op put --endpoints "$etcd_eps" > /dev/null
row "etcd JSON gateway put" http --target etcd --op put --endpoints "$etcd_eps"
row "etcd JSON gateway get" http --target etcd --op get --endpoints "$etcd_eps"
stop_etcd

start_paxkv
binary --op put > /dev/null
row "paxkv HTTP put" http --target paxkv --op put --endpoints "$paxkv_eps"
row "paxkv binary protocol put" binary --op put
row "paxkv HTTP get" http --target paxkv --op get --endpoints "$paxkv_eps"
row "paxkv binary protocol get" binary --op get
