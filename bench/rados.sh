# Sourced by the benchmark scripts that run `tidepool bench` beside Ceph's `rados bench`.
# Expects T (the tidepool binary), SECS, THREADS, RESULTS (a JSON-lines file), RADOS (the
# rados command with its cluster and pool) and `log`.

# shellcheck source=bench/cpu.sh
. bench/cpu.sh

# The RSS of each process whose command line matches $1, in MiB.
osd_rss() { # pattern
  for pid in $(pgrep -f "$1"); do ps -o rss= -p "$pid"; done | awk '{printf "%s%.0f", sep, $1/1024; sep=" "} END {print " MiB"}'
}

emit() { # system run phase mib/s ops/s p50-ms cpu-ms/op
  echo "{\"system\":\"$1\",\"run\":$2,\"phase\":\"$3\",\"mib_per_second\":$4,\"ops_per_second\":$5,\"p50_ms\":$6,\"cpu_ms_per_op\":$7}" | tee -a "$RESULTS"
}

tidepool_phase() { # run phase pool mode size
  local out before
  before="$(busy_ticks)"
  out="$("$T" bench "$3" "$4" --seconds "$SECS" --threads "$THREADS" --size "$5" --format json)"
  # shellcheck disable=SC2046 # four numbers
  emit tidepool "$1" "$2" $(python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["mib_per_second"], r["ops_per_second"], r["latency_ms"]["p50"], int(sys.argv[1]) / max(r["operations"], 1))' \
    "$(busy_ms_since "$before")" <<<"$out")
}

rados_phase() { # run phase mode size
  local out before size=()
  [ "$3" = write ] && size=(-b "$4")
  before="$(busy_ticks)"
  out="$("${RADOS[@]}" bench "$SECS" "$3" -t "$THREADS" "${size[@]}" --no-cleanup 2>&1)"
  emit ceph "$1" "$2" \
    "$(awk -F: '/^Bandwidth \(MB\/sec\)/ {gsub(/ /,"",$2); print $2}' <<<"$out")" \
    "$(awk -F: '/^Average IOPS/ {gsub(/ /,"",$2); print $2}' <<<"$out")" \
    "$(awk -F: '/^Average Latency\(s\)/ {gsub(/ /,"",$2); print $2 * 1000}' <<<"$out")" \
    "$(awk -F: -v ms="$(busy_ms_since "$before")" '/^Total (reads|writes) made/ {print ms / ($2 > 0 ? $2 : 1)}' <<<"$out")"
}

# Pauses process $1 (SIGSTOP) until `$2` succeeds (its cluster has it down), runs the rest of
# the arguments as a command, resumes it and waits until `$3` succeeds (up again). PAUSED
# names it meanwhile, for the caller's cleanup.
while_paused() { # pid is-down is-up command...
  local pid="$1" is_down="$2" is_up="$3"
  shift 3
  PAUSED="$pid"
  kill -STOP "$pid"
  for _ in $(seq 120); do "$is_down" && break; sleep 0.5; done
  "$@"
  kill -CONT "$pid" || log "pid $pid was gone when it was to resume"
  PAUSED=""
  for _ in $(seq 120); do "$is_up" && break; sleep 0.5; done
}
