#include "tensor/quantize.h"

#include <array>
#include <atomic>
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

// How a vector with largest magnitude bits `amax_bits` is scaled.
enum class ScaleKind { kPoison, kZero, kMultiply, kDivide };
struct ScaleChoice {
  ScaleKind kind;
  float scale;    // NaN for kPoison, 0 for kZero.
  float inverse;  // 1 / scale for kMultiply.
};

// The scale rule of quantize.h, shared by the scalar and the AVX2 paths so
// that both give the same scale bit for bit.
inline ScaleChoice ChooseScale(QuantType type, uint32_t amax_bits) {
  if (amax_bits >= 0x7F800000u) {  // A NaN or an infinity: poison.
    return {ScaleKind::kPoison, std::numeric_limits<float>::quiet_NaN(), 0};
  }
  if (amax_bits == 0) return {ScaleKind::kZero, 0.0f, 0.0f};
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
  // Tiny scales: divide instead (the reciprocal overflows).
  return {std::isinf(inverse) ? ScaleKind::kDivide : ScaleKind::kMultiply,
          scale, inverse};
}

// Whether tests asked for the portable loops (see quantize.h).
std::atomic<bool> force_scalar{false};

#ifdef PKV_QUANTIZE_X86
// AVX2 + F16C kernels, chosen at run time (HasAvx2F16c): the generic loops
// vectorize only to SSE2 and cannot vectorize the float16 rounding without
// F16C. Every kernel gives the portable loops' results bit for bit:
// vcvtps2ph and vroundps with round-to-nearest-even are IEEE rounding, as
// FloatToHalfNonNaN and RoundEven (tests/tensor/quantize_test.cc compares
// both paths on every dtype, head_dim and special input).
//
// Each function carries the target attribute itself (no pragma), which gcc
// and clang both accept; templates are instantiated per source or output
// dtype so that the per-element loops have no switch.
#define PKV_AVX2 __attribute__((target("avx2,f16c")))

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

bool UseAvx2() {
  return HasAvx2F16c() && !force_scalar.load(std::memory_order_relaxed);
}

// Elements [i, i + 8) of a source of dtype kSrc, widened to float.
template <DType kSrc>
PKV_AVX2 inline __m256 Load8(const std::byte* src, int64_t i) {
  if constexpr (kSrc == DType::kFloat32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(src + 4 * i));
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    if constexpr (kSrc == DType::kFloat16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// AbsMaxBits for one dtype: 8 (float32) or 16 (16-bit) lanes at a time,
// an integer max of the magnitude bits, the tail scalar.
template <DType kSrc>
PKV_AVX2 inline uint32_t AbsMaxBitsAvx2(const std::byte* src, int64_t n) {
  int64_t i = 0;
  uint32_t m;
  if constexpr (kSrc == DType::kFloat32) {
    const __m256i mask = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i acc = _mm256_setzero_si256();
    for (; i + 8 <= n; i += 8) {
      const __m256i x =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4 * i));
      acc = _mm256_max_epu32(acc, _mm256_and_si256(x, mask));
    }
    __m128i x = _mm_max_epu32(_mm256_castsi256_si128(acc),
                              _mm256_extracti128_si256(acc, 1));
    x = _mm_max_epu32(x, _mm_shuffle_epi32(x, 0x4E));
    x = _mm_max_epu32(x, _mm_shuffle_epi32(x, 0xB1));
    m = static_cast<uint32_t>(_mm_cvtsi128_si32(x));
    for (; i < n; ++i) {
      const uint32_t a = Load32(src, i) & 0x7FFFFFFFu;
      m = a > m ? a : m;
    }
    return m;
  } else {
    const __m256i mask = _mm256_set1_epi16(0x7FFF);
    __m256i acc = _mm256_setzero_si256();
    for (; i + 16 <= n; i += 16) {
      const __m256i x =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
      acc = _mm256_max_epu16(acc, _mm256_and_si256(x, mask));
    }
    __m128i x = _mm_max_epu16(_mm256_castsi256_si128(acc),
                              _mm256_extracti128_si256(acc, 1));
    if (i + 8 <= n) {
      const __m128i y =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
      x = _mm_max_epu16(x, _mm_and_si128(y, _mm256_castsi256_si128(mask)));
      i += 8;
    }
    // The largest lane is the smallest of the complements (phminposuw).
    x = _mm_minpos_epu16(_mm_xor_si128(x, _mm_set1_epi32(-1)));
    m = ~static_cast<uint32_t>(_mm_cvtsi128_si32(x)) & 0xFFFFu;
    for (; i < n; ++i) {
      const uint32_t a = Load16(src, i) & 0x7FFFu;
      m = a > m ? a : m;
    }
    if constexpr (kSrc == DType::kBFloat16) return m << 16;
    if (m >= 0x7C00u) return m > 0x7C00u ? 0x7FC00000u : 0x7F800000u;
    return Bits(HalfToFloatFinite(static_cast<uint16_t>(m)));
  }
}

