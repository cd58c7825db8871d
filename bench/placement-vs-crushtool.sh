#!/usr/bin/env bash
# Placement throughput, Tidepool beside Ceph's crushtool, measured in one run on the same map:
# 1,000 OSDs in 50 hosts of 20, equal weights, 3 replicas on distinct hosts, 1,048,576 inputs.
# Both tools compute every mapping and per-OSD counts; we time whole processes, several runs
# alternating, and report medians. Needs crushtool (Debian package ceph-base, installed here
# when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
runs="${RUNS:-5}"
inputs=1048576

if ! command -v crushtool >/dev/null; then
  echo "installing ceph-base for crushtool"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ceph-base >/dev/null
fi
cargo build -q --release -p tidepool
tidepool="$CARGO_TARGET_DIR/release/tidepool"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
crushtool --outfn "$work/map" --build --num_osds 1000 host straw2 20 root straw2 0 >/dev/null

seconds() { local start end; start=$(date +%s%N); "$@" >/dev/null 2>&1; end=$(date +%s%N); awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f\n", (b - a) / 1e9}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$work/crushtool" ; : >"$work/tidepool"
for _ in $(seq "$runs"); do
  seconds crushtool -i "$work/map" --test --num-rep 3 --min-x 0 --max-x $((inputs - 1)) --show-statistics >>"$work/crushtool"
  seconds "$tidepool" placement simulate --hosts 50 --osds-per-host 20 --replicas 3 --pgs "$inputs" --format json >>"$work/tidepool"
done
crush=$(median <"$work/crushtool")
tide=$(median <"$work/tidepool")
printf 'inputs %d, runs %d (median wall time of whole processes)\n' "$inputs" "$runs"
awk -v n="$inputs" -v c="$crush" -v t="$tide" 'BEGIN {
  printf "crushtool --test:  %6.2f s  %9.0f mappings/s\n", c, n / c
  printf "tidepool simulate: %6.2f s  %9.0f mappings/s\n", t, n / t
  printf "tidepool / crushtool speed: %.2fx\n", c / t
}'
