#include "tensor/quantize.h"

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "base/check.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

// Every loop below reads and writes through memcpy of one element (no
// aliasing questions, any alignment; gcc turns it into plain loads) and has
// no branch in its body, so the vectorizer can take it.

inline uint32_t Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

inline float FromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

inline uint16_t Load16(const std::byte* p, int64_t i) {
  uint16_t v;
  std::memcpy(&v, p + 2 * i, sizeof(v));
  return v;
}

inline uint32_t Load32(const std::byte* p, int64_t i) {
  uint32_t v;
  std::memcpy(&v, p + 4 * i, sizeof(v));
  return v;
}

// float16 bits -> float for finite inputs, branch-free: placing the 15
// magnitude bits at the float's exponent and mantissa and multiplying by
// 2^112 rebiases normals and normalises subnormals exactly.
inline float HalfToFloatFinite(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const float magnitude =
      FromBits(static_cast<uint32_t>(h & 0x7FFFu) << 13) * 0x1p112f;
  return FromBits(Bits(magnitude) | sign);
}

// float -> float16 bits, ties to even, for non-NaN inputs; branch-free and
// bit-identical to FloatToHalf (F. Giesen's float_to_half_fast3_rtne).
inline uint16_t FloatToHalfNonNaN(float value) {
  uint32_t f = Bits(value);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  // Subnormal results: adding 0.5f aligns the 10 result bits at the bottom
  // of the mantissa, rounding to nearest even on the way.
  constexpr uint32_t kDenormMagic = 126u << 23;  // 0.5f
  const uint32_t sub =
      Bits(FromBits(f) + FromBits(kDenormMagic)) - kDenormMagic;
  const uint32_t normal = (f - (112u << 23) + 0x0FFFu + ((f >> 13) & 1u)) >> 13;
  uint32_t out = f < (113u << 23) ? sub : normal;
  out = f >= 0x477FF000u ? 0x7C00u : out;  // 65520 and up: Inf.
  return static_cast<uint16_t>((sign >> 16) | out);
}

// float -> bfloat16 bits, ties to even, for non-NaN inputs.
inline uint16_t FloatToBFloat16NonNaN(float value) {
  const uint32_t bits = Bits(value);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// Rounds |y| < 2^22 to the nearest integer, ties to even, in the default
// rounding mode: 1.5 * 2^23 pushes the fraction bits out of the mantissa.
inline float RoundEven(float y) {
  constexpr float kMagic = 12582912.0f;
  return (y + kMagic) - kMagic;
}

// The largest |x| bit pattern of a vector, as a float's magnitude bits
// (NaN patterns sort above infinity's, so one integer max finds both).
uint32_t AbsMaxBits(DType dtype, const std::byte* src, int64_t n) {
  switch (dtype) {
    case DType::kFloat32: {
      uint32_t m = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t a = Load32(src, i) & 0x7FFFFFFFu;
        m = a > m ? a : m;
      }
      return m;
    }
    case DType::kFloat16: {
      uint32_t m = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t a = Load16(src, i) & 0x7FFFu;
        m = a > m ? a : m;
      }
      if (m >= 0x7C00u) return m > 0x7C00u ? 0x7FC00000u : 0x7F800000u;
      return Bits(HalfToFloatFinite(static_cast<uint16_t>(m)));
    }
    case DType::kBFloat16: {
      uint32_t m = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t a = Load16(src, i) & 0x7FFFu;
        m = a > m ? a : m;
      }
      return m << 16;
    }
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
  return 0;
}

inline float Widen(DType dtype, const std::byte* src, int64_t i) {
  switch (dtype) {
    case DType::kFloat32:
      return FromBits(Load32(src, i));
    case DType::kFloat16:
      return HalfToFloatFinite(Load16(src, i));
    case DType::kBFloat16:
      return FromBits(static_cast<uint32_t>(Load16(src, i)) << 16);
  }
  return 0.0f;
}

inline int8_t Int8Code(float y) {
  y = y < -127.0f ? -127.0f : y;
  y = y > 127.0f ? 127.0f : y;
  return static_cast<int8_t>(static_cast<int32_t>(RoundEven(y)));
}