// int8 codes of 8 scaled values: rounded to even, as 32-bit lanes.
PKV_AVX2 inline __m256i Int8Lanes(__m256 y) {
  return _mm256_cvtps_epi32(
      _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// e4m3 codes of 8 finite values, as 32-bit lanes: FloatToE4M3 without
// branches (the NaN case cannot occur: poisoned vectors never get here).
PKV_AVX2 inline __m256i E4M3Lanes(__m256 y) {
  const __m256i bits = _mm256_castps_si256(y);
  const __m256i sign =
      _mm256_srli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(INT32_MIN)),
                        24);
  const __m256i mag = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF));
  // Below 2^-6: steps of 2^-9, rounded to even.
  const __m256i sub = _mm256_cvtps_epi32(_mm256_round_ps(
      _mm256_mul_ps(_mm256_castsi256_ps(mag), _mm256_set1_ps(512.0f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  // Normal: rebias, round 20 mantissa bits away (ties to even), saturate.
  const __m256i rebiased =
      _mm256_sub_epi32(mag, _mm256_set1_epi32((127 - 7) << 23));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(rebiased, 20),
                                       _mm256_set1_epi32(1));
  __m256i normal = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(rebiased, _mm256_set1_epi32(0x7FFFF)),
                       odd),
      20);
  normal = _mm256_min_epi32(normal, _mm256_set1_epi32(0x7E));
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3C800000), mag);
  return _mm256_or_si256(_mm256_blendv_epi8(normal, sub, is_sub), sign);
}

// 32 codes from four vectors of 8 lanes, in order: the two packs work per
// 128-bit half, the permute puts the 4-byte groups back in order.
template <QuantType kType>
PKV_AVX2 inline void Store32Codes(__m256i a, __m256i b, __m256i c, __m256i d,
                                  std::byte* out) {
  __m256i bytes;
  if constexpr (kType == QuantType::kInt8) {
    bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b),
                               _mm256_packs_epi32(c, d));
  } else {
    bytes = _mm256_packus_epi16(_mm256_packus_epi32(a, b),
                                _mm256_packus_epi32(c, d));
  }
  bytes = _mm256_permutevar8x32_epi32(bytes,
                                      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  // int8: -128 (an overshoot that packs saturated) clamps to -127.
  if constexpr (kType == QuantType::kInt8) {
    bytes = _mm256_max_epi8(bytes, _mm256_set1_epi8(-127));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
}

template <QuantType kType>
PKV_AVX2 inline void Store8Codes(__m256i a, std::byte* out) {
  const __m128i lo = _mm256_castsi256_si128(a);
  const __m128i hi = _mm256_extracti128_si256(a, 1);
  __m128i bytes;
  if constexpr (kType == QuantType::kInt8) {
    const __m128i words = _mm_packs_epi32(lo, hi);
    bytes = _mm_max_epi8(_mm_packs_epi16(words, words), _mm_set1_epi8(-127));
  } else {
    const __m128i words = _mm_packus_epi32(lo, hi);
    bytes = _mm_packus_epi16(words, words);
  }
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), bytes);
}

template <QuantType kType>
PKV_AVX2 inline __m256i CodeLanes(__m256 y) {
  if constexpr (kType == QuantType::kInt8) return Int8Lanes(y);
  return E4M3Lanes(y);
}

