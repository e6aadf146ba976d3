#!/usr/bin/env bash
# Leases against etcd, in one run on this machine (BENCHMARKS.md, "Leases"), through each
# one's HTTP/JSON API with the same load generator (examples/http_bench.rs) at the same
# concurrency: grants per second, then keepalives per second over LEASES live leases.
# Each row: ops/s, p50/p99 ms, errors, and the whole machine's busy CPU per operation.
#
# Then mass expiry: MASS leases of MASS_TTL seconds granted at once, one key attached to
# each, and the time until every key is gone (asked after one by one) past the last lease's
# deadline (TTL after its last keepalive: its attach in paxkv, where an attach is one, its
# grant in etcd), in each system.
#
#   scripts/bench-leases.sh      (OPS 20000, C 64, LEASES 10000, TTL 60, MASS 100000, MASS_TTL 90)
#
# Needs etcd (apt-get install -y etcd-server etcd-client) and a release build of paxkv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
OPS=${OPS:-20000}; C=${C:-64}; LEASES=${LEASES:-10000}; TTL=${TTL:-60}
MASS=${MASS:-100000}; MASS_TTL=${MASS_TTL:-90}
. "$repo/scripts/bench-lib.sh"
http() { "$BENCH" --ops "$OPS" --concurrency "$C" --leases "$LEASES" --ttl "$TTL" "$@"; }

printf '%-34s %8s %15s %6s %7s\n' "workload (c$C, TTL ${TTL}s)" "ops/s" "p50/p99 ms" "errors" "cpu us/op"
if [ -z "${MASS_ONLY:-}" ]; then  # MASS_ONLY=1: the mass expiry alone
start_etcd
row "etcd lease grant" http --target etcd --op lease-grant --endpoints "$etcd_eps"
row "etcd lease keepalive ($LEASES live)" http --target etcd --op lease-keepalive --endpoints "$etcd_eps"
stop_etcd
fi
start_etcd
etcd_mass=$("$BENCH" --target etcd --op lease-expiry --with-keys --leases "$MASS" --ttl "$MASS_TTL" --concurrency "$C" --endpoints "$etcd_eps")
stop_etcd

start_paxkv
if [ -z "${MASS_ONLY:-}" ]; then
row "paxkv lease grant" http --target paxkv --op lease-grant --endpoints "$paxkv_eps"
row "paxkv lease keepalive ($LEASES live)" http --target paxkv --op lease-keepalive --endpoints "$paxkv_eps"
stop_paxkv_and_restart() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; rm -rf "$work/data"; start_paxkv; }
stop_paxkv_and_restart
fi
paxkv_mass=$("$BENCH" --target paxkv --op lease-expiry --with-keys --leases "$MASS" --ttl "$MASS_TTL" --concurrency "$C" --endpoints "$paxkv_eps")
echo "mass expiry, etcd:  $etcd_mass"
echo "mass expiry, paxkv: $paxkv_mass"
