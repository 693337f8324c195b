// allocator/block_id.h
//
// BlockId names one KV-cache block of a BlockPool: a strong type around an
// int32 index in [0, num_blocks). Block tables go to attention kernels as int32
// arrays, so the representation is exactly one int32 and a span of BlockIds
// can be exported without conversion (static_assert below). A default
// constructed BlockId is invalid (-1); no pool ever hands one out.
//
// Example:
//
//   BlockId id;                 // Invalid.
//   id = BlockId(7);
//   if (id.is_valid()) absl::flat_hash_set<BlockId>{id};
//   std::cout << id;            // Prints "block#7".
//
// Thread safety: a trivially copyable value type; safe to share read-only.
#ifndef PAGEDKV_ALLOCATOR_BLOCK_ID_H_
#define PAGEDKV_ALLOCATOR_BLOCK_ID_H_

#include <cstdint>
#include <ostream>
#include <type_traits>
#include <utility>

namespace pagedkv {

class BlockId {
 public:
  constexpr BlockId() = default;  // Invalid; no pool ever returns it.
  constexpr explicit BlockId(int32_t value) : value_(value) {}

  constexpr int32_t value() const { return value_; }
  constexpr bool is_valid() const { return value_ >= 0; }

  friend constexpr bool operator==(BlockId a, BlockId b) {
    return a.value_ == b.value_;
  }
  friend constexpr bool operator!=(BlockId a, BlockId b) { return !(a == b); }
  // Orders by index, so ids can key std::map and be sorted.
  friend constexpr bool operator<(BlockId a, BlockId b) {
    return a.value_ < b.value_;
  }

  template <typename H>
  friend H AbslHashValue(H h, BlockId id) {
    return H::combine(std::move(h), id.value_);
  }
  friend std::ostream& operator<<(std::ostream& os, BlockId id) {
    return os << "block#" << id.value_;
  }

 private:
  int32_t value_ = -1;
};

// Kernel export relies on BlockId being layout-identical to int32_t.
static_assert(sizeof(BlockId) == sizeof(int32_t));
static_assert(std::is_trivially_copyable_v<BlockId>);

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_BLOCK_ID_H_
