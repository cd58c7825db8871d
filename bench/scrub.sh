#!/usr/bin/env bash
# Deep scrub: its rate with the throttle lifted, and what a throttled deep scrub of the whole
# cluster costs the clients.
#
#   bench/scrub.sh          # Tidepool only (release build, `tidepool up` in a temporary folder)
#   CEPH=1 bench/scrub.sh   # then Ceph 16.2 from ../shared/bench/ceph/up.sh, once Tidepool stops
#   CEPH=1 TIDEPOOL=0 bench/scrub.sh   # Ceph alone
#
# Writes 4 MiB objects for WRITE_SECONDS (`tidepool bench`, which leaves them) into a size-3
# pool of 32 PGs over OSDS OSDs (failure domain osd).
# 1. Rate: with `osd_scrub_bytes_per_second 0`, deep-scrubs the pool RUNS times, one PG after
#    another as `tidepool pg deep-scrub POOL` does (every holder reads every byte of its copies
#    through their checksums). One JSON line per run: seconds, MiB read per second (the
#    objects' bytes × 3 copies) in all and per OSD.
# 2. Client impact: with the throttle at its default (16 MiB/s per primary), RUNS times: 4 MiB
#    writes and random reads (16 threads, PHASE_SECONDS each) while idle, then the same while
#    every OSD runs scheduled deep scrubs without pause (`osd_deep_scrub_interval 1`, one PG
#    at a time per OSD, `osd_max_scrubs` 1). The clients use a second pool of the same shape
#    on the same OSDs, emptied after each phase, so the scrubbed data stays the same. One JSON
#    line per phase, and the medians of the ratios during ÷ idle.
# Ceph does the same on the same machine: `ceph pg deep-scrub` of every PG of the pool, timed
# until every PG's deep-scrub stamp moved; then `rados bench` writes and random reads, idle
# and while every PG is asked to deep-scrub again and again (Ceph's defaults: one scrub per
# OSD at a time, `osd_scrub_sleep` 0).
# Env: RUNS=3 WRITE_SECONDS=10 OSDS=3 PHASE_SECONDS=10 SCRUB_RATE=16777216 (the throttle of
# part 2, `osd_scrub_bytes_per_second`, whose default it is) CEPH=0 TIDEPOOL=1
# CEPH_DIR=/tmp/cephanchor
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
WRITE_SECONDS="${WRITE_SECONDS:-10}"
OSDS="${OSDS:-3}"
PHASE_SECONDS="${PHASE_SECONDS:-10}"
SCRUB_RATE="${SCRUB_RATE:-$((16 << 20))}"
CEPH="${CEPH:-0}"
CEPH_DIR="${CEPH_DIR:-/tmp/cephanchor}"
SHARED="$(cd .. && pwd)/shared/bench"
# shellcheck source=bench/cluster.sh
. bench/cluster.sh
DIR="$(mktemp -d /tmp/tidepool-scrub.XXXXXX)"

# The medians of a phase file's throughputs, idle and while scrubbing, and of their ratios.
summary() { # file
  python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
system = rows[0].get("system", "tidepool")
for mode in ("write", "rand"):
    idle = {r["run"]: r["mib_per_second"] for r in rows if r["mode"] == mode and r["phase"] == "idle"}
    busy = {r["run"]: r["mib_per_second"] for r in rows if r["mode"] == mode and r["phase"] == "scrubbing"}
    ratios = [busy[run] / idle[run] for run in sorted(idle) if run in busy and idle[run]]
    print(f"{system} {mode}: idle {statistics.median(idle.values()):.1f} MiB/s, during deep scrubs "
          f"{statistics.median(busy.values()):.1f} MiB/s, ratio per run {[round(x, 2) for x in ratios]}, "
          f"median {statistics.median(ratios):.2f}")
PY
}

if [ "${TIDEPOOL:-1}" = 1 ]; then
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
summary "$DIR/impact.jsonl"
fi

[ "$CEPH" = 1 ] || exit 0
# Ceph, on the same machine once Tidepool is stopped: the same pools, data and phases.
kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
UP_PID=""
log "starting Ceph with $OSDS OSDs in $CEPH_DIR"
NUM_OSDS="$OSDS" OSD_SIZE_GB=16 RGW_PORT="$(free_port)" FRESH=1 "$SHARED/ceph/up.sh" "$CEPH_DIR" \
  > "$DIR/ceph-up.log" 2>&1 || { tail -20 "$DIR/ceph-up.log"; exit 1; }
