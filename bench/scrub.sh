#!/usr/bin/env bash
# Deep scrub: its rate with the throttle lifted, and what a throttled deep scrub of the whole
# cluster costs the clients.
#
#   bench/scrub.sh          # Tidepool only (release build, `tidepool up` in a temporary folder)
#
# Writes 4 MiB objects for WRITE_SECONDS (`tidepool bench`, which leaves them) into a size-3
# pool of 32 PGs over OSDS OSDs (failure domain osd).
# 1. Rate: with `osd_scrub_bytes_per_second 0`, deep-scrubs the pool RUNS times, one PG after
#    another as `tidepool pg deep-scrub POOL` does (every holder reads every byte of its copies
#    through their checksums). One JSON line per run: seconds, MiB read per second (the
#    objects' bytes × 3 copies) in all and per OSD.
# 2. Client impact: with the throttle at its default (64 MiB/s per primary), RUNS times: 4 MiB
#    writes and random reads (16 threads, PHASE_SECONDS each) while idle, then the same while
#    every OSD runs scheduled deep scrubs without pause (`osd_deep_scrub_interval 1`, one PG
#    at a time per OSD, `osd_max_scrubs` 1). The clients use a second pool of the same shape
#    on the same OSDs, emptied after each phase, so the scrubbed data stays the same. One JSON
#    line per phase, and the medians of the ratios during ÷ idle.
# Env: RUNS=3 WRITE_SECONDS=10 OSDS=3 PHASE_SECONDS=10 SCRUB_RATE=67108864 (the throttle of
# part 2, `osd_scrub_bytes_per_second`, whose default it is)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
WRITE_SECONDS="${WRITE_SECONDS:-10}"
OSDS="${OSDS:-3}"
PHASE_SECONDS="${PHASE_SECONDS:-10}"
SCRUB_RATE="${SCRUB_RATE:-$((64 << 20))}"
# shellcheck source=bench/cluster.sh
. bench/cluster.sh
DIR="$(mktemp -d /tmp/tidepool-scrub.XXXXXX)"
UP_PID=""
cleanup() {
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

up_cluster "$DIR/cluster" --osds "$OSDS" --mons 1 --osd-size 16G
"$T" pool create scrubbed --size 3 --pg-num 32 --failure-domain osd > /dev/null
wait_clean
log "writing 4 MiB objects for $WRITE_SECONDS s"
"$T" bench scrubbed write --seconds "$WRITE_SECONDS" --threads 16 > /dev/null
log "rate: deep scrubs with the throttle lifted"
"$T" config set osd_scrub_bytes_per_second 0 > /dev/null
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

log "client impact: 4 MiB writes and reads, idle and during throttled deep scrubs"
"$T" config set osd_scrub_bytes_per_second "$SCRUB_RATE" > /dev/null
log "throttle: $SCRUB_RATE bytes per second per primary"
"$T" pool create clients --size 3 --pg-num 32 --failure-domain osd > /dev/null
wait_clean
scrubbing() { "$T" status --format json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(n for k, n in s["pgs"]["by_state"].items() if "scrubbing" in k.split("+")))'; }
phase() { # run label
  for mode in write rand; do
    "$T" bench clients "$mode" --seconds "$PHASE_SECONDS" --threads 16 --format json |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"run": int(sys.argv[1]), "phase": sys.argv[2], "mode": sys.argv[3], "mib_per_second": round(r["mib_per_second"], 1), "p99_ms": round(r["latency_ms"]["p99"], 1)}))' "$1" "$2" "$mode" |
      tee -a "$DIR/impact.jsonl"
  done
  "$T" bench clients cleanup > /dev/null
}
for run in $(seq "$RUNS"); do
  phase "$run" idle
  "$T" config set osd_deep_scrub_interval 1 > /dev/null
  for _ in $(seq 30); do [ "$(scrubbing)" -gt 0 ] && break; sleep 1; done
  before=$("$T" pg ls --format json)
  phase "$run" scrubbing
  after=$("$T" pg ls --format json)
  "$T" config set osd_deep_scrub_interval 604800 > /dev/null
  python3 - "$before" "$after" "$PHASE_SECONDS" <<'PY'
import json, sys
before = {p["pgid"]: p["last_deep_scrub"] for p in json.loads(sys.argv[1])}
after = json.loads(sys.argv[2])
done = [p for p in after if p["last_deep_scrub"] > before.get(p["pgid"], 0)]
print(json.dumps({"deep_scrubbed_pgs": len(done), "their_mib": round(sum(p["bytes"] for p in done) / 2**20)}))
PY
  for _ in $(seq 60); do [ "$(scrubbing)" -eq 0 ] && break; sleep 1; done
done
python3 - "$DIR/impact.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for mode in ("write", "rand"):
    idle = {r["run"]: r["mib_per_second"] for r in rows if r["mode"] == mode and r["phase"] == "idle"}
    busy = {r["run"]: r["mib_per_second"] for r in rows if r["mode"] == mode and r["phase"] == "scrubbing"}
    ratios = [busy[run] / idle[run] for run in sorted(idle) if run in busy]
    print(f"{mode}: idle {statistics.median(idle.values()):.1f} MiB/s, during deep scrubs "
          f"{statistics.median(busy.values()):.1f} MiB/s, ratio per run {[round(x, 2) for x in ratios]}, "
          f"median {statistics.median(ratios):.2f}")
PY
