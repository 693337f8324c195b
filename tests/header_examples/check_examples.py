#!/usr/bin/env python3
"""Checks that the header examples copied into a test match their headers.

Usage: check_examples.py [--root DIR] [--require HEADER]... TEST_CC

TEST_CC holds copies of the usage examples in the top-of-file comments of
library headers (STYLE.md section 7), each fenced like this:

    // clang-format off
    // BEGIN cache/kv_view.h
    ...the example, as in the header minus its "//   " prefix...
    // END cache/kv_view.h
    // clang-format on

For every block, the block's lines must appear as one contiguous run in the
named header's top-of-file comment, comparing lines with "//" stripped and
whitespace normalised (stripped, runs collapsed), so re-aligned trailing
comments do not count as drift but any other edit on either side does. The
clang-format fence keeps the formatter from rewrapping a copy for the test's
width. Every header in the required list (REQUIRED_HEADERS, or the --require
flags when given) must have at least one block.

Headers are read relative to --root (default: the current directory, which
is the runfiles tree under `bazel test`). Exits 0 when everything matches,
1 naming the first problem of each block, 2 for a usage error.
"""

import argparse
import os
import re
import sys

# Headers whose example must be covered by a block. A header that gains an
# example goes here (and its library into :example_headers in BUILD.bazel).
REQUIRED_HEADERS = (
    "allocator/block_id.h",
    "allocator/block_pool.h",
    "allocator/block_table.h",
    "allocator/copy_on_write.h",
    "allocator/free_list.h",
    "allocator/prefix/block_hash.h",
    "allocator/prefix/prefix_index.h",
    "allocator/pool_stats.h",
    "allocator/token_blocks.h",
    "allocator/window_blocks.h",
    "base/check.h",
    "base/maybe_lock.h",
    "base/status_macros.h",
    "cache/cache_limits.h",
    "cache/cache_position.h",
    "cache/cache_stats.h",
    "cache/dynamic_kv_cache.h",
    "cache/encoder_decoder_cache.h",
    "cache/kv_view.h",
    "cache/paged_attention.h",
    "cache/private_pool_options.h",
    "cache/serving/kv_cache_manager.h",
    "cache/serving/sequence_prefix.h",
    "cache/serving/step_output.h",
    "cache/static_kv_cache.h",
    "cache/storage/growable_kv_pool.h",
    "cache/storage/kv_layout.h",
    "cache/storage/kv_pool.h",
    "cache/storage/token_io.h",
    "tensor/dtype.h",
    "tensor/factories.h",
    "tensor/memory_resource.h",
    "tensor/mimalloc_resource.h",
    "tensor/shape.h",
    "tensor/tensor.h",
    "tensor/tensor_copy.h",
)

MARKER = re.compile(r"^\s*// (BEGIN|END) (\S+)\s*$")
FENCE_OFF = "// clang-format off"
FENCE_ON = "// clang-format on"


def normalise(line):
    return " ".join(line.split())


class Block:
    def __init__(self, header, begin_line):
        self.header = header
        self.begin_line = begin_line  # 1-based line of the BEGIN marker.
        self.lines = []  # The raw lines between the markers.


def parse_blocks(test_path, lines, errors):
    """Returns the blocks of the test file; appends marker errors."""
    blocks = []
    current = None
    for number, line in enumerate(lines, start=1):
        match = MARKER.match(line)
        if not match:
            if current is not None:
                current.lines.append(line)
            continue
        kind, header = match.groups()
        where = "%s:%d" % (test_path, number)
        if kind == "BEGIN":
            if current is not None:
                errors.append("%s: BEGIN %s inside the block for %s (BEGIN at "
                              "line %d)" % (where, header, current.header,
                                            current.begin_line))
            previous = lines[number - 2].strip() if number >= 2 else ""
            if previous != FENCE_OFF:
                errors.append("%s: BEGIN %s is not preceded by '%s' (without "
                              "it, clang-format may rewrap the copy)" %
                              (where, header, FENCE_OFF))
            current = Block(header, number)
            continue
        if current is None:
            errors.append("%s: END %s without a BEGIN" % (where, header))
            continue
        if header != current.header:
            errors.append("%s: END %s closes the block for %s (BEGIN at line "
                          "%d)" % (where, header, current.header,
                                   current.begin_line))
        following = lines[number].strip() if number < len(lines) else ""
        if following != FENCE_ON:
            errors.append("%s: END %s is not followed by '%s'" %
                          (where, header, FENCE_ON))
        if not any(l.strip() for l in current.lines):
            errors.append("%s: the block for %s is empty" % (where, header))
        else:
            blocks.append(current)
        current = None
    if current is not None:
        errors.append("%s:%d: BEGIN %s has no END" %
                      (test_path, current.begin_line, current.header))
    return blocks


