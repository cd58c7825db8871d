# The two commands of the README, and the helpers behind them.
# Cargo's target directory lives outside the work tree so builds survive between checkouts.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tidepool-target
CARGO ?= cargo
DATA ?= tidepool-data

.PHONY: up test deps build check bench bench-placement bench-transport

## Start Tidepool locally. Until the daemons exist this creates a cluster folder in ./tidepool-data
## and demonstrates placement: spread over 32 OSDs and what adding a 33rd disk to host0 would move.
up: deps build
	@test -f $(DATA)/cluster.json || $(CARGO_TARGET_DIR)/release/tidepool cluster init $(DATA)
	@echo "cluster folder: $(DATA) (monitors and OSDs start here once they exist; see README)"
	@echo "placement demo: 8 hosts x 4 OSDs, 4096 placement groups, then one more disk in host0"
	$(CARGO_TARGET_DIR)/release/tidepool placement simulate --hosts 8 --osds-per-host 4 --pgs 4096 --add-osd host0:1

## Run every test: format, lints, the pure crates without default features, then all tests.
test: deps check
	$(CARGO) test --workspace --all-targets

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release -p tidepool

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) check -p tidepool-placement -p tidepool-proto -p tidepool-monitor --no-default-features

## Benchmarks (results go in docs/BENCHMARKS.md).
bench: bench-placement bench-transport

bench-placement:
	bench/placement-vs-crushtool.sh

bench-transport:
	$(CARGO) bench -p tidepool-messenger --bench transport