// One loop per (source dtype, multiply or divide): the dtype switch is
// hoisted so each body is straight-line code.
template <DType kSrc, bool kDivide>
void QuantizeInt8Loop(const std::byte* src, int64_t n, float scale,
                      float inverse, int8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = Widen(kSrc, src, i);
    out[i] = Int8Code(kDivide ? x / scale : x * inverse);
  }
}

template <DType kSrc, bool kDivide>
void QuantizeE4M3Loop(const std::byte* src, int64_t n, float scale,
                      float inverse, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = Widen(kSrc, src, i);
    out[i] = FloatToE4M3(kDivide ? x / scale : x * inverse);
  }
}

template <bool kDivide>
void QuantizeInt8(DType dtype, const std::byte* src, int64_t n, float scale,
                  float inverse, int8_t* out) {
  switch (dtype) {
    case DType::kFloat32:
      return QuantizeInt8Loop<DType::kFloat32, kDivide>(src, n, scale, inverse,
                                                        out);
    case DType::kFloat16:
      return QuantizeInt8Loop<DType::kFloat16, kDivide>(src, n, scale, inverse,
                                                        out);
    case DType::kBFloat16:
      return QuantizeInt8Loop<DType::kBFloat16, kDivide>(src, n, scale, inverse,
                                                         out);
  }
}

template <bool kDivide>
void QuantizeE4M3(DType dtype, const std::byte* src, int64_t n, float scale,
                  float inverse, uint8_t* out) {
  switch (dtype) {
    case DType::kFloat32:
      return QuantizeE4M3Loop<DType::kFloat32, kDivide>(src, n, scale, inverse,
                                                        out);
    case DType::kFloat16:
      return QuantizeE4M3Loop<DType::kFloat16, kDivide>(src, n, scale, inverse,
                                                        out);
    case DType::kBFloat16:
      return QuantizeE4M3Loop<DType::kBFloat16, kDivide>(src, n, scale, inverse,
                                                         out);
  }
}

float E4M3Value(uint8_t code) {
  const int exponent = (code >> 3) & 0xF;
  const int mantissa = code & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    magnitude = std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  }
  return (code & 0x80) != 0 ? -magnitude : magnitude;
}

const std::array<float, 256>& DecodeTable() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = E4M3Value(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// Writes float values f(i) to dst as dtype, i < n.
template <typename F>
void StoreAll(DType dtype, int64_t n, std::byte* dst, F f) {
  switch (dtype) {
    case DType::kFloat32:
      for (int64_t i = 0; i < n; ++i) {
        const float v = f(i);
        std::memcpy(dst + 4 * i, &v, 4);
      }
      return;
    case DType::kFloat16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = FloatToHalfNonNaN(f(i));
        std::memcpy(dst + 2 * i, &v, 2);
      }
      return;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = FloatToBFloat16NonNaN(f(i));
        std::memcpy(dst + 2 * i, &v, 2);
      }
      return;
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
}

}  // namespace

std::string_view QuantTypeName(QuantType type) {
  switch (type) {
    case QuantType::kInt8:
      return "int8";
    case QuantType::kFp8E4M3:
      return "fp8_e4m3";
  }
  return "invalid";
}

float QuantMax(QuantType type) {
  return type == QuantType::kInt8 ? 127.0f : 448.0f;
}

uint8_t FloatToE4M3(float value) {
  const uint32_t bits = Bits(value);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return 0x7F;          // NaN.
  if (magnitude >= 0x43E00000u) return sign | 0x7E;  // >= 448: max.
  if (magnitude < 0x3C800000u) {                     // Below 2^-6:
    const float steps = RoundEven(FromBits(magnitude) * 512.0f);  // 2^-9 each.
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(steps));
  }
  // Normal: rebias 127 -> 7 and round 20 mantissa bits away (ties to even);
  // a carry out of the mantissa bumps the exponent, as it should.
  const uint32_t rebiased = magnitude - ((127u - 7u) << 23);
  const uint32_t rounded =
      (rebiased + 0x7FFFFu + ((rebiased >> 20) & 1u)) >> 20;
  return static_cast<uint8_t>(sign | (rounded > 0x7Eu ? 0x7Eu : rounded));
}

float E4M3ToFloat(uint8_t code) { return DecodeTable()[code]; }

const float* E4M3DecodeTable() { return DecodeTable().data(); }

