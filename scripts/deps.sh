#!/usr/bin/env bash
# Installs what building and testing Tidepool needs, only when it is missing:
# Debian packages (RocksDB 7.8 and libclang for its bindings, FUSE 3, pkg-config, rclone for the S3
# tests and the mount's benchmark, s3fs for the same benchmark, nftables for the chaos test's
# and the hosts test's partitions, iproute2 for its namespaces, git and rsync for the mount's
# tests, chromium and its WebDriver for the dashboard's test, prometheus for promtool, which
# checks the alert rules under deploy/, systemd for `systemd-analyze verify` of the units under
# deploy/systemd) and a Python venv in .venv/ (ignored by git) with the newest aws-cli, boto3,
# awscrt, s3cmd, jsonschema (the schema checks of the JSON outputs), prometheus_client (its
# parser reads the daemons' /metrics in the tests) and kubernetes-validate (the manifests
# under deploy/kubernetes against the Kubernetes API schemas it carries) from PyPI.
# Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libclang-dev librocksdb-dev fuse3 libfuse3-dev pkg-config python3-venv rclone s3fs nftables iproute2 systemd git rsync chromium chromium-driver prometheus)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust from https://rustup.rs" >&2
  exit 1
fi

# awscrt gives aws-cli the CRC32C and CRC64NVME checksums; boto3 drives the S3 tests that make
# many calls from one process.
if [ ! -x .venv/bin/aws ] || [ ! -x .venv/bin/s3cmd ] || ! .venv/bin/python -c "import awscrt, boto3, jsonschema, prometheus_client, kubernetes_validate" 2>/dev/null; then
  echo "creating .venv with aws-cli, boto3, s3cmd, jsonschema, prometheus_client and kubernetes-validate"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --upgrade awscli boto3 s3cmd awscrt jsonschema prometheus_client kubernetes-validate
fi

# cargo-fuzz for the coverage-guided targets (scripts/fuzz.sh), when a nightly toolchain is here.
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