C=(ceph -c "$CEPH_DIR/ceph.conf")
for pool in scrubbed clients; do
  "${C[@]}" osd pool create "$pool" 32 32 replicated > /dev/null 2>&1
  "${C[@]}" osd pool set "$pool" size 3 > /dev/null 2>&1
done
ceph_clean() {
  for _ in $(seq 180); do
    "${C[@]}" pg stat 2>/dev/null | grep -q 'active+clean;' &&
      ! "${C[@]}" pg stat | grep -qE 'peering|creating|unknown|scrubbing' && return
    sleep 1
  done
}
ceph_clean
# The deep-scrub stamps of a pool's PGs, as JSON {pgid: stamp}.
stamps() { # pool
  "${C[@]}" pg ls-by-pool "$1" --format json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
pgs = d["pg_stats"] if isinstance(d, dict) else d
print(json.dumps({p["pgid"]: p["last_deep_scrub_stamp"] for p in pgs}))'
}
# Deep-scrubs every PG of a pool as an operator asks it, and waits until each has a newer stamp.
ceph_deep_scrub_pool() { # pool
  local before
  before="$(stamps "$1")"
  for pg in $(python3 -c 'import json,sys; print(" ".join(json.loads(sys.argv[1])))' "$before"); do
    "${C[@]}" pg deep-scrub "$pg" > /dev/null 2>&1
  done
  for _ in $(seq 1200); do
    python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.exit(0 if all(b[p] != a[p] for p in a) else 1)' "$before" "$(stamps "$1")" && return
    sleep 0.5
  done
  log "ceph: not every PG of $1 was deep-scrubbed within 600 s"
}
RADOS=(rados -c "$CEPH_DIR/ceph.conf" -p scrubbed)
log "ceph: writing 4 MiB objects for $WRITE_SECONDS s"
"${RADOS[@]}" bench "$WRITE_SECONDS" write -b 4194304 -t 16 --no-cleanup > /dev/null 2>&1
ceph_objects=$("${C[@]}" df --format json | python3 -c '
import json, sys
print(next(p["stats"]["objects"] for p in json.load(sys.stdin)["pools"] if p["name"] == "scrubbed"))')
log "ceph rate: ceph pg deep-scrub of every PG of the pool ($ceph_objects objects)"
for run in $(seq "$RUNS"); do
  started=$(date +%s.%N)
  ceph_deep_scrub_pool scrubbed
  ended=$(date +%s.%N)
  python3 -c '
import json, sys
s, e, osds, run, objects = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
read = objects * 4 * 3
print(json.dumps({"system": "ceph", "run": run, "seconds": round(e - s, 2), "objects": objects,
                  "mib_read_per_second": round(read / (e - s), 1), "mib_per_second_per_osd": round(read / (e - s) / osds, 1)}))' \
    "$started" "$ended" "$OSDS" "$run" "$ceph_objects"
done

log "ceph client impact: rados bench 4 MiB writes and reads, idle and during deep scrubs"
RADOS=(rados -c "$CEPH_DIR/ceph.conf" -p clients)
ceph_phase() { # run label
  local out size
  for mode in write rand; do
    size=()
    [ "$mode" = write ] && size=(-b 4194304)
    out="$("${RADOS[@]}" bench "$PHASE_SECONDS" "$mode" -t 16 "${size[@]}" --no-cleanup 2>&1)"
    python3 -c 'import json,sys; print(json.dumps({"system": "ceph", "run": int(sys.argv[1]), "phase": sys.argv[2], "mode": sys.argv[3], "mib_per_second": float(sys.argv[4] or 0)}))' \
      "$1" "$2" "$mode" "$(awk -F: '/^Bandwidth \(MB\/sec\)/ {gsub(/ /,"",$2); print $2}' <<<"$out")" |
      tee -a "$DIR/impact-ceph.jsonl"
  done
  "${RADOS[@]}" cleanup > /dev/null 2>&1
}
for run in $(seq "$RUNS"); do
  ceph_phase "$run" idle
  # Deep scrubs of every PG, asked again and again while the clients run.
  ( while :; do
      for pg in $(stamps scrubbed | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)))'); do
        "${C[@]}" pg deep-scrub "$pg" > /dev/null 2>&1
      done
      sleep 5
    done ) &
  SCRUBBER=$!
  for _ in $(seq 30); do "${C[@]}" pg stat 2>/dev/null | grep -q scrubbing && break; sleep 1; done
  ceph_phase "$run" scrubbing
  kill "$SCRUBBER" 2>/dev/null; wait "$SCRUBBER" 2>/dev/null || true
  ceph_clean
done
summary "$DIR/impact-ceph.jsonl"
