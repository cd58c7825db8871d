# Sourced by the benchmark scripts that run a local Tidepool cluster: builds the release binary
# (T), and starts `tidepool up` in a session of its own (UP_PID), so that an OSD paused by the
# script never gets the SIGHUP that an orphaned, stopped process group is sent.

scripts/deps.sh
cargo build --release -q -p tidepool
T="$CARGO_TARGET_DIR/release/tidepool"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# On exit: resumes an OSD the script paused (PAUSED), stops the cluster (UP_PID) and, with
# CEPH=1, the Ceph anchor in CEPH_DIR, and removes the script's scratch folder (DIR).
UP_PID=""
PAUSED=""
cleanup() {
  [ -n "$PAUSED" ] && kill -CONT "$PAUSED" 2>/dev/null || true
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  [ "${CEPH:-0}" = 1 ] && "$SHARED/ceph/down.sh" "$CEPH_DIR" --purge >/dev/null 2>&1 || true
  [ -z "${DIR:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts `tidepool up --dir $1` with the rest of the arguments, logging to $1.log, and waits
# until it has greeted; sets UP_PID and TIDEPOOL_CLUSTER.
up_cluster() { # dir up-args...
  local dir="$1"
  shift
  setsid "$T" up --dir "$dir" --s3-port "$(free_port)" "$@" > "$dir.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 120); do grep -qs 'Ctrl-C stops' "$dir.log" && break; sleep 1; done
  grep -q 'Ctrl-C stops' "$dir.log" || { cat "$dir.log"; exit 1; }
  export TIDEPOOL_CLUSTER="$dir"
}

# Waits (up to 120 s) until every PG of the cluster is active+clean.
wait_clean() {
  for _ in $(seq 120); do
    [ "$("$T" status --format json | python3 -c 'import json,sys; p=json.load(sys.stdin)["pgs"]; print(int(p["active_clean"] == p["total"] > 0))')" = 1 ] && return
    sleep 1
  done
}
