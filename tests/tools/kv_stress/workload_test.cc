// Tests of the kv_stress request generator: determinism, the length
// distributions, Poisson arrivals and the request mix.
#include "tools/kv_stress/workload.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagedkv::kv_stress {
namespace {

std::vector<Request> Generate(const WorkloadOptions& options, int64_t steps) {
  WorkloadGenerator gen(options);
  std::vector<Request> all;
  for (int64_t step = 0; step < steps; ++step) {
    for (const Request& r : gen.ArrivalsAt(step)) all.push_back(r);
  }
  return all;
}

bool SameRequest(const Request& a, const Request& b) {
  return a.id == b.id && a.arrival_step == b.arrival_step &&
         a.prompt_tokens == b.prompt_tokens &&
         a.output_tokens == b.output_tokens && a.kind == b.kind &&
         a.width == b.width && a.crop_window == b.crop_window;
}

TEST(RngTest, SameSeedGivesSameDraws) {
  Rng a(42), b(42);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.Uniform(), b.Uniform());
    EXPECT_EQ(a.Normal(), b.Normal());
  }
}

TEST(RngTest, UniformStaysInUnitInterval) {
  Rng rng(1);
  for (int i = 0; i < 10000; ++i) {
    const double u = rng.Uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

TEST(RngTest, NormalHasUnitMoments) {
  Rng rng(3);
  double sum = 0, sum_sq = 0;
  const int n = 50000;
  for (int i = 0; i < n; ++i) {
    const double x = rng.Normal();
    sum += x;
    sum_sq += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.03);
  EXPECT_NEAR(sum_sq / n, 1.0, 0.03);
}

TEST(RngTest, ExponentialHasItsMean) {
  Rng rng(5);
  double sum = 0;
  const int n = 50000;
  for (int i = 0; i < n; ++i) sum += rng.Exponential(4.0);
  EXPECT_NEAR(sum / n, 4.0, 0.1);
}

TEST(LengthSpecTest, LognormalMedianAndClamp) {
  LengthSpec spec{LengthDist::kLognormal, 200, 0.8, 10, 1000};
  Rng rng(7);
  std::vector<int32_t> v;
  for (int i = 0; i < 20001; ++i) v.push_back(spec.Draw(rng));
  for (int32_t x : v) {
    EXPECT_GE(x, 10);
    EXPECT_LE(x, 1000);
  }
  std::nth_element(v.begin(), v.begin() + 10000, v.end());
  EXPECT_NEAR(v[10000], 200, 10);
}

TEST(LengthSpecTest, FixedReturnsTheMedianClamped) {
  Rng rng(1);
  EXPECT_EQ((LengthSpec{LengthDist::kFixed, 64, 0, 1, 100}).Draw(rng), 64);
  EXPECT_EQ((LengthSpec{LengthDist::kFixed, 640, 0, 1, 100}).Draw(rng), 100);
}

TEST(LengthSpecTest, UniformCoversItsRange) {
  LengthSpec spec{LengthDist::kUniform, 0, 0, 3, 6};
  Rng rng(2);
  std::vector<int> seen(7, 0);
  for (int i = 0; i < 1000; ++i) ++seen[spec.Draw(rng)];
  EXPECT_EQ(seen[0] + seen[1] + seen[2], 0);
  for (int x = 3; x <= 6; ++x) EXPECT_GT(seen[x], 150);
}

TEST(LengthDistTest, NamesRoundTrip) {
  for (LengthDist d :
       {LengthDist::kLognormal, LengthDist::kUniform, LengthDist::kFixed}) {
    EXPECT_EQ(ParseLengthDist(LengthDistName(d)), d);
  }
  EXPECT_EQ(ParseLengthDist("gamma"), std::nullopt);
}

TEST(WorkloadGeneratorTest, SameSeedGivesSameStream) {
  WorkloadOptions options;
  options.seed = 11;
  const std::vector<Request> a = Generate(options, 2000);
  const std::vector<Request> b = Generate(options, 2000);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(SameRequest(a[i], b[i]));
}

TEST(WorkloadGeneratorTest, DifferentSeedsGiveDifferentStreams) {
  WorkloadOptions a, b;
  a.seed = 1;
  b.seed = 2;
  const std::vector<Request> ra = Generate(a, 200);
  const std::vector<Request> rb = Generate(b, 200);
  const size_t n = std::min(ra.size(), rb.size());
  int differ = 0;
  for (size_t i = 0; i < n; ++i) differ += !SameRequest(ra[i], rb[i]);
  EXPECT_GT(differ, static_cast<int>(n / 2));
}

TEST(WorkloadGeneratorTest, ArrivalsArePoissonWithTheRequestedRate) {
  WorkloadOptions options;
  options.arrivals_per_step = 0.4;
  const int64_t steps = 50000;
  const std::vector<Request> all = Generate(options, steps);
  const double rate = double(all.size()) / steps;
  EXPECT_NEAR(rate, 0.4, 0.01);
  // Poisson: the per-step count's variance equals its mean.
  std::vector<int> per_step(steps, 0);
  for (const Request& r : all) ++per_step[r.arrival_step];
  double sum_sq = 0;
  for (int c : per_step) sum_sq += (c - rate) * (c - rate);
  EXPECT_NEAR(sum_sq / steps, rate, 0.02);
}

TEST(WorkloadGeneratorTest, IdsIncreaseAndStepsAreInOrder) {
  WorkloadOptions options;
  const std::vector<Request> all = Generate(options, 1000);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].id, static_cast<int64_t>(i));
    if (i > 0) {
      EXPECT_GE(all[i].arrival_step, all[i - 1].arrival_step);
    }
  }
}

TEST(WorkloadGeneratorTest, MixFollowsThePercentages) {
  WorkloadOptions options;
  options.arrivals_per_step = 2;
  options.beam_pct = 20;
  options.fork_pct = 30;
  options.crop_pct = 10;
  options.beam_width = 3;
  options.fork_samples = 5;
  options.crop_window = 77;
  const std::vector<Request> all = Generate(options, 10000);
  int beams = 0, forks = 0, crops = 0;
  for (const Request& r : all) {
    switch (r.kind) {
      case RequestKind::kBeam:
        ++beams;
        EXPECT_EQ(r.width, 3);
        break;
      case RequestKind::kFork:
        ++forks;
        EXPECT_EQ(r.width, 5);
        break;
      case RequestKind::kPlain:
        EXPECT_EQ(r.width, 1);
        break;
    }
    if (r.crop_window != 0) {
      ++crops;
      EXPECT_EQ(r.crop_window, 77);
    }
  }
  const double n = all.size();
  EXPECT_NEAR(beams / n, 0.20, 0.02);
  EXPECT_NEAR(forks / n, 0.30, 0.02);
  EXPECT_NEAR(crops / n, 0.10, 0.02);
}

}  // namespace
}  // namespace pagedkv::kv_stress
