// tools/kv_stress/workload.cc
#include "tools/kv_stress/workload.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "base/check.h"

namespace pagedkv::kv_stress {

double Rng::Uniform() {
  return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0);
}

int64_t Rng::Below(int64_t n) {
  PKV_CHECK(n > 0, "Below(%d)", n);
  return static_cast<int64_t>(engine_() % static_cast<uint64_t>(n));
}

double Rng::Exponential(double mean) {
  // 1 - u is in (0, 1], so the log is finite.
  return -mean * std::log(1.0 - Uniform());
}

double Rng::Normal() {
  constexpr double kTwoPi = 6.283185307179586;
  const double u1 = 1.0 - Uniform();  // (0, 1]
  const double u2 = Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

std::string_view LengthDistName(LengthDist dist) {
  switch (dist) {
    case LengthDist::kLognormal:
      return "lognormal";
    case LengthDist::kUniform:
      return "uniform";
    case LengthDist::kFixed:
      return "fixed";
  }
  return "?";
}

std::optional<LengthDist> ParseLengthDist(std::string_view name) {
  if (name == "lognormal") return LengthDist::kLognormal;
  if (name == "uniform") return LengthDist::kUniform;
  if (name == "fixed") return LengthDist::kFixed;
  return std::nullopt;
}

int32_t LengthSpec::Draw(Rng& rng) const {
  double x = median;
  switch (dist) {
    case LengthDist::kLognormal:
      x = std::exp(std::log(std::max(median, 1.0)) + sigma * rng.Normal());
      break;
    case LengthDist::kUniform:
      return static_cast<int32_t>(
          min_tokens + rng.Below(int64_t{max_tokens} - min_tokens + 1));
    case LengthDist::kFixed:
      break;
  }
  const double clamped =
      std::clamp(std::round(x), static_cast<double>(min_tokens),
                 static_cast<double>(max_tokens));
  return static_cast<int32_t>(clamped);
}

WorkloadGenerator::WorkloadGenerator(const WorkloadOptions& options)
    : options_(options), rng_(options.seed) {
  PKV_CHECK(options.arrivals_per_step > 0, "arrivals_per_step %f",
            options.arrivals_per_step);
  next_arrival_ = rng_.Exponential(1.0 / options_.arrivals_per_step);
}

Request WorkloadGenerator::MakeRequest(double arrival_time) {
  Request r;
  r.id = next_id_++;
  r.arrival_step = static_cast<int64_t>(std::floor(arrival_time));
  r.prompt_tokens = options_.prompt.Draw(rng_);
  r.output_tokens = options_.output.Draw(rng_);
  const double kind_draw = rng_.Uniform() * 100.0;
  if (kind_draw < options_.beam_pct) {
    r.kind = RequestKind::kBeam;
    r.width = std::max(1, options_.beam_width);
  } else if (kind_draw < options_.beam_pct + options_.fork_pct) {
    r.kind = RequestKind::kFork;
    r.width = std::max(1, options_.fork_samples);
  }
  if (rng_.Percent(options_.crop_pct)) r.crop_window = options_.crop_window;
  return r;
}

std::vector<Request> WorkloadGenerator::ArrivalsAt(int64_t step) {
  std::vector<Request> out;
  const double end = static_cast<double>(step + 1);
  while (next_arrival_ < end) {
    out.push_back(MakeRequest(std::max(next_arrival_, double(step))));
    next_arrival_ += rng_.Exponential(1.0 / options_.arrivals_per_step);
  }
  return out;
}

}  // namespace pagedkv::kv_stress
