#include "tensor/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <string_view>

#include "base/check.h"

namespace pagedkv {
namespace {

uint32_t FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Rounds `value` to float with round-to-odd: truncate toward zero and, if
// anything was lost, set the last mantissa bit. A round-to-odd result with at
// least two more bits than the final format rounds (ties to even) to the same
// value as `value` itself would, so double -> odd float -> half/bfloat16
// rounds once in effect (Boldo and Melquiond, "When double rounding is odd").
// Float keeps 24 bits; half keeps 11 and bfloat16 8.
float DoubleToFloatRoundToOdd(double value) {
  float rounded = static_cast<float>(value);
  if (std::isnan(value) || static_cast<double>(rounded) == value) {
    return rounded;
  }
  if (std::fabs(static_cast<double>(rounded)) > std::fabs(value)) {
    rounded = std::nextafter(rounded, 0.0f);  // Also turns an Inf into max.
  }
  return FloatFromBits(FloatBits(rounded) | 1u);
}

}  // namespace

bool IsValidDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
      return true;
  }
  return false;
}

size_t SizeOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "invalid";
}

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "float32" || name == "f32" || name == "fp32") {
    return DType::kFloat32;
  }
  if (name == "float16" || name == "f16" || name == "fp16" || name == "half") {
    return DType::kFloat16;
  }
  if (name == "bfloat16" || name == "bf16") return DType::kBFloat16;
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, DType dtype) {
  return os << DTypeName(dtype);
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = FloatBits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;

  if (magnitude >= 0x7F800000u) {  // Inf or NaN.
    if (magnitude == 0x7F800000u) return sign | 0x7C00u;
    // NaN: keep the top payload bits and force the quiet bit.
    return static_cast<uint16_t>(sign | 0x7E00u |
                                 ((magnitude >> 13) & 0x03FFu));
  }
  // 65520 is the midpoint between 65504 (the largest half) and 65536; the tie
  // goes to the even neighbour, which is Inf.
  if (magnitude >= 0x477FF000u) return sign | 0x7C00u;

  if (magnitude < 0x38800000u) {  // Below 2^-14: a half subnormal or zero.
    const uint32_t exponent = magnitude >> 23;
    if (exponent < 102) return sign;  // Below 2^-25, half the least subnormal.
    // value = mantissa * 2^(exponent - 150); half subnormals count 2^-24.
    const uint32_t mantissa = (magnitude & 0x007FFFFFu) | 0x00800000u;
    const uint32_t shift = 126 - exponent;  // In [14, 24].
    uint32_t result = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (result & 1u))) {
      ++result;  // May carry into the smallest normal, 0x0400: still right.
    }
    return static_cast<uint16_t>(sign | result);
  }

  // Normal: rebias the exponent (127 -> 15), then round away 13 mantissa
  // bits. A carry out of the mantissa correctly bumps the exponent.
  const uint32_t rebiased = magnitude - ((127u - 15u) << 23);
  const uint32_t rounded = rebiased + 0x0FFFu + ((rebiased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu;
  const uint32_t mantissa = bits & 0x03FFu;
  if (exponent == 0x1F) {
    if (mantissa == 0) return FloatFromBits(sign | 0x7F800000u);
    return FloatFromBits(sign | 0x7FC00000u | (mantissa << 13));
  }
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  return FloatFromBits(sign | ((exponent + (127 - 15)) << 23) |
                       (mantissa << 13));
}

uint16_t FloatToBFloat16(float value) {
  const uint32_t bits = FloatBits(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: truncate, force quiet.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // bfloat16 is the top half of a float, so rounding the low 16 bits away
  // handles subnormals, the carry into the exponent and overflow to Inf.
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float BFloat16ToFloat(uint16_t bits) {
  uint32_t widened = static_cast<uint32_t>(bits) << 16;
  if ((widened & 0x7FFFFFFFu) > 0x7F800000u) widened |= 0x00400000u;
  return FloatFromBits(widened);
}

float LoadAsFloat(DType dtype, const void* element) {
  switch (dtype) {
    case DType::kFloat32: {
      float value;
      std::memcpy(&value, element, sizeof(value));
      return value;
    }
    case DType::kFloat16: {
      uint16_t bits;
      std::memcpy(&bits, element, sizeof(bits));
      return HalfToFloat(bits);
    }
    case DType::kBFloat16: {
      uint16_t bits;
      std::memcpy(&bits, element, sizeof(bits));
      return BFloat16ToFloat(bits);
    }
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
  return 0.0f;
}

void StoreFromFloat(DType dtype, float value, void* element) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(element, &value, sizeof(value));
      return;
    case DType::kFloat16: {
      const uint16_t bits = FloatToHalf(value);
      std::memcpy(element, &bits, sizeof(bits));
      return;
    }
    case DType::kBFloat16: {
      const uint16_t bits = FloatToBFloat16(value);
      std::memcpy(element, &bits, sizeof(bits));
      return;
    }
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
}

void StoreFromDouble(DType dtype, double value, void* element) {
  if (dtype == DType::kFloat32) {
    StoreFromFloat(dtype, static_cast<float>(value), element);
  } else {
    StoreFromFloat(dtype, DoubleToFloatRoundToOdd(value), element);
  }
}

}  // namespace pagedkv
