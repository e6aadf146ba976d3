# Shared by scripts/ab.sh and scripts/profile.sh: sourced. Gives start_cluster BIN CONFIG DIR,
# which starts `BIN cluster` on a fresh data directory DIR/data (its log in DIR/cluster.log),
# sets cluster_pid, and returns once a node answers a read (exits the script if none does
# within 30 s).
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
