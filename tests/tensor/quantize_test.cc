#include "tensor/quantize.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <algorithm>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kFloatMax = std::numeric_limits<float>::max();

// The values an input of `dtype` holds after rounding `values` to it.
std::vector<std::byte> Encode(DType dtype, const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * SizeOf(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    StoreFromFloat(dtype, values[i], bytes.data() + i * SizeOf(dtype));
  }
  return bytes;
}

std::vector<float> Decode(DType dtype, const std::vector<std::byte>& bytes) {
  std::vector<float> values(bytes.size() / SizeOf(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = LoadAsFloat(dtype, bytes.data() + i * SizeOf(dtype));
  }
  return values;
}

struct RoundTrip {
  float scale = 0;
  std::vector<float> input;   // As the source dtype holds it.
  std::vector<float> output;  // Dequantized to float32.
};

RoundTrip RoundTripOf(QuantType type, DType src,
                      const std::vector<float>& values) {
  const std::vector<std::byte> in = Encode(src, values);
  RoundTrip r;
  r.input = Decode(src, in);
  std::vector<std::byte> codes(values.size());
  r.scale = QuantizeVector(type, src, in.data(),
                           static_cast<int64_t>(values.size()), codes.data());
  r.output.resize(values.size());
  DequantizeVector(type, codes.data(), r.scale,
                   static_cast<int64_t>(values.size()), DType::kFloat32,
                   r.output.data());
  return r;
}

// The documented bounds, plus float rounding of x / scale and code * scale.
float Bound(QuantType type, float x, float scale) {
  const float rounding =
      4 * std::numeric_limits<float>::epsilon() * std::fabs(x) +
      std::numeric_limits<float>::denorm_min();
  if (type == QuantType::kInt8) return scale / 2 * 1.000001f + rounding;
  return std::max(std::fabs(x) / 16, scale / 1024) * 1.000001f + rounding;
}

void ExpectWithinBound(QuantType type, const RoundTrip& r) {
  float amax = 0;
  for (float x : r.input) amax = std::max(amax, std::fabs(x));
  EXPECT_LE(r.scale, amax / QuantMax(type) * 1.0001f +
                         std::numeric_limits<float>::denorm_min());
  for (size_t i = 0; i < r.input.size(); ++i) {
    ASSERT_TRUE(std::isfinite(r.output[i])) << i << ": " << r.input[i];
    EXPECT_LE(std::fabs(r.output[i] - r.input[i]),
              Bound(type, r.input[i], r.scale))
        << QuantTypeName(type) << " element " << i << " of " << r.input.size()
        << ": " << r.input[i] << " -> " << r.output[i] << " scale " << r.scale;
  }
}

class QuantizeBoundsTest
    : public ::testing::TestWithParam<std::tuple<QuantType, DType>> {
 protected:
  QuantType type() const { return std::get<0>(GetParam()); }
  DType src() const { return std::get<1>(GetParam()); }
};

TEST_P(QuantizeBoundsTest, RandomVectorsStayWithinTheBound) {
  std::mt19937 rng(15);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 300);
    const float magnitude = std::ldexp(
        1.0f, static_cast<int>(rng() % 30) - 20);  // Finite in float16.
    std::normal_distribution<float> dist(0.0f, magnitude);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    ExpectWithinBound(type(), RoundTripOf(type(), src(), v));
  }
}

TEST_P(QuantizeBoundsTest, AllEqualValuesComeBackAlmostExactly) {
  for (float value : {1.0f, -3.25f, 1e-3f, 6e4f}) {
    const RoundTrip r =
        RoundTripOf(type(), src(), std::vector<float>(64, value));
    ExpectWithinBound(type(), r);
    for (float out : r.output) {
      EXPECT_NEAR(out, r.input[0], 1e-6f * std::fabs(r.input[0]));
    }
  }
}

TEST_P(QuantizeBoundsTest, OneSpikeKeepsTheSpikeAndBoundsTheRest) {
  std::vector<float> v(128);
  for (int i = 0; i < 128; ++i) v[i] = 0.01f * static_cast<float>(i % 7 - 3);
  v[77] = 1000.0f;
  const RoundTrip r = RoundTripOf(type(), src(), v);
  ExpectWithinBound(type(), r);
  EXPECT_NEAR(r.output[77], r.input[77], 1e-3f);
}

