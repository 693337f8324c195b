// tools/kv_stress/workload.h
//
// The request stream of the kv_stress tool: a seeded generator of
// continuous-batching requests. Arrivals are a Poisson process in scheduler
// steps (exponential inter-arrival gaps); prompt and output lengths come from
// a configurable distribution (lognormal by default: a chat-like long tail of
// a few hundred tokens); each request is plain, a beam search (one cache with
// batch = beam width) or a parallel-sampling fork (n samples sharing the
// prompt), and may carry a sliding window that the server enforces with Crop.
//
// Every draw goes through Rng, which uses only std::mt19937_64's output (fixed
// by the standard) and its own inversion/Box-Muller, so one seed gives the
// same stream on every standard library. This is a stress driver, not a
// benchmark.
//
//   WorkloadOptions options;  // chat-like defaults
//   options.seed = 7;
//   WorkloadGenerator gen(options);
//   for (int64_t step = 0; step < 100; ++step) {
//     for (const Request& r : gen.ArrivalsAt(step)) { /* enqueue r */ }
//   }
//
// Thread safety: Rng and WorkloadGenerator are used by one thread at a time.
#ifndef PAGEDKV_TOOLS_KV_STRESS_WORKLOAD_H_
#define PAGEDKV_TOOLS_KV_STRESS_WORKLOAD_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {

// A deterministic random source: the raw mt19937_64 sequence plus
// distributions computed here (never std::*_distribution, whose output
// differs between standard libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  uint64_t Next() { return engine_(); }
  // Returns a double uniform in [0, 1) with 53 random bits.
  double Uniform();
  // Returns an integer uniform in [0, n). REQUIRES: n > 0.
  int64_t Below(int64_t n);
  // Returns true with probability pct / 100.
  bool Percent(double pct) { return Uniform() * 100.0 < pct; }
  // Returns an exponential draw with the given mean (inversion).
  double Exponential(double mean);
  // Returns a standard normal draw (Box-Muller, one value per call).
  double Normal();

 private:
  std::mt19937_64 engine_;
};

enum class LengthDist { kLognormal, kUniform, kFixed };

// Returns "lognormal", "uniform" or "fixed".
std::string_view LengthDistName(LengthDist dist);
std::optional<LengthDist> ParseLengthDist(std::string_view name);

// A token-length distribution, clamped to [min_tokens, max_tokens].
//   kLognormal: exp(N(log(median), sigma^2));
//   kUniform:   uniform in [min_tokens, max_tokens];
//   kFixed:     median (clamped).
struct LengthSpec {
  LengthDist dist = LengthDist::kLognormal;
  double median = 256;
  double sigma = 0.8;
  int32_t min_tokens = 1;
  int32_t max_tokens = 2048;

  // Returns one length in [min_tokens, max_tokens].
  int32_t Draw(Rng& rng) const;
};

struct WorkloadOptions {
  uint64_t seed = 1;
  // Mean arrivals per scheduler step (Poisson).
  double arrivals_per_step = 0.4;
  LengthSpec prompt{LengthDist::kLognormal, 256, 0.8, 8, 2048};
  LengthSpec output{LengthDist::kLognormal, 192, 0.8, 8, 2048};
  // Percent of requests that are beam searches / parallel-sampling forks
  // (beam is drawn first; the rest are plain). Percent of requests with a
  // sliding window enforced by Crop.
  double beam_pct = 2;
  double fork_pct = 5;
  double crop_pct = 0;
  int32_t beam_width = 4;
  int32_t fork_samples = 4;
  int32_t crop_window = 512;
};

// Produces the arrivals of each step, in order of steps, without end.
class WorkloadGenerator : public RequestSource {
 public:
  explicit WorkloadGenerator(const WorkloadOptions& options);

  // Returns the requests arriving in [step, step + 1), ids increasing.
  // REQUIRES: steps are asked in increasing order.
  std::vector<Request> ArrivalsAt(int64_t step) override;
  bool exhausted() const override { return false; }

  const WorkloadOptions& options() const { return options_; }

 private:
  Request MakeRequest(double arrival_time);

  WorkloadOptions options_;
  Rng rng_;
  // Time (in steps) of the next arrival not yet handed out.
  double next_arrival_ = 0;
  int64_t next_id_ = 0;
};

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_WORKLOAD_H_
