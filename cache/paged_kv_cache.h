// cache/paged_kv_cache.h
//
// PagedKVCache is the one implementation behind DynamicKVCache and
// StaticKVCache: a KVCache whose rows are block tables over a KVPool. The two
// public classes hold one (paged_kv_cache_facade.h) and only choose its
// Options (a capacity and a fixed layer count for static caches, a shared
// pool or none). Internal to //cache: users name those classes, and
// EncoderDecoderCache reaches the extra methods below through the facade.
//
// Books of one cache (see the invariants next to the members):
//   - the layers form groups (one, unless Options::sliding_window groups
//     them by window); a group has one BlockTable per batch row, all with
//     the same number of blocks, and its blocks hold its layers at slots
//     0, 1, ... of the pool's layout;
//   - per layer a `start` (table token of visible token 0) and a `length`;
//     token t of a layer lives at table token start + t in every row of its
//     group;
//   - a crop moves `start`, then drops the blocks below every start of a
//     group's layers;
//   - a write into a block shared with another row (after
//     BatchRepeatInterleave or ReorderCache duplicates) first copies that one
//     block (copy-on-write);
//   - every slot below a layer's length was written or zero-filled;
//   - a sliding-window layer of window W also counts `released` tokens that
//     left its window: its sequence length is released + length, and its
//     next append first drops all but the last W - 1 held tokens (moving
//     `start`), so the blocks below every start of its group's layers
//     return to the pool.
//
// Every mutating method validates everything and takes every block it needs
// before it changes anything, so an error leaves the cache as it was.
//
// Thread safety: one thread at a time per cache; the pool may be shared.
#ifndef PAGEDKV_CACHE_PAGED_KV_CACHE_H_
#define PAGEDKV_CACHE_PAGED_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "cache/cache.h"
#include "cache/cache_limits.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
#include "cache/kv_view.h"
#include "cache/storage/growable_kv_pool.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace pagedkv::internal {

class PagedKVCache : public KVCache {
 public:
  struct Options {
    // Static caches: the capacity per layer; nullopt for a dynamic cache.
    std::optional<int64_t> max_cache_len;
    // Static caches: the fixed layer count; 0 for a dynamic cache.
    int32_t num_layers = 0;
    // Shared pool (must outlive the cache), or nullptr for a private pool
    // made at the first update and grown on demand.
    KVPool* pool = nullptr;
    // Tokens per block of a private pool.
    int32_t block_tokens = 16;
    // A private pool grows on demand up to this many bytes (of blocks
    // actually allocated); an update or batch operation that would need more
    // returns ResourceExhausted and changes nothing.
    int64_t max_private_pool_bytes = kDefaultMaxPrivatePoolBytes;
    // Storage of a private pool (kv_layout.h); ignored with a shared pool.
    KVStorage storage = KVStorage::kSame;
    // Dynamic caches: per layer, a sliding window of that many tokens (0:
    // full attention). Empty: every layer is full. Non-empty: it fixes the
    // layer count (Update rejects layers past it), and layers with equal
    // windows share tables: groups of g layers each, g the gcd of the
    // counts of each window value, so that every block of the pool (g
    // layers) is used whole. Validated by DynamicKVCache::Create; see
    // dynamic_kv_cache.h for the semantics.
    std::vector<int32_t> sliding_window;
  };

  explicit PagedKVCache(const Options& options);
  ~PagedKVCache() override;
  PagedKVCache(const PagedKVCache&) = delete;
  PagedKVCache& operator=(const PagedKVCache&) = delete;

  // KVCache:
  using KVCache::Update;
  absl::StatusOr<KVView> Update(ConstTensorView key, ConstTensorView value,
                                int64_t layer_idx,
                                const CachePosition& position) override;
  absl::StatusOr<std::optional<KVView>> Get(int64_t layer_idx) const override;
  absl::StatusOr<int64_t> GetSeqLength(int64_t layer_idx = 0) const override;
  absl::Status ReorderCache(absl::Span<const int64_t> beam_idx) override;
  absl::Status BatchSelectIndices(absl::Span<const int64_t> indices) override;
  absl::Status BatchRepeatInterleave(int64_t repeats) override;
  absl::Status Crop(int64_t max_length) override;
  void Reset() override;
  std::optional<int64_t> GetMaxCacheShape() const override {
    return options_.max_cache_len;
  }
  int64_t num_layer_slots() const override {
    return static_cast<int64_t>(layers_.size());
  }
  std::optional<int64_t> batch_size() const override;
  const KVPool* pool() const override { return pool_; }
  std::optional<DType> dtype() const override { return dtype_; }
  CacheStats stats() const override;
  void CheckInvariants() const override;

