#!/usr/bin/env bash
# Runs the kv_replay binary the way a user does:
#  - --help opens with a usage text (no absl "SetProgramUsageMessage() never
#    called" warning);
#  - under `bazel run` (BUILD_WORKING_DIRECTORY set) a relative trace path is
#    read from that directory, and an unreadable one is named by its absolute
#    path;
#  - exit codes: --help 0, bad flags and malformed traces (an unknown op) 2,
#    a --check with no scenario 1.
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

# Exit codes: --help 0, a bad flag 2 (Abseil's own parse exits 1).
rc=0
"$kv_replay" --help >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 0 ] || fail "--help: exit ${rc}, want 0"
rc=0
"$kv_replay" --no_such_flag >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "unknown flag: exit ${rc}, want 2"

# An unknown op is a malformed trace (exit 2, named); a --check that
# compares no scenario fails (exit 1).
printf '%s\n' '{"scenarios": [{"name": "t", "ctor": {"cls": "DynamicKVCache"},' \
  '"ops": [{"op": "frobnicate"}]}]}' >"${tmp}/bad_op.json"
rc=0
"$kv_replay" "${tmp}/bad_op.json" >/dev/null 2>"${tmp}/stderr" || rc=$?
[ "$rc" -eq 2 ] || fail "unknown op: exit ${rc}, want 2"
grep -qF "malformed trace: scenario \"t\": op#0 (frobnicate): unknown op" \
  "${tmp}/stderr" || fail "unknown op not named: $(cat "${tmp}/stderr")"
echo '{"scenarios": []}' >"${tmp}/empty.json"
rc=0
"$kv_replay" --check "${tmp}/empty.json" >"${tmp}/stdout" 2>"${tmp}/stderr" ||
  rc=$?
[ "$rc" -eq 1 ] || fail "empty --check: exit ${rc}, want 1"
grep -qF "no scenario to check" "${tmp}/stderr" ||
  fail "empty --check not explained: $(cat "${tmp}/stderr")"

echo "PASS"
