#!/usr/bin/env bash
# Deep scrub rate: how fast `tidepool pg deep-scrub` reads and checks a pool's data (every
# holder reads every byte of its copies through their checksums), with nothing else running.
#
#   bench/scrub.sh          # Tidepool only (release build, `tidepool up` in a temporary folder)
#
# Writes 4 MiB objects for WRITE_SECONDS (`tidepool bench`, which leaves them) into a size-3
# pool of 32 PGs over OSDS OSDs (failure domain osd), then deep-scrubs the pool RUNS times, one
# PG after another as `tidepool pg deep-scrub POOL` does. Prints one JSON line per run: seconds,
# MiB read per second (the objects' bytes × 3 copies) in all and per OSD.
# Env: RUNS=3 WRITE_SECONDS=10 OSDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
WRITE_SECONDS="${WRITE_SECONDS:-10}"
OSDS="${OSDS:-3}"
# shellcheck source=bench/cluster.sh
. bench/cluster.sh
DIR="$(mktemp -d /tmp/tidepool-scrub.XXXXXX)"
UP_PID=""
cleanup() {
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

up_cluster "$DIR/cluster" --osds "$OSDS" --mons 1 --osd-size 8G
"$T" pool create scrubbed --size 3 --pg-num 32 --failure-domain osd > /dev/null
wait_clean
log "writing 4 MiB objects for $WRITE_SECONDS s"
"$T" bench scrubbed write --seconds "$WRITE_SECONDS" --threads 16 > /dev/null
for run in $(seq "$RUNS"); do
  started=$(date +%s.%N)
  "$T" pg deep-scrub scrubbed --format json > "$DIR/report.json"
  ended=$(date +%s.%N)
  python3 - "$started" "$ended" "$OSDS" "$run" "$DIR/report.json" <<'PY'
import json, sys
started, ended, osds, run, path = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
reports = json.load(open(path))
mib = sum(r["objects"] for r in reports) * 4  # every object is 4 MiB
bad = sum(len(r["inconsistencies"]) for r in reports)
seconds = ended - started
read = mib * 3
print(json.dumps({"run": run, "seconds": round(seconds, 2), "objects": sum(r["objects"] for r in reports),
                  "inconsistencies": bad, "mib_read_per_second": round(read / seconds, 1),
                  "mib_per_second_per_osd": round(read / seconds / osds, 1)}))
PY
done