  bool is_static() const { return options_.max_cache_len.has_value(); }

  // The checks of ReorderCache/BatchSelectIndices and of
  // BatchRepeatInterleave, without the change: returns what the operation
  // would return for bad input (not for memory). EncoderDecoderCache uses
  // them to check both halves before changing either.
  absl::Status CheckSelect(absl::Span<const int64_t> indices) const;
  absl::Status CheckRepeat(int64_t repeats) const;
  // Makes a static cache's reservation cover `batch` rows (growing a private
  // pool if needed, within its byte cap) so that a following select or
  // repeat to that batch cannot fail for memory. It only grows;
  // ResourceExhausted leaves it unchanged. A no-op for dynamic caches, before
  // the batch is fixed, and for a batch no larger than the current one.
  absl::Status PrepareForBatch(int64_t batch);

  // What a failed multi-step operation restores: the reservation's capacity
  // and the private pool's size and layers. EncoderDecoderCache takes one of
  // each half before preparing both, and rolls the first back when the
  // second fails, so that an error leaves no allocation behind.
  struct Checkpoint {
    bool had_reservation = false;
    int32_t reservation_capacity = 0;
    const GrowableKVPool* private_pool = nullptr;  // Which one (identity).
    int32_t private_blocks = 0;
    int32_t private_layers = 0;
  };
  Checkpoint TakeCheckpoint() const;
  // REQUIRES: since `checkpoint`, only PrepareForBatch or failed calls ran.
  void Rollback(const Checkpoint& checkpoint);

 private:
  struct Layer {
    bool present = false;
    int64_t start = 0;
    int64_t length = 0;
    // Window layers: tokens seen before `start` and no longer held.
    int64_t released = 0;
  };
  // Where one Update writes, in table tokens, decided before anything
  // changes.
  struct WritePlan {
    int64_t start = 0;         // The layer's window start.
    int64_t old_end = 0;       // start + length before the write.
    int64_t new_end = 0;       // start + length after it.
    int32_t grow_blocks = 0;   // Blocks appended to every row.
    int32_t group = 0;         // The layer's group (its tables).
    int32_t slot = 0;          // The layer's slot in the group's blocks.
    int64_t table_blocks = 0;  // The group's blocks before the write.
  };

  // Whether layer `layer_idx` holds data (was updated since construction or
  // Reset); false past the last slot.
  bool is_present(int64_t layer_idx) const;
  // The group of layer `layer_idx` and its slot in the group's blocks (the
  // pool's layer index).
  int32_t group_of(int64_t layer_idx) const;
  int32_t slot_of(int64_t layer_idx) const;
  // The layers a private pool needs for an update of `layer_idx`.
  int32_t PoolLayersFor(int64_t layer_idx) const;
  // Sets groups_, group_of_, slot_of_ and layers_per_group_ from
  // options_.sliding_window.
  void GroupLayers();
  int64_t num_rows() const {
    return static_cast<int64_t>(groups_[0].rows.size());
  }
  // The sliding window of layer `layer_idx`, or 0 for full attention.
  int32_t window_of(int64_t layer_idx) const;
  // Layer `layer_idx` as its next append sees it: a window layer keeps only
  // its last W - 1 held tokens (the rest join `released`). A default Layer
  // past the last slot.
  Layer TrimmedForAppend(int64_t layer_idx) const;
  WritePlan PlanWrite(int64_t layer_idx, int64_t new_length) const;
  // Appends to `targets` the existing entries of `rows` the write touches
  // (those overlapping [old_end, new_end), and those holding positional
  // writes), each once.
  void AddWriteTargets(const WritePlan& plan, int64_t seq,
                       const CachePosition& position,
                       std::vector<BlockTable>& rows,
                       absl::InlinedVector<WriteTarget, 8>* targets) const;
  // Zeroes table tokens [first, last) of the plan's layer in every row of
  // its group, K and V.
  void ZeroFill(const WritePlan& plan, int64_t first, int64_t last);
  void WriteTokens(ConstTensorView key, ConstTensorView value,
                   const WritePlan& plan, const CachePosition& position);

