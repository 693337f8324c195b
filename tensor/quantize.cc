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

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define PKV_QUANTIZE_X86 1
#endif

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

#ifdef PKV_QUANTIZE_X86
bool HasAvx2F16c();
uint32_t HalfAbsMaxAvx2(const std::byte* src, int64_t n, int64_t* done);
#endif

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
      int64_t i = 0;
#ifdef PKV_QUANTIZE_X86
      if (HasAvx2F16c()) m = HalfAbsMaxAvx2(src, n, &i);
#endif
      for (; i < n; ++i) {
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

// |y| <= 127 up to rounding (the scale was rounded up), so the clamp only
// catches a last-ulp overshoot. It clamps the integer: a float clamp would
// not vectorize (gcc keeps the NaN and signed-zero semantics of ?: and
// emits compares and branches).
inline int8_t Int8Code(float y) {
  int32_t code = static_cast<int32_t>(RoundEven(y));
  code = code < -127 ? -127 : code;
  code = code > 127 ? 127 : code;
  return static_cast<int8_t>(code);
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

#ifdef PKV_QUANTIZE_X86
// AVX2 + F16C kernels for the int8 hot paths (decode append from float16 or
// float32, gather to float16 or float32), chosen at run time: the generic
// loops above vectorize only to SSE2, and gcc cannot vectorize the float16
// rounding without F16C. vcvtps2ph with round-to-nearest-even is IEEE
// rounding, bit-identical to FloatToHalf for non-NaN values (tested through
// DequantizeTest.NarrowOutputsMatchScalarRounding on this machine).
bool HasAvx2F16c() {
  // F16C through CPUID: clang 14's __builtin_cpu_supports has no "f16c".
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c =
        __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    return __builtin_cpu_supports("avx2") && f16c;
  }();
  return has;
}

// Codes of 8 floats, multiplied by `inverse`, rounded to even, clamped.
__attribute__((target("avx2,f16c"))) inline void StoreInt8x8(__m256 y,
                                                             int8_t* out) {
  __m256i code = _mm256_cvtps_epi32(
      _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  code = _mm256_min_epi32(_mm256_max_epi32(code, _mm256_set1_epi32(-127)),
                          _mm256_set1_epi32(127));
  const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(code),
                                        _mm256_extracti128_si256(code, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out),
                   _mm_packs_epi16(words, words));
}

// Quantizes the first n - n % 8 elements; returns how many it did.
__attribute__((target("avx2,f16c"))) int64_t QuantizeInt8Avx2(
    DType dtype, const std::byte* src, int64_t n, float inverse, int8_t* out) {
  const __m256 inv = _mm256_set1_ps(inverse);
  int64_t i = 0;
  if (dtype == DType::kFloat16) {
    for (; i + 8 <= n; i += 8) {
      const __m128i h =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
      StoreInt8x8(_mm256_mul_ps(_mm256_cvtph_ps(h), inv), out + i);
    }
  } else if (dtype == DType::kFloat32) {
    for (; i + 8 <= n; i += 8) {
      const __m256 x =
          _mm256_loadu_ps(reinterpret_cast<const float*>(src + 4 * i));
      StoreInt8x8(_mm256_mul_ps(x, inv), out + i);
    }
  }
  return i;
}

// Dequantizes the first n - n % 8 codes to float16 or float32; returns how
// many it did (0 for other dtypes).
__attribute__((target("avx2,f16c"))) int64_t DequantizeInt8Avx2(
    const int8_t* in, float scale, int64_t n, DType dtype, std::byte* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  if (dtype == DType::kFloat16) {
    for (; i + 8 <= n; i += 8) {
      const __m128i codes =
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i));
      const __m256 y =
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)), s);
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(out + 2 * i),
          _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  } else if (dtype == DType::kFloat32) {
    for (; i + 8 <= n; i += 8) {
      const __m128i codes =
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i));
      _mm256_storeu_ps(
          reinterpret_cast<float*>(out + 4 * i),
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)), s));
    }
  }
  return i;
}
// The largest |x| bits of n float16 values (as AbsMaxBits's float16 loop
// before widening), 16 at a time; the tail is the caller's.
__attribute__((target("avx2,f16c"))) uint32_t HalfAbsMaxAvx2(
    const std::byte* src, int64_t n, int64_t* done) {
  __m256i m = _mm256_setzero_si256();
  const __m256i mask = _mm256_set1_epi16(0x7FFF);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
    m = _mm256_max_epu16(m, _mm256_and_si256(h, mask));
  }
  alignas(32) uint16_t lanes[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m);
  uint32_t best = 0;
  for (uint16_t lane : lanes) best = lane > best ? lane : best;
  *done = i;
  return best;
}

