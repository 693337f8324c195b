#include "bench/cache/workload.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv::bench {

std::string_view OpName(Op op) {
  switch (op) {
    case Op::kDecodeAppend:
      return "decode_append";
    case Op::kPrefill:
      return "prefill";
    case Op::kReorderCache:
      return "reorder_cache";
    case Op::kBatchSelectIndices:
      return "batch_select_indices";
    case Op::kBatchRepeatInterleave:
      return "batch_repeat_interleave";
    case Op::kCrop:
      return "crop";
    case Op::kGather:
      return "gather";
    case Op::kStaticAppend:
      return "static_append";
    case Op::kAllocFree:
      return "alloc_free";
    case Op::kFork256:
      return "fork_256";
  }
  return "unknown";
}

std::string_view ImplName(Impl impl) {
  switch (impl) {
    case Impl::kPaged:
      return "paged";
    case Impl::kBaseline:
      return "baseline";
    case Impl::kMemcpy:
      return "memcpy";
    case Impl::kColdMemcpy:
      return "cold_memcpy";
  }
  return "unknown";
}

DType DTypeFromArg(int64_t arg) {
  return arg == 0 ? DType::kFloat16 : DType::kFloat32;
}

size_t TokenBytes(DType dtype) {
  return size_t{kNumLayers} * 2 * kNumKvHeads * kHeadDim * SizeOf(dtype);
}

KVLayout BenchLayout(DType dtype) {
  return KVLayout{.num_layers = kNumLayers,
                  .num_kv_heads = kNumKvHeads,
                  .head_dim = kHeadDim,
                  .dtype = dtype,
                  .block_tokens = kBlockTokens};
}

}  // namespace pagedkv::bench