  // InvalidArgument for a negative layer index, or (static) one past
  // num_layers: what Update and Get reject.
  absl::Status CheckLayerIndex(int64_t layer_idx) const;
  // Validates an update; on success sets *new_length to the layer's length
  // after it.
  absl::Status ValidateUpdate(ConstTensorView key, ConstTensorView value,
                              int64_t layer_idx, const CachePosition& position,
                              int64_t* new_length) const;
  // Makes sure a pool exists with room for `layer_idx` and the key's shape.
  absl::Status EnsurePool(ConstTensorView key, int64_t layer_idx);
  // Private pools: grows the pool (doubling, within the byte cap) until
  // `needed` fresh blocks are available to this cache (its reservation's
  // free blocks count when `use_reservation`). ResourceExhausted when the
  // cap or memory does not allow it; the caller rolls back. A no-op on a
  // shared pool.
  absl::Status EnsureAvailable(int64_t needed, bool use_reservation);
  // The most blocks of `layout` a private pool may hold under the byte cap.
  int64_t MaxPrivateBlocks(const KVLayout& layout) const;
  // Static caches: grows the reservation to cover `batch` rows at the
  // current windows (never shrinks it), growing a private pool if needed.
  absl::Status GrowReservation(int64_t batch);
  // Shrinks the reservation to what the current rows and windows need (never
  // below the charged blocks). Cannot fail.
  void TrimReservation();
  // ResourceExhausted if a private pool could need more than
  // options_.max_private_pool_bytes for this update.
  absl::Status CheckPrivatePoolSize(ConstTensorView key, int64_t layer_idx,
                                    int64_t new_length) const;
  absl::Status Select(std::vector<int32_t> indices);
  int64_t blocks_per_row_reserved() const;
  int64_t block_tokens() const;
  // Number of table blocks needed to hold table tokens [0, end).
  int64_t BlocksFor(int64_t end) const;
  // Drops the leading blocks of group `g` below the starts of its layers
  // holding tokens (and moves empty layers' starts to 0).
  void DropLeadingBlocks(int32_t g);

  Options options_;
  std::unique_ptr<GrowableKVPool> owned_pool_;
  // The private pool a rebuild for a new shape replaced, until the update
  // that rebuilt it succeeds (Rollback puts it back).
  std::unique_ptr<GrowableKVPool> retired_pool_;
  // The pool in use: options_.pool, owned_pool_.get(), or nullptr before a
  // standalone cache's first update.
  KVPool* pool_ = nullptr;
  // Static caches on a batch: blocks set aside for batch * blocks_per_row.
  std::optional<Reservation> reservation_;

  // Fixed by the first successful update (dtype for the cache's life; the
  // rest until Reset). Invariant: has_geometry_ == batch fixed.
  std::optional<DType> dtype_;
  bool has_geometry_ = false;
  int64_t heads_ = 0;
  int64_t head_dim_ = 0;

  // One group's tables.
  struct Group {
    std::vector<BlockTable> rows;
    int64_t num_table_blocks = 0;
  };

  // Invariants:
  //  - groups_ is not empty; without sliding windows it has one group and
  //    layer l is its slot l; otherwise group_of_/slot_of_ map each layer
  //    (static: one group) into groups of layers_per_group_ slots;
  //  - every group's rows.size() is the batch size when has_geometry_ (0
  //    otherwise);
  //  - every rows[b].num_blocks() == its group's num_table_blocks;
  //  - for every layer: 0 <= start, start + length <= its group's
  //    num_table_blocks * block_tokens; an absent layer has start == length
  //    == 0;
  //  - a present layer holding no tokens has start == 0 (its start is
  //    arbitrary, and it must not pin leading blocks);
  //  - in each group, some layer holding tokens has start < block_tokens,
  //    or none holds tokens and num_table_blocks == 0 (Crop and window
  //    appends drop every leading block below the starts of the layers
  //    holding tokens);
  //  - static: layers_.size() == num_layers and length <= max_cache_len;
  //  - released == 0 unless the layer has a window W; released > 0 implies
  //    length >= W - 1 (a layer that let tokens go still holds the W - 1
  //    tokens its next token attends to).
  std::vector<Group> groups_;
  std::vector<int32_t> group_of_;
  std::vector<int32_t> slot_of_;
  int32_t layers_per_group_ = 0;  // With sliding windows; 0 otherwise.
  std::vector<Layer> layers_;

  // Crops after which a full shared pool could not extend the reservation.
  int64_t reservation_shortfalls_ = 0;
  int64_t cow_copies_ = 0;
  int64_t cow_bytes_ = 0;
  int64_t bytes_written_ = 0;
  int64_t bytes_zero_filled_ = 0;
  // Bytes the pool copied during remaps (the pool counts its own copies).
  int64_t remap_bytes_copied_ = 0;
};

}  // namespace pagedkv::internal

#endif  // PAGEDKV_CACHE_PAGED_KV_CACHE_H_
