#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz and libFuzzer) of the decoders a peer or client feeds:
# frames, message bodies, the monitors' consensus messages, maps and incrementals (fuzz/).
# Each target runs SECONDS (default 20) from the seeds in fuzz/seeds/TARGET plus what earlier
# runs found (kept under the target directory, not in the repository). A crash stops the run
# and leaves its input in fuzz/artifacts/TARGET/: add it to the property-based targets of
# tests/tests/fuzz.rs as a regression case once fixed.
#
# Needs a nightly toolchain and cargo-fuzz (scripts/deps.sh installs cargo-fuzz when nightly is
# there); without nightly it says so and stops: the property-based targets in make test cover
# the same decoders.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain with cargo-fuzz here; the coverage-guided targets are skipped"
  exit 0
fi
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/tidepool-target}
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
for target in "${targets[@]}"; do
  corpus="$target_dir/fuzz-corpus/$target"
  mkdir -p "$corpus"
  log="$target_dir/fuzz-$target.log"
  echo "fuzz: $target for ${seconds} s (log: $log)"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir/fuzz" "$target" \
    "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target failed; a crash leaves its input in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$log" | sed "s/^/  /" || true
done
