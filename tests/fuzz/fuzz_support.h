// tests/fuzz/fuzz_support.h
//
// What the fuzzers in this folder share: FuzzInput decodes a libFuzzer input
// into small integers (the operation stream), OpStats counts inputs,
// operations and outcomes and prints them when the process exits, and
// Divergence() reports a mismatch between a library and its model and
// aborts, which libFuzzer reports as a crash (and saves the input).
//
// An exhausted input reads as zeros, so every input decodes to a finite,
// deterministic operation sequence; a fuzzer stops when empty() is true.
//
//   FuzzInput in(data, size);
//   const int64_t batch = 1 + in.Below(3);   // 1..3
//   if (in.OneIn(8)) batch += 1;             // A bad shape now and then.
//   OpStats& stats = OpStats::Get("cache_fuzzer", {"update", "crop"});
//   stats.CountOp(0, absl::OkStatus());
//   if (cache_length != model_length) Divergence(history, "length differs");
//
// Thread safety: none; libFuzzer runs one input at a time on one thread.
#ifndef PAGEDKV_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define PAGEDKV_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pagedkv::fuzzing {

class FuzzInput {
 public:
  // `data` must outlive the input.
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t consumed() const { return pos_; }

  // The next byte, or 0 once the input is exhausted.
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }

  // A value in [0, n): one byte for n <= 256, two otherwise.
  // REQUIRES: 1 <= n <= 65536.
  int64_t Below(int64_t n) {
    if (n <= 1) return 0;
    uint32_t x = Byte();
    if (n > 256) x = (x << 8) | Byte();
    return static_cast<int64_t>(x % static_cast<uint32_t>(n));
  }
  // A value in [lo, hi].
  int64_t InRange(int64_t lo, int64_t hi) { return lo + Below(hi - lo + 1); }
  bool Bool() { return (Byte() & 1) != 0; }
  // True for one value in n (n >= 1): rare events, mostly bad input. False
  // for an exhausted input, so that zeros decode to ordinary operations.
  bool OneIn(int64_t n) { return Below(n) == n - 1; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Counters for the exit report: how many inputs ran, how many operations of
// each kind, and how many of those returned OK, ResourceExhausted or another
// error.
class OpStats {
 public:
  // The process-wide counters of fuzzer `name`, created (and their exit
  // report registered with atexit) on first use; later calls ignore the
  // arguments.
  static OpStats& Get(const char* name, std::vector<const char*> op_names) {
    static OpStats* const stats = [&] {
      OpStats* s = new OpStats(name, std::move(op_names));
      std::atexit([] { Get("", {}).Print(); });
      return s;
    }();
    return *stats;
  }

  void CountInput() { ++inputs_; }
  void CountOp(size_t op, const absl::Status& status) {
    static const bool verbose = std::getenv("PKV_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "    -> %s\n", status.ToString().c_str());
    Counts& c = counts_[op];
    ++c.total;
    if (status.ok()) {
      ++c.ok;
    } else if (status.code() == absl::StatusCode::kResourceExhausted) {
      ++c.exhausted;
    } else {
      ++c.error;
    }
  }
  int64_t total_ops() const {
    int64_t n = 0;
    for (const Counts& c : counts_) n += c.total;
    return n;
  }

  void Print() const {
    std::fprintf(stderr, "%s: %lld inputs, %lld operations\n", name_,
                 static_cast<long long>(inputs_),
                 static_cast<long long>(total_ops()));
    for (size_t i = 0; i < counts_.size(); ++i) {
      const Counts& c = counts_[i];
      std::fprintf(stderr,
                   "  %-22s %12lld  (ok %lld, resource-exhausted %lld, other "
                   "errors %lld)\n",
                   op_names_[i], static_cast<long long>(c.total),
                   static_cast<long long>(c.ok),
                   static_cast<long long>(c.exhausted),
                   static_cast<long long>(c.error));
    }
  }

 private:
  struct Counts {
    int64_t total = 0;
    int64_t ok = 0;
    int64_t exhausted = 0;
    int64_t error = 0;
  };

  OpStats(const char* name, std::vector<const char*> op_names)
      : name_(name),
        op_names_(std::move(op_names)),
        counts_(op_names_.size()) {}

  const char* name_;
  std::vector<const char*> op_names_;
  std::vector<Counts> counts_;
  int64_t inputs_ = 0;
};

// The last operations of the current input, printed with a divergence.
class History {
 public:
  void Clear() { lines_.clear(); }
  // With PKV_FUZZ_VERBOSE set in the environment every line is also
  // printed as it happens (to follow a crash inside the library).
  void Add(std::string line) {
    static const bool verbose = std::getenv("PKV_FUZZ_VERBOSE") != nullptr;
    if (verbose) {
      std::fprintf(stderr, "  op %lld: %s\n", static_cast<long long>(count_),
                   line.c_str());
    }
    if (lines_.size() == kKeep) lines_.pop_front();
    lines_.push_back(std::move(line));
    ++count_;
  }
  int64_t count() const { return count_; }
  std::string ToString() const {
    std::string s;
    int64_t n = count_ - static_cast<int64_t>(lines_.size());
    for (const std::string& line : lines_) {
      s += absl::StrFormat("  op %d: %s\n", n++, line);
    }
    return s;
  }

 private:
  static constexpr size_t kKeep = 24;
  std::deque<std::string> lines_;
  int64_t count_ = 0;
};

// Prints "DIVERGENCE: <message>" and the history, then aborts.
[[noreturn]] inline void Divergence(const History& history,
                                    const std::string& message) {
  std::fprintf(stderr, "DIVERGENCE: %s\nlast operations (newest last):\n%s",
               message.c_str(), history.ToString().c_str());
  std::fflush(stderr);
  std::abort();
}

// Whether the fuzzer is to steer around the known bug `name` (not generate
// what triggers it): PKV_FUZZ_ALLOW lists such names, comma-separated, so
// that a campaign can go on looking for other bugs while a known one is
// unfixed (each fuzzer's header comment lists its names). Unset: nothing is
// avoided.
inline bool Allowed(const std::string& name) {
  static const std::string* const allowed = [] {
    const char* env = std::getenv("PKV_FUZZ_ALLOW");
    return new std::string(absl::StrCat(",", env != nullptr ? env : "", ","));
  }();
  return allowed->find(absl::StrCat(",", name, ",")) != std::string::npos;
}

inline std::string CodeName(absl::StatusCode code) {
  return absl::StatusCodeToString(code);
}

}  // namespace pagedkv::fuzzing

#endif  // PAGEDKV_TESTS_FUZZ_FUZZ_SUPPORT_H_
