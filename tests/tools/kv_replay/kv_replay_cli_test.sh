#!/usr/bin/env bash
# Runs the kv_replay binary the way a user does:
#  - --help opens with a usage text (no absl "SetProgramUsageMessage() never
#    called" warning);
#  - under `bazel run` (BUILD_WORKING_DIRECTORY set) a relative trace path is
#    read from that directory, and an unreadable one is named by its absolute
#    path.
# Usage: kv_replay_cli_test.sh PATH_TO_KV_REPLAY
set -euo pipefail

kv_replay="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

help="$("$kv_replay" --help 2>&1)" || true
case "$help" in
  *SetProgramUsageMessage*) fail "--help warns that no usage message is set" ;;
esac
[[ "$help" == "kv_replay: replays conformance traces"* ]] ||
  fail "--help does not open with the usage text: ${help:0:200}"

user="${tmp}/user dir"
mkdir -p "${user}/traces" "${tmp}/elsewhere"
cat >"${user}/traces/t.json" <<'JSON'
{"meta": {}, "scenarios": [{"name": "t", "ctor": {"cls": "DynamicKVCache"},
  "ops": [{"op": "update", "layer": 0, "shape": [1, 1, 2, 2], "base": 1,
           "i": 0}]}]}
JSON

out="$(cd "${tmp}/elsewhere" &&
  BUILD_WORKING_DIRECTORY="$user" "$kv_replay" traces/t.json 2>"${tmp}/stderr")" ||
  fail "kv_replay failed: $(cat "${tmp}/stderr")"
[[ "$out" == *'"name":"t"'* && "$out" == *'"op":"update"'* ]] ||
  fail "unexpected output: ${out:0:200}"

rc=0
(cd "${tmp}/elsewhere" &&
  BUILD_WORKING_DIRECTORY="$user" "$kv_replay" --check traces/missing.json \
    >/dev/null 2>"${tmp}/stderr") || rc=$?
[ "$rc" -eq 2 ] || fail "missing trace: exit ${rc}, want 2"
grep -qF "cannot read ${user}/traces/missing.json" "${tmp}/stderr" ||
  fail "missing trace not named by its path: $(cat "${tmp}/stderr")"

echo "PASS"
