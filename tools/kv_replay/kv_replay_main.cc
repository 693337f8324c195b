// tools/kv_replay/kv_replay_main.cc
//
// kv_replay replays conformance traces (conformance/FORMAT.md) against
// pagedkv's caches.
//
//   kv_replay FILE.json
//       prints the replayed trace (same structure, this implementation's
//       result/error/state per op) as JSON on stdout.
//   kv_replay --check FILE.json [FILE2.json ...]
//       replays each file and compares it with the answers recorded in it;
//       prints one line per mismatching op and a final "N passed, M failed"
//       (scenarios). Exit 0 only if every scenario passes, and 1 when there
//       was no scenario to check.
//   kv_replay --check --kv_dtype=int8 --tolerance=0.004 FILE.json
//       the same on int8 KV blocks (issue #15), summaries within the
//       tolerance (tools/kv_replay/compare.h).
//
// Relative FILE paths are resolved against the directory `bazel run` was
// started in (BUILD_WORKING_DIRECTORY, see tools/common/paths.h), so
// `bazel run //tools/kv_replay -- trace.json > out.json` reads ./trace.json;
// the output goes to stdout, which `bazel run` leaves attached to the shell.
//
// Exit codes: 0 success / all passed, 1 some scenario failed, 2 usage error,
// unreadable file or malformed trace.
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tools/common/flags.h"
#include "tools/common/paths.h"
#include "tools/kv_replay/compare.h"
#include "tools/kv_replay/scenario_runner.h"

ABSL_FLAG(bool, check, false,
          "Compare each replayed trace with the answers recorded in it; exit 0 "
          "only if every scenario matches.");
ABSL_FLAG(std::string, kv_dtype, "same",
          "Storage of the caches' pools: same (the traces' dtype, exact), int8 "
          "or fp8_e4m3 (quantized KV blocks; combine with --tolerance).");
ABSL_FLAG(
    double, tolerance, 0.0,
    "With --check: compare summaries' sum and wsum within this relative "
    "tolerance and skip fnv1a64 (0: exact). README \"Quantized KV\" gives "
    "the values for int8 (0.004) and fp8_e4m3 (0.0625).");

namespace pagedkv::kv_replay {
namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] =
    "replays conformance traces (conformance/FORMAT.md) on pagedkv's\n"
    "caches.\n"
    "\n"
    "  kv_replay FILE.json\n"
    "      prints the replayed trace (this implementation's result, error and\n"
    "      state per op) as JSON on stdout.\n"
    "  kv_replay --check FILE.json [FILE2.json ...]\n"
    "      compares each replay with the answers recorded in the file; prints\n"
    "      one line per mismatching op, then \"N passed, M failed\"; fails\n"
    "      (exit 1) when the files hold no scenario.\n"
    "  kv_replay --check --kv_dtype=int8 --tolerance=0.004 FILE.json\n"
    "      the same on quantized (int8 or fp8_e4m3) KV blocks, summaries\n"
    "      within a relative tolerance.\n"
    "\n"
    "Under `bazel run //tools/kv_replay -- ...` relative paths are taken from\n"
    "the directory bazel was started in.\n"
    "Exit codes: 0 success or all passed, 1 some scenario failed, 2 usage\n"
    "error, unreadable file or malformed trace.";

// Returns the parsed JSON document in `path`, or NOT_FOUND / INVALID_ARGUMENT.
absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  return doc;
}

// Reads the trace in `path` and replays it; on failure prints why and
// returns nullopt. Fills *trace with the input document.
std::optional<nlohmann::json> LoadAndRun(const std::string& path,
                                         const ReplayOptions& options,
                                         nlohmann::json* trace) {
  absl::StatusOr<nlohmann::json> in = ReadJson(path);
  if (!in.ok()) {
    std::cerr << "kv_replay: " << in.status().message() << "\n";
    return std::nullopt;
  }
  absl::StatusOr<nlohmann::json> out = RunTrace(*in, options);
  if (!out.ok()) {
    std::cerr << "kv_replay: " << path
              << ": malformed trace: " << out.status().message() << "\n";
    return std::nullopt;
  }
  *trace = std::move(*in);
  return std::move(*out);
}

int Replay(const std::string& path, const ReplayOptions& options) {
  nlohmann::json trace;
  std::optional<nlohmann::json> out = LoadAndRun(path, options, &trace);
  if (!out.has_value()) return kExitUsage;
  std::cout << out->dump(-1, ' ', false,
                         nlohmann::json::error_handler_t::replace)
            << "\n";
  return 0;
}

int Check(const std::vector<std::string>& paths, const ReplayOptions& options,
          const CompareOptions& compare) {
  int passed = 0;
  int failed = 0;
  for (const std::string& path : paths) {
    nlohmann::json trace;
    std::optional<nlohmann::json> out = LoadAndRun(path, options, &trace);
    if (!out.has_value()) return kExitUsage;
    const TraceComparison cmp = CompareTraces(trace, *out, compare);
    for (const std::string& line : cmp.mismatch_lines) {
      std::cout << line << "\n";
    }
    passed += cmp.num_passed;
    failed += cmp.num_failed;
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  // A check that compared nothing (`{"scenarios": []}`) proves nothing.
  if (passed + failed == 0) {
    std::cerr << "kv_replay: no scenario to check in "
              << (paths.size() == 1 ? paths[0] : "the files given") << "\n";
    return kExitFailed;
  }
  return failed == 0 ? 0 : kExitFailed;
}

}  // namespace
}  // namespace pagedkv::kv_replay

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(pagedkv::kv_replay::kUsage);
  // Exit 0 after --help, 2 on a flag that does not parse (flags.h).
  std::vector<char*> args = pagedkv::tools::ParseFlagsOrExit(argc, argv);
  // Under `bazel run` the tool starts in its runfiles tree: relative paths
  // are meant from where the user stands.
  std::vector<std::string> paths;
  for (auto it = args.begin() + 1; it != args.end(); ++it) {
    paths.push_back(pagedkv::tools::UserPath(*it));
  }
  pagedkv::kv_replay::ReplayOptions options;
  const std::optional<pagedkv::KVStorage> storage =
      pagedkv::ParseKVStorage(absl::GetFlag(FLAGS_kv_dtype));
  if (!storage.has_value()) {
    std::cerr << "kv_replay: --kv_dtype must be same, int8 or fp8_e4m3, got '"
              << absl::GetFlag(FLAGS_kv_dtype) << "'\n";
    return pagedkv::kv_replay::kExitUsage;
  }
  options.storage = *storage;
  const double tolerance = absl::GetFlag(FLAGS_tolerance);
  if (!(tolerance >= 0)) {
    std::cerr << "kv_replay: --tolerance must be >= 0, got " << tolerance
              << "\n";
    return pagedkv::kv_replay::kExitUsage;
  }
  if (absl::GetFlag(FLAGS_check)) {
    if (paths.empty()) {
      std::cerr << "usage: kv_replay --check FILE.json [FILE2.json ...]\n";
      return pagedkv::kv_replay::kExitUsage;
    }
    return pagedkv::kv_replay::Check(paths, options, {.tolerance = tolerance});
  }
  if (paths.size() != 1) {
    std::cerr << "usage: kv_replay FILE.json | kv_replay --check FILE.json "
                 "[FILE2.json ...]\n";
    return pagedkv::kv_replay::kExitUsage;
  }
  return pagedkv::kv_replay::Replay(paths[0], options);
}
