#!/usr/bin/env bash
# tools/setup.sh: installs what pagedkv needs on a fresh Debian 12 machine.
#
# Idempotent: it asks dpkg which packages are missing, runs `apt-get update`
# once and installs only those, and says what it did. A second run prints
# "nothing to install" and touches nothing. Needs root (or sudo) only when
# something is missing.
#
# apt's own output (about a thousand lines on a fresh machine) goes to a log
# file, ${TMPDIR:-/tmp}/pagedkv-setup.log; the terminal gets a short summary.
# On failure the script prints the log's path and its last lines.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap      # Bazel 4.2.3, WORKSPACE mode
  bazel-platforms      # @platforms, used by the C++ toolchain
  g++                  # the default toolchain (gcc 12)
  clang                # --config=clang
  libclang-rt-14-dev   # libFuzzer and the sanitizer runtimes for clang (--config=fuzz)
  lld                  # the linker of --config=fuzz (gold warns on every ASan link)
  libabsl-dev          # Status, containers, flags, synchronization
  libmimalloc-dev      # the tensor arena allocator
  libfmt-dev           # tables in tools/ and bench/
  libgtest-dev         # GoogleTest
  libgmock-dev         # GoogleMock
  libbenchmark-dev     # Google Benchmark
  nlohmann-json3-dev   # JSON for tools/kv_replay and bench/summary
  libxxhash-dev        # block hashes of the prefix cache (XXH3-64)
  libssl-dev           # the prefix cache's optional SHA-256 block hashes
  python3-dev          # Python bindings (python/: Python.h)
  python3-pybind11     # Python bindings (python/: pybind11 headers)
  python3-numpy        # Python bindings: arrays in and out, tests, benchmarks
  libhiredis-dev       # Redis client of the remote tier (cache/remote/)
  redis-server         # Redis for the remote tier's tests and kv_stress
)

LOG_TAIL_LINES=30

# Prints the packages of "$@" that dpkg does not report as installed.
missing_packages() {
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
        grep -q "install ok installed"; then
      echo "$pkg"
    fi
  done
}

# Prints every installed package, one per line, sorted.
installed_packages() {
  dpkg-query -W -f='${Status} ${Package}\n' 2>/dev/null |
    awk '$1 == "install" && $2 == "ok" && $3 == "installed" { print $4 }' |
    sort
}

mapfile -t missing < <(missing_packages "${PACKAGES[@]}")

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#PACKAGES[@]} packages present; nothing to install."
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup.sh: ${#missing[@]} package(s) missing (${missing[*]}), and" \
      "installing them needs root or sudo." >&2
    exit 1
  fi
  SUDO=(sudo)
fi

LOG="${TMPDIR:-/tmp}/pagedkv-setup.log"
if ! : >"$LOG" 2>/dev/null; then
  LOG="$(mktemp "${TMPDIR:-/tmp}/pagedkv-setup.XXXXXX.log")"
fi

# run_logged DESCRIPTION COMMAND...: runs COMMAND with its output appended to
# the log; on failure prints the log's tail and exits.
run_logged() {
  local what="$1"
  shift
  echo "+ $*" >>"$LOG"
  local rc=0
  "$@" >>"$LOG" 2>&1 </dev/null || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "setup.sh: ${what} failed (exit ${rc}). Full output: ${LOG}" >&2
    echo "setup.sh: its last ${LOG_TAIL_LINES} lines:" >&2
    tail -n "$LOG_TAIL_LINES" "$LOG" | sed 's/^/  | /' >&2
    exit "$rc"
  fi
}

echo "setup.sh: installing ${#missing[@]} missing package(s): ${missing[*]}"
echo "setup.sh: apt output goes to ${LOG}"
before="$(installed_packages)"
# sudo drops the environment, so DEBIAN_FRONTEND goes through env.
run_logged "apt-get update" "${SUDO[@]}" apt-get update
run_logged "apt-get install" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"

mapfile -t still_missing < <(missing_packages "${missing[@]}")
if [ ${#still_missing[@]} -ne 0 ]; then
  echo "setup.sh: apt-get succeeded but ${still_missing[*]} is still not" \
    "installed. Full output: ${LOG}" >&2
  tail -n "$LOG_TAIL_LINES" "$LOG" | sed 's/^/  | /' >&2
  exit 1
fi

# Everything new besides what was asked for came in as a dependency.
num_new="$(comm -13 <(echo "$before") <(installed_packages) | grep -c . || true)"
num_deps=$((num_new - ${#missing[@]}))
if [ "$num_deps" -lt 0 ]; then num_deps=0; fi
echo "setup.sh: installed ${missing[*]} (and ${num_deps} dependencies;" \
  "details in ${LOG})"
