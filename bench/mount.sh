#!/usr/bin/env bash
# `tidepool mount` beside s3fs and `rclone mount`, all three on one bucket of one `tidepool up`
# cluster (s3fs and rclone through Tidepool's own S3 gateway), and the local disk as the limit.
# Each system works in a folder of its own; one run, systems one after another.
#
#   bench/mount.sh                  # 2 GiB file, 1 GiB random-write file, 10,000 small files
#   SIZE_MIB=256 FILES=1000 bench/mount.sh      # a quick look
#
# Per system: write then read one SIZE_MIB file (dd, 1 MiB blocks, fsync before close; the
# page cache dropped before the read), the mount process's peak RSS during that write; random
# 4 KiB writes (RANDOM_OPS of them, then close) into a RANDOM_MIB file, in ops/s counting the
# close; extracting a tarball of FILES small files (1-8 KiB, 100 folders), `ls -lR` and `stat`
# of them, and deleting them. Every step is bounded by STEP_SECONDS (reported as a timeout).
# rclone (with --vfs-cache-mode writes, which random writes need) uploads after the close: its
# write, random-write and extract times run until the bucket holds what was written.
# Env: SIZE_MIB=2048 RANDOM_MIB=1024 RANDOM_OPS=2000 FILES=10000 STEP_SECONDS=900
#      SYSTEMS="local tidepool s3fs rclone"
# Prints one JSON line per system and step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
SIZE_MIB="${SIZE_MIB:-2048}"
RANDOM_MIB="${RANDOM_MIB:-1024}"
RANDOM_OPS="${RANDOM_OPS:-2000}"
FILES="${FILES:-10000}"
STEP_SECONDS="${STEP_SECONDS:-900}"
SYSTEMS="${SYSTEMS:-local tidepool s3fs rclone}"
SHARED="$(cd .. && pwd)/shared/bench"
PY="$PWD/.venv/bin/python"
. bench/cluster.sh

DIR="$(mktemp -d /tmp/tidepool-mountbench.XXXXXX)"
MOUNTS=()
unmount_all() {
  for m in "${MOUNTS[@]}"; do
    fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  MOUNTS=()
}
trap 'unmount_all; cleanup' EXIT

PORT="$(free_port)"
setsid "$T" up --dir "$DIR/cluster" --s3-port "$PORT" > "$DIR/cluster.log" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do grep -qs 'Ctrl-C stops' "$DIR/cluster.log" && break; sleep 1; done
grep -q 'Ctrl-C stops' "$DIR/cluster.log" || { cat "$DIR/cluster.log"; exit 1; }
export TIDEPOOL_CLUSTER="$DIR/cluster"
ACCESS="$(awk '/access key/ {print $3; exit}' "$DIR/cluster.log")"
SECRET="$(awk '/secret key/ {print $3; exit}' "$DIR/cluster.log")"
ENDPOINT="http://127.0.0.1:$PORT"
AWS_ACCESS_KEY_ID="$ACCESS" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION=us-east-1 \
  .venv/bin/aws --endpoint-url "$ENDPOINT" s3 mb s3://bench > /dev/null
wait_clean

# The tarball of small files, made once.
log "making a tarball of $FILES small files"
"$PY" - "$DIR/small" "$FILES" <<'EOF'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(count):
    folder = os.path.join(root, f"d{i % 100:02}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"f{i:05}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 8192)))
EOF
tar -C "$DIR" -cf "$DIR/small.tar" small
rm -rf "$DIR/small"

# Mounts SYSTEM at $DIR/m-SYSTEM; sets WORK (the folder to work in) and MPID (the process to
# watch; empty for the local disk).
MPID=""
WORK=""
mount_system() {
  local system="$1" at="$DIR/m-$1"
  mkdir -p "$at"
  case "$system" in
    local)
      MPID=""
      ;;
    tidepool)
      "$T" mount bench "$at" --log "$DIR/tidepool-mount.log" > /dev/null
      MOUNTS+=("$at")
      MPID="$(pgrep -f "mount bench $at" | head -1)"
      ;;
    s3fs)
      echo "$ACCESS:$SECRET" > "$DIR/s3fs.passwd"
      chmod 600 "$DIR/s3fs.passwd"
      s3fs bench "$at" -o "url=$ENDPOINT,use_path_request_style,passwd_file=$DIR/s3fs.passwd"
      MOUNTS+=("$at")
      MPID="$(pgrep -f "s3fs bench $at" | head -1)"
      ;;
    rclone)
      AWS_CA_BUNDLE= RCLONE_CONFIG_TP_TYPE=s3 RCLONE_CONFIG_TP_PROVIDER=Other RCLONE_CONFIG_TP_ENDPOINT="$ENDPOINT" \
        RCLONE_CONFIG_TP_ACCESS_KEY_ID="$ACCESS" RCLONE_CONFIG_TP_SECRET_ACCESS_KEY="$SECRET" \
        rclone mount tp:bench "$at" --vfs-cache-mode writes --cache-dir "$DIR/rclone-cache" \
        --daemon --log-file "$DIR/rclone.log"
      MOUNTS+=("$at")
      for _ in $(seq 50); do mountpoint -q "$at" && break; sleep 0.2; done
      MPID="$(pgrep -f "rclone mount tp:bench $at" | head -1)"
      ;;
  esac
  WORK="$at/$system-work"
  mkdir -p "$WORK"
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
peak_rss_mib() { [ -n "$MPID" ] && awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$MPID/status" || echo null; }

# Runs the rest of the arguments bounded by STEP_SECONDS; prints seconds, or null on timeout.
timed() {
  local start end
  start="$(date +%s.%N)"
  if timeout "$STEP_SECONDS" "$@" > /dev/null 2>&1; then
    end="$(date +%s.%N)"
    python3 -c "print(round($end - $start, 3))"
  else
    echo null
  fi
}

AWS=(env AWS_ACCESS_KEY_ID="$ACCESS" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION=us-east-1
  .venv/bin/aws --endpoint-url "$ENDPOINT")
# rclone's cache uploads after the close: seconds from START until the bucket holds COUNT keys
# under PREFIX, the newest written at or after START (epoch seconds); null after STEP_SECONDS.
in_bucket_after() { # start prefix count
  "$PY" - "$1" "$2" "$3" "$STEP_SECONDS" "${AWS[@]}" <<'EOF'
import json, subprocess, sys, time, datetime
start, prefix, count, limit, aws = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5:]
while time.time() - start < limit:
    out = subprocess.run(aws + ["s3api", "list-objects-v2", "--bucket", "bench", "--prefix", prefix],
                         capture_output=True, text=True).stdout
    keys = json.loads(out).get("Contents", []) if out.strip() else []
    newest = max((datetime.datetime.fromisoformat(k["LastModified"].replace("Z", "+00:00")).timestamp() for k in keys), default=0)
    if len(keys) >= count and newest >= start - 1:
        print(round(time.time() - start, 3))
        sys.exit()
    time.sleep(0.5)
print("null")
EOF
}

