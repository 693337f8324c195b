#include "tensor/dtype.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

uint32_t Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

float FromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

bool IsHalfNaN(uint16_t bits) {
  return (bits & 0x7C00) == 0x7C00 && (bits & 0x03FF) != 0;
}
bool IsBFloat16NaN(uint16_t bits) {
  return (bits & 0x7F80) == 0x7F80 && (bits & 0x007F) != 0;
}

// An independent model of a small binary float format (sign, `exponent_bits`,
// `mantissa_bits`, IEEE layout), computed in exact double arithmetic from the
// definition rather than by bit manipulation.
class ReferenceFormat {
 public:
  ReferenceFormat(int exponent_bits, int mantissa_bits)
      : mantissa_bits_(mantissa_bits),
        bias_((1 << (exponent_bits - 1)) - 1),
        inf_bits_(((1u << exponent_bits) - 1) << mantissa_bits) {
    // magnitudes_[k] is the value of bit pattern k for every finite k, then
    // the infinity pattern stands for 2^(emax+1): IEEE rounds as if the
    // exponent range were unbounded, and that next value is what overflows.
    for (uint32_t k = 0; k <= inf_bits_; ++k) magnitudes_.push_back(Decode(k));
    magnitudes_.back() = std::ldexp(1.0, bias_ + 1);
  }

  // Value of a non-negative finite bit pattern, from the definition.
  double Decode(uint32_t bits) const {
    const uint32_t exponent = bits >> mantissa_bits_;
    const uint32_t mantissa = bits & ((1u << mantissa_bits_) - 1);
    if (exponent == 0) {
      return std::ldexp(static_cast<double>(mantissa),
                        1 - bias_ - mantissa_bits_);
    }
    return std::ldexp(static_cast<double>(mantissa + (1u << mantissa_bits_)),
                      static_cast<int>(exponent) - bias_ - mantissa_bits_);
  }

  // Round-to-nearest-even encoding of a non-NaN `x`, by search: the bracketing
  // representable values and their exact midpoint.
  uint16_t Encode(double x) const {
    const uint16_t sign_bit = std::signbit(x) ? 0x8000 : 0;
    const double magnitude = std::fabs(x);
    if (magnitude >= magnitudes_.back()) {
      return static_cast<uint16_t>(sign_bit | inf_bits_);
    }
    // First k with magnitudes_[k] > magnitude; the answer is k - 1 or k.
    uint32_t lo = 0;
    uint32_t hi = inf_bits_;
    while (lo < hi) {
      const uint32_t mid = (lo + hi) / 2;
      if (magnitudes_[mid] > magnitude) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    const uint32_t below = lo - 1;
    const double midpoint = (magnitudes_[below] + magnitudes_[lo]) / 2;
    uint32_t result;
    if (magnitude < midpoint) {
      result = below;
    } else if (magnitude > midpoint) {
      result = lo;
    } else {
      result = (below % 2 == 0) ? below : lo;
    }
    return static_cast<uint16_t>(sign_bit | result);
  }

  // Every exact midpoint between neighbouring finite values, plus the
  // overflow midpoint.
  std::vector<double> Midpoints() const {
    std::vector<double> result;
    for (size_t k = 0; k + 1 < magnitudes_.size(); ++k) {
      result.push_back((magnitudes_[k] + magnitudes_[k + 1]) / 2);
    }
    return result;
  }

  uint32_t max_finite_bits() const { return inf_bits_ - 1; }

 private:
  int mantissa_bits_;
  int bias_;
  uint32_t inf_bits_;
  std::vector<double> magnitudes_;
};

const ReferenceFormat& HalfReference() {
  static const ReferenceFormat* const format = new ReferenceFormat(5, 10);
  return *format;
}
const ReferenceFormat& BFloat16Reference() {
  static const ReferenceFormat* const format = new ReferenceFormat(8, 7);
  return *format;
}

// Floats that probe the rounding of a format: every midpoint (exactly, when
// it is a float), one float ulp either side of it, every representable value,
// random bit patterns, all with both signs.
std::vector<float> ProbeFloats(const ReferenceFormat& format) {
  std::vector<float> probes;
  for (double midpoint : format.Midpoints()) {
    const float f = static_cast<float>(midpoint);
    probes.push_back(f);
    probes.push_back(std::nextafter(f, 0.0f));
    probes.push_back(std::nextafter(f, INFINITY));
  }
  for (uint32_t k = 0; k <= format.max_finite_bits(); ++k) {
    probes.push_back(static_cast<float>(format.Decode(k)));
  }
  std::mt19937 rng(12345);
  for (int i = 0; i < 200000; ++i) {
    const float f = FromBits(static_cast<uint32_t>(rng()));
    if (!std::isnan(f)) probes.push_back(f);
  }
  for (float f :
       {0.0f, 1e-30f, 1e-8f, 5.9604645e-8f, 2.9802322e-8f, 65504.0f, 65519.996f,
        65520.0f, 65536.0f, 3.4028235e38f, INFINITY, 1.0e-45f}) {
    probes.push_back(f);
  }
  const size_t n = probes.size();
  for (size_t i = 0; i < n; ++i) probes.push_back(-probes[i]);
  return probes;
}

TEST(DTypeTest, SizeOfGivesBytesPerElement) {
  EXPECT_EQ(SizeOf(DType::kFloat32), 4u);
  EXPECT_EQ(SizeOf(DType::kFloat16), 2u);
  EXPECT_EQ(SizeOf(DType::kBFloat16), 2u);
}

TEST(DTypeTest, NamesFollowTheConformanceSpelling) {
  EXPECT_EQ(DTypeName(DType::kFloat32), "float32");
  EXPECT_EQ(DTypeName(DType::kFloat16), "float16");
  EXPECT_EQ(DTypeName(DType::kBFloat16), "bfloat16");
  std::ostringstream os;
  os << DType::kBFloat16 << "," << DType::kFloat16;
  EXPECT_EQ(os.str(), "bfloat16,float16");
}

TEST(DTypeTest, ParseAcceptsNamesAndAliases) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    EXPECT_EQ(ParseDType(DTypeName(dtype)), dtype);
  }
  for (const char* name : {"f32", "fp32"}) {
    EXPECT_EQ(ParseDType(name), DType::kFloat32) << name;
  }
  for (const char* name : {"f16", "fp16", "half"}) {
    EXPECT_EQ(ParseDType(name), DType::kFloat16) << name;
  }
  EXPECT_EQ(ParseDType("bf16"), DType::kBFloat16);
}

