#!/usr/bin/env bash
# Runs the chaos test (tests/chaos/chaos.py) over many seeds against the release binary and
# prints one line per seed; exits non-zero if any seed found a violation (its output is kept in
# target/chaos/<seed>.log, its cluster folder in target/chaos/<seed>/).
# usage: tests/chaos/many.sh [SEEDS (default 10)] [SECONDS per run (default 120)] [FIRST SEED (default 1)]
set -uo pipefail
cd "$(dirname "$0")/../.."
seeds=${1:-10}
seconds=${2:-120}
first=${3:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}"
target=$CARGO_TARGET_DIR
cargo build --release -q -p tidepool || exit 1
out=target/chaos
mkdir -p "$out"
failed=0
started=$(date +%s)
for ((seed = first; seed < first + seeds; seed++)); do
  rm -rf "$out/$seed"
  if python3 tests/chaos/chaos.py --tidepool "$target/release/tidepool" --dir "$out/$seed" \
      --seed "$seed" --seconds "$seconds" >"$out/$seed.log" 2>&1; then
    echo "seed $seed: passed $(grep -o '"faults": [0-9]*, "puts_acked": [0-9]*' "$out/$seed.log")"
    rm -rf "$out/$seed"
  else
    echo "seed $seed: FAILED (see $out/$seed.log and $out/$seed/)"
    failed=$((failed + 1))
  fi
done
echo "$seeds seeds of $seconds s in $(( $(date +%s) - started )) s: $failed failed"
[ "$failed" -eq 0 ]
