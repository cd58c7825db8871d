#!/usr/bin/env bash
# bench/rebalance.sh -- rebalancing: Tidepool beside Ceph, same data, same operation.
#
# For each throttle profile (PROFILES, default "default fast"):
#   Tidepool: `tidepool up --osds 3`, SIZE_MIB of 4 MiB objects in pool `data` (size 3), then
#     1. `osd add` of a fourth OSD with no client load: seconds to all PGs active+clean, data
#        moved against the ideal share (from `osd add --dry-run`), recovery MiB/s;
#     2. `osd out` of that OSD under a client load (4 MiB random reads, 8 in flight, in 2 s
#        rounds): seconds to clean, and client MiB/s during the recovery against the same load
#        idle just before.
#   Ceph (CEPH=1): ../shared/bench/ceph/rebalance.sh add on a fresh 3-OSD Ceph filled with the
#     same amount through radosgw, with PROFILE=default (Ceph's own throttles) and fast. Its
#     timer starts once the new OSD is up and in; Tidepool's is reported both from `osd add`
#     and from the moment `osd add` returns with the OSD up.
# Profiles: default = each system's defaults; fast = throttles lifted (Tidepool:
# osd_max_backfills 8, osd_recovery_max_active 8; Ceph: recovery sleep 0, max_backfills 8,
# recovery_max_active 8).
# Output: one JSON line per run in $WORK/results.jsonl and a table on standard output.
# Env: SIZE_MIB (2048), PROFILES, CEPH (0), RUNS (1), WORK (a new folder under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SIZE_MIB="${SIZE_MIB:-2048}"
PROFILES="${PROFILES:-default fast}"
RUNS="${RUNS:-1}"
CEPH="${CEPH:-0}"
WORK="${WORK:-$(mktemp -d /tmp/tidepool-rebalance.XXXXXX)}"
mkdir -p "$WORK"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
cargo build --release -q -p tidepool
T="$CARGO_TARGET_DIR/release/tidepool"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until every PG is active+clean with nothing degraded or misplaced.
wait_clean() {
  while :; do
    if "$T" status --format json | python3 -c '
import json, sys
s = json.load(sys.stdin)
pgs = s["pgs"]
ok = pgs["active_clean"] == pgs["total"] > 0
ok = ok and s["recovery"]["degraded_ratio"] == 0 and s["recovery"]["misplaced_ratio"] == 0
sys.exit(0 if ok else 1)'; then
      return 0
    fi
    sleep 0.5
  done
}

mibs() { python3 -c 'import json,sys; print(json.load(sys.stdin)["mib_per_second"])'; }

tidepool_run() { # profile run
  local profile="$1" run="$2" dir up_pid port t0 add_s out_s idle during=()
  dir="$WORK/tidepool-$profile-$run"
  port="$(free_port)"
  "$T" up --dir "$dir" --osds 3 --s3-port "$port" > "$dir.up.log" 2>&1 &
  up_pid=$!
  until grep -q "Ctrl-C stops" "$dir.up.log" 2>/dev/null; do
    kill -0 "$up_pid" 2>/dev/null || { cat "$dir.up.log"; return 1; }
    sleep 0.5
  done
  export TIDEPOOL_CLUSTER="$dir"
  if [ "$profile" = fast ]; then
    "$T" config set osd_max_backfills 8 > /dev/null
    "$T" config set osd_recovery_max_active 8 > /dev/null
  fi
  log "tidepool $profile: filling $SIZE_MIB MiB"
  "$T" bench data write --size 4194304 --objects $((SIZE_MIB / 4)) --seconds 100000 --threads 16 --format json > "$dir.fill.json"
  wait_clean
  sleep 3
  "$T" osd add --data "$dir/osd-3" --dry-run --format json > "$dir.preview.json"
  "$T" status --format json > "$dir.before.json"
  log "tidepool $profile: osd add"
  t0="$(now)"
  "$T" osd add --data "$dir/osd-3" --format json > /dev/null
  t_up="$(now)"
  wait_clean
  add_s="$(python3 -c "print($(now) - $t0)")"
  up_s="$(python3 -c "print($(now) - $t_up)")"
  "$T" osd df --format json > "$dir.df-after-add.json"
  idle="$("$T" bench data rand --seconds 10 --threads 8 --format json | mibs)"
  log "tidepool $profile: osd out 3 under client load"
  t0="$(now)"
  "$T" osd out 3 > /dev/null
  while :; do
    during+=("$("$T" bench data rand --seconds 2 --threads 8 --format json | mibs)")
    if "$T" status --format json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["pgs"]["active_clean"] == s["pgs"]["total"] and s["recovery"]["misplaced_ratio"] == 0 else 1)'; then
      break
    fi
  done
  wait_clean
  out_s="$(python3 -c "print($(now) - $t0)")"
  python3 - "$dir" "$profile" "$run" "$add_s" "$up_s" "$out_s" "$idle" "${during[@]}" >> "$RESULTS" <<'EOF'