TEST(DTypeTest, ParseRejectsUnknownNames) {
  for (const char* name :
       {"", "float64", "int32", "Float16", "float", "bfloat", "fp16 "}) {
    EXPECT_EQ(ParseDType(name), std::nullopt) << '"' << name << '"';
  }
}

TEST(DTypeTest, HalfToFloatMatchesTheDefinitionForEveryPattern) {
  const ReferenceFormat& reference = HalfReference();
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const float f = HalfToFloat(half);
    if (IsHalfNaN(half)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << bits;
      continue;
    }
    const uint32_t magnitude = bits & 0x7FFF;
    const double expected =
        magnitude == 0x7C00 ? INFINITY : reference.Decode(magnitude);
    EXPECT_EQ(static_cast<double>(f), (bits & 0x8000) ? -expected : expected)
        << std::hex << bits;
    EXPECT_EQ(std::signbit(f), (bits & 0x8000) != 0) << std::hex << bits;
  }
}

TEST(DTypeTest, EveryHalfPatternRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const uint16_t back = FloatToHalf(HalfToFloat(half));
    if (IsHalfNaN(half)) {
      EXPECT_TRUE(IsHalfNaN(back)) << std::hex << bits << " -> " << back;
      EXPECT_EQ(back & 0x8000, half & 0x8000) << std::hex << bits;
      if (half & 0x0200) {
        EXPECT_EQ(back, half) << "quiet NaN " << std::hex << bits;
      }
    } else {
      EXPECT_EQ(back, half) << std::hex << bits;
    }
  }
}

TEST(DTypeTest, EveryBFloat16PatternRoundTripsThroughFloat) {
  const ReferenceFormat& reference = BFloat16Reference();
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint16_t bf16 = static_cast<uint16_t>(bits);
    const float f = BFloat16ToFloat(bf16);
    const uint16_t back = FloatToBFloat16(f);
    if (IsBFloat16NaN(bf16)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << bits;
      EXPECT_TRUE(IsBFloat16NaN(back)) << std::hex << bits << " -> " << back;
      if (bf16 & 0x0040) {
        EXPECT_EQ(back, bf16) << "quiet NaN " << std::hex << bits;
      }
      continue;
    }
    const uint32_t magnitude = bits & 0x7FFF;
    const double expected =
        magnitude == 0x7F80 ? INFINITY : reference.Decode(magnitude);
    EXPECT_EQ(static_cast<double>(f), (bits & 0x8000) ? -expected : expected)
        << std::hex << bits;
    EXPECT_EQ(back, bf16) << std::hex << bits;
  }
}

