// tensor/dtype.h
//
// DType names the element types a KV cache stores: float32, float16 (IEEE
// binary16) and bfloat16. This header also holds the scalar conversions
// between them. Every conversion to a narrower type rounds to nearest, ties to
// even, exactly as IEEE 754 prescribes: subnormals are kept, values past the
// largest finite number become infinity, infinities stay infinities, and a NaN
// stays a NaN (always a quiet one; the payload bits that fit are kept). The
// conformance traces (conformance/FORMAT.md section 7.2) depend on this
// rounding, so it is implemented here bit by bit rather than left to a
// compiler's or CPU's half-precision support.
//
// Example:
//
//   std::optional<DType> dtype = ParseDType("fp16");  // DType::kFloat16
//   uint16_t bits = FloatToHalf(10701.0f);             // rounds to 10704
//   float widened = HalfToFloat(bits);                 // 10704.0f
//   std::byte element[4];
//   StoreFromFloat(DType::kBFloat16, 1.5f, element);   // writes 2 bytes
//   float back = LoadAsFloat(DType::kBFloat16, element);  // 1.5f
//
// Thread safety: all functions are pure and safe to call concurrently.
#ifndef PAGEDKV_TENSOR_DTYPE_H_
#define PAGEDKV_TENSOR_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string_view>

namespace pagedkv {

// Element type of a tensor. The numeric values are not part of the API.
enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16 };

// Returns whether `dtype` is one of the enumerators above. DType is an enum
// over uint8_t, so any byte can arrive (from a binding, a file): code that
// takes a DType from outside checks it here before sizing or naming it.
bool IsValidDType(DType dtype);

// Returns the size of one element in bytes: 4 for float32, 2 for float16 and
// bfloat16. REQUIRES: IsValidDType(dtype).
size_t SizeOf(DType dtype);

// Returns the canonical name: "float32", "float16" or "bfloat16" (the
// spelling of conformance/FORMAT.md), and "invalid" for any other value.
std::string_view DTypeName(DType dtype);

// Returns the DType spelled `name`, or nullopt for an unknown name. Accepts the
// canonical names and the aliases "f32", "fp32", "f16", "fp16", "half" and
// "bf16". Matching is exact (case-sensitive).
std::optional<DType> ParseDType(std::string_view name);

// Writes DTypeName(dtype), so GoogleTest and logs print "float16".
std::ostream& operator<<(std::ostream& os, DType dtype);

// Returns the binary16 bit pattern nearest to `value` (ties to even).
uint16_t FloatToHalf(float value);
// Returns the binary16 bit pattern `bits` as a float (always exact; a
// signalling NaN comes back quiet).
float HalfToFloat(uint16_t bits);

// Returns the bfloat16 bit pattern nearest to `value` (ties to even).
uint16_t FloatToBFloat16(float value);
// Returns the bfloat16 bit pattern `bits` as a float (always exact; a
// signalling NaN comes back quiet).
float BFloat16ToFloat(uint16_t bits);

// Returns the element of type `dtype` stored at `element`, widened to float.
// `element` need not be aligned.
// REQUIRES: `element` points to SizeOf(dtype) readable bytes.
float LoadAsFloat(DType dtype, const void* element);

// Stores `value` rounded to `dtype` (ties to even) at `element`, which need
// not be aligned.
// REQUIRES: `element` points to SizeOf(dtype) writable bytes.
void StoreFromFloat(DType dtype, float value, void* element);

// Stores `value` rounded once, directly to `dtype` (ties to even), at
// `element`. Unlike StoreFromFloat(dtype, static_cast<float>(value), ...) it
// never rounds twice, so a double lying just off a float16 midpoint still
// rounds the right way.
// REQUIRES: `element` points to SizeOf(dtype) writable bytes.
void StoreFromDouble(DType dtype, double value, void* element);

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_DTYPE_H_
