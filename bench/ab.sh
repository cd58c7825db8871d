#!/usr/bin/env bash
# Two or more builds of `tidepool`, compared on the object path: each round starts every build
# in turn on a fresh `tidepool up --osds 3` cluster and runs 4 MiB writes, 4 MiB reads of what was
# written and 4 KiB writes (`tidepool bench data`, 16 in flight). Per phase it prints the
# throughput (MiB/s for 4 MiB, operations/s for 4 KiB) and the busy CPU of the whole machine
# (client, daemons and kernel, from /proc/stat, idle, IO wait and steal left out) per operation,
# which on this shared machine varies far less than throughput.
#
#   cp "$CARGO_TARGET_DIR/release/tidepool" /tmp/tidepool-before   # build, copy, change, build
#   bench/ab.sh /tmp/tidepool-before "$CARGO_TARGET_DIR/release/tidepool"
#
# Env: ROUNDS=2 SECONDS_PER_PHASE=10 S3_PORT=17481
set -euo pipefail
ROUNDS="${ROUNDS:-2}"
SECS="${SECONDS_PER_PHASE:-10}"
S3_PORT="${S3_PORT:-17481}"
(($#)) || { echo "usage: bench/ab.sh BIN [BIN...]" >&2; exit 2; }

DIR="$(mktemp -d /tmp/tidepool-ab.XXXXXX)"
UP_PID=""
cleanup() {
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# shellcheck source=bench/cpu.sh
. "$(dirname "$0")/cpu.sh"

for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$DIR/cluster"
    "$bin" up --dir "$DIR/cluster" --osds 3 --s3-port "$S3_PORT" > "$DIR/up.log" 2>&1 &
    UP_PID=$!
    for _ in $(seq 120); do grep -qs 'Ctrl-C stops' "$DIR/up.log" && break; sleep 1; done
    grep -q 'Ctrl-C stops' "$DIR/up.log" || { cat "$DIR/up.log"; exit 1; }
    line="round $round $bin:"
    for phase in "write --size 4194304" "read --size 4194304" "write --size 4096"; do
      before="$(busy_ticks)"
      # shellcheck disable=SC2086 # the phase is mode and size, two words
      out="$(TIDEPOOL_CLUSTER="$DIR/cluster" "$bin" bench data $phase --seconds "$SECS" --threads 16 --format json)"
      busy_ms="$(busy_ms_since "$before")"
      line+=" $(python3 -c '
import json, sys
r = json.load(sys.stdin)
ms = int(sys.argv[1]) / r["operations"]
if r["object_size"] > 65536:
    rate = "%.0f MiB/s" % r["mib_per_second"]
else:
    rate = "%.0f ops/s" % r["ops_per_second"]
print("%s %d: %s, %.2f ms CPU/op;" % (r["mode"], r["object_size"], rate, ms))' "$busy_ms" <<<"$out")"
    done
    echo "$line"
    kill -INT "$UP_PID"
    wait "$UP_PID" || true
    UP_PID=""
  done
done