def header_comment(lines):
    """Returns [(line number, normalised text)] of the top-of-file comment."""
    comment = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("//"):
            comment.append((number, normalise(stripped[2:])))
        elif stripped:
            break
    return comment


def check_block(test_path, block, header_path, comment):
    """Returns None if the block matches, else a message."""
    want = [normalise(l) for l in block.lines]
    have = [text for _, text in comment]
    best_start, best_len = None, -1
    for start in range(len(have)):
        length = 0
        while (length < len(want) and start + length < len(have) and
               have[start + length] == want[length]):
            length += 1
        if length == len(want):
            return None
        if length > best_len:
            best_start, best_len = start, length
    test_line = block.begin_line + 1 + best_len
    if best_len == 0:
        return ("%s:%d: the example copied from %s differs from the header's "
                "comment at its first line:\n  test:   %s\n  header: no "
                "comment line of %s reads like this" %
                (test_path, test_line, block.header, want[0] or "(blank)",
                 header_path))
    at = best_start + best_len
    if at < len(have):
        header_line, header_text = comment[at]
        theirs = "%s:%d: %s" % (header_path, header_line,
                                header_text or "(blank)")
    else:
        theirs = "%s: (its top comment ends here)" % header_path
    return ("%s:%d: the example copied from %s differs from the header's "
            "comment at line %d of the block (lines 1-%d match %s:%d-%d):\n"
            "  test:   %s\n  header: %s" %
            (test_path, test_line, block.header, best_len + 1, best_len,
             header_path, comment[best_start][0],
             comment[best_start + best_len - 1][0],
             want[best_len] or "(blank)", theirs))


def main(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_cc", help="the test file with the copies")
    parser.add_argument("--root", default=".",
                        help="directory the header paths are relative to")
    parser.add_argument("--require", action="append", metavar="HEADER",
                        help="a header that must have a block (replaces the "
                        "built-in list; repeatable)")
    args = parser.parse_args(argv)
    required = args.require if args.require else REQUIRED_HEADERS

    try:
        with open(args.test_cc, encoding="utf-8") as f:
            test_lines = f.read().splitlines()
    except OSError as e:
        print("check_examples: cannot read %s: %s" % (args.test_cc, e))
        return 2

    errors = []
    blocks = parse_blocks(args.test_cc, test_lines, errors)
    comments = {}
    for block in blocks:
        if block.header not in comments:
            path = os.path.join(args.root, block.header)
            try:
                with open(path, encoding="utf-8") as f:
                    comments[block.header] = header_comment(
                        f.read().splitlines())
            except OSError:
                comments[block.header] = None
        comment = comments[block.header]
        if comment is None:
            errors.append("%s:%d: cannot read %s (is its library in "
                          ":example_headers?)" %
                          (args.test_cc, block.begin_line, block.header))
            continue
        message = check_block(args.test_cc, block, block.header, comment)
        if message:
            errors.append(message)

    covered = {block.header for block in blocks}
    for header in required:
        if header not in covered:
            errors.append("%s: %s is in the required list but has no "
                          "'// BEGIN %s' block" %
                          (args.test_cc, header, header))

    if errors:
        for error in errors:
            print("FAIL " + error)
        print("check_examples: %d problem(s); fix the header's example and "
              "its copy together" % len(errors))
        return 1
    print("check_examples: %d blocks from %d headers match their headers" %
          (len(blocks), len(covered)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
