#!/usr/bin/env bash
# S3 throughput of Tidepool's gateway beside Ceph's radosgw (and Garage, when GARAGE_ENDPOINT
# is set), in one run: bench/s3load.py PUT then GET of 4 MiB and of 4 KiB objects, 16 in flight,
# RUNS times per system, alternating systems so that both see the same machine.
#
#   bench/s3.sh                 # Tidepool (release build, `tidepool up` in a temporary folder)
#   CEPH=1 bench/s3.sh          # and radosgw, from ../shared/bench/ceph/up.sh (Debian's Ceph 16.2)
#
# With Garage (built by `cargo install garage --no-default-features --features lmdb,bundled-libs
# --root /tmp/garage-build/install`, started with the region this load generator signs for):
#   S3_REGION=us-east-1 ../shared/bench/garage/up.sh /tmp/garageanchor
#   . /tmp/garageanchor/s3.env && GARAGE_ENDPOINT="$S3_ENDPOINT" \
#     GARAGE_ACCESS="$AWS_ACCESS_KEY_ID" GARAGE_SECRET="$AWS_SECRET_ACCESS_KEY" CEPH=1 bench/s3.sh
#
# Versioning's cost: VERSIONED=1 runs every load on a bucket with versioning enabled too, and
# VERSIONS=100000 then times ListObjectVersions of a bucket with that many versions
# (bench/versions.py) on each system.
#
# Env: RUNS=3 SECONDS_PER_PHASE=20 TIDEPOOL_PORT=17480 CEPH_DIR=/tmp/cephanchor
#      GARAGE_ENDPOINT, GARAGE_ACCESS, GARAGE_SECRET (a running Garage to compare with)
#      VERSIONED=1, VERSIONS=N
# Prints one JSON line per phase and run; records RSS of the gateway idle and under load.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
SECS="${SECONDS_PER_PHASE:-20}"
PORT="${TIDEPOOL_PORT:-17480}"
SHARED="$(cd .. && pwd)/shared/bench"
PY=.venv/bin/python
scripts/deps.sh
cargo build --release -q -p tidepool
BIN="$CARGO_TARGET_DIR/release/tidepool"

DIR="$(mktemp -d /tmp/tidepool-s3bench.XXXXXX)"
UP_PID=""
cleanup() {
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  [ "${CEPH:-0}" = 1 ] && "$SHARED/ceph/down.sh" "${CEPH_DIR:-/tmp/cephanchor}" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN" up --dir "$DIR/cluster" --s3-port "$PORT" > "$DIR/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do grep -q 'Ctrl-C stops' "$DIR/up.log" && break; sleep 1; done
grep -q 'Ctrl-C stops' "$DIR/up.log" || { cat "$DIR/up.log"; exit 1; }
TP_ACCESS="$(awk '/access key/ {print $3; exit}' "$DIR/up.log")"
TP_SECRET="$(awk '/secret key/ {print $3; exit}' "$DIR/up.log")"
gateway_rss() {
  local pid
  pid="$(pgrep -f "tidepool gateway --cluster $DIR/cluster" | head -1)"
  ps -o rss= -p "$pid" | awk '{printf "%.0f MiB\n", $1/1024}'
}
echo "tidepool gateway RSS idle: $(gateway_rss)" >&2

if [ "${CEPH:-0}" = 1 ]; then
  if ! command -v radosgw >/dev/null; then
    echo "installing Debian's Ceph (mon, osd, mgr, radosgw) for the side-by-side run" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ceph-mon ceph-osd ceph-mgr radosgw ceph-common >/dev/null
  fi
  FRESH=1 "$SHARED/ceph/up.sh" "${CEPH_DIR:-/tmp/cephanchor}" >&2
fi

MODES="plain"
[ "${VERSIONED:-0}" = 1 ] && MODES="plain versioned"
load() { # system endpoint access secret bucket size run mode
  local flags=()
  [ "$8" = versioned ] && flags=(--versioned)
  "$PY" bench/s3load.py --endpoint "$2" --access "$3" --secret "$4" --bucket "$5" \
    --size "$6" --concurrency 16 --seconds "$SECS" "${flags[@]}" | while read -r line; do
    echo "{\"system\":\"$1\",\"run\":$7,\"bucket\":\"$8\",${line#\{}"
  done
  # Deletes in a versioned bucket leave its versions: remove them, or the disk fills up.
  if [ "$8" = versioned ]; then
    (cd bench && "../$PY" versions.py --endpoint "$2" --access "$3" --secret "$4" \
      --bucket "$5" --versions 0 --purge)
  fi
}

for run in $(seq "$RUNS"); do
  for size in 4M 4K; do
   for mode in $MODES; do
    bucket="bench-${size,,}-$mode-r$run"
    load tidepool "http://127.0.0.1:$PORT" "$TP_ACCESS" "$TP_SECRET" "$bucket" "$size" "$run" "$mode"
    [ "$size" = 4M ] && [ "$run" = 1 ] && echo "tidepool gateway RSS after 4 MiB load: $(gateway_rss)" >&2
    if [ "${CEPH:-0}" = 1 ]; then
      load radosgw "http://127.0.0.1:7480" ANCHORACCESSKEY00001 \
        anchorsecretkey0000000000000000000000001 "$bucket" "$size" "$run" "$mode"
    fi
    if [ -n "${GARAGE_ENDPOINT:-}" ]; then
      load garage "$GARAGE_ENDPOINT" "$GARAGE_ACCESS" "$GARAGE_SECRET" "$bucket" "$size" "$run" "$mode"
    fi
   done
  done
done

if [ -n "${VERSIONS:-}" ]; then
  listing() { # system endpoint access secret
    (cd bench && "../$PY" versions.py --endpoint "$2" --access "$3" --secret "$4" \
      --bucket versions-listing --versions "$VERSIONS") | while read -r line; do
      echo "{\"system\":\"$1\",${line#\{}"
    done
  }
  listing tidepool "http://127.0.0.1:$PORT" "$TP_ACCESS" "$TP_SECRET"
  if [ "${CEPH:-0}" = 1 ]; then
    listing radosgw "http://127.0.0.1:7480" ANCHORACCESSKEY00001 \
      anchorsecretkey0000000000000000000000001
  fi
fi