TEST(DTypeTest, FloatToHalfRoundsLikeExactArithmetic) {
  const ReferenceFormat& reference = HalfReference();
  int64_t mismatches = 0;
  for (float f : ProbeFloats(reference)) {
    const uint16_t expected = reference.Encode(f);
    const uint16_t actual = FloatToHalf(f);
    if (actual != expected && ++mismatches <= 10) {
      ADD_FAILURE() << std::hexfloat << f << ": got 0x" << std::hex << actual
                    << ", want 0x" << expected;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DTypeTest, FloatToBFloat16RoundsLikeExactArithmetic) {
  const ReferenceFormat& reference = BFloat16Reference();
  int64_t mismatches = 0;
  for (float f : ProbeFloats(reference)) {
    const uint16_t expected = reference.Encode(f);
    const uint16_t actual = FloatToBFloat16(f);
    if (actual != expected && ++mismatches <= 10) {
      ADD_FAILURE() << std::hexfloat << f << ": got 0x" << std::hex << actual
                    << ", want 0x" << expected;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DTypeTest, HalfRoundsConformanceValuesToNearestEven) {
  EXPECT_EQ(HalfToFloat(FloatToHalf(10700.0f)), 10704.0f);
  EXPECT_EQ(HalfToFloat(FloatToHalf(10701.0f)), 10704.0f);
  EXPECT_EQ(HalfToFloat(FloatToHalf(10702.0f)), 10704.0f);
  EXPECT_EQ(HalfToFloat(FloatToHalf(10096.0f)), 10096.0f);
  EXPECT_EQ(HalfToFloat(FloatToHalf(2049.0f)), 2048.0f);  // Tie to even.
  EXPECT_EQ(HalfToFloat(FloatToHalf(2051.0f)), 2052.0f);  // Tie to even.
  EXPECT_EQ(HalfToFloat(FloatToHalf(-10701.0f)), -10704.0f);
}

TEST(DTypeTest, HalfHandlesSubnormalsAndOverflowExactly) {
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);         // Least subnormal.
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);         // Tie to even: zero.
  EXPECT_EQ(FloatToHalf(0x1.000002p-25f), 0x0001);  // Just above the tie.
  EXPECT_EQ(FloatToHalf(0x3p-25f), 0x0002);         // 1.5 ulp: tie to 2.
  EXPECT_EQ(FloatToHalf(0x1.ff8p-15f), 0x03FF);     // Largest subnormal.
  EXPECT_EQ(FloatToHalf(0x1.ffcp-15f), 0x0400);     // Tie: up to normal.
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.996f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // Overflow tie: Inf.
  EXPECT_EQ(FloatToHalf(-1e10f), 0xFC00);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(INFINITY), 0x7C00);
}

TEST(DTypeTest, NaNStaysQuietNaN) {
  const float signalling = FromBits(0x7F800001u);  // Payload only in low bits.
  const float negative_nan = FromBits(0xFFC00000u);
  for (float nan : {signalling, negative_nan, NAN}) {
    const uint16_t half = FloatToHalf(nan);
    EXPECT_TRUE(IsHalfNaN(half)) << std::hex << half;
    EXPECT_TRUE(half & 0x0200) << "not quiet: " << std::hex << half;
    const uint16_t bf16 = FloatToBFloat16(nan);
    EXPECT_TRUE(IsBFloat16NaN(bf16)) << std::hex << bf16;
    EXPECT_TRUE(bf16 & 0x0040) << "not quiet: " << std::hex << bf16;
  }
  EXPECT_EQ(FloatToHalf(negative_nan) & 0x8000, 0x8000);
  EXPECT_TRUE(Bits(HalfToFloat(0x7C01)) & 0x00400000u);  // Quieted.
  EXPECT_TRUE(Bits(BFloat16ToFloat(0x7F81)) & 0x00400000u);
}

TEST(DTypeTest, LoadAndStoreUseEachDTypesEncodingUnaligned) {
  alignas(4) std::byte buffer[8] = {};
  std::byte* unaligned = buffer + 1;
  StoreFromFloat(DType::kFloat32, 0.1f, unaligned);
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, unaligned), 0.1f);

  StoreFromFloat(DType::kFloat16, 10701.0f, unaligned);
  uint16_t bits;
  std::memcpy(&bits, unaligned, 2);
  EXPECT_EQ(bits, FloatToHalf(10704.0f));
  EXPECT_EQ(LoadAsFloat(DType::kFloat16, unaligned), 10704.0f);

  StoreFromFloat(DType::kBFloat16, 257.0f, unaligned);  // Tie to even: 256.
  std::memcpy(&bits, unaligned, 2);
  EXPECT_EQ(bits, 0x4380);
  EXPECT_EQ(LoadAsFloat(DType::kBFloat16, unaligned), 256.0f);
}

