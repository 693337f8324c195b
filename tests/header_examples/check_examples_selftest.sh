#!/bin/sh
# The checker's own test: it passes a faithful copy and fails, naming the
# header and the line, on each kind of drift it exists to catch.
set -u

checker="tests/header_examples/check_examples.py"
dir="${TEST_TMPDIR:-$(mktemp -d)}/check_examples_selftest"
rm -rf "$dir"
mkdir -p "$dir/lib"
failures=0

cat >"$dir/lib/widget.h" <<'EOF'
// lib/widget.h
//
// A widget. Example:
//
//   Widget w(/*size=*/3);
//   if (!w.ok()) return w.status();
//   w.Spin();                    // Spins.
//
// Thread safety: none.
#ifndef LIB_WIDGET_H_
// Not the top comment:   w.Stop();
#endif
EOF

# Writes a test file whose one block for lib/widget.h has the given lines.
write_test() {
  file="$1"
  shift
  {
    echo "void F() {"
    echo "  // clang-format off"
    echo "  // BEGIN lib/widget.h"
    for line in "$@"; do echo "$line"; done
    echo "  // END lib/widget.h"
    echo "  // clang-format on"
    echo "}"
  } >"$file"
}

# expect NAME WANT_RC PATTERN ARGS...: runs the checker, expects exit code
# WANT_RC and (when PATTERN is not empty) PATTERN in its output.
expect() {
  name="$1"
  want_rc="$2"
  pattern="$3"
  shift 3
  output="$(python3 "$checker" --root "$dir" "$@" 2>&1)"
  rc=$?
  if [ "$rc" -ne "$want_rc" ]; then
    echo "FAILED $name: exit $rc, want $want_rc. Output:"
    echo "$output"
    failures=$((failures + 1))
  elif [ -n "$pattern" ] && ! printf '%s\n' "$output" | grep -qF -- "$pattern"
  then
    echo "FAILED $name: output lacks '$pattern'. Output:"
    echo "$output"
    failures=$((failures + 1))
  else
    echo "ok     $name"
  fi
}

write_test "$dir/good.cc" \
  "  Widget w(/*size=*/3);" \
  "  if (!w.ok())   return w.status();" \
  "  w.Spin();  // Spins."
expect "faithful copy (whitespace differs) passes" 0 "1 blocks" \
  --require lib/widget.h "$dir/good.cc"

write_test "$dir/drift.cc" \
  "  Widget w(/*size=*/3);" \
  "  if (!w.ok()) return w.status();" \
  "  w.Spin(/*fast=*/true);  // Spins."
expect "a changed line fails" 1 "differs" \
  --require lib/widget.h "$dir/drift.cc"
expect "the failure names the header" 1 "copied from lib/widget.h" \
  --require lib/widget.h "$dir/drift.cc"
expect "the failure shows the test's line" 1 \
  "test:   w.Spin(/*fast=*/true); // Spins." \
  --require lib/widget.h "$dir/drift.cc"
expect "the failure shows the header's line" 1 \
  "header: lib/widget.h:7: w.Spin(); // Spins." \
  --require lib/widget.h "$dir/drift.cc"

write_test "$dir/unknown.cc" "  Gadget g;"
expect "a first line the header lacks fails" 1 "no comment line" \
  --require lib/widget.h "$dir/unknown.cc"

write_test "$dir/gap.cc" \
  "  Widget w(/*size=*/3);" \
  "  w.Spin();  // Spins."
expect "a non-contiguous copy fails" 1 "line 2 of the block" \
  --require lib/widget.h "$dir/gap.cc"

write_test "$dir/outside.cc" "  w.Stop();"
expect "code outside the top comment does not count" 1 "differs" \
  --require lib/widget.h "$dir/outside.cc"

expect "a required header without a block fails" 1 \
  "lib/gadget.h is in the required list" \
  --require lib/widget.h --require lib/gadget.h "$dir/good.cc"

sed -e '/clang-format off/d' "$dir/good.cc" >"$dir/unfenced.cc"
expect "a block without the clang-format fence fails" 1 "clang-format off" \
  --require lib/widget.h "$dir/unfenced.cc"

sed -e 's|BEGIN lib/widget.h|BEGIN lib/missing.h|' \
  -e 's|END lib/widget.h|END lib/missing.h|' "$dir/good.cc" >"$dir/missing.cc"
expect "a block for an unreadable header fails" 1 "cannot read lib/missing.h" \
  --require lib/missing.h "$dir/missing.cc"

sed -e '/END lib/d' "$dir/good.cc" >"$dir/unterminated.cc"
expect "a BEGIN without END fails" 1 "has no END" \
  --require lib/widget.h "$dir/unterminated.cc"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
