# Shared by the HTTP benchmarks against etcd (scripts/bench-http.sh, scripts/bench-leases.sh):
# sourced after `repo` is set. Gives: PAXKV, BENCH, CONFIG, etcd_cluster, work (a temporary
# directory removed at exit with every process started here), etcd_eps, busy_us, row NAME
# COMMAND..., start_etcd, stop_etcd, start_paxkv (sets paxkv_eps, the nodes' HTTP APIs).
PAXKV=${PAXKV:-$repo/target/release/paxkv}
BENCH=${BENCH:-$repo/target/release/examples/http_bench}
CONFIG=$repo/config/cluster.toml
etcd_cluster=$repo/../shared/bench/etcd-cluster.sh
etcd_eps=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793,127.0.0.1:23794,127.0.0.1:23795
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

# row NAME COMMAND...: runs COMMAND (one JSON line with ops_per_s, p50_ms, p99_ms, errors, ok,
# and cpu_us_per_op if it measured its own), prints one row.
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

start_etcd() { "$etcd_cluster" start "$work/etcd" >/dev/null; }
stop_etcd() { "$etcd_cluster" stop "$work/etcd" >/dev/null; }

start_paxkv() {
  (cd "$work" && exec "$PAXKV" --config "$CONFIG" cluster > "$work/paxkv.log" 2>&1) &
  pid=$!
  for _ in $(seq 1 120); do
    "$PAXKV" --config "$CONFIG" put bench-ready 1 >/dev/null 2>&1 && break
    sleep 0.5
  done
  paxkv_eps=$(grep -o 'http_addr = "[^"]*"' "$CONFIG" | cut -d'"' -f2 | paste -sd,)
}
