#!/usr/bin/env bash
# What a linearizable get costs by the state of its key (issue 23, "explain the spread"), on
# one fresh five-node cluster: keys written once (at the fast ballot), the same keys after
# classic writes, then after their actors were retired (idle_timeout_ms, 10 s by default)
# and warm again, in short rows as compare-etcd.sh runs them.
#
#   scripts/get-spread.sh [BIN]     (BIN default target/release/paxkv)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd); bin=$(realpath "${1:-$repo/target/release/paxkv}")
CONFIG=${CONFIG:-$repo/config/cluster.toml}
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
start_cluster $bin $CONFIG $work
b() { $bin bench --config $CONFIG --op "$1" --ops "$2" --concurrency "$3" --keys 10000 --value-size 100 "${@:4}" --json | tail -1 | python3 -c 'import sys,json; j=json.load(sys.stdin); print(round(j["ops_per_s"]), "p50", j["p50_ms"], "p99", j["p99_ms"])'; }
$bin bench --config $CONFIG --op load --keys 10000 --concurrency 64 --json >/dev/null
echo "keys at the fast ballot (load only), get 100000: $(b get 100000 64)"
echo "again:                                          $(b get 100000 64)"
b put 60000 256 >/dev/null
echo "keys at a classic ballot (after 60000 puts), get 100000: $(b get 100000 64)"
echo "again:                                                   $(b get 100000 64)"
# Wait until the keys' actors are retired (idle_timeout_ms): fewer than 1 % of the keys
# still have a live proposer on any node (the cluster's own keys may keep theirs).
live() { $bin status --config $CONFIG --json | python3 -c 'import sys, json
print(sum(json.loads(l).get("live_proposers", 0) for l in sys.stdin if l.strip()))'; }
for i in $(seq 1 120); do
  [ "$(live)" -lt 100 ] && break
  [ "$i" = 120 ] && { echo "the keys' actors were not retired within 60 s" >&2; exit 1; }
  sleep 0.5 # the status, polled
done
echo "after the keys' actors were retired, get 20000: $(b get 20000 64)"
echo "again, warm, get 20000:                          $(b get 20000 64)"
