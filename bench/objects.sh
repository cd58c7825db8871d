#!/usr/bin/env bash
# Object throughput at the RADOS level: `tidepool bench` beside Ceph's `rados bench`, same
# parameters, in one run, alternating systems so that both see the same machine.
#
#   bench/objects.sh            # Tidepool only (release build, `tidepool up` in a temporary folder)
#   CEPH=1 bench/objects.sh     # and Ceph 16.2 from ../shared/bench/ceph/up.sh (Debian's packages)
#
# Per run and system: 4 MiB writes, 4 MiB sequential reads of what was written (each object
# once, so at most SECONDS_PER_PHASE), 4 KiB writes, each for SECONDS_PER_PHASE seconds with
# THREADS in flight, on a pool of size 3 / min_size 2; both systems write new objects in every
# run and remove them after the reads and after the 4 KiB writes.
# Before the runs: the disk's fsync'd sequential write bandwidth (fio, 4 MiB blocks), whose third
# is the physical limit for three copies on one disk.
# Env: RUNS=3 SECONDS_PER_PHASE=10 THREADS=16 OSDS=3 CEPH=0 CEPH_DIR=/tmp/cephanchor
# Prints one JSON line per phase, run and system, then medians and per-run ratios; records the
# RSS of each OSD process idle and after the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
SECS="${SECONDS_PER_PHASE:-10}"
THREADS="${THREADS:-16}"
OSDS="${OSDS:-3}"
CEPH="${CEPH:-0}"
CEPH_DIR="${CEPH_DIR:-/tmp/cephanchor}"
SHARED="$(cd .. && pwd)/shared/bench"
if ! command -v fio > /dev/null; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq fio > /dev/null
fi
# shellcheck source=bench/cluster.sh
. bench/cluster.sh

DIR="$(mktemp -d /tmp/tidepool-objects.XXXXXX)"
RESULTS="$DIR/results.jsonl"

log "disk: fio 4 MiB sequential writes, fdatasync after each"
fio --name=seqw --filename="$DIR/fio" --rw=write --bs=4M --size=2G --fdatasync=1 \
  --runtime=10 --time_based=0 --output-format=json > "$DIR/fio.json" 2>/dev/null
DISK="$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"]/1048576,1))' "$DIR/fio.json")"
rm -f "$DIR/fio"
echo "{\"system\":\"disk\",\"phase\":\"fio_write_4M_fdatasync\",\"mib_per_second\":$DISK}" | tee -a "$RESULTS"

up_cluster "$DIR/cluster" --osds "$OSDS"
RADOS=(rados -c "$CEPH_DIR/ceph.conf" -p rbench)
# shellcheck source=bench/rados.sh
. bench/rados.sh
log "tidepool OSD RSS idle: $(osd_rss "tidepool osd --data $DIR/cluster")"

if [ "$CEPH" = 1 ]; then
  log "starting Ceph in $CEPH_DIR"
  RGW_PORT="$(free_port)" FRESH=1 "$SHARED/ceph/up.sh" "$CEPH_DIR" > "$DIR/ceph-up.log" 2>&1
  log "ceph OSD RSS idle: $(osd_rss "ceph-osd .*$CEPH_DIR")"
fi
for run in $(seq "$RUNS"); do
  log "run $run: tidepool"
  tidepool_phase "$run" write_4M data write 4194304
  tidepool_phase "$run" read_4M data read 4194304
  "$T" bench data cleanup > /dev/null
  tidepool_phase "$run" write_4K data write 4096
  "$T" bench data cleanup > /dev/null
  if [ "$CEPH" = 1 ]; then
    log "run $run: ceph"
    rados_phase "$run" write_4M write 4194304
    rados_phase "$run" read_4M seq 4194304
    "${RADOS[@]}" cleanup > /dev/null 2>&1 || true
    rados_phase "$run" write_4K write 4096
    "${RADOS[@]}" cleanup > /dev/null 2>&1 || true
  fi
done
log "tidepool OSD RSS after the runs: $(osd_rss "tidepool osd --data $DIR/cluster")"
[ "$CEPH" = 1 ] && log "ceph OSD RSS after the runs: $(osd_rss "ceph-osd .*$CEPH_DIR")"

# Medians per system and phase, and Tidepool ÷ Ceph per run (Ceph's latency is its mean).
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
disk = next(r["mib_per_second"] for r in rows if r["system"] == "disk")
print(f"\ndisk: {disk} MiB/s fsync'd sequential writes; three copies can take {disk/3:.1f} MiB/s")
for phase, key in [("write_4M", "mib_per_second"), ("read_4M", "mib_per_second"), ("write_4K", "ops_per_second")]:
    by = {s: {r["run"]: r[key] for r in rows if r.get("phase") == phase and r["system"] == s} for s in ("tidepool", "ceph")}
    tp = by["tidepool"]
    line = f"{phase:9} tidepool {[round(v,1) for v in tp.values()]} median {statistics.median(tp.values()):.1f}"
    if by["ceph"]:
        ce = by["ceph"]
        ratios = [tp[r] / ce[r] for r in tp if r in ce and ce[r]]
        line += f" | ceph {[round(v,1) for v in ce.values()]} median {statistics.median(ce.values()):.1f}"
        line += f" | ratios {[round(x,2) for x in ratios]} median {statistics.median(ratios):.2f}"
    cpu = {s: [r["cpu_ms_per_op"] for r in rows if r.get("phase") == phase and r["system"] == s] for s in ("tidepool", "ceph")}
    line += " | CPU ms/op " + ", ".join(f"{s} {statistics.median(v):.2f}" for s, v in cpu.items() if v)
    if phase == "write_4M":
        line += f" | {100*statistics.median(tp.values())/(disk/3):.0f} % of disk/3"
    print(line)
EOF