// The codes of x * inverse for the n elements at src: 32, then 8 at a time,
// the tail through the scalar rounding.
template <QuantType kType, DType kSrc>
PKV_AVX2 inline void QuantizeScaledAvx2(const std::byte* src, int64_t n,
                                        float inverse, std::byte* out) {
  const __m256 inv = _mm256_set1_ps(inverse);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i a = CodeLanes<kType>(_mm256_mul_ps(Load8<kSrc>(src, i), inv));
    const __m256i b =
        CodeLanes<kType>(_mm256_mul_ps(Load8<kSrc>(src, i + 8), inv));
    const __m256i c =
        CodeLanes<kType>(_mm256_mul_ps(Load8<kSrc>(src, i + 16), inv));
    const __m256i d =
        CodeLanes<kType>(_mm256_mul_ps(Load8<kSrc>(src, i + 24), inv));
    Store32Codes<kType>(a, b, c, d, out + i);
  }
  for (; i + 8 <= n; i += 8) {
    Store8Codes<kType>(
        CodeLanes<kType>(_mm256_mul_ps(Load8<kSrc>(src, i), inv)), out + i);
  }
  for (; i < n; ++i) {
    const float y = Widen(kSrc, src, i) * inverse;
    if constexpr (kType == QuantType::kInt8) {
      out[i] = static_cast<std::byte>(Int8Code(y));
    } else {
      out[i] = static_cast<std::byte>(FloatToE4M3(y));
    }
  }
}

template <QuantType kType, DType kSrc>
PKV_AVX2 void QuantizeVectorsAvx2(const std::byte* src, int64_t src_stride,
                                  int64_t num_vectors, int64_t n,
                                  std::byte* codes, int64_t codes_stride,
                                  std::byte* scales, int64_t scales_stride) {
  for (int64_t v = 0; v < num_vectors; ++v) {
    const std::byte* in = src + v * src_stride;
    std::byte* out = codes + v * codes_stride;
    const ScaleChoice choice = ChooseScale(kType, AbsMaxBitsAvx2<kSrc>(in, n));
    if (choice.kind == ScaleKind::kMultiply) {
      QuantizeScaledAvx2<kType, kSrc>(in, n, choice.inverse, out);
    } else if (choice.kind == ScaleKind::kDivide) {
      if constexpr (kType == QuantType::kInt8) {
        QuantizeInt8Loop<kSrc, true>(in, n, choice.scale, choice.inverse,
                                     reinterpret_cast<int8_t*>(out));
      } else {
        QuantizeE4M3Loop<kSrc, true>(in, n, choice.scale, choice.inverse,
                                     reinterpret_cast<uint8_t*>(out));
      }
    } else {
      std::memset(out, 0, static_cast<size_t>(n));
    }
    std::memcpy(scales + v * scales_stride, &choice.scale, sizeof(float));
  }
}

template <QuantType kType>
PKV_AVX2 void QuantizeVectorsAvx2(DType dtype, const std::byte* src,
                                  int64_t src_stride, int64_t num_vectors,
                                  int64_t n, std::byte* codes,
                                  int64_t codes_stride, std::byte* scales,
                                  int64_t scales_stride) {
  switch (dtype) {
    case DType::kFloat32:
      return QuantizeVectorsAvx2<kType, DType::kFloat32>(
          src, src_stride, num_vectors, n, codes, codes_stride, scales,
          scales_stride);
    case DType::kFloat16:
      return QuantizeVectorsAvx2<kType, DType::kFloat16>(
          src, src_stride, num_vectors, n, codes, codes_stride, scales,
          scales_stride);
    case DType::kBFloat16:
      return QuantizeVectorsAvx2<kType, DType::kBFloat16>(
          src, src_stride, num_vectors, n, codes, codes_stride, scales,
          scales_stride);
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
}

// 8 dequantized values (codes [i, i + 8) times the scale) as floats. e4m3
// goes through float16: code bits (s eeee mmm) placed as float16 bits
// (s 0eeee mmm0000000) are the code's value times 2^-8, subnormals
// included, and vcvtph2ps widens them exactly; the NaN codes 0x7F/0xFF get
// an all-ones float16 exponent, so they stay NaN as in the table.
template <QuantType kType>
PKV_AVX2 inline __m256 Dequant8(const std::byte* in, int64_t i, __m256 scale) {
  const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i));
  if constexpr (kType == QuantType::kInt8) {
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), scale);
  } else {
    const __m128i w = _mm_cvtepu8_epi16(c);
    const __m128i low7 = _mm_and_si128(w, _mm_set1_epi16(0x7F));
    __m128i h = _mm_or_si128(
        _mm_slli_epi16(low7, 7),
        _mm_slli_epi16(_mm_and_si128(w, _mm_set1_epi16(0x80)), 8));
    h = _mm_or_si128(h, _mm_and_si128(_mm_cmpeq_epi16(low7, _mm_set1_epi16(0x7F)),
                                      _mm_set1_epi16(0x7C00)));
    const __m256 value =
        _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));  // Exact.
    return _mm256_mul_ps(value, scale);
  }
}

