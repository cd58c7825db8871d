# Sourced by the benchmark scripts. Busy CPU of the whole machine (client, daemons and kernel;
# idle, IO wait and steal left out), from /proc/stat: on this shared machine CPU per operation
# varies far less than throughput.

# Busy clock ticks since boot.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# Busy milliseconds since `busy_ticks` printed $1.
busy_ms_since() { echo $((($(busy_ticks) - $1) * 1000 / $(getconf CLK_TCK))); }
