#!/usr/bin/env bash
# Runs the kv_stress binary the way a user does:
#  - --help opens with a usage text (no absl "SetProgramUsageMessage() never
#    called" warning) and every flag that defaults to -1 or "" says what the
#    presets use;
#  - under `bazel run` (BUILD_WORKING_DIRECTORY set) relative --json_out and
#    --svg_out land in that directory, and the tool prints their absolute
#    paths; without it they land in the current directory;
#  - bad --remote, --kv_dtype and window --model combinations exit 2 and
#    say why; good ones print their extra report lines.
# Usage: kv_stress_cli_test.sh PATH_TO_KV_STRESS
set -euo pipefail

kv_stress="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# absl's --help exits 1 after printing.
help="$("$kv_stress" --help 2>&1)" || true
case "$help" in
  *SetProgramUsageMessage*) fail "--help warns that no usage message is set" ;;
esac
[[ "$help" == "kv_stress: simulates a continuous-batching server"* ]] ||
  fail "--help does not open with the usage text: ${help:0:200}"

# One line per flag (absl wraps long help onto lines indented by 6 spaces).
entries="$(printf '%s\n' "$help" | awk '
  /^    --/ { if (e != "") print e; e = $0; next }
  /^      / { sub(/^ +/, " "); e = e $0; next }
  { if (e != "") print e; e = "" }
  END { if (e != "") print e }')"
# --json_out and --svg_out default to "" meaning "no file", --pool_sweep
# to "" meaning "no sweep", --remote to "" meaning "no remote tier",
# --window_model to "" meaning "run the workload".
preset_backed="$(printf '%s\n' "$entries" | grep -E 'default: (-1|"");$' |
  grep -vE '^    --(json_out|svg_out|pool_sweep|remote|window_model) ' || true)"
count="$(printf '%s\n' "$preset_backed" | grep -c . || true)"
[ "$count" -ge 20 ] || fail "only ${count} flags default to -1 or \"\""
undocumented="$(printf '%s\n' "$preset_backed" |
  grep -v "the preset's value" || true)"
[ -z "$undocumented" ] ||
  fail "flags defaulting to the preset do not say its value: ${undocumented}"
printf '%s\n' "$entries" | grep -q -- '--steps (.*chat: 40000' ||
  fail "--steps help does not give chat's value"

# Under `bazel run`: relative outputs go under BUILD_WORKING_DIRECTORY.
user="${tmp}/user dir"
mkdir -p "${user}/out" "${tmp}/elsewhere"
(cd "${tmp}/elsewhere" &&
  BUILD_WORKING_DIRECTORY="$user" "$kv_stress" --preset=tiny --steps=20 \
    --json_out=out/kv.json --svg_out=./kv.svg >"${tmp}/stdout" \
    2>"${tmp}/stderr") || fail "kv_stress failed: $(cat "${tmp}/stderr")"
[ -s "${user}/out/kv.json" ] || fail "no ${user}/out/kv.json"
[ -s "${user}/kv.svg" ] || fail "no ${user}/kv.svg"
[ -z "$(ls -A "${tmp}/elsewhere")" ] || fail "wrote into the current directory"
grep -qxF "kv_stress: wrote the JSON report to ${user}/out/kv.json" \
  "${tmp}/stderr" || fail "JSON path not printed: $(cat "${tmp}/stderr")"
grep -qxF "kv_stress: wrote the SVG plot to ${user}/kv.svg" "${tmp}/stderr" ||
  fail "SVG path not printed: $(cat "${tmp}/stderr")"

# Started directly: relative outputs go under the current directory.
(cd "${tmp}/elsewhere" &&
  env -u BUILD_WORKING_DIRECTORY "$kv_stress" --preset=tiny --steps=20 \
    --json_out=kv.json >/dev/null 2>"${tmp}/stderr") ||
  fail "kv_stress failed: $(cat "${tmp}/stderr")"
[ -s "${tmp}/elsewhere/kv.json" ] || fail "no ${tmp}/elsewhere/kv.json"
grep -qF "to $(cd "${tmp}/elsewhere" && pwd)/kv.json" "${tmp}/stderr" ||
  fail "JSON path not printed: $(cat "${tmp}/stderr")"

