// tools/kv_stress/kv_stamps.cc
#include "tools/kv_stress/kv_stamps.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "tensor/dtype.h"

namespace pagedkv::kv_stress {

void RowHistory::Append(absl::Span<const int32_t> token_ids) {
  keys_.reserve(keys_.size() + token_ids.size());
  for (int32_t id : token_ids) Append(id);
}

void RowHistory::Append(int32_t token_id) {
  uint64_t x = (keys_.empty() ? 0x243F6A8885A308D3ULL : keys_.back()) ^
               (static_cast<uint64_t>(static_cast<uint32_t>(token_id)) *
                0x9E3779B97F4A7C15ULL);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  keys_.push_back(x ^ (x >> 31));
}

void RowHistory::Truncate(int64_t length) {
  PKV_CHECK(length >= 0 && length <= this->length(), "truncate to %d of %d",
            length, this->length());
  keys_.resize(static_cast<size_t>(length));
}

uint64_t RowHistory::KeyAt(int64_t position) const {
  PKV_CHECK(position >= 0 && position < length(), "position %d of %d", position,
            length());
  return keys_[static_cast<size_t>(position)];
}

namespace {

// Integers [0, 2^k) that a dtype stores exactly (its significand bits + 1).
int64_t ExactIntegers(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return int64_t{1} << 24;
    case DType::kFloat16:
      return int64_t{1} << 11;
    case DType::kBFloat16:
      return int64_t{1} << 8;
  }
  return int64_t{1} << 8;
}

}  // namespace

// On a quantized pool (KVLayout::storage int8 or fp8) the stamp is the raw
// code byte of that element, 0..126 (finite codes in both formats): the
// bytes prove the books, and a code is stored exactly.
KVStamper::KVStamper(KVPool* pool)
    : pool_(pool),
      modulus_(pool->layout().quantized()
                   ? 127
                   : ExactIntegers(pool->layout().dtype)) {
  const KVLayout& l = pool_->layout();
  const size_t elements =
      static_cast<size_t>(l.num_kv_heads) * l.block_tokens * l.head_dim;
  const size_t size = SizeOf(l.dtype);
  key_fill_.resize(elements * size);
  value_fill_.resize(elements * size);
  for (size_t i = 0; i < elements; ++i) {
    StoreFromFloat(l.dtype, 0.25f, key_fill_.data() + i * size);
    StoreFromFloat(l.dtype, -0.25f, value_fill_.data() + i * size);
  }
}

float KVStamper::StampOf(uint64_t key) const {
  return static_cast<float>((key >> 32) % static_cast<uint64_t>(modulus_));
}

std::byte* KVStamper::StampAddress(BlockId block, int32_t offset) const {
  const KVLayout& l = pool_->layout();
  if (l.quantized()) {
    return pool_->BlockData(block) + l.DataOffset(0, KV::kKey, 0, offset);
  }
  return pool_->BlockData(block) +
         static_cast<size_t>(l.ElementOffset(0, KV::kKey, 0, offset)) *
             SizeOf(l.dtype);
}

void KVStamper::Write(absl::Span<const int64_t> slots, int64_t first_position,
                      const RowHistory& history) {
  const KVLayout& l = pool_->layout();
  const int32_t bt = l.block_tokens;
  const TokenSource key{.data = key_fill_.data(),
                        .head_stride = int64_t{bt} * l.head_dim,
                        .token_stride = l.head_dim,
                        .dim_stride = 1};
  TokenSource value = key;
  value.data = value_fill_.data();
  size_t i = 0;
  while (i < slots.size()) {
    // A run of consecutive slots inside one block: one write per layer.
    const BlockId block(static_cast<int32_t>(slots[i] / bt));
    const int32_t offset = static_cast<int32_t>(slots[i] % bt);
    size_t n = 1;
    while (i + n < slots.size() && slots[i + n] == slots[i] + int64_t(n) &&
           offset + static_cast<int32_t>(n) < bt) {
      ++n;
    }
    for (int32_t layer = 0; layer < l.num_layers; ++layer) {
      WriteTokenRun(*pool_, block, layer, offset, static_cast<int32_t>(n), key,
                    value);
    }
    for (size_t t = 0; t < n; ++t) {
      const int64_t position = first_position + static_cast<int64_t>(i + t);
      const float stamp = StampOf(history.KeyAt(position));
      std::byte* at = StampAddress(block, offset + static_cast<int32_t>(t));
      if (l.quantized()) {
        *at = static_cast<std::byte>(static_cast<uint8_t>(stamp));
      } else {
        StoreFromFloat(l.dtype, stamp, at);
      }
    }
    // Stored bytes per token: codes and scales when quantized.
    const int64_t per_vector =
        l.quantized() ? l.head_dim + int64_t{sizeof(float)}
                      : l.head_dim * static_cast<int64_t>(SizeOf(l.dtype));
    bytes_written_ += static_cast<int64_t>(n) * 2 * l.num_layers *
                      l.num_kv_heads * per_vector;
    i += n;
  }
}

bool KVStamper::Verify(absl::Span<const BlockId> table, int64_t position,
                       const RowHistory& history) const {
  const int32_t bt = pool_->layout().block_tokens;
  const size_t index = static_cast<size_t>(position / bt);
  PKV_CHECK(index < table.size(), "position %d past a table of %d blocks",
            position, table.size());
  const std::byte* at =
      StampAddress(table[index], static_cast<int32_t>(position % bt));
  const float got =
      pool_->layout().quantized()
          ? static_cast<float>(static_cast<uint8_t>(*at))
          : LoadAsFloat(pool_->layout().dtype, at);
  return got == StampOf(history.KeyAt(position));
}

}  // namespace pagedkv::kv_stress
