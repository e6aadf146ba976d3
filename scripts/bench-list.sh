#!/usr/bin/env bash
# Listing a 100,000-key prefix: paxkv against etcd, one after the other in one run.
#
#   scripts/bench-list.sh            (KEYS default 100000, PAGE default 10000, VALUE 100)
#
# Loads KEYS keys (`k00000000`.., VALUE-byte values) into a five-node paxkv cluster and into a
# five-member etcd cluster (`../shared/bench`), then reads the whole prefix back: paxkv with
# `paxkv list k --limit PAGE --all --json` (every page, from one process), idle, then while a
# closed-loop put workload at 16 clients rewrites those keys (so that copies disagree and the
# pages run read rounds) and other keys of the prefix are put and deleted; etcd with one
# `etcdctl get k --prefix` (keys and values; its linearizable range read, in one response),
# then the same with the put workload. Each listing is timed into a file and checked after (its check's CPU
# is not counted): every key came exactly once. Prints keys per second and the whole machine's
# busy CPU per key (the listing client's included: `paxkv` or `etcdctl`).
# Needs: a release build of paxkv, etcd-server, etcd-client and protobuf-compiler (apt-get).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bench=$repo/../shared/bench
KEYS=${KEYS:-100000}; PAGE=${PAGE:-10000}; VALUE=${VALUE:-100}
PAXKV=${PAXKV:-$repo/target/release/paxkv}
CONFIG=${CONFIG:-$repo/config/cluster.toml}
EP=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793,http://127.0.0.1:23794,http://127.0.0.1:23795
export CARGO_TARGET_DIR=${PEERBENCH_TARGET:-${TMPDIR:-/tmp}/peerbench-target}
peerbench=$CARGO_TARGET_DIR/release/peerbench
command -v etcd >/dev/null || { echo "etcd not installed: apt-get install -y etcd-server etcd-client protobuf-compiler" >&2; exit 2; }
[ -x "$PAXKV" ] || { echo "no paxkv binary at $PAXKV: cargo build --release" >&2; exit 2; }
[ -x "$peerbench" ] || (cd "$bench/peerbench" && cargo build --release --quiet)

# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
paxkv_pid=""; load_pid=""; churn_pid=""
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "$churn_pid" ] && kill "$churn_pid" 2>/dev/null || true
  "$bench/etcd-cluster.sh" stop "$work/etcd" >/dev/null 2>&1 || true
  if [ -n "$paxkv_pid" ]; then kill "$paxkv_pid" 2>/dev/null || true; wait "$paxkv_pid" 2>/dev/null || true; fi
  cleanup_cluster
}
trap cleanup EXIT
busy_us() { python3 -c 'import os
f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
print((sum(f[:8]) - f[3] - f[4]) * 1000000 // os.sysconf("SC_CLK_TCK"))'; }
now() { date +%s.%N; }
# report NAME KEYS_LISTED SECONDS BUSY_US
report() { python3 -c "import sys; n, s, b = int('$2'), float('$3'), int('$4')
print(f'$1: {n} keys in {s:.2f}s: {n / s:,.0f} keys/s, {b / max(n, 1):.1f} us of machine CPU per key')"; }

# Every loaded key listed once, and nothing else but the churn's keys (`k<8 digits>-churn-N`,
# put and deleted meanwhile): reads JSON pages (one per line) from stdin, prints the count of
# loaded keys.
check_pages() { python3 -c '
import json, re, sys
seen = []
for line in sys.stdin:
    for item in json.loads(line)["items"]:
        seen.append(item["key"])
assert len(seen) == len(set(seen)), "a key listed twice"
assert seen == sorted(seen), "keys out of order"
want = {f"k{i:08}" for i in range('"$KEYS"')}
missing = want - set(seen)
assert not missing, f"{len(missing)} keys missing"
strangers = [k for k in seen if k not in want and not re.fullmatch(r"k[0-9]{8}-churn-[0-9]+", k)]
assert not strangers, f"keys never written: {strangers[:5]}"
print(len(want))'; }

# Puts and deletes keys between the loaded ones until killed (a put and then a delete of each,
# through the CLI): listing must neither miss a loaded key nor list one twice while keys come
# and go around them.
churn() {
  local i=0
  while :; do
    i=$((i + 1))
    key=$(printf 'k%08d-churn-%d' $((i * 7919 % KEYS)) "$i")
    "$PAXKV" --config "$CONFIG" put "$key" x >/dev/null 2>&1 || true
    "$PAXKV" --config "$CONFIG" delete "$key" >/dev/null 2>&1 || true
  done
}

paxkv_list_all() { # one JSON page per line, every page (`--all`: one process, as etcdctl)
  "$PAXKV" --config "$CONFIG" --json list k --limit "$PAGE" --all
}

echo "# paxkv, 5 nodes; $KEYS keys of $VALUE bytes, pages of $PAGE" >&2
(cd "$work" && exec "$PAXKV" cluster --config "$CONFIG" --data-dir "$work/paxkv" >"$work/paxkv.log" 2>&1) &
paxkv_pid=$!
for _ in $(seq 1 60); do "$PAXKV" --config "$CONFIG" status >/dev/null 2>&1 && break; sleep 1; done
"$PAXKV" bench --config "$CONFIG" --op load --ops "$KEYS" --keys "$KEYS" --concurrency 64 --value-size "$VALUE" --json >/dev/null
# "Idle" means idle: every node's anti-entropy has run twice since the load and the per-key
# actors have retired.
wait_quiet "$PAXKV" "$CONFIG"
for load in idle writes; do
  if [ "$load" = writes ]; then
    "$PAXKV" bench --config "$CONFIG" --op put --ops 100000000 --keys "$KEYS" --concurrency 16 --value-size "$VALUE" --json >/dev/null 2>&1 &
    load_pid=$!
    churn &
    churn_pid=$!
    sleep 2
  fi
  # Timed: the listing into a file; checked after, so the check's own CPU is not counted.
  b0=$(busy_us); t0=$(now)
  paxkv_list_all > "$work/pages.json"
  t1=$(now); b1=$(busy_us)
  n=$(check_pages < "$work/pages.json")
  report "paxkv list ($load)" "$n" "$(python3 -c "print($t1 - $t0)")" "$((b1 - b0))"
  if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true; load_pid=""; fi
  if [ -n "$churn_pid" ]; then kill "$churn_pid" 2>/dev/null || true; wait "$churn_pid" 2>/dev/null || true; churn_pid=""; fi
done
kill "$paxkv_pid"; wait "$paxkv_pid" 2>/dev/null || true; paxkv_pid=""

echo "# etcd $(etcd --version | head -1 | awk '{print $3}'), 5 members" >&2
"$bench/etcd-cluster.sh" start "$work/etcd" >&2
"$peerbench" --endpoints "$EP" --op load --ops "$KEYS" --concurrency 64 --keys "$KEYS" --value-size "$VALUE" >/dev/null
for load in idle writes; do
  if [ "$load" = writes ]; then
    "$peerbench" --endpoints "$EP" --op put --ops 100000000 --concurrency 16 --keys "$KEYS" --value-size "$VALUE" >/dev/null 2>&1 &
    load_pid=$!
    sleep 2
  fi
  b0=$(busy_us); t0=$(now)
  ETCDCTL_API=3 etcdctl --endpoints "$EP" get k --prefix > "$work/etcd.txt"
  t1=$(now); b1=$(busy_us)
  n=$(awk 'NR % 2 == 1' "$work/etcd.txt" | grep -c '^k')
  [ "$n" -eq "$KEYS" ] || { echo "etcd listed $n keys of $KEYS" >&2; exit 1; }
  report "etcd get --prefix ($load)" "$n" "$(python3 -c "print($t1 - $t0)")" "$((b1 - b0))"
  if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true; load_pid=""; fi
done
