#!/usr/bin/env bash
# Erasure pools at the RADOS level: Tidepool's 4+2 beside its own size 3, and beside Ceph's
# 4+2 (`rados bench`), in one run, alternating systems so that both see the same machine.
#
#   bench/erasure.sh            # Tidepool only (release build, `tidepool up` in a temporary folder)
#   CEPH=1 bench/erasure.sh     # and Ceph 16.2 from ../shared/bench/ceph/up.sh (Debian's packages)
#
# Six OSDs per system, failure domain osd. Per run: on Tidepool, 4 MiB writes and reads of
# each object once on `ec42` (4+2), the same reads with one OSD paused (SIGSTOP, until the
# monitors mark it down: the reads decode), then 4 MiB writes and reads on `rep3` (size 3); on
# Ceph, 4 MiB writes and reads on a 4+2 pool (k=4 m=2, crush-failure-domain=osd), and the
# same degraded read (the paused OSD marked down with `ceph osd down`, as peers on other
# hosts would mark it). THREADS in flight, SECONDS_PER_PHASE each.
# Env: RUNS=3 SECONDS_PER_PHASE=10 THREADS=16 CEPH=0 CEPH_DIR=/tmp/cephanchor
# Prints a JSON line per phase, run and system, then medians and per-run ratios, raw bytes per
# stored byte of each 4+2 pool, and the OSDs' RSS idle and after the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
SECS="${SECONDS_PER_PHASE:-10}"
THREADS="${THREADS:-16}"
CEPH="${CEPH:-0}"
CEPH_DIR="${CEPH_DIR:-/tmp/cephanchor}"
SHARED="$(cd .. && pwd)/shared/bench"
# shellcheck source=bench/cluster.sh
. bench/cluster.sh
DIR="$(mktemp -d /tmp/tidepool-erasure.XXXXXX)"
RESULTS="$DIR/results.jsonl"

up_cluster "$DIR/cluster" --osds 6 --mons 1 --osd-size 4G
"$T" pool create ec42 --erasure 4+2 --pg-num 32 --failure-domain osd > /dev/null
"$T" pool create rep3 --size 3 --pg-num 32 --failure-domain osd > /dev/null
wait_clean
RADOS=(rados -c "$CEPH_DIR/ceph.conf" -p ecbench)
# shellcheck source=bench/rados.sh
. bench/rados.sh
log "tidepool OSD RSS idle: $(osd_rss "tidepool osd --data $DIR/cluster")"

if [ "$CEPH" = 1 ]; then
  log "starting Ceph with six OSDs in $CEPH_DIR"
  NUM_OSDS=6 OSD_SIZE_GB=8 RGW_PORT="$(free_port)" FRESH=1 "$SHARED/ceph/up.sh" "$CEPH_DIR" \
    > "$DIR/ceph-up.log" 2>&1 || { tail -20 "$DIR/ceph-up.log"; exit 1; }
  C=(ceph -c "$CEPH_DIR/ceph.conf")
  "${C[@]}" osd erasure-code-profile set ec42 k=4 m=2 crush-failure-domain=osd > /dev/null
  "${C[@]}" osd pool create ecbench 32 32 erasure ec42 > /dev/null 2>&1
  "${C[@]}" osd set noout > /dev/null 2>&1
  for _ in $(seq 120); do
    "${C[@]}" pg stat 2>/dev/null | grep -q 'active+clean;' && ! "${C[@]}" pg stat | grep -qE 'peering|creating|unknown' && break
    sleep 1
  done
  log "ceph OSD RSS idle: $(osd_rss "ceph-osd .*$CEPH_DIR")"
fi
# Whether the map has some OSD down / every OSD up.
tidepool_some_down() {
  "$T" osd dump --format json | python3 -c '
import json, sys
sys.exit(0 if any(not o["up"] for o in json.load(sys.stdin)["osds"].values()) else 1)'
}
tidepool_all_up() {
  "$T" osd dump --format json | python3 -c '
import json, sys
sys.exit(0 if all(o["up"] for o in json.load(sys.stdin)["osds"].values()) else 1)'
}
# On one host Ceph's peers never report an OSD down (their reports count as one host): mark
# osd.2 down, as its peers on other hosts would; paused, it cannot say otherwise.
ceph_osd2_down() {
  "${C[@]}" osd down 2 > /dev/null 2>&1
  "${C[@]}" osd dump 2>/dev/null | grep -q '^osd.2 down'
}
ceph_osd2_up() { "${C[@]}" osd dump 2>/dev/null | grep -q '^osd.2 up'; }