import json, statistics, sys
d, profile, run, add_s, up_s, out_s, idle = sys.argv[1:8]
during = [float(x) for x in sys.argv[8:]]
preview = json.load(open(d + ".preview.json"))
before = json.load(open(d + ".before.json"))
raw = before["data"]["stored_bytes"] * 3
print(json.dumps({
    "system": "tidepool", "profile": profile, "run": int(run), "op": "add",
    "seconds_to_clean": float(add_s),
    "seconds_to_clean_after_up": float(up_s),
    "moved_bytes": preview["bytes"], "raw_bytes": raw,
    "moved_fraction": preview["bytes"] / raw if raw else 0, "ideal_fraction": 0.25,
    "recovery_mib_s": preview["bytes"] / float(add_s) / 2**20,
    "out_seconds_to_clean": float(out_s),
    "client_idle_mib_s": float(idle),
    "client_during_recovery_mib_s": statistics.median(during) if during else None,
    "client_fraction": (statistics.median(during) / float(idle)) if during else None,
}))
EOF
  kill -INT "$up_pid"
  wait "$up_pid" || true
  unset TIDEPOOL_CLUSTER
  # Keep the logs, not the data (a run writes SIZE_MIB × 3 copies, and more while it moves).
  mv "$dir/logs" "$dir.logs" 2>/dev/null || true
  rm -rf "$dir"
}

ceph_run() { # profile run
  local profile="$1" run="$2" dir="$WORK/ceph-$profile-$run" bench="$ROOT/../shared/bench/ceph"
  log "ceph $profile: fresh cluster, fill $SIZE_MIB MiB"
  FRESH=1 "$bench/up.sh" "$dir" > "$dir.up.log" 2>&1
  "$bench/rebalance.sh" "$dir" fill "${SIZE_MIB}M" > "$dir.fill.log" 2>&1
  log "ceph $profile: osd add"
  RESULTS_DIR="$dir/add" PROFILE="$profile" SETTLE_S=0 "$bench/rebalance.sh" "$dir" add > "$dir.add.log" 2>&1
  python3 - "$dir" "$profile" "$run" >> "$RESULTS" <<'EOF'
import json, re, sys
d, profile, run = sys.argv[1:4]
text = open(d + "/add/analysis.txt").read()
secs = re.search(r"seconds from trigger to all PGs active\+clean: ([0-9.]+)", text)
moved = re.search(r"= ([0-9.]+)% of raw", text)
gib = re.search(r"placement moved \(PG-stat estimate\): ([0-9.]+) GiB", text)
rate = float(gib.group(1)) * 1024 / float(secs.group(1)) if gib and secs else None
print(json.dumps({"system": "ceph", "profile": profile, "run": int(run), "op": "add",
                  "seconds_to_clean_after_up": float(secs.group(1)) if secs else None,
                  "moved_fraction": float(moved.group(1)) / 100 if moved else None,
                  "recovery_mib_s": rate,
                  "analysis": text[-1500:]}))
EOF
  "$bench/down.sh" "$dir" --purge > /dev/null 2>&1 || true
}

for ((run = 1; run <= RUNS; run++)); do
  for profile in $PROFILES; do
    tidepool_run "$profile" "$run"
    if [ "$CEPH" = 1 ]; then ceph_run "$profile" "$run"; fi
  done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
print("| system | profile | runs | s from `osd add` to clean | s from up to clean | moved / raw | recovery MiB/s | client during recovery / idle |")
print("|---|---|---|---|---|---|---|---|")
for system in ("tidepool", "ceph"):
    for profile in ("default", "fast"):
        rs = [r for r in rows if r["system"] == system and r["profile"] == profile]
        if not rs:
            continue
        secs = med([r.get("seconds_to_clean") for r in rs])
        after_up = med([r.get("seconds_to_clean_after_up") for r in rs])
        moved = med([r.get("moved_fraction") for r in rs])
        rate = med([r.get("recovery_mib_s") for r in rs])
        frac = med([r.get("client_fraction") for r in rs])
        fmt = lambda v, f: "-" if v is None else f.format(v)
        print(f"| {system} | {profile} | {len(rs)} | {fmt(secs, '{:.1f}')} | {fmt(after_up, '{:.1f}')} | {fmt(moved, '{:.1%}')} | {fmt(rate, '{:.0f}')} | {fmt(frac, '{:.0%}')} |")
EOF
echo "raw results: $RESULTS" >&2
