# The two commands of the README, and the helpers behind them.
# Cargo's target directory lives outside the work tree so builds survive between checkouts.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tidepool-target
CARGO ?= cargo
DATA ?= tidepool-data

.PHONY: up test fuzz deps build check bench bench-placement bench-transport

## Start Tidepool locally: 3 monitors and 4 OSDs under ./tidepool-data (created on the first run,
## resumed after), a pool `data`; Ctrl-C stops it.
up: deps build
	$(CARGO_TARGET_DIR)/release/tidepool up --dir $(DATA)

## Run every test: format, lints, the pure crates without default features, then all tests,
## then the coverage-guided fuzz targets for 15 s each (when a nightly toolchain is here).
test: deps check
	$(CARGO) test --workspace --all-targets
	scripts/fuzz.sh 15

## Coverage-guided fuzzing for longer: make fuzz FUZZ_SECONDS=600
FUZZ_SECONDS ?= 120
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release -p tidepool

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) check -p tidepool-placement -p tidepool-proto -p tidepool-erasure -p tidepool-state -p tidepool-monitor --no-default-features

## Benchmarks (results go in docs/BENCHMARKS.md).
bench: bench-placement bench-transport

bench-placement:
	bench/placement-vs-crushtool.sh

bench-transport:
	$(CARGO) bench -p tidepool-messenger --bench transport
