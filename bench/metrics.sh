#!/usr/bin/env bash
# The cost of metrics on the hot path, and how fast the dashboard shows a dead OSD.
#
# 1. On one `tidepool up` cluster (release build), RUNS rounds of: `tidepool bench` 4 KiB
#    writes (16 in flight) and S3 4 KiB PUTs (bench/s3load.py, 16 in flight), each once with
#    every daemon's /metrics scraped every second and once without scraping (the order
#    alternates between rounds). The daemons always count; what scraping adds is the cost of
#    gathering and encoding the registry once a second.
# 2. The dashboard: the seconds from an OSD's death (kill -9; `tidepool up` marks an OSD
#    whose process exited down at once, then restarts it) to the dashboard's event stream
#    saying it is down, and the same for an OSD stopped with SIGSTOP (a hung process: only
#    its peers' missed heartbeats tell, after osd_heartbeat_grace); DASHBOARD_RUNS times each.
#
#   bench/metrics.sh        # RUNS=3 SECONDS_PER_PHASE=15 DASHBOARD_RUNS=3 (RUNS=0: the dashboard only)
# Prints one JSON line per step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
SECS="${SECONDS_PER_PHASE:-15}"
DASHBOARD_RUNS="${DASHBOARD_RUNS:-3}"
PORT="${TIDEPOOL_PORT:-17490}"
PY=.venv/bin/python
cargo build --release -q --bin tidepool
BIN="$CARGO_TARGET_DIR/release/tidepool"

DIR="$(mktemp -d /tmp/tidepool-metricsbench.XXXXXX)"
UP_PID=""
SCRAPER=""
STOPPED=""
cleanup() {
  [ -n "$STOPPED" ] && kill -CONT "$STOPPED" 2>/dev/null || true
  [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN" up --dir "$DIR/cluster" --s3-port "$PORT" > "$DIR/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do grep -q 'Ctrl-C stops' "$DIR/up.log" && break; sleep 1; done
grep -q 'Ctrl-C stops' "$DIR/up.log" || { cat "$DIR/up.log"; exit 1; }
ACCESS="$(awk '/access key/ {print $3; exit}' "$DIR/up.log")"
SECRET="$(awk '/secret key/ {print $3; exit}' "$DIR/up.log")"
export TIDEPOOL_CLUSTER="$DIR/cluster"
ENDPOINTS="$("$BIN" status --format json | "$PY" -c 'import json,sys; print(" ".join(json.load(sys.stdin)["metrics"].values()))')"

# One process fetches every endpoint once a second (as one Prometheus would), so that the
# scraper's own CPU is small beside the daemons' encoding of their registries.
scrape_every_second() {
  exec "$PY" -c '
import sys, time, urllib.request
urls = sys.argv[1:]
while True:
    start = time.time()
    for url in urls:
        try:
            urllib.request.urlopen(url, timeout=5).read()
        except Exception:
            pass
    time.sleep(max(0.0, 1.0 - (time.time() - start)))
' $ENDPOINTS
}

phase() { # scraped run
  if [ "$1" = on ]; then scrape_every_second & SCRAPER=$!; fi
  local ops
  ops="$("$BIN" bench data write --seconds "$SECS" --size 4096 --threads 16 --format json |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ops_per_second"])')"
  echo "{\"step\":\"tidepool bench 4 KiB writes\",\"scraped\":\"$1\",\"run\":$2,\"ops_per_s\":$ops}"
  "$BIN" bench data cleanup > /dev/null
  "$PY" bench/s3load.py --endpoint "http://127.0.0.1:$PORT" --access "$ACCESS" --secret "$SECRET" \
    --bucket "metrics-$1-$2" --size 4K --concurrency 16 --seconds "$SECS" | grep '"put"' |
    while read -r line; do echo "{\"step\":\"S3 4 KiB PUT\",\"scraped\":\"$1\",\"run\":$2,${line#\{}"; done
  if [ -n "$SCRAPER" ]; then kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; fi
}

for run in $(seq "$RUNS"); do
  if [ $((run % 2)) = 1 ]; then order="off on"; else order="on off"; fi
  for scraped in $order; do phase "$scraped" "$run"; done
done

# The dashboard: log in, follow the event stream, kill or stop osd.3, time until it says so.
DASH="$(cat "$DIR/cluster/run/dashboard")"
curl -s -c "$DIR/jar" -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"access_key\":\"$ACCESS\",\"secret_key\":\"$SECRET\"}" "${DASH}api/login"
wait_down() { # how: prints the seconds until the stream shows fewer than 4 OSDs up
  local start end
  start="$(date +%s.%N)"
  if [ "$1" = kill ]; then
    kill -9 "$osd_pid"
  else
    kill -STOP "$osd_pid"; STOPPED="$osd_pid"
  fi
  timeout 120 curl -s -N -b "$DIR/jar" "${DASH}api/stream" | "$PY" -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data: "):
        state = json.loads(line[6:])
        if state.get("status", {}).get("osds", {}).get("up", 4) < 4:
            break
' || true
  end="$(date +%s.%N)"
  echo "$end - $start" | bc
}
wait_healthy() {
  for _ in $(seq 90); do
    [ "$("$BIN" status --format json | "$PY" -c 'import json,sys; s=json.load(sys.stdin); print(s["health"]["status"], s["osds"]["up"])')" = "HEALTH_OK 4" ] && return
    sleep 1
  done
}
for how in kill stop; do
  for run in $(seq "$DASHBOARD_RUNS"); do
    osd_pid="$(pgrep -f "osd --data $DIR/cluster/osd-3" | head -1)"
    seconds="$(wait_down "$how")"
    echo "{\"step\":\"dashboard shows an OSD down\",\"how\":\"$how\",\"run\":$run,\"seconds\":$seconds}"
    if [ "$how" = stop ]; then kill -CONT "$osd_pid"; STOPPED=""; fi
    wait_healthy
  done
done