// The header example, compiled.
TEST(DTypeTest, HeaderExampleWorks) {
  std::optional<DType> dtype = ParseDType("fp16");
  EXPECT_EQ(dtype, DType::kFloat16);
  uint16_t bits = FloatToHalf(10701.0f);
  float widened = HalfToFloat(bits);
  EXPECT_EQ(widened, 10704.0f);
  std::byte element[4];
  StoreFromFloat(DType::kBFloat16, 1.5f, element);
  float back = LoadAsFloat(DType::kBFloat16, element);
  EXPECT_EQ(back, 1.5f);
}

// Doubles next to a narrow format's midpoints that are NOT floats: rounding
// through float first would land exactly on the midpoint and tie the wrong
// way. StoreFromDouble must round once.
TEST(DTypeTest, StoreFromDoubleRoundsOnce) {
  struct Case {
    DType dtype;
    const ReferenceFormat* reference;
  };
  for (const Case& c : {Case{DType::kFloat16, &HalfReference()},
                        Case{DType::kBFloat16, &BFloat16Reference()}}) {
    int64_t mismatches = 0;
    for (double midpoint : c.reference->Midpoints()) {
      if (midpoint == 0 || std::isinf(static_cast<float>(midpoint))) continue;
      for (double x : {midpoint * (1 + 0x1p-40), midpoint * (1 - 0x1p-40),
                       midpoint, -midpoint * (1 + 0x1p-40)}) {
        uint16_t actual;
        StoreFromDouble(c.dtype, x, &actual);
        const uint16_t expected = c.reference->Encode(x);
        if (actual != expected && ++mismatches <= 10) {
          ADD_FAILURE() << c.dtype << " " << std::hexfloat << x << ": got 0x"
                        << std::hex << actual << ", want 0x" << expected;
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << c.dtype;
  }
  float f32;
  StoreFromDouble(DType::kFloat32, 0.1, &f32);
  EXPECT_EQ(f32, 0.1f);
  uint16_t bits;
  StoreFromDouble(DType::kFloat16, 1e300, &bits);
  EXPECT_EQ(bits, 0x7C00);
  StoreFromDouble(DType::kBFloat16, -1e300, &bits);
  EXPECT_EQ(bits, 0xFF80);
  StoreFromDouble(DType::kBFloat16, 1e-300, &bits);
  EXPECT_EQ(bits, 0x0000);
  StoreFromDouble(DType::kFloat16, std::nan(""), &bits);
  EXPECT_TRUE(IsHalfNaN(bits));
}

TEST(DTypeTest, IsValidDTypeAcceptsExactlyTheEnumerators) {
  int valid = 0;
  for (int v = 0; v < 256; ++v) {
    if (IsValidDType(static_cast<DType>(v))) ++valid;
  }
  EXPECT_EQ(valid, 3);
  EXPECT_TRUE(IsValidDType(DType::kBFloat16));
  EXPECT_FALSE(IsValidDType(static_cast<DType>(7)));
}

TEST(DTypeTest, NameOfAnInvalidDTypeIsInvalidNotAnAbort) {
  EXPECT_EQ(DTypeName(static_cast<DType>(7)), "invalid");
}

TEST(DTypeDeathTest, SizeOfAnInvalidDTypeAborts) {
  EXPECT_DEATH(SizeOf(static_cast<DType>(7)), "invalid DType 7");
}

}  // namespace
}  // namespace pagedkv
