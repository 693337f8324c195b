// tools/kv_stress/mooncake_trace.cc
#include "tools/kv_stress/mooncake_trace.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/kv_stress/prefix_tokens.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {
namespace {

using nlohmann::json;

// Reads integer field `key` of line `line_no` into *out; InvalidArgument
// naming the field and saying what is wrong with it (missing, not an
// integer, outside [lo, hi]).
absl::Status IntField(const json& line, int64_t line_no, const char* key,
                      int64_t lo, int64_t hi, int64_t* out) {
  const auto it = line.find(key);
  if (it == line.end()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("line %d: %s is missing", line_no, key));
  }
  // An integer in [lo, hi]; unsigned JSON integers past int64 are out too.
  const bool in_range =
      it->is_number_integer() &&
      !(it->is_number_unsigned() &&
        it->get<uint64_t>() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) &&
      it->get<int64_t>() >= lo && it->get<int64_t>() <= hi;
  if (!in_range) {
    return absl::InvalidArgumentError(
        absl::StrFormat("line %d: %s is %s, not an integer in [%d, %d]",
                        line_no, key, it->dump(), lo, hi));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MooncakeTrace> MooncakeTrace::Load(const Options& options) {
  struct stat st;
  if (stat(options.path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "cannot read trace \"", options.path, "\": ", std::strerror(errno)));
  }
  // A directory opens as a stream that reads nothing: an empty trace.
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trace \"", options.path, "\" is not a regular file (",
        S_ISDIR(st.st_mode) ? "a directory" : "a special file", ")"));
  }
  std::ifstream in(options.path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "cannot read trace \"", options.path, "\": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<MooncakeTrace> trace = Parse(text.str(), options);
  if (!trace.ok()) {
    return absl::Status(
        trace.status().code(),
        absl::StrCat(options.path, ": ", trace.status().message()));
  }
  return trace;
}

absl::StatusOr<MooncakeTrace> MooncakeTrace::Parse(const std::string& text,
                                                   const Options& options) {
  if (!(options.step_ms > 0) || !std::isfinite(options.step_ms)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("step_ms %f must be > 0", options.step_ms));
  }
  if (options.max_requests < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_requests %d must be >= 0 (0: all)", options.max_requests));
  }
  constexpr int64_t kMaxLength = std::numeric_limits<int32_t>::max();
  MooncakeTrace trace;
  std::istringstream lines(text);
  std::string raw;
  int64_t line_no = 0;
  int64_t last_ms = 0;
  while (std::getline(lines, raw)) {
    ++line_no;
    if (options.max_requests > 0 &&
        trace.num_requests() >= options.max_requests) {
      break;
    }
    if (absl::StripAsciiWhitespace(raw).empty()) continue;
    const json line = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (line.is_discarded() || !line.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("line %d is not a JSON object", line_no));
    }
    int64_t ms = 0, input = 0, output = 0;
    PKV_RETURN_IF_ERROR(IntField(line, line_no, "timestamp", 0,
                                 std::numeric_limits<int64_t>::max(), &ms));
    PKV_RETURN_IF_ERROR(
        IntField(line, line_no, "input_length", 1, kMaxLength, &input));
    PKV_RETURN_IF_ERROR(
        IntField(line, line_no, "output_length", 1, kMaxLength, &output));
    std::vector<TokenSpan> spans;
    if (const auto it = line.find("hash_ids"); it != line.end()) {
      if (!it->is_array()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("line %d: hash_ids is not an array", line_no));
      }
      int64_t start = 0;
      for (const json& id : *it) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0) {
          return absl::InvalidArgumentError(
              absl::StrFormat("line %d: hash_ids holds %s, not an integer >= 0",
                              line_no, id.dump()));
        }
        // One id a 512-token block, the last one partial: an id past the
        // prompt names tokens it does not have (a corrupt line).
        if (start >= input) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "line %d: %d hash_ids name %d tokens (%d each), more than "
              "input_length %d (at most %d ids)",
              line_no, it->size(), int64_t{kTraceBlockTokens} * it->size(),
              kTraceBlockTokens, input,
              (input + kTraceBlockTokens - 1) / kTraceBlockTokens));
        }
        const int32_t length = static_cast<int32_t>(
            std::min<int64_t>(kTraceBlockTokens, input - start));
        spans.push_back(
            {SpanKey(TokenKeyTag::kTraceBlock, id.get<uint64_t>()), length});
        start += length;
      }
    }
    if (ms < last_ms) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "line %d: timestamp %d is before the previous line's %d", line_no, ms,
          last_ms));
    }
    last_ms = ms;
    Request r;
    r.id = trace.num_requests();
    r.arrival_step = static_cast<int64_t>(std::floor(ms / options.step_ms));
    r.prompt_tokens = static_cast<int32_t>(input);
    r.output_tokens = static_cast<int32_t>(output);
    r.prompt_spans = std::move(spans);
    trace.max_prompt_ = std::max(trace.max_prompt_, r.prompt_tokens);
    trace.max_output_ = std::max(trace.max_output_, r.output_tokens);
    trace.requests_.push_back(r);
    trace.lines_.push_back(line_no);
  }
  // An empty file (or one of blank lines) is a wrong path, not a workload.
  if (trace.requests_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the trace has no requests (%d lines)", line_no));
  }
  return trace;
}

std::vector<Request> MooncakeTrace::ArrivalsAt(int64_t step) {
  std::vector<Request> out;
  while (next_ < requests_.size() && requests_[next_].arrival_step <= step) {
    out.push_back(requests_[next_++]);
  }
  return out;
}

}  // namespace pagedkv::kv_stress
