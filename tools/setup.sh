#!/usr/bin/env bash
# tools/setup.sh: installs what pagedkv needs on a fresh Debian 12 machine.
#
# Idempotent: it asks dpkg which packages are missing, runs `apt-get update`
# once and installs only those, and says what it did. A second run prints
# "nothing to install" and touches nothing. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap      # Bazel 4.2.3, WORKSPACE mode
  bazel-platforms      # @platforms, used by the C++ toolchain
  g++                  # the default toolchain (gcc 12)
  clang                # --config=clang, libFuzzer
  libabsl-dev          # Status, containers, flags, synchronization
  libmimalloc-dev      # the tensor arena allocator
  libfmt-dev           # tables in tools/ and bench/
  libgtest-dev         # GoogleTest
  libgmock-dev         # GoogleMock
  libbenchmark-dev     # Google Benchmark
  nlohmann-json3-dev   # JSON for tools/kv_replay and bench/summary
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#PACKAGES[@]} packages present; nothing to install."
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

echo "setup.sh: installing ${#missing[@]} missing package(s): ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup.sh: installed ${missing[*]}"