// Stores 8 floats as dtype kDst at element i of out (non-NaN rounding for
// the 16-bit dtypes, as StoreAll).
template <DType kDst>
PKV_AVX2 inline void Store8(__m256 y, std::byte* out, int64_t i) {
  if constexpr (kDst == DType::kFloat32) {
    _mm256_storeu_ps(reinterpret_cast<float*>(out + 4 * i), y);
  } else if constexpr (kDst == DType::kFloat16) {
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(out + 2 * i),
        _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    const __m256i bits = _mm256_castps_si256(y);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16),
                                         _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)),
                         odd),
        16);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i),
                     _mm_packus_epi32(_mm256_castsi256_si128(r),
                                      _mm256_extracti128_si256(r, 1)));
  }
}

template <QuantType kType, DType kDst>
PKV_AVX2 void DequantizeVectorsAvx2(const std::byte* codes,
                                    const std::byte* scales,
                                    int64_t num_vectors, int64_t n,
                                    std::byte* dst) {
  constexpr int64_t kElem = kDst == DType::kFloat32 ? 4 : 2;
  for (int64_t v = 0; v < num_vectors; ++v) {
    float scale;
    std::memcpy(&scale, scales + v * sizeof(float), sizeof(scale));
    const std::byte* in = codes + v * n;
    std::byte* out = dst + v * n * kElem;
    if (std::isnan(scale)) {
      for (int64_t i = 0; i < n; ++i) {
        StoreFromFloat(kDst, std::numeric_limits<float>::quiet_NaN(),
                       out + i * kElem);
      }
      continue;
    }
    const __m256 s = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m256 a = Dequant8<kType>(in, i, s);
      const __m256 b = Dequant8<kType>(in, i + 8, s);
      const __m256 c = Dequant8<kType>(in, i + 16, s);
      const __m256 d = Dequant8<kType>(in, i + 24, s);
      Store8<kDst>(a, out, i);
      Store8<kDst>(b, out, i + 8);
      Store8<kDst>(c, out, i + 16);
      Store8<kDst>(d, out, i + 24);
    }
    for (; i + 8 <= n; i += 8) Store8<kDst>(Dequant8<kType>(in, i, s), out, i);
    for (; i < n; ++i) {
      const uint8_t code = static_cast<uint8_t>(in[i]);
      const float y = kType == QuantType::kInt8
                          ? static_cast<float>(static_cast<int8_t>(code)) * scale
                          : E4M3ToFloat(code) * scale;
      if constexpr (kDst == DType::kFloat32) {
        std::memcpy(out + 4 * i, &y, 4);
      } else {
        const uint16_t h = kDst == DType::kFloat16 ? FloatToHalfNonNaN(y)
                                                   : FloatToBFloat16NonNaN(y);
        std::memcpy(out + 2 * i, &h, 2);
      }
    }
  }
}

template <QuantType kType>
PKV_AVX2 void DequantizeVectorsAvx2(const std::byte* codes,
                                    const std::byte* scales,
                                    int64_t num_vectors, int64_t n, DType dtype,
                                    std::byte* dst) {
  switch (dtype) {
    case DType::kFloat32:
      return DequantizeVectorsAvx2<kType, DType::kFloat32>(codes, scales,
                                                           num_vectors, n, dst);
    case DType::kFloat16:
      return DequantizeVectorsAvx2<kType, DType::kFloat16>(codes, scales,
                                                           num_vectors, n, dst);
    case DType::kBFloat16:
      return DequantizeVectorsAvx2<kType, DType::kBFloat16>(
          codes, scales, num_vectors, n, dst);
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
}
#undef PKV_AVX2
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

namespace {

// The portable path of QuantizeVectors for one vector.
float QuantizeOneScalar(QuantType type, DType dtype, const std::byte* in,
                        int64_t n, void* codes) {
  const ScaleChoice choice = ChooseScale(type, AbsMaxBits(dtype, in, n));
  const bool divide = choice.kind == ScaleKind::kDivide;
  if (!divide && choice.kind != ScaleKind::kMultiply) {
    std::memset(codes, 0, static_cast<size_t>(n));
  } else if (type == QuantType::kInt8) {
    int8_t* out = static_cast<int8_t*>(codes);
    if (divide) {
      QuantizeInt8<true>(dtype, in, n, choice.scale, choice.inverse, out);
    } else {
      QuantizeInt8<false>(dtype, in, n, choice.scale, choice.inverse, out);
    }
  } else {
    uint8_t* out = static_cast<uint8_t*>(codes);
    if (divide) {
      QuantizeE4M3<true>(dtype, in, n, choice.scale, choice.inverse, out);
    } else {
      QuantizeE4M3<false>(dtype, in, n, choice.scale, choice.inverse, out);
    }
  }
  return choice.scale;
}

// The portable path of DequantizeVectors for one vector.
void DequantizeOneScalar(QuantType type, const void* codes, float scale,
                         int64_t n, DType dst_dtype, std::byte* out) {
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
    StoreAll(dst_dtype, n, out,
             [&](int64_t i) { return table[in[i]] * scale; });
  }
}

}  // namespace

