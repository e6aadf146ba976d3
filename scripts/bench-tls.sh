#!/usr/bin/env bash
# The cost of TLS, in one run on this machine: the put and get workloads of
# ../shared/bench/compare-etcd.sh against paxkv plaintext and paxkv with [tls] (a development
# CA from `paxkv certs`), and against etcd plaintext and etcd with TLS on (client and peer
# certificates, client-cert-auth on both). REPS rounds, plaintext and TLS alternating; each
# figure is the median. The CPU column is the CPU time (user + system) of the servers'
# processes and of the load generator per operation, not the machine's busy time: on a shared
# machine that also counts the neighbours (steal time) and swamps a difference this small.
#
#   scripts/bench-tls.sh
#
# Environment: REPS (3), OPS (20000), OPS1 (5000), KEYS (10000), VALUE (100), PAXKV (the paxkv release
# binary), PEERBENCH (the shared load generator, built by compare-etcd.sh), PEERBENCH_TLS: a
# peerbench that takes `--tls CA,CERT,KEY` (the shared one with etcd-client's `tls` feature
# and those three files passed to `ConnectOptions::with_tls`); without it the etcd TLS rows
# are left out. Needs etcd-server and etcd-client.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=$repo/../shared/bench
REPS=${REPS:-3}; OPS=${OPS:-20000}; OPS1=${OPS1:-5000}; KEYS=${KEYS:-10000}; VALUE=${VALUE:-100}
PAXKV=${PAXKV:-$repo/target/release/paxkv}
PEERBENCH=${PEERBENCH:-${TMPDIR:-/tmp}/peerbench-target/release/peerbench}
PEERBENCH_TLS=${PEERBENCH_TLS:-}
[ -x "$PAXKV" ] || { echo "no paxkv binary at $PAXKV: cargo build --release" >&2; exit 2; }
[ -x "$PEERBENCH" ] || { echo "no peerbench at $PEERBENCH: run ../shared/bench/compare-etcd.sh once" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd not installed: apt-get install -y etcd-server etcd-client" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  "$shared/etcd-cluster.sh" stop "$work/etcd" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# CPU time (user + system) of the processes $servers, in microseconds.
servers=""
cpu_us() { python3 - $servers <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK"); total = 0
for pid in sys.argv[1:]:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    except OSError:
        pass
print(total * 1000000 // tick)
PY
}
# Runs a load generator; prints its output, and its own CPU (µs) into $work/gen.txt.
generate() {
  local TIMEFORMAT='%3U %3S'
  { time "$@" > "$work/out.txt"; } 2> "$work/time.txt"
  cat "$work/out.txt"
  awk '{ printf "%d\n", ($1 + $2) * 1000000 }' "$work/time.txt" > "$work/gen.txt"
}

# The certificates: paxkv's for its nodes; etcd's members reuse them (IP SAN 127.0.0.1).
plain_config=$repo/config/cluster.toml
tls_config=$work/cluster-tls.toml
"$PAXKV" certs --config "$plain_config" --out "$work/certs" >/dev/null
{ cat "$plain_config"; printf '\n[tls]\ndir = "%s"\n' "$work/certs"; } > "$tls_config"
ca=$work/certs/ca.pem; client_tls=$ca,$work/certs/client.pem,$work/certs/client-key.pem

# One row: ops_per_s p50 p99 errors cpu_us_per_op (servers + load generator)
per_op() { # cpu_before: prints the row of $work/run.txt with its CPU per operation
  python3 -c "r = open('$work/run.txt').read().split(); g = int(open('$work/gen.txt').read()); print(*r[:4], round(($(cpu_us) - $1 + g) / max(1, int(r[4]))))"
}
etcd_run() { # bench endpoints op ops concurrency [flags]
  local c0; c0=$(cpu_us)
  generate "$1" --endpoints "$2" --op "$3" --ops "$4" --concurrency "$5" --keys "$KEYS" --value-size "$VALUE" "${@:6}" |
    python3 -c 'import sys
kv = dict(p.split("=", 1) for p in sys.stdin.read().split())
print(kv["ops_per_s"], kv["p50_ms"], kv["p99_ms"], kv["errors"], kv["ok"])' > "$work/run.txt"
  per_op "$c0"
}
paxkv_run() { # config op ops concurrency
  local c0; c0=$(cpu_us)
  generate "$PAXKV" bench --config "$1" --op "$2" --ops "$3" --concurrency "$4" --keys "$KEYS" --value-size "$VALUE" --json |
    python3 -c 'import sys, json
j = json.loads(sys.stdin.read().strip().splitlines()[-1])
print(round(j["ops_per_s"]), j["p50_ms"], j["p99_ms"], j["errors"], j["ok"])' > "$work/run.txt"
  per_op "$c0"
}
etcd_matrix() { # label bench endpoints [flags]
  echo "$1 put-c1 $(etcd_run "$2" "$3" put "$OPS1" 1 "${@:4}")"
  echo "$1 put-c64 $(etcd_run "$2" "$3" put "$OPS" 64 "${@:4}")"
  etcd_run "$2" "$3" load "$KEYS" 64 "${@:4}" >/dev/null
  echo "$1 get-c64 $(etcd_run "$2" "$3" get "$OPS" 64 "${@:4}")"
}
paxkv_matrix() { # label config
  echo "$1 put-c1 $(paxkv_run "$2" put "$OPS1" 1)"
  echo "$1 put-c64 $(paxkv_run "$2" put "$OPS" 64)"
  paxkv_run "$2" load "$KEYS" 64 >/dev/null
  echo "$1 get-c64 $(paxkv_run "$2" get "$OPS" 64)"
}

start_etcd_tls() {
  local cluster="" i
  for i in 1 2 3 4 5; do cluster+="${cluster:+,}n$i=https://127.0.0.1:$((23800 + i))"; done
  for i in 1 2 3 4 5; do
    local cert=$work/certs/node-$i.pem key=$work/certs/node-$i-key.pem
    etcd --name "n$i" --data-dir "$work/etcd-tls/n$i" \
      --listen-client-urls "https://127.0.0.1:$((23790 + i))" --advertise-client-urls "https://127.0.0.1:$((23790 + i))" \
      --listen-peer-urls "https://127.0.0.1:$((23800 + i))" --initial-advertise-peer-urls "https://127.0.0.1:$((23800 + i))" \
      --initial-cluster "$cluster" --initial-cluster-token bench-tls --initial-cluster-state new \
      --cert-file "$cert" --key-file "$key" --client-cert-auth --trusted-ca-file "$ca" \
      --peer-cert-file "$cert" --peer-key-file "$key" --peer-client-cert-auth --peer-trusted-ca-file "$ca" \
      > "$work/etcd-tls-n$i.log" 2>&1 < /dev/null &
    pids+=($!)
  done
  # (not in a subshell: the pids must reach stop_all)
  tls_eps=$(for i in 1 2 3 4 5; do printf 'https://127.0.0.1:%s,' $((23790 + i)); done); tls_eps=${tls_eps%,}
  for _ in $(seq 1 60); do
    if ETCDCTL_API=3 etcdctl --endpoints "$tls_eps" --cacert "$ca" --cert "$work/certs/client.pem" \
         --key "$work/certs/client-key.pem" endpoint health >/dev/null 2>&1; then return; fi
    sleep 0.5
  done
  echo "etcd with TLS did not become healthy; see $work/etcd-tls-n1.log" >&2; tail -5 "$work/etcd-tls-n1.log" >&2; exit 1
}
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}
wait_paxkv() { # config
  for _ in $(seq 1 100); do
    rc=0; "$PAXKV" get __bench_probe --config "$1" >/dev/null 2>&1 || rc=$?
    [ "$rc" -le 1 ] && return
    sleep 0.2
  done
  echo "paxkv did not answer" >&2; exit 1
}

{
  for rep in $(seq 1 "$REPS"); do
    echo "# round $rep: etcd plaintext" >&2
    rm -rf "$work/etcd"
    "$shared/etcd-cluster.sh" start "$work/etcd" >/dev/null
    servers=$(cat "$work/etcd/etcd.pids")
    plain_eps=$(for i in 1 2 3 4 5; do printf 'http://127.0.0.1:%s,' $((23790 + i)); done)
    etcd_matrix etcd-plain "$PEERBENCH" "${plain_eps%,}"
    "$shared/etcd-cluster.sh" stop "$work/etcd" >/dev/null
    if [ -n "$PEERBENCH_TLS" ]; then
      echo "# round $rep: etcd TLS" >&2
      rm -rf "$work/etcd-tls"
      start_etcd_tls
      servers="${pids[*]}"
      etcd_matrix etcd-tls "$PEERBENCH_TLS" "$tls_eps" --tls "$client_tls"
      stop_all
    fi
    for mode in plain tls; do
      echo "# round $rep: paxkv $mode" >&2
      config=$plain_config; [ "$mode" = tls ] && config=$tls_config
      rm -rf "$work/paxkv-$mode"
      "$PAXKV" cluster --config "$config" --data-dir "$work/paxkv-$mode" > "$work/paxkv-$mode.log" 2>&1 &
      pids+=($!)
      wait_paxkv "$config"
      servers=$(pgrep -P "${pids[-1]}" | tr '\n' ' ')
      paxkv_matrix "paxkv-$mode" "$config"
      stop_all
    done
  done
} > "$work/rows.txt"

python3 - "$work/rows.txt" <<'EOF'
import sys
runs = {}
for line in open(sys.argv[1]):
    system, name, *v = line.split()
    runs.setdefault((system, name), []).append([float(x) for x in v])
median = lambda xs: sorted(xs)[len(xs) // 2]
rows = {k: [median(c) for c in zip(*v)] for k, v in runs.items()}
print(f"medians of {max(len(v) for v in runs.values())} rounds")
print(f"{'workload':9} {'system':11} {'op/s':>7} {'p50/p99 ms':>13} {'errors':>6} {'cpu us/op':>9} {'TLS: op/s':>9} {'cpu +us/op':>10}")
for name in ["put-c1", "put-c64", "get-c64"]:
    for system in ["etcd", "paxkv"]:
        plain = rows.get((f"{system}-plain", name))
        tls = rows.get((f"{system}-tls", name))
        for mode, r in [("plain", plain), ("tls", tls)]:
            if r is None:
                continue
            extra = ""
            if mode == "tls" and plain:
                extra = f"{r[0] / plain[0]:9.2f} {r[4] - plain[4]:+10.0f}"
            print(f"{name:9} {system + '-' + mode:11} {r[0]:7.0f} {r[1]:6.2f}/{r[2]:<6.2f} {r[3]:6.0f} {r[4]:9.0f} {extra}")
EOF
