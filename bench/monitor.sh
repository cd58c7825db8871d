#!/usr/bin/env bash
# Monitor benchmarks on loopback, 3 monitors, release build, fsync on every commit:
#  1. commit latency of map changes, one at a time from one client (`tidepool mon bench`);
#  2. failover: time from `kill -9` of the leader to the next committed change, measured by a
#     fresh admin process (so it includes that process's start and its search for the leader).
# RUNS=N repeats each (default 3). Stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
runs="${RUNS:-3}"
cargo build -q --release -p tidepool
tp="$CARGO_TARGET_DIR/release/tidepool"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$tp" cluster init "$work/c" --mons 3 >/dev/null
start() { "$tp" mon --id "$1" --data "$work/c" >"$work/mon-$1.log" 2>&1 & pids[$1]=$!; disown "$!"; }
for rank in 0 1 2; do start "$rank"; done
leader() { "$tp" mon dump --cluster "$work/c" --format json | python3 -c 'import json,sys; print(next((m["leader"] for m in json.load(sys.stdin)["mons"] if m["leader"] is not None), ""))'; }
until [ -n "$(leader)" ]; do sleep 0.2; done

echo "commit latency (one change at a time, one client):"
for run in $(seq "$runs"); do
  "$tp" mon bench --changes "${CHANGES:-500}" --cluster "$work/c"
done

echo "failover (kill -9 the leader, then one change from a new admin process):"
for run in $(seq "$runs"); do
  old=$(leader)
  kill -9 "${pids[$old]}"
  start_ns=$(date +%s%N)
  "$tp" pool create "failover-$run" --pg-num 8 --cluster "$work/c" >/dev/null
  end_ns=$(date +%s%N)
  awk -v a="$start_ns" -v b="$end_ns" -v o="$old" 'BEGIN {printf "  killed mon.%d: next change committed after %.2f s\n", o, (b - a) / 1e9}'
  start "$old"
  sleep 3
done
