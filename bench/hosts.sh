#!/usr/bin/env bash
# Throughput across hosts beside loopback, and how long a host cut off from the network takes
# to be marked down and its PGs to be active again, in one run per repetition:
#   loopback  `tidepool up` (3 monitors, 4 OSDs, a gateway on 127.0.0.1)
#   bridge    tests/hosts/hosts.py: the same daemons on 6 network namespaces joined by a bridge,
#             links of MTU 1500
#   jumbo     the same with MTU 9000 (jumbo frames, as storage networks often have)
#   switch    the same (MTU 9000) on linksim, a switch in user space, with no delay: what the
#             switch costs alone
#   1ms       the same on linksim holding each frame 1 ms on its way (a LAN's latency; the
#             kernel here has no netem)
# Each: `tidepool bench` 4 MiB writes then reads on a pool of size 3, then bench/s3load.py PUT
# and GET of 4 MiB and 4 KiB objects through the gateway, from a client host of its own.
#
#   RUNS=3 SECONDS_PER_PHASE=10 bench/hosts.sh
#
# Prints one JSON line per setup and run. Needs root (namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
RUNS="${RUNS:-3}"
SECS="${SECONDS_PER_PHASE:-10}"
PY=.venv/bin/python
scripts/deps.sh
cargo build --release -q -p tidepool --bin tidepool
cargo build --release -q -p tidepool-tests --bin linksim
BIN="$CARGO_TARGET_DIR/release/tidepool"
export TIDEPOOL="$BIN" LINKSIM="$CARGO_TARGET_DIR/release/linksim" PYTHON="$PY"

DIR="$(mktemp -d /tmp/tidepool-hostsbench.XXXXXX)"
UP_PID=""
cleanup() {
  [ -n "$UP_PID" ] && kill -INT "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

loopback() {
  local port=17481 out="$DIR/loopback.json"
  rm -rf "$DIR/cluster"
  "$BIN" up --dir "$DIR/cluster" --s3-port "$port" > "$DIR/up.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 120); do grep -q 'Ctrl-C stops' "$DIR/up.log" && break; sleep 1; done
  local access secret t=(--cluster "$DIR/cluster")
  access="$(awk '/access key/ {print $3; exit}' "$DIR/up.log")"
  secret="$(awk '/secret key/ {print $3; exit}' "$DIR/up.log")"
  "$BIN" pool create bench --size 3 --pg-num 32 --failure-domain osd "${t[@]}" >/dev/null
  for _ in $(seq 120); do
    "$BIN" status --format json "${t[@]}" | "$PY" -c 'import json,sys; p=json.load(sys.stdin)["pgs"]; sys.exit(p["active_clean"] != p["total"])' && break
    sleep 1
  done
  local write read
  write="$("$BIN" bench bench write --seconds "$SECS" --format json "${t[@]}" | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["mib_per_second"], 1))')"
  read="$("$BIN" bench bench read --seconds "$SECS" --format json "${t[@]}" | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["mib_per_second"], 1))')"
  "$BIN" bench bench cleanup "${t[@]}" >/dev/null
  {
    echo "{\"bench_write_mib_s\": $write, \"bench_read_mib_s\": $read}"
    for size in 4M 4K; do
      "$PY" bench/s3load.py --endpoint "http://127.0.0.1:$port" --access "$access" --secret "$secret" \
        --bucket "load$(echo $size | tr A-Z a-z)" --size "$size" --seconds "$SECS"
    done
  } > "$out"
  kill -INT "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=""
  "$PY" - "$out" <<'PYEOF'
import json, sys
figures = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "phase" not in d:
        figures.update(d)
    elif d["phase"] in ("put", "get"):
        size = {4194304: "4M", 4096: "4K"}.get(d["size"], d["size"])
        figures[f"s3_{d['phase']}_{size}_mib_s"] = d["MiB_s"]
        figures[f"s3_{d['phase']}_{size}_ops_s"] = d["ops_s"]
print(json.dumps(figures))
PYEOF
}

hosts() {
  WORK="$DIR/hosts" python3 tests/hosts/hosts.py bench "$SECS" > "$DIR/hosts.out" 2>&1 \
    || { tail -40 "$DIR/hosts.out" >&2; return 1; }
  tail -1 "$DIR/hosts.out" | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["figures"]))'
}

for run in $(seq "$RUNS"); do
  echo "{\"run\": $run, \"setup\": \"loopback\", \"figures\": $(loopback)}"
  echo "{\"run\": $run, \"setup\": \"bridge\", \"figures\": $(hosts)}"
  echo "{\"run\": $run, \"setup\": \"jumbo\", \"figures\": $(MTU=9000 hosts)}"
  echo "{\"run\": $run, \"setup\": \"switch\", \"figures\": $(MTU=9000 DELAY_US=0 hosts)}"
  echo "{\"run\": $run, \"setup\": \"1ms\", \"figures\": $(MTU=9000 DELAY_US=1000 hosts)}"
done