# Multi-replica mode: a bad --remote is named (exit 2); replicas on the
# in-process store write their JSON (replicas and the tier's figures).
if "$kv_stress" --preset=shared_prefix --replicas=2 --remote=bogus \
  >/dev/null 2>"${tmp}/stderr"; then
  fail "--remote=bogus was accepted"
else
  rc=$?
  [ "$rc" -eq 2 ] || fail "--remote=bogus exited ${rc}, not 2"
fi
grep -qF -- "--remote=bogus" "${tmp}/stderr" ||
  fail "--remote=bogus not named: $(cat "${tmp}/stderr")"
(cd "${tmp}/elsewhere" &&
  env -u BUILD_WORKING_DIRECTORY "$kv_stress" --preset=shared_prefix \
    --replicas=2 --remote=memory --steps=40 --layers=1 --kv_heads=1 \
    --pool_blocks=256 --json_out=replicas.json >"${tmp}/stdout" \
    2>"${tmp}/stderr") ||
  fail "kv_stress --replicas failed: $(cat "${tmp}/stderr")"
grep -q '"replicas": \[' "${tmp}/elsewhere/replicas.json" ||
  fail "no replicas in the JSON"
grep -q '"key_namespace"' "${tmp}/elsewhere/replicas.json" ||
  fail "no remote section in the JSON"
grep -q '^total ' "${tmp}/stdout" || fail "no total line: $(cat "${tmp}/stdout")"

# --kv_dtype: an unknown storage is named with the choices (exit 2), and a
# quantized pool is refused with replicas (their remote tier is untested
# on it); int8 on the tiny preset prints the capacity against float16.
for bad in "--kv_dtype=int4" "--kv_dtype=int8 --replicas=2"; do
  # shellcheck disable=SC2086
  if "$kv_stress" --preset=tiny --steps=20 $bad >/dev/null \
    2>"${tmp}/stderr"; then
    fail "${bad} was accepted"
  else
    rc=$?
    [ "$rc" -eq 2 ] || fail "${bad} exited ${rc}, not 2"
  fi
  grep -qF -- "--kv_dtype" "${tmp}/stderr" ||
    fail "${bad} not named: $(cat "${tmp}/stderr")"
done
grep -qF "int8 is not supported with --replicas" "${tmp}/stderr" ||
  fail "no replicas message: $(cat "${tmp}/stderr")"
"$kv_stress" --preset=tiny --steps=50 --head_dim=128 --pool_mb=6 --kv_dtype=int8 \
  >"${tmp}/stdout" 2>"${tmp}/stderr" ||
  fail "--kv_dtype=int8 failed: $(cat "${tmp}/stderr")"
grep -q '^capacity int8 / float16: blocks 1\.9[0-9]x' "${tmp}/stdout" ||
  fail "no int8 capacity line: $(cat "${tmp}/stdout")"

# A sliding-window --model runs its layer groups books-only: host storage
# is refused with the reason (exit 2), an unknown model lists the window
# models too, and a run prints its groups.
if "$kv_stress" --preset=tiny --model=gemma-3-12b-style --storage=host \
  --pool_mb=4096 --steps=5 >/dev/null 2>"${tmp}/stderr"; then
  fail "a window model in host mode was accepted"
else
  rc=$?
  [ "$rc" -eq 2 ] || fail "a window model in host mode exited ${rc}, not 2"
fi
grep -qF "run books-only" "${tmp}/stderr" ||
  fail "no books-only message: $(cat "${tmp}/stderr")"
if "$kv_stress" --preset=tiny --model=bogus >/dev/null 2>"${tmp}/stderr"; then
  fail "--model=bogus was accepted"
fi
grep -qF "mistral-7b-swa" "${tmp}/stderr" ||
  fail "--model=bogus does not list the window models: $(cat "${tmp}/stderr")"
"$kv_stress" --preset=tiny --model=gemma-3-12b-style --pool_mb=4096 \
  --steps=50 >"${tmp}/stdout" 2>"${tmp}/stderr" ||
  fail "--model=gemma-3-12b-style failed: $(cat "${tmp}/stderr")"
grep -q '^groups     6 groups of 8 layers (full, window 1024' "${tmp}/stdout" ||
  fail "no groups line: $(cat "${tmp}/stdout")"
grep -q 'invariant checks: [1-9][0-9]*  failures: 0' "${tmp}/stdout" ||
  fail "invariant failures: $(cat "${tmp}/stdout")"

echo "PASS"