rate() { python3 -c "import sys; t=sys.argv[2]; print('null' if t == 'null' else round(float(sys.argv[1]) / float(t), 1))" "$1" "$2"; }

cat > "$DIR/random_writes.py" <<'EOF'
import os, random, sys
path, mib, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(11)
block = rng.randbytes(4096)
fd = os.open(path, os.O_WRONLY)
for _ in range(ops):
    os.pwrite(fd, block, rng.randrange(mib * 256) * 4096)
os.fsync(fd)
os.close(fd)
EOF

for system in $SYSTEMS; do
  log "$system: mounting"
  mount_system "$system"
  work="$WORK"
  log "$system: write $SIZE_MIB MiB"
  start="$(date +%s.%N)"
  t="$(timed dd if=/dev/zero of="$work/big" bs=1M count="$SIZE_MIB" conv=fsync)"
  [ "$system" != rclone ] || t="$(in_bucket_after "$start" "rclone-work/big" 1)"
  rss="$(peak_rss_mib)"
  echo "{\"system\":\"$system\",\"step\":\"write\",\"mib\":$SIZE_MIB,\"seconds\":$t,\"mib_per_s\":$(rate "$SIZE_MIB" "$t"),\"peak_rss_mib\":$rss}"
  drop_caches
  log "$system: read $SIZE_MIB MiB"
  t="$(timed dd if="$work/big" of=/dev/null bs=1M)"
  echo "{\"system\":\"$system\",\"step\":\"read\",\"mib\":$SIZE_MIB,\"seconds\":$t,\"mib_per_s\":$(rate "$SIZE_MIB" "$t")}"
  rm -f "$work/big"

  log "$system: $RANDOM_OPS random 4 KiB writes into $RANDOM_MIB MiB"
  timeout "$STEP_SECONDS" dd if=/dev/zero of="$work/random" bs=1M count="$RANDOM_MIB" > /dev/null 2>&1 || true
  start="$(date +%s.%N)"
  t="$(timed "$PY" "$DIR/random_writes.py" "$work/random" "$RANDOM_MIB" "$RANDOM_OPS")"
  [ "$system" != rclone ] || t="$(in_bucket_after "$start" "rclone-work/random" 1)"
  echo "{\"system\":\"$system\",\"step\":\"random_4k_writes\",\"ops\":$RANDOM_OPS,\"seconds\":$t,\"ops_per_s\":$(rate "$RANDOM_OPS" "$t")}"
  rm -f "$work/random"

  log "$system: $FILES small files"
  start="$(date +%s.%N)"
  t="$(timed tar -C "$work" -xf "$DIR/small.tar")"
  [ "$system" != rclone ] || t="$(in_bucket_after "$start" "rclone-work/small/" "$FILES")"
  echo "{\"system\":\"$system\",\"step\":\"extract\",\"files\":$FILES,\"seconds\":$t,\"files_per_s\":$(rate "$FILES" "$t")}"
  drop_caches
  t="$(timed ls -lR "$work/small")"
  echo "{\"system\":\"$system\",\"step\":\"ls_lR\",\"files\":$FILES,\"seconds\":$t}"
  drop_caches
  t="$(timed sh -c "find '$work/small' -type f -print0 | xargs -0 stat > /dev/null")"
  echo "{\"system\":\"$system\",\"step\":\"stat\",\"files\":$FILES,\"seconds\":$t}"
  t="$(timed rm -rf "$work/small")"
  echo "{\"system\":\"$system\",\"step\":\"delete\",\"files\":$FILES,\"seconds\":$t,\"files_per_s\":$(rate "$FILES" "$t")}"
  unmount_all
done