for run in $(seq "$RUNS"); do
  log "run $run: tidepool"
  used0="$("$T" status --format json | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["used_bytes"], d["stored_bytes"])')"
  tidepool_phase "$run" ec_write_4M ec42 write 4194304
  used1="$("$T" status --format json | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["used_bytes"], d["stored_bytes"])')"
  echo "{\"system\":\"tidepool\",\"run\":$run,\"phase\":\"ec_used\",\"before\":\"$used0\",\"after\":\"$used1\"}" >> "$RESULTS"
  tidepool_phase "$run" ec_read_4M ec42 read 4194304
  while_paused "$(pgrep -f "tidepool osd --data $DIR/cluster/osd-2" | head -1)" \
    tidepool_some_down tidepool_all_up \
    tidepool_phase "$run" ec_degraded_read_4M ec42 read 4194304
  "$T" bench ec42 cleanup > /dev/null
  tidepool_phase "$run" rep_write_4M rep3 write 4194304
  tidepool_phase "$run" rep_read_4M rep3 read 4194304
  "$T" bench rep3 cleanup > /dev/null
  if [ "$CEPH" = 1 ]; then
    log "run $run: ceph"
    rados_phase "$run" ec_write_4M write 4194304
    sleep 5
    "${C[@]}" df --format json > "$DIR/ceph-df-$run.json"
    rados_phase "$run" ec_read_4M seq 4194304
    while_paused "$(cat "$CEPH_DIR/run/osd.2.pid")" ceph_osd2_down ceph_osd2_up \
      rados_phase "$run" ec_degraded_read_4M seq 4194304
    "${RADOS[@]}" cleanup > /dev/null 2>&1 || true
  fi
done
log "tidepool OSD RSS after the runs: $(osd_rss "tidepool osd --data $DIR/cluster")"
[ "$CEPH" = 1 ] && log "ceph OSD RSS after the runs: $(osd_rss "ceph-osd .*$CEPH_DIR")"

python3 - "$RESULTS" "$DIR" "$CEPH" <<'EOF'
import glob, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def series(system, phase):
    return {r["run"]: r["mib_per_second"] for r in rows if r["system"] == system and r.get("phase") == phase}
med = lambda d: statistics.median(d.values()) if d else float("nan")
def show(name, d):
    return f"{name} {[round(v, 1) for v in d.values()]} median {med(d):.1f}"
for phase in ("ec_write_4M", "ec_read_4M", "ec_degraded_read_4M", "rep_write_4M", "rep_read_4M"):
    tp, ce = series("tidepool", phase), series("ceph", phase)
    line = f"{phase:20} " + show("tidepool", tp)
    if ce:
        ratios = [tp[r] / ce[r] for r in tp if ce.get(r)]
        line += " | " + show("ceph", ce) + f" | ratios {[round(x, 2) for x in ratios]} median {statistics.median(ratios):.2f}"
    cpu = [r["cpu_ms_per_op"] for r in rows if r["system"] == "tidepool" and r.get("phase") == phase]
    cpu_c = [r["cpu_ms_per_op"] for r in rows if r["system"] == "ceph" and r.get("phase") == phase]
    line += f" | CPU ms/op tidepool {statistics.median(cpu):.1f}" + (f", ceph {statistics.median(cpu_c):.1f}" if cpu_c else "")
    print(line)
tp = lambda p: series("tidepool", p)
ratios = [tp("ec_write_4M")[r] / tp("rep_write_4M")[r] for r in tp("ec_write_4M") if tp("rep_write_4M").get(r)]
print(f"4+2 writes ÷ size-3 writes (Tidepool, per run): {[round(x, 2) for x in ratios]} median {statistics.median(ratios):.2f}")
deg = [tp("ec_degraded_read_4M")[r] / tp("ec_read_4M")[r] for r in tp("ec_read_4M") if tp("ec_degraded_read_4M").get(r)]
print(f"degraded ÷ healthy reads (Tidepool, per run): {[round(x, 2) for x in deg]} median {statistics.median(deg):.2f}")
for r in rows:
    if r.get("phase") == "ec_used":
        (u0, s0), (u1, s1) = [tuple(map(int, x.split())) for x in (r["before"], r["after"])]
        print(f"tidepool run {r['run']}: raw ÷ stored of the 4+2 writes {(u1 - u0) / max(s1 - s0, 1):.3f} (ideal 1.5; raw counts RocksDB too)")
for path in sorted(glob.glob(sys.argv[2] + "/ceph-df-*.json")):
    d = json.load(open(path))
    for p in d["pools"]:
        if p["name"] == "ecbench":
            st = p["stats"]
            print(f"ceph {path.rsplit('-', 1)[1][:-5]}: raw ÷ stored {st['bytes_used'] / max(st['stored'], 1):.3f}")
EOF