TEST_P(QuantizeBoundsTest, DenormalsStayWithinTheBound) {
  // float32 subnormals (inputs of other dtypes round them to zero or to
  // their own subnormals).
  const float tiny = std::numeric_limits<float>::denorm_min();
  for (float unit : {tiny, 37 * tiny, 1e-40f, 6e-8f /* half subnormal */}) {
    std::vector<float> v;
    for (int i = -20; i <= 20; ++i) v.push_back(unit * static_cast<float>(i));
    ExpectWithinBound(type(), RoundTripOf(type(), src(), v));
  }
}

TEST_P(QuantizeBoundsTest, LargestValuesDoNotOverflow) {
  const float largest = src() == DType::kFloat16    ? 65504.0f
                        : src() == DType::kBFloat16 ? 0x1.FEp127f
                                                    : kFloatMax;
  std::vector<float> v = {largest, -largest, largest / 3, 1.0f, -largest / 7};
  const RoundTrip r = RoundTripOf(type(), src(), v);
  ExpectWithinBound(type(), r);  // Includes: every output is finite.
}

TEST_P(QuantizeBoundsTest, ZerosGiveScaleZeroAndPositiveZeros) {
  const RoundTrip r = RoundTripOf(type(), src(), {0.0f, -0.0f, 0.0f});
  EXPECT_EQ(r.scale, 0.0f);
  for (float out : r.output) {
    EXPECT_EQ(out, 0.0f);
    EXPECT_FALSE(std::signbit(out));
  }
}

TEST_P(QuantizeBoundsTest, ANaNOrAnInfinityPoisonsTheWholeVector) {
  for (float bad : {kNaN, kInf, -kInf}) {
    const RoundTrip r = RoundTripOf(type(), src(), {1.0f, bad, -2.0f, 0.0f});
    EXPECT_TRUE(std::isnan(r.scale)) << bad;
    for (float out : r.output) EXPECT_TRUE(std::isnan(out)) << bad;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, QuantizeBoundsTest,
    ::testing::Combine(::testing::Values(QuantType::kInt8, QuantType::kFp8E4M3),
                       ::testing::Values(DType::kFloat32, DType::kFloat16,
                                         DType::kBFloat16)));

TEST(QuantizeInt8Test, CodesRoundHalfToEven) {
  // amax 127 gives scale 1, so codes are the inputs rounded to even.
  const std::vector<float> v = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 3.49f};
  std::vector<int8_t> codes(v.size());
  const float scale = QuantizeVector(QuantType::kInt8, DType::kFloat32,
                                     v.data(), 7, codes.data());
  EXPECT_EQ(scale, 1.0f);
  EXPECT_THAT(codes, ::testing::ElementsAre(127, 0, 2, 2, 0, -2, 3));
}

TEST(QuantizeInt8Test, CodesAreSymmetricWithinPlusMinus127) {
  const std::vector<float> v = {-5.0f, 5.0f, -4.99f};
  std::vector<int8_t> codes(v.size());
  QuantizeVector(QuantType::kInt8, DType::kFloat32, v.data(), 3, codes.data());
  EXPECT_THAT(codes, ::testing::ElementsAre(-127, 127, -127));
}

