// tools/kv_stress/model_presets.h
//
// KV geometries of real models, by name, for kv_stress's --model flag: what
// one token costs in every layer's K and V, so a run sized in bytes admits
// what a server for that model would. Only the KV side matters here (layers,
// KV heads after grouped-query attention, head_dim, dtype); weights and
// activations are the server's business. The numbers are the models'
// published configs (config.json: num_hidden_layers, num_key_value_heads,
// hidden_size / num_attention_heads), served in bfloat16.
//
//   absl::StatusOr<ModelGeometry> m = FindModelGeometry("llama-3.1-8b");
//   // m->layers == 32, m->kv_heads == 8, m->head_dim == 128:
//   // 2 * 32 * 8 * 128 * 2 bytes = 128 KiB of KV per token.
//   KVLayout layout = m->Layout(/*block_tokens=*/16);
//
// Thread safety: constant data and pure functions.
#ifndef PAGEDKV_TOOLS_KV_STRESS_MODEL_PRESETS_H_
#define PAGEDKV_TOOLS_KV_STRESS_MODEL_PRESETS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv::kv_stress {

struct ModelGeometry {
  std::string_view name;
  int32_t layers = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  DType dtype = DType::kBFloat16;

  KVLayout Layout(int32_t block_tokens) const {
    return {.num_layers = layers,
            .num_kv_heads = kv_heads,
            .head_dim = head_dim,
            .dtype = dtype,
            .block_tokens = block_tokens};
  }
  // Bytes of K and V one token takes in all layers.
  int64_t bytes_per_token() const {
    return int64_t{2} * layers * kv_heads * head_dim * SizeOf(dtype);
  }
};

inline constexpr ModelGeometry kModelGeometries[] = {
    {"llama-3.1-8b", 32, 8, 128, DType::kBFloat16},
    {"llama-3.1-70b", 80, 8, 128, DType::kBFloat16},
    {"mistral-7b", 32, 8, 128, DType::kBFloat16},
    {"qwen2.5-7b", 28, 4, 128, DType::kBFloat16},
};

// The names, joined by '|' (for help and error messages).
std::string ModelNames();

// Returns the geometry named `name` (case-insensitive); InvalidArgument
// listing the known names otherwise.
absl::StatusOr<ModelGeometry> FindModelGeometry(std::string_view name);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_MODEL_PRESETS_H_