float QuantizeVector(QuantType type, DType src_dtype, const void* src,
                     int64_t n, void* codes) {
  PKV_DCHECK(n >= 1, "QuantizeVector of %d elements", n);
  const std::byte* in = static_cast<const std::byte*>(src);
  const uint32_t amax_bits = AbsMaxBits(src_dtype, in, n);
  if (amax_bits >= 0x7F800000u) {  // A NaN or an infinity: poison.
    std::memset(codes, 0, static_cast<size_t>(n));
    return std::numeric_limits<float>::quiet_NaN();
  }
  if (amax_bits == 0) {
    std::memset(codes, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const float amax = FromBits(amax_bits);
  const float qmax = QuantMax(type);
  float scale = amax / qmax;
  // A subnormal scale may have rounded down by more than the code range
  // allows; round it up so that |x| / scale <= qmax for every element.
  if (scale * qmax < amax) {
    scale = std::nextafter(scale, std::numeric_limits<float>::infinity());
  }
  // Near the largest float the opposite can happen: qmax * scale must stay
  // finite so that the largest code dequantizes to a finite value (the
  // element at amax then clamps to qmax, an error of an ulp of amax).
  while (std::isinf(scale * qmax)) scale = std::nextafter(scale, 0.0f);
  const float inverse = 1.0f / scale;
  const bool divide = std::isinf(inverse);  // Tiny scales: divide instead.
  if (type == QuantType::kInt8) {
    int8_t* out = static_cast<int8_t*>(codes);
    if (divide) {
      QuantizeInt8<true>(src_dtype, in, n, scale, inverse, out);
    } else {
      QuantizeInt8<false>(src_dtype, in, n, scale, inverse, out);
    }
  } else {
    uint8_t* out = static_cast<uint8_t*>(codes);
    if (divide) {
      QuantizeE4M3<true>(src_dtype, in, n, scale, inverse, out);
    } else {
      QuantizeE4M3<false>(src_dtype, in, n, scale, inverse, out);
    }
  }
  return scale;
}

void DequantizeVector(QuantType type, const void* codes, float scale, int64_t n,
                      DType dst_dtype, void* dst) {
  PKV_DCHECK(n >= 1, "DequantizeVector of %d elements", n);
  std::byte* out = static_cast<std::byte*>(dst);
  if (std::isnan(scale)) {
    const size_t size = SizeOf(dst_dtype);
    for (int64_t i = 0; i < n; ++i) {
      StoreFromFloat(dst_dtype, std::numeric_limits<float>::quiet_NaN(),
                     out + i * size);
    }
    return;
  }
  if (type == QuantType::kInt8) {
    const int8_t* in = static_cast<const int8_t*>(codes);
    StoreAll(dst_dtype, n, out,
             [&](int64_t i) { return static_cast<float>(in[i]) * scale; });
  } else {
    const uint8_t* in = static_cast<const uint8_t*>(codes);
    const float* table = E4M3DecodeTable();
    // Codes come from FloatToE4M3 of finite values, never the NaN codes.
    StoreAll(dst_dtype, n, out,
             [&](int64_t i) { return table[in[i]] * scale; });
  }
}

float DotQuantized(QuantType type, const float* query, const void* codes,
                   float scale, int64_t n) {
  float dot = 0.0f;
  if (type == QuantType::kInt8) {
    const int8_t* in = static_cast<const int8_t*>(codes);
    for (int64_t d = 0; d < n; ++d) dot += query[d] * static_cast<float>(in[d]);
  } else {
    const uint8_t* in = static_cast<const uint8_t*>(codes);
    const float* table = E4M3DecodeTable();
    for (int64_t d = 0; d < n; ++d) dot += query[d] * table[in[d]];
  }
  return dot * scale;  // A NaN scale makes the dot NaN.
}

void AccumulateQuantized(QuantType type, float weight, const void* codes,
                         float scale, int64_t n, float* acc) {
  const float w = weight * scale;
  if (type == QuantType::kInt8) {
    const int8_t* in = static_cast<const int8_t*>(codes);
    for (int64_t d = 0; d < n; ++d) acc[d] += w * static_cast<float>(in[d]);
  } else {
    const uint8_t* in = static_cast<const uint8_t*>(codes);
    const float* table = E4M3DecodeTable();
    for (int64_t d = 0; d < n; ++d) acc[d] += w * table[in[d]];
  }
}

}  // namespace pagedkv