TEST(E4M3Test, DecodeTableHasTheOcpValues) {
  EXPECT_EQ(E4M3ToFloat(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(E4M3ToFloat(0x80)));
  EXPECT_EQ(E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // Least subnormal.
  EXPECT_EQ(E4M3ToFloat(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // Least normal.
  EXPECT_EQ(E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(E4M3ToFloat(0x39), 1.125f);
  EXPECT_EQ(E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(E4M3ToFloat(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(E4M3ToFloat(0xFF)));
  EXPECT_EQ(E4M3DecodeTable()[0x39], 1.125f);
}

TEST(E4M3Test, EveryCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN.
    EXPECT_EQ(FloatToE4M3(E4M3ToFloat(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(E4M3Test, EncoderPicksTheNearestCodeTiesToEven) {
  // Reference: scan all finite codes in double arithmetic.
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> exponent(-12.0f, 9.0f);
  std::vector<float> inputs;
  for (int i = 0; i < 20000; ++i) {
    const float x = std::exp2(exponent(rng));
    inputs.push_back(rng() % 2 == 0 ? x : -x);
  }
  // Exact midpoints between neighbouring codes.
  for (int c = 0; c < 0x7E; ++c) {
    inputs.push_back((E4M3ToFloat(c) + E4M3ToFloat(c + 1)) / 2);
  }
  for (float x : inputs) {
    if (std::fabs(x) >= 448.0f) continue;
    int best = -1;
    double best_error = 1e300;
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x7F) == 0x7F) continue;
      const double error = std::fabs(static_cast<double>(E4M3ToFloat(c)) - x);
      if (error < best_error ||
          (error == best_error && (c & 1) == 0 && (best & 1) == 1)) {
        if (E4M3ToFloat(c) == 0 &&
            std::signbit(E4M3ToFloat(c)) != std::signbit(x)) {
          continue;  // Zero keeps the input's sign.
        }
        best = c;
        best_error = error;
      }
    }
    EXPECT_EQ(FloatToE4M3(x), best) << x;
  }
}

TEST(E4M3Test, SpecialValues) {
  EXPECT_EQ(FloatToE4M3(448.0f), 0x7E);
  EXPECT_EQ(FloatToE4M3(1e6f), 0x7E);  // Saturates.
  EXPECT_EQ(FloatToE4M3(kInf), 0x7E);
  EXPECT_EQ(FloatToE4M3(-kInf), 0xFE);
  EXPECT_EQ(FloatToE4M3(kNaN), 0x7F);
  EXPECT_EQ(FloatToE4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToE4M3(std::ldexp(1.0f, -11)), 0x00);  // Below half a step.
}

// The branch-free float16 / bfloat16 stores must equal dtype.h's rounding.
TEST(DequantizeTest, NarrowOutputsMatchScalarRounding) {
  std::mt19937 rng(7);
  for (QuantType type : {QuantType::kInt8, QuantType::kFp8E4M3}) {
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<uint8_t> codes(256);
      for (int c = 0; c < 256; ++c) codes[c] = static_cast<uint8_t>(c);
      if (type == QuantType::kFp8E4M3) {
        codes[0x7F] = 0x7E;
        codes[0xFF] = 0xFE;
      }
      // Scales from deep in the float16 subnormals to past its overflow.
      const float scale = std::ldexp(1.0f + (rng() % 1000) / 1000.0f,
                                     static_cast<int>(rng() % 50) - 38);
      std::vector<float> wide(256);
      DequantizeVector(type, codes.data(), scale, 256, DType::kFloat32,
                       wide.data());
      for (DType narrow : {DType::kFloat16, DType::kBFloat16}) {
        std::vector<uint16_t> out(256);
        DequantizeVector(type, codes.data(), scale, 256, narrow, out.data());
        for (int c = 0; c < 256; ++c) {
          uint16_t want;
          StoreFromFloat(narrow, wide[c], &want);
          ASSERT_EQ(out[c], want)
              << DTypeName(narrow) << " code " << c << " scale " << scale;
        }
      }
    }
  }
}

TEST(DequantizeTest, DotAndAccumulateMatchDequantizedValues) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist;
  for (QuantType type : {QuantType::kInt8, QuantType::kFp8E4M3}) {
    std::vector<float> v(96), q(96);
    for (float& x : v) x = dist(rng);
    for (float& x : q) x = dist(rng);
    std::vector<uint8_t> codes(96);
    const float scale =
        QuantizeVector(type, DType::kFloat32, v.data(), 96, codes.data());
    std::vector<float> back(96);
    DequantizeVector(type, codes.data(), scale, 96, DType::kFloat32,
                     back.data());
    double want = 0;
    for (int d = 0; d < 96; ++d) want += double{q[d]} * back[d];
    EXPECT_NEAR(DotQuantized(type, q.data(), codes.data(), scale, 96), want,
                1e-4);
    std::vector<float> acc(96, 1.0f);
    AccumulateQuantized(type, 0.5f, codes.data(), scale, 96, acc.data());
    for (int d = 0; d < 96; ++d)
      EXPECT_NEAR(acc[d], 1.0f + 0.5f * back[d], 1e-5);
    EXPECT_TRUE(
        std::isnan(DotQuantized(type, q.data(), codes.data(), kNaN, 96)));
  }
}

// The AVX2 kernels (when this CPU has them) against the portable loops, bit
// for bit: every format, source and output dtype, lengths around the 8- and
// 32-element steps, and inputs with zeros, spikes, subnormals, ties,
// infinities and NaNs; through QuantizeVectors with strides.
class ScalarKernels {
 public:
  explicit ScalarKernels(bool scalar) {
    internal::UseScalarQuantizeKernelsForTesting(scalar);
  }
  ~ScalarKernels() { internal::UseScalarQuantizeKernelsForTesting(false); }
};

std::vector<float> AdversarialVector(std::mt19937& rng, int64_t n, int kind) {
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  switch (kind % 8) {
    case 1:
      std::fill(v.begin(), v.end(), 0.0f);
      break;
    case 2:
      v[rng() % v.size()] = 1e4f;  // One spike.
      break;
    case 3:
      for (float& x : v) x = std::ldexp(x, -140);  // Float32 subnormals.
      break;
    case 4:
      for (float& x : v) x = std::round(x * 20) / 2;  // Many ties.
      v[0] = 127;
      break;
    case 5:
      v[rng() % v.size()] = (rng() % 2) ? kInf : -kInf;
      break;
    case 6:
      v[rng() % v.size()] = kNaN;
      break;
    case 7:
      for (float& x : v) x = std::ldexp(x, -20);  // Float16 subnormals.
      break;
  }
  return v;
}

TEST(QuantizeKernelsTest, Avx2MatchesThePortableLoopsBitForBit) {
  if (!internal::QuantizeUsesAvx2()) GTEST_SKIP() << "no AVX2 + F16C here";
  std::mt19937 rng(11);
  for (QuantType type : {QuantType::kInt8, QuantType::kFp8E4M3}) {
    for (DType src : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (int64_t n : {1, 7, 8, 9, 31, 32, 33, 64, 100, 128, 256}) {
        for (int kind = 0; kind < 16; ++kind) {
          const int64_t vectors = 3, stride = n + 5;  // Elements apart.
          std::vector<float> values;
          for (int64_t v = 0; v < vectors; ++v) {
            std::vector<float> one = AdversarialVector(rng, n, kind + v);
            one.resize(static_cast<size_t>(stride), 0.0f);
            values.insert(values.end(), one.begin(), one.end());
          }
          const std::vector<std::byte> in = Encode(src, values);
          std::vector<uint8_t> codes[2];
          std::vector<float> scales[2];
          for (int scalar = 0; scalar < 2; ++scalar) {
            ScalarKernels mode(scalar == 1);
            codes[scalar].assign(static_cast<size_t>(vectors * (n + 3)), 0xAB);
            scales[scalar].assign(static_cast<size_t>(vectors * 2), -1.0f);
            QuantizeVectors(type, src, in.data(), stride, vectors, n,
                            codes[scalar].data(), n + 3, scales[scalar].data(),
                            2 * sizeof(float));
          }
          const std::string where = ::testing::PrintToString(
              std::make_tuple(QuantTypeName(type), DTypeName(src), n, kind));
          ASSERT_EQ(codes[0], codes[1]) << where;
          for (size_t i = 0; i < scales[0].size(); ++i) {
            uint32_t a, b;
            std::memcpy(&a, &scales[0][i], 4);
            std::memcpy(&b, &scales[1][i], 4);
            ASSERT_EQ(a, b) << where << " scale " << i;
          }
          // Dequantize the (dense) codes of the first vector to every dtype.
          for (DType dst : {DType::kFloat32, DType::kFloat16,
                            DType::kBFloat16}) {
            std::vector<std::byte> out[2];
            for (int scalar = 0; scalar < 2; ++scalar) {
              ScalarKernels mode(scalar == 1);
              out[scalar].assign(static_cast<size_t>(2 * n) * SizeOf(dst),
                                 std::byte{0x5A});
              std::vector<uint8_t> dense(codes[0].begin(),
                                         codes[0].begin() + n);
              dense.insert(dense.end(), codes[0].begin() + (n + 3),
                           codes[0].begin() + (n + 3) + n);
              const float two[2] = {scales[0][0], scales[0][2]};
              DequantizeVectors(type, dense.data(), two, 2, n, dst,
                                out[scalar].data());
            }
            ASSERT_EQ(out[0], out[1]) << where << " to " << DTypeName(dst);
          }
        }
      }
    }
  }
}

// Every e4m3 code, the NaN codes included, decodes through the AVX2 path
// as the table says.
TEST(QuantizeKernelsTest, EveryE4M3CodeDecodesAsTheTable) {
  std::vector<uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) codes[c] = static_cast<uint8_t>(c);
  std::vector<float> out(256);
  DequantizeVector(QuantType::kFp8E4M3, codes.data(), 1.0f, 256,
                   DType::kFloat32, out.data());
  for (int c = 0; c < 256; ++c) {
    const float want = E4M3ToFloat(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[c])) << c;
    } else {
      EXPECT_EQ(out[c], want) << c;
    }
  }
}

}  // namespace
}  // namespace pagedkv