namespace internal {
void UseScalarQuantizeKernelsForTesting(bool scalar) {
  force_scalar.store(scalar, std::memory_order_relaxed);
}
bool QuantizeUsesAvx2() {
#ifdef PKV_QUANTIZE_X86
  return UseAvx2();
#else
  return false;
#endif
}
}  // namespace internal

void QuantizeVectors(QuantType type, DType src_dtype, const void* src,
                     int64_t src_stride, int64_t num_vectors, int64_t n,
                     void* codes, int64_t codes_stride, void* scales,
                     int64_t scales_stride) {
  PKV_DCHECK(n >= 1 && num_vectors >= 0, "QuantizeVectors of %d x %d",
             num_vectors, n);
  const std::byte* in = static_cast<const std::byte*>(src);
  std::byte* out = static_cast<std::byte*>(codes);
  std::byte* scale_out = static_cast<std::byte*>(scales);
  const int64_t src_stride_bytes =
      src_stride * static_cast<int64_t>(SizeOf(src_dtype));
#ifdef PKV_QUANTIZE_X86
  if (UseAvx2()) {
    if (type == QuantType::kInt8) {
      QuantizeVectorsAvx2<QuantType::kInt8>(src_dtype, in, src_stride_bytes,
                                            num_vectors, n, out, codes_stride,
                                            scale_out, scales_stride);
    } else {
      QuantizeVectorsAvx2<QuantType::kFp8E4M3>(
          src_dtype, in, src_stride_bytes, num_vectors, n, out, codes_stride,
          scale_out, scales_stride);
    }
    return;
  }
#endif
  for (int64_t v = 0; v < num_vectors; ++v) {
    const float scale = QuantizeOneScalar(
        type, src_dtype, in + v * src_stride_bytes, n, out + v * codes_stride);
    std::memcpy(scale_out + v * scales_stride, &scale, sizeof(scale));
  }
}

float QuantizeVector(QuantType type, DType src_dtype, const void* src,
                     int64_t n, void* codes) {
  float scale;
  QuantizeVectors(type, src_dtype, src, n, 1, n, codes, n, &scale,
                  sizeof(scale));
  return scale;
}

void DequantizeVector(QuantType type, const void* codes, float scale, int64_t n,
                      DType dst_dtype, void* dst) {
  DequantizeVectors(type, codes, &scale, 1, n, dst_dtype, dst);
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
  PKV_DCHECK(n >= 1 && num_vectors >= 0, "DequantizeVectors of %d x %d",
             num_vectors, n);
  const std::byte* in = static_cast<const std::byte*>(codes);
  const std::byte* scale_bytes = static_cast<const std::byte*>(scales);
  std::byte* out = static_cast<std::byte*>(dst);
#ifdef PKV_QUANTIZE_X86
  if (UseAvx2()) {
    if (type == QuantType::kInt8) {
      DequantizeVectorsAvx2<QuantType::kInt8>(in, scale_bytes, num_vectors, n,
                                              dst_dtype, out);
    } else {
      DequantizeVectorsAvx2<QuantType::kFp8E4M3>(in, scale_bytes, num_vectors,
                                                 n, dst_dtype, out);
    }
    return;
  }
#endif
  const int64_t elem = static_cast<int64_t>(SizeOf(dst_dtype));
  for (int64_t v = 0; v < num_vectors; ++v) {
    float scale;
    std::memcpy(&scale, scale_bytes + v * sizeof(float), sizeof(scale));
    DequantizeOneScalar(type, in + v * n, scale, n, dst_dtype,
                        out + v * n * elem);
  }
}

}  // namespace pagedkv
