// tools/kv_stress/pool_sweep.cc
#include "tools/kv_stress/pool_sweep.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

absl::StatusOr<std::vector<int32_t>> ParsePoolSweep(std::string_view text,
                                                    size_t block_bytes) {
  std::vector<int32_t> out;
  const std::string all(text);
  for (absl::string_view piece : absl::StrSplit(all, ',')) {
    const std::string entry(absl::StripAsciiWhitespace(piece));
    absl::string_view number = entry;
    bool gib = false;
    for (const char* suffix : {"GiB", "G", "g"}) {
      if (absl::ConsumeSuffix(&number, suffix)) {
        gib = true;
        break;
      }
    }
    double blocks = 0;
    if (gib) {
      double n = 0;
      if (!absl::SimpleAtod(number, &n) || !(n > 0) || !std::isfinite(n)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "pool_sweep entry \"%s\" is not a size like 16GiB", entry));
      }
      blocks = std::floor(n * 1073741824.0 / static_cast<double>(block_bytes));
    } else {
      int64_t n = 0;
      if (!absl::SimpleAtoi(number, &n)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "pool_sweep entry \"%s\" is neither blocks nor a size like 16GiB",
            entry));
      }
      blocks = static_cast<double>(n);
    }
    if (blocks < 1 || blocks > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "pool_sweep entry \"%s\" is %.0f blocks of %d bytes; need 1 to %d",
          entry, blocks, block_bytes, std::numeric_limits<int32_t>::max()));
    }
    out.push_back(static_cast<int32_t>(blocks));
  }
  return out;
}

absl::StatusOr<std::vector<SweepPoint>> RunPoolSweep(
    const SimConfig& config, absl::Span<const int32_t> pool_blocks) {
  std::vector<SweepPoint> points;
  for (int32_t blocks : pool_blocks) {
    SimConfig c = config;
    c.pool_blocks = blocks;
    c.pool_sweep.clear();
    c.compare_without_prefix_caching = false;
    PKV_ASSIGN_OR_RETURN(SimResult r, RunSimulation(c));
    SweepPoint p;
    p.pool_blocks = blocks;
    p.pool_bytes = c.pool_bytes();
    p.prefix = r.paged.prefix;
    p.prefill_tokens_computed = r.paged.prefill_tokens_computed;
    p.preemptions = r.paged.preemptions;
    p.completed = r.paged.completed;
    p.steps_run = r.steps_run;
    p.wall_s = r.wall_s;
    p.invariant_failures = r.invariant_failures;
    points.push_back(p);
  }
  return points;
}

}  // namespace pagedkv::kv_stress
