#!/usr/bin/env bash
# Runs the kv_stress binary the way a user does:
#  - --help opens with a usage text (no absl "SetProgramUsageMessage() never
#    called" warning) and every flag that defaults to -1 or "" says what the
#    presets use;
#  - under `bazel run` (BUILD_WORKING_DIRECTORY set) relative --json_out and
#    --svg_out land in that directory, and the tool prints their absolute
#    paths; without it they land in the current directory;
#  - bad --remote, --kv_dtype and window --model combinations exit 2 and
#    say why; good ones print their extra report lines;
#  - every bad flag exits 2 with a message naming the flag (parse errors,
#    negative values, sizes past physical memory, bad traces, unwritable
#    outputs, flags --window_model does not use), before any run.
# Usage: kv_stress_cli_test.sh PATH_TO_KV_STRESS
set -euo pipefail

kv_stress="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# --help exits 0 (Abseil's own exits 1; tools/common/flags.h).
help="$("$kv_stress" --help 2>&1)" || fail "--help exited $?, not 0"
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

# Every bad command line exits 2 and names what is wrong, before running.
# expect_bad MESSAGE ARGS...
expect_bad() {
  local want="$1"
  shift
  local rc=0
  "$kv_stress" "$@" >"${tmp}/stdout" 2>"${tmp}/stderr" || rc=$?
  [ "$rc" -eq 2 ] || fail "$* exited ${rc}, not 2: $(cat "${tmp}/stderr")"
  grep -qF -- "$want" "${tmp}/stderr" ||
    fail "$*: no \"${want}\" in: $(cat "${tmp}/stderr")"
}
expect_bad "Unknown command line flag 'no_such_flag'" --no_such_flag
expect_bad "Illegal value 'abc' specified for flag 'steps'" --steps=abc
for f in steps=-5 pool_blocks=-3 block_tokens=-2 arrival_rate=-0.5 \
  beam_pct=-2 trace_step_ms=-3; do
  expect_bad "--${f} must be >= 0 (or -1: the preset's value)" "--${f}"
done
expect_bad "--duration_s=-1 must be >= 0" --duration_s=-1
expect_bad "--pool_blocks=2000000000: host storage needs" \
  --pool_blocks=2000000000
expect_bad "of physical memory" --pool_mb=4000000
expect_bad "books-only blocks need about" --storage=books_only \
  --pool_blocks=2000000000
expect_bad "--arrival_rate=1e+09 must be in (0, 100000]" --arrival_rate=1e9
expect_bad "--pool_mb=0 must be in (0, " --pool_mb=0
expect_bad "--pool_mb=8.79609e+12 must be in (0, " --pool_mb=8796093022208
expect_bad "preset tiny's pool of 0.75 MiB holds no 2 MiB block of llama-3.1-8b" \
  --preset=tiny --model=llama-3.1-8b
expect_bad "--compare_remote needs a remote tier" --compare_remote
expect_bad "--trace_requests=-5 must be >= 0" --trace_requests=-5
expect_bad "--watermark_pct=500 must be in [0, 100)" --watermark_pct=500
expect_bad "unknown --prompt_dist x (lognormal|uniform|fixed)" --prompt_dist=x
expect_bad "--beam_pct=150 + --fork_pct=5 must be <= 100" --beam_pct=150
expect_bad "--pool_sweep needs --prefix_caching=true" --pool_sweep=100,200
expect_bad "cannot connect to --remote=unix:/nonexistent" \
  --preset=shared_prefix --replicas=2 --remote=unix:/nonexistent --steps=5
# Outputs are opened before the run, with the OS reason.
expect_bad "--json_out: cannot open /nonexistent-dir/kv.json for writing: No such file or directory" \
  --preset=tiny --steps=20 --json_out=/nonexistent-dir/kv.json
expect_bad "--svg_out: cannot open ${tmp} for writing: Is a directory" \
  --preset=tiny --steps=20 --svg_out="${tmp}"
[ ! -s "${tmp}/stdout" ] || fail "a run started before the output failed"
# Traces: a directory, an empty file, a field error, too many hash ids.
expect_bad "is not a regular file (a directory)" --preset=tiny --trace="${tmp}"
: >"${tmp}/empty.jsonl"
expect_bad "the trace has no requests (0 lines)" --preset=tiny \
  --trace="${tmp}/empty.jsonl"
echo '{"timestamp": 0, "input_length": 5}' >"${tmp}/no_output.jsonl"
expect_bad "line 1: output_length is missing" --preset=tiny \
  --trace="${tmp}/no_output.jsonl"
echo '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [1, 2]}' \
  >"${tmp}/ids.jsonl"
expect_bad "line 1: 2 hash_ids name 1024 tokens (512 each), more than input_length 5" \
  --preset=tiny --trace="${tmp}/ids.jsonl"
# --window_model takes only its own flags (and --json_out); its flags
# need it.
expect_bad "--window_model does not use --steps" \
  --window_model=mistral-7b-swa --steps=5
expect_bad "--window_context needs --window_model" --window_context=4096

# A trace request longer than --max_len is refused by the contiguous model
# as too large (noted with its line), not an invariant failure (exit 0).
{
  echo '{"timestamp": 0, "input_length": 40, "output_length": 8}'
  echo '{"timestamp": 10, "input_length": 600, "output_length": 8}'
} >"${tmp}/long.jsonl"
"$kv_stress" --preset=tiny --trace="${tmp}/long.jsonl" --steps=0 \
  --storage=books_only >"${tmp}/stdout" 2>"${tmp}/stderr" ||
  fail "a trace over --max_len failed: $(cat "${tmp}/stderr")"
grep -qF "1 of the trace's 2 requests need more than --max_len=512 tokens (the first, line 2: input_length 600 + output_length 8)" \
  "${tmp}/stderr" || fail "no --max_len note: $(cat "${tmp}/stderr")"
grep -q '^admissions refused (queue/size) *0/0 *0/1$' "${tmp}/stdout" ||
  fail "not refused for size: $(cat "${tmp}/stdout")"

# --window_model honours --json_out (the JSON goes to the file only).
"$kv_stress" --window_model=mistral-7b-swa --window_pool_mb=1024 \
  --window_context=4096 --json_out="${tmp}/window.json" \
  >"${tmp}/stdout" 2>"${tmp}/stderr" ||
  fail "--window_model failed: $(cat "${tmp}/stderr")"
[ -s "${tmp}/window.json" ] || fail "no --window_model JSON"
grep -qF "kv_stress: wrote the JSON report to ${tmp}/window.json" \
  "${tmp}/stderr" || fail "window JSON path not printed"

echo "PASS"
