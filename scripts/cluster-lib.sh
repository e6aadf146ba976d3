# Shared by the scripts that start a cluster: sourced. Sourcing it makes a temporary directory,
# $work, and a trap that stops the cluster started last (cluster_pid) and removes $work (and
# any directories in extra_dirs) when the script exits (`cleanup_cluster`: a script with more
# to clean sets its own trap and calls it). Gives start_cluster BIN CONFIG DIR,
# which starts `BIN cluster` on a fresh data directory DIR/data (its log in DIR/cluster.log),
# sets cluster_pid, and returns once a node answers a read (exits the script if none does
# within 30 s).
work=$(mktemp -d)
cluster_pid=
extra_dirs=()
cleanup_cluster() {
  [ -n "$cluster_pid" ] && kill "$cluster_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work" "${extra_dirs[@]}"
}
trap cleanup_cluster EXIT

start_cluster() {
  local bin=$1 config=$2 dir=$3 rc=1
  rm -rf "$dir/data"
  "$bin" cluster --config "$config" --data-dir "$dir/data" > "$dir/cluster.log" 2>&1 &
  cluster_pid=$!
  for _ in $(seq 1 150); do
    rc=0; "$bin" get __cluster_probe --config "$config" >/dev/null 2>&1 || rc=$?
    [ "$rc" -le 1 ] && return 0
    sleep 0.2 # the cluster's start, polled
  done
  echo "the cluster of $bin did not answer" >&2; tail -20 "$dir/cluster.log" >&2; exit 1
}

# wait_quiet BIN CONFIG: waits (up to 240 s) until every node of CONFIG's cluster ran its
# anti-entropy sweep twice (the first settles every key a load wrote at the fast ballot) and
# retired its per-key actors (limits.idle_timeout_ms); says so on stderr if they never do.
wait_quiet() {
  local bin=$1 config=$2
  for _ in $(seq 1 240); do
    "$bin" --config "$config" --json status 2>/dev/null | python3 -c '
import json, sys
live = [json.loads(l) for l in sys.stdin if l.strip()]
sys.exit(0 if len(live) == 5 and all(s["sync_rounds"] >= 2 and s["live_proposers"] + s["live_acceptors"] == 0 for s in live) else 1)' && return 0
    sleep 1 # the sweep's interval, polled
  done
  echo "(the nodes were not quiet after 240 s)" >&2
}