// Dequantizes num_vectors int8 vectors of n codes (scales unaligned floats)
// to contiguous float16 or float32 output. Returns false (nothing written)
// when it does not apply: another dtype, or a NaN scale somewhere.
__attribute__((target("avx2,f16c"))) bool DequantizeInt8VectorsAvx2(
    const int8_t* in, const std::byte* scales, int64_t num_vectors, int64_t n,
    DType dtype, std::byte* out) {
  if (dtype != DType::kFloat16 && dtype != DType::kFloat32) return false;
  for (int64_t v = 0; v < num_vectors; ++v) {
    float scale;
    std::memcpy(&scale, scales + v * sizeof(float), sizeof(scale));
    if (std::isnan(scale)) return false;
  }
  const size_t elem = SizeOf(dtype);
  for (int64_t v = 0; v < num_vectors; ++v) {
    float scale;
    std::memcpy(&scale, scales + v * sizeof(float), sizeof(scale));
    const int8_t* codes = in + v * n;
    std::byte* dst = out + v * n * elem;
    const int64_t done = DequantizeInt8Avx2(codes, scale, n, dtype, dst);
    for (int64_t i = done; i < n; ++i) {
      const float y = static_cast<float>(codes[i]) * scale;
      if (dtype == DType::kFloat32) {
        std::memcpy(dst + 4 * i, &y, 4);
      } else {
        const uint16_t h = FloatToHalfNonNaN(y);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
  }
  return true;
}
#endif  // PKV_QUANTIZE_X86

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
#ifdef PKV_QUANTIZE_X86
    if (!divide && HasAvx2F16c()) {
      const int64_t done = QuantizeInt8Avx2(src_dtype, in, n, inverse, out);
      in += done * static_cast<int64_t>(SizeOf(src_dtype));
      out += done;
      n -= done;
      if (n == 0) return scale;
    }
#endif
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
#ifdef PKV_QUANTIZE_X86
    if (HasAvx2F16c()) {
      const int64_t done = DequantizeInt8Avx2(in, scale, n, dst_dtype, out);
      in += done;
      out += done * static_cast<int64_t>(SizeOf(dst_dtype));
      n -= done;
      if (n == 0) return;
    }
#endif
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

void DequantizeVectors(QuantType type, const void* codes, const void* scales,
                       int64_t num_vectors, int64_t n, DType dst_dtype,
                       void* dst) {
  const std::byte* in = static_cast<const std::byte*>(codes);
  const std::byte* scale_bytes = static_cast<const std::byte*>(scales);
  std::byte* out = static_cast<std::byte*>(dst);
#ifdef PKV_QUANTIZE_X86
  if (type == QuantType::kInt8 && HasAvx2F16c() &&
      DequantizeInt8VectorsAvx2(reinterpret_cast<const int8_t*>(in),
                                scale_bytes, num_vectors, n, dst_dtype, out)) {
    return;
  }
#endif
  const size_t elem = SizeOf(dst_dtype);
  for (int64_t v = 0; v < num_vectors; ++v) {
    float scale;
    std::memcpy(&scale, scale_bytes + v * sizeof(float), sizeof(scale));
    DequantizeVector(type, in + v * n, scale, n, dst_dtype,
                     out + v * n * static_cast<int64_t>(elem));
  }
}

}  // namespace pagedkv
