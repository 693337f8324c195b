// bench/serving_suite.h
//
// The serving part of //bench:summary: runs the three serving benchmark
// binaries (bench/serving/, Google Benchmark, each with its baselines in the
// same binary) and the remote tier's (bench/remote/, against redis-benchmark
// in the same run; skipped when the machine has no Redis) as child
// processes with repetitions, reads their JSON, and returns the medians,
// each case's ratio to its baseline and the issues' serving and remote-tier
// targets checked against them. The binaries are the summary's data
// dependencies, found in its runfiles.
//
//   absl::StatusOr<ServingSuite> s = RunServingSuite({.repetitions = 5});
//   if (!s.ok()) return s.status();
//   for (const ServingRow& row : s->rows) { ... row.median_ns ... }
//   for (const ServingTarget& t : s->targets) { ... t.met ... }
//
// Timing: a benchmark's median over `repetitions` runs, of CPU time per
// iteration, except for manual-time benchmarks (AddSequence and Free, timed
// alone around the call), whose timed interval is wall time.
//
// Thread safety: call from one thread; it forks children.
#ifndef PAGEDKV_BENCH_SERVING_SUITE_H_
#define PAGEDKV_BENCH_SERVING_SUITE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pagedkv::bench {

struct ServingRow {
  std::string name;      // The benchmark's run name, e.g. BM_Free/manual_time.
  std::string what;      // What it times, in words.
  double median_ns = 0;  // Per iteration.
  std::string baseline;  // The row it is compared with ("" for none).
  std::optional<double> ratio;  // baseline median / this median.
};

struct ServingTarget {
  std::string name;
  std::string case_label;
  double value = 0;
  double threshold = 0;
  bool met = false;
};

struct ServingSuite {
  std::vector<ServingRow> rows;
  std::vector<ServingTarget> targets;
};

struct ServingSuiteOptions {
  int repetitions = 5;
  // Passed to every binary as --benchmark_min_time (seconds per run).
  double min_time_s = 0.2;
};

// NOT_FOUND when a benchmark binary is missing from the runfiles; INTERNAL
// when one fails or prints no JSON.
absl::StatusOr<ServingSuite> RunServingSuite(
    const ServingSuiteOptions& options);

}  // namespace pagedkv::bench

#endif  // PAGEDKV_BENCH_SERVING_SUITE_H_
