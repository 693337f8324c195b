// tensor/quantize.h
//
// Scaled 8-bit quantization of short float vectors: the storage formats of a
// quantized KV pool (issue #15). One vector (in a KV pool: the head_dim values
// of one (token, layer, K|V, head)) becomes n one-byte codes plus one float32
// scale taken from the vector's absolute maximum at write time, with no
// calibration:
//
//   int8:        scale = amax / 127, code = clamp(round_even(x / scale),
//                -127, 127), x' = code * scale.
//                |x - x'| <= scale / 2 (plus float rounding of x / scale and
//                of code * scale, a few ulps of x).
//   fp8 (e4m3):  scale = amax / 448, code = E4M3(x / scale) (OCP FP8 E4M3:
//                bias 7, 3 mantissa bits, no infinities, largest 448),
//                x' = E4M3ToFloat(code) * scale.
//                |x - x'| <= max(|x| / 16, scale / 1024): half an ulp of e4m3
//                (2^-4 relative) for normal codes, half a subnormal step
//                (2^-10 * scale) below 2^-6 * scale.
//
// Special values (per vector):
//   - all zeros (amax == 0): scale 0, every code 0; dequantizes to +0.0
//     (the sign of a negative zero is not kept).
//   - a NaN or an infinity anywhere in the vector: scale NaN, every code 0;
//     the WHOLE vector dequantizes to NaN. A scaled format cannot hold an
//     infinity next to finite values, and an attention row that reads a
//     non-finite key or value is NaN anyway; poisoning the vector keeps the
//     failure visible instead of silently saturating it.
//   - subnormal inputs: quantized like any other value (the scale may itself
//     be subnormal; it is rounded up so that no code exceeds the range).
//   - values up to the largest float: no overflow (x / scale <= 127 or 448).
//
// The conversions from float16 and bfloat16 inputs and to float16/bfloat16
// outputs round to nearest even, bit-identical to tensor/dtype.h. The
// portable loops are branch-free over contiguous vectors; on CPUs with AVX2
// and F16C (checked once at run time through CPUID) every quantize and
// dequantize path, int8 and e4m3, from and to float32/float16/bfloat16, runs
// hand-written AVX2 kernels with bit-identical results: one pass for the
// amax, one for the codes (a multiply by the reciprocal of the scale), 32
// elements a step.
//
// Example:
//
//   float key[128] = {...};
//   std::byte codes[128];
//   float scale = QuantizeVector(QuantType::kInt8, DType::kFloat32,
//                                key, 128, codes);
//   std::byte back[128 * 2];                       // float16 out
//   DequantizeVector(QuantType::kInt8, codes, scale, 128, DType::kFloat16,
//                    back);
//   uint8_t e = FloatToE4M3(1.1f);                 // 0x39, 1.125
//   float f = E4M3ToFloat(e);                      // 1.125f
//
// Thread safety: pure functions; the e4m3 decode table is a constant.
#ifndef PAGEDKV_TENSOR_QUANTIZE_H_
#define PAGEDKV_TENSOR_QUANTIZE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "tensor/dtype.h"

namespace pagedkv {

// An 8-bit storage format with a per-vector float32 scale.
enum class QuantType : uint8_t { kInt8, kFp8E4M3 };

// "int8" or "fp8_e4m3" ("invalid" for other values).
std::string_view QuantTypeName(QuantType type);

// The largest code magnitude: 127 for int8, 448 for e4m3.
float QuantMax(QuantType type);

// Returns the e4m3 code nearest to `value` (ties to even). Magnitudes at or
// above 448 (and infinities) saturate to +-448 (0x7E/0xFE); a NaN becomes
// 0x7F (the positive e4m3 NaN); magnitudes below 2^-10 become a signed zero.
uint8_t FloatToE4M3(float value);
// Returns the value of e4m3 code `code` (exact; 0x7F and 0xFF are NaN).
float E4M3ToFloat(uint8_t code);
// The 256-entry decode table behind E4M3ToFloat.
const float* E4M3DecodeTable();

// Quantizes the n contiguous elements at `src` (of dtype `src_dtype`) into n
// codes at `codes` and returns the scale, as described above.
// REQUIRES: n >= 1; IsValidDType(src_dtype).
float QuantizeVector(QuantType type, DType src_dtype, const void* src,
                     int64_t n, void* codes);

// QuantizeVector of num_vectors vectors of n elements each: vector v's
// source at src + v * src_stride ELEMENTS of src_dtype, its n codes at
// codes + v * codes_stride BYTES, its float32 scale at
// scales + v * scales_stride BYTES (need not be aligned). What a write of
// one token's heads (or one head's tokens) into a block calls once, so the
// dispatch is paid per call, not per vector. Results equal QuantizeVector's
// per vector, bit for bit.
// REQUIRES: n >= 1; num_vectors >= 0; IsValidDType(src_dtype).
void QuantizeVectors(QuantType type, DType src_dtype, const void* src,
                     int64_t src_stride, int64_t num_vectors, int64_t n,
                     void* codes, int64_t codes_stride, void* scales,
                     int64_t scales_stride);

// Writes the n dequantized values of `codes` with `scale` to `dst`, n
// contiguous elements of `dst_dtype` (rounded to nearest even). A NaN scale
// gives n NaNs. REQUIRES: n >= 1; IsValidDType(dst_dtype).
void DequantizeVector(QuantType type, const void* codes, float scale, int64_t n,
                      DType dst_dtype, void* dst);

// DequantizeVector of num_vectors consecutive vectors: codes[v * n + i],
// scale v at scales + 4 * v (need not be aligned), into num_vectors * n
// contiguous elements of `dst_dtype`. What a gather of one block's run of
// tokens calls once (the per-vector work hoisted out of the loop).
void DequantizeVectors(QuantType type, const void* codes, const void* scales,
                       int64_t num_vectors, int64_t n, DType dst_dtype,
                       void* dst);

// The dot product sum_d query[d] * dequantized(codes[d]) in float, reading
// the codes directly (scale applied once at the end). A NaN scale gives NaN.
float DotQuantized(QuantType type, const float* query, const void* codes,
                   float scale, int64_t n);

// acc[d] += weight * dequantized(codes[d]) for d < n.
void AccumulateQuantized(QuantType type, float weight, const void* codes,
                         float scale, int64_t n, float* acc);

namespace internal {
// For tests: true makes every function above take the portable loops even
// where AVX2 is available (the results must not change); false restores
// the run-time choice.
void UseScalarQuantizeKernelsForTesting(bool scalar);
// Whether the AVX2 kernels are in use (the CPU has AVX2 and F16C and tests
// did not ask for the portable loops).
bool QuantizeUsesAvx2();
}  // namespace internal

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_QUANTIZE_H_
