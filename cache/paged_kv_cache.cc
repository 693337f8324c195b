#include "cache/paged_kv_cache.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/storage/token_io.h"

namespace pagedkv::internal {
namespace {

std::string DescribeShape(ConstTensorView t) { return t.shape().ToString(); }

// The target position of input token t of row b (positional modes only).
int64_t PositionOf(const CachePosition& position, int64_t b, int64_t t) {
  return position.kind() == CachePosition::Kind::kMatrix ? position.at(b, t)
                                                         : position.values()[t];
}

}  // namespace

PagedKVCache::PagedKVCache(const Options& options) : options_(options) {
  PKV_CHECK(options_.block_tokens > 0, "block_tokens %d",
            options_.block_tokens);
  if (options_.pool != nullptr) {
    pool_ = options_.pool;
    dtype_ = pool_->layout().dtype;
  }
  PKV_CHECK(!is_static() || options_.sliding_window.empty(),
            "static caches have no sliding windows");
  if (is_static()) layers_.resize(options_.num_layers);
  GroupLayers();
}

void PagedKVCache::GroupLayers() {
  const std::vector<int32_t>& windows = options_.sliding_window;
  if (windows.empty()) {
    groups_.resize(1);
    return;
  }
  // The layers of each window value, in order of first appearance; the
  // group size divides every count, so each group is full.
  std::vector<int32_t> values;
  std::vector<std::vector<int32_t>> layers_of;
  for (size_t l = 0; l < windows.size(); ++l) {
    const auto it = std::find(values.begin(), values.end(), windows[l]);
    const size_t v = static_cast<size_t>(it - values.begin());
    if (it == values.end()) {
      values.push_back(windows[l]);
      layers_of.emplace_back();
    }
    layers_of[v].push_back(static_cast<int32_t>(l));
  }
  size_t size = 0;
  for (const std::vector<int32_t>& layers : layers_of) {
    size = std::gcd(size, layers.size());
  }
  layers_per_group_ = static_cast<int32_t>(size);
  group_of_.resize(windows.size());
  slot_of_.resize(windows.size());
  int32_t group = 0;
  for (const std::vector<int32_t>& layers : layers_of) {
    for (size_t i = 0; i < layers.size(); ++i) {
      group_of_[layers[i]] = group + static_cast<int32_t>(i / size);
      slot_of_[layers[i]] = static_cast<int32_t>(i % size);
    }
    group += static_cast<int32_t>(layers.size() / size);
  }
  groups_.resize(group);
}

PagedKVCache::~PagedKVCache() = default;

std::optional<int64_t> PagedKVCache::batch_size() const {
  if (!has_geometry_) return std::nullopt;
  return num_rows();
}

int32_t PagedKVCache::group_of(int64_t layer_idx) const {
  return group_of_.empty() ? 0 : group_of_[layer_idx];
}

int32_t PagedKVCache::PoolLayersFor(int64_t layer_idx) const {
  if (is_static()) return options_.num_layers;
  // A fixed layer count: every group's layers from the start.
  if (layers_per_group_ > 0) return layers_per_group_;
  return static_cast<int32_t>(layer_idx + 1);
}

int32_t PagedKVCache::slot_of(int64_t layer_idx) const {
  return slot_of_.empty() ? static_cast<int32_t>(layer_idx)
                          : slot_of_[layer_idx];
}

bool PagedKVCache::is_present(int64_t layer_idx) const {
  return layer_idx >= 0 && layer_idx < num_layer_slots() &&
         layers_[layer_idx].present;
}

int32_t PagedKVCache::window_of(int64_t layer_idx) const {
  return layer_idx < static_cast<int64_t>(options_.sliding_window.size())
             ? options_.sliding_window[layer_idx]
             : 0;
}

PagedKVCache::Layer PagedKVCache::TrimmedForAppend(int64_t layer_idx) const {
  if (layer_idx >= num_layer_slots()) return Layer();
  Layer layer = layers_[layer_idx];
  const int32_t window = window_of(layer_idx);
  if (window == 0 || layer.length <= window - 1) return layer;
  const int64_t drop = layer.length - (window - 1);
  layer.start += drop;
  layer.length -= drop;
  layer.released += drop;
  return layer;
}

int64_t PagedKVCache::block_tokens() const {
  return pool_ != nullptr ? pool_->layout().block_tokens
                          : options_.block_tokens;
}

int64_t PagedKVCache::BlocksFor(int64_t end) const {
  return (end + block_tokens() - 1) / block_tokens();
}

int64_t PagedKVCache::blocks_per_row_reserved() const {
  // Room for every layer to reach max_cache_len from its window start: 0
  // until a crop moves a start into its first block (Crop then extends the
  // reservation), or further in when layers were cropped unevenly: a layer
  // that kept its start pins the leading blocks another layer's window has
  // left. Reserving for a crop that may never come would cost a whole block
  // per row (twice the memory at max_cache_len == block_tokens).
  int64_t max_start = 0;
  for (const Layer& layer : layers_) {
    if (layer.length > 0) max_start = std::max(max_start, layer.start);
  }
  return BlocksFor(max_start + *options_.max_cache_len);
}

// ---------------------------------------------------------------------------
// Update

absl::Status PagedKVCache::CheckLayerIndex(int64_t layer_idx) const {
  if (layer_idx < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer_idx %d is negative", layer_idx));
  }
  if (is_static() && layer_idx >= options_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer_idx %d >= num_layers %d of a static cache",
                        layer_idx, options_.num_layers));
  }
  return absl::OkStatus();
}

absl::Status PagedKVCache::ValidateUpdate(ConstTensorView key,
                                          ConstTensorView value,
                                          int64_t layer_idx,
                                          const CachePosition& position,
                                          int64_t* new_length) const {
  PKV_RETURN_IF_ERROR(CheckLayerIndex(layer_idx));
  const int64_t windowed = static_cast<int64_t>(options_.sliding_window.size());
  if (windowed > 0 && layer_idx >= windowed) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer_idx %d >= the %d layers of sliding_window",
                        layer_idx, windowed));
  }
  if (layer_idx >= kMaxCacheLayers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layer_idx %d exceeds the layer limit %d", layer_idx, kMaxCacheLayers));
  }
  if (key.rank() != 4) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key must be rank 4 (batch, heads, seq, head_dim), got shape %s",
        DescribeShape(key)));
  }
  if (value.shape() != key.shape()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("value shape %s differs from key shape %s",
                        DescribeShape(value), DescribeShape(key)));
  }
  if (!IsValidDType(key.dtype()) || !IsValidDType(value.dtype())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key/value dtype values %d/%d are not float32, float16 or bfloat16",
        static_cast<int>(key.dtype()), static_cast<int>(value.dtype())));
  }
  if (value.dtype() != key.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("value dtype %s differs from key dtype %s",
                        std::string(DTypeName(value.dtype())),
                        std::string(DTypeName(key.dtype()))));
  }
  if (dtype_.has_value() && key.dtype() != *dtype_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key dtype %s differs from the cache's %s",
        std::string(DTypeName(key.dtype())), std::string(DTypeName(*dtype_))));
  }
  const int64_t batch = key.dim(0);
  const int64_t heads = key.dim(1);
  const int64_t seq = key.dim(2);
  const int64_t head_dim = key.dim(3);
  if (heads <= 0 || head_dim <= 0 || heads > kMaxCacheHeadsOrDim ||
      head_dim > kMaxCacheHeadsOrDim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("heads and head_dim must be in [1, %d], got shape %s",
                        kMaxCacheHeadsOrDim, DescribeShape(key)));
  }
  if (batch > kMaxCacheBatch) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch %d exceeds the limit %d", batch, kMaxCacheBatch));
  }
  if (options_.pool != nullptr) {
    const KVLayout& layout = options_.pool->layout();
    if (heads != layout.num_kv_heads || head_dim != layout.head_dim) {
      return absl::InvalidArgumentError(
          absl::StrFormat("key shape %s does not fit the pool (%s)",
                          DescribeShape(key), layout.ToString()));
    }
    if (slot_of(layer_idx) >= layout.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrFormat("layer_idx %d >= the pool's %d layers", layer_idx,
                          layout.num_layers));
    }
  }
  if (has_geometry_ &&
      (batch != num_rows() || heads != heads_ || head_dim != head_dim_)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key shape %s does not match the cache's (batch %d, heads %d, "
        "head_dim %d)",
        DescribeShape(key), num_rows(), heads_, head_dim_));
  }

  // A window layer counts every token it saw against the capacity, and its
  // append keeps only the last W - 1 of the tokens it holds.
  const Layer layer = TrimmedForAppend(layer_idx);
  const int64_t length = layer.released + layer.length;
  const int32_t window = window_of(layer_idx);
  if (window > 0 && !position.is_append()) {
    return absl::UnimplementedError(absl::StrFormat(
        "layer %d has a sliding window of %d tokens: it only appends "
        "(cache_position must be absent)",
        layer_idx, window));
  }
  const int64_t capacity =
      is_static() ? *options_.max_cache_len : kMaxCacheTokens;
  if (is_static() && seq == 0) {
    return absl::InvalidArgumentError(
        "a static cache rejects a zero-length update");
  }

  if (position.is_append()) {
    if (seq > capacity - length) {  // length + seq > capacity, no overflow.
      return absl::OutOfRangeError(absl::StrFormat(
          "append of %d tokens to length %d exceeds capacity %d", seq, length,
          capacity));
    }
    *new_length = layer.length + seq;
    return CheckPrivatePoolSize(key, layer_idx, *new_length);
  }

  switch (position.kind()) {
    case CachePosition::Kind::kScalar:
      if (seq != 1) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "a scalar cache_position needs seq == 1, got %d", seq));
      }
      break;
    case CachePosition::Kind::kVector:
      if (position.cols() != seq) {
        return absl::InvalidArgumentError(
            absl::StrFormat("1-D cache_position has %d entries for seq %d",
                            position.cols(), seq));
      }
      break;
    case CachePosition::Kind::kMatrix:
      if (position.rows() != batch || position.cols() != seq) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "2-D cache_position has shape (%d, %d), expected (%d, %d)",
            position.rows(), position.cols(), batch, seq));
      }
      break;
    case CachePosition::Kind::kNone:
      break;
  }
  if (position.values().empty()) {
    return absl::InvalidArgumentError("cache_position is empty");
  }
  int64_t max_position = -1;
  for (int64_t p : position.values()) {
    if (p < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("cache_position %d is negative", p));
    }
    max_position = std::max(max_position, p);
  }
  if (max_position >= capacity) {
    return absl::OutOfRangeError(absl::StrFormat(
        "cache_position %d >= capacity %d", max_position, capacity));
  }
  *new_length = std::max(length, max_position + 1);
  return CheckPrivatePoolSize(key, layer_idx, *new_length);
}

absl::Status PagedKVCache::CheckPrivatePoolSize(ConstTensorView key,
                                                int64_t layer_idx,
                                                int64_t new_length) const {
  if (options_.pool != nullptr) return absl::OkStatus();  // Never grows.
  // Every row may end up with private copies of every table block, so the
  // pool may need rows * table blocks blocks of the (possibly wider) layout.
  // Doubles: the factors are bounded but their product may not fit int64.
  const int64_t start = TrimmedForAppend(layer_idx).start;
  double layers = PoolLayersFor(layer_idx);
  if (pool_ != nullptr) {
    layers = std::max<double>(layers, pool_->layout().num_layers);
  }
  const int32_t updated = group_of(layer_idx);
  double table_blocks = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const int64_t blocks = groups_[g].num_table_blocks;
    table_blocks += static_cast<int32_t>(g) == updated
                        ? std::max(blocks, BlocksFor(start + new_length))
                        : blocks;
  }
  if (is_static()) {
    table_blocks = std::max<double>(table_blocks, blocks_per_row_reserved());
  }
  const double bytes = static_cast<double>(key.dim(0)) * table_blocks * layers *
                       2 * key.dim(1) * key.dim(3) * block_tokens() *
                       SizeOf(key.dtype());
  if (bytes > static_cast<double>(options_.max_private_pool_bytes)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "update needs a private pool of up to %.0f bytes, over the limit of "
        "%d bytes (PagedKVCache::Options::max_private_pool_bytes)",
        bytes, options_.max_private_pool_bytes));
  }
  return absl::OkStatus();
}

int64_t PagedKVCache::MaxPrivateBlocks(const KVLayout& layout) const {
  return options_.max_private_pool_bytes /
         static_cast<int64_t>(layout.block_bytes());
}

absl::Status PagedKVCache::EnsurePool(ConstTensorView key, int64_t layer_idx) {
  if (options_.pool != nullptr) return absl::OkStatus();
  const int32_t heads = static_cast<int32_t>(key.dim(1));
  const int32_t head_dim = static_cast<int32_t>(key.dim(3));
  const int32_t wanted_layers = PoolLayersFor(layer_idx);
  if (owned_pool_ != nullptr && (owned_pool_->layout().num_kv_heads != heads ||
                                 owned_pool_->layout().head_dim != head_dim ||
                                 owned_pool_->layout().dtype != key.dtype())) {
    // Only reachable when no geometry is fixed (after Reset, or after a
    // first update that failed once the pool existed): no block is in use,
    // so the private pool is rebuilt for the new shape and dtype.
    PKV_CHECK(num_rows() == 0 && !reservation_.has_value(),
              "rebuilding a pool that is in use");
    // Kept until the update succeeds: a failed one puts it back.
    retired_pool_ = std::move(owned_pool_);
    pool_ = nullptr;
  }
  if (owned_pool_ == nullptr) {
    const KVLayout layout{
        wanted_layers,         heads,           head_dim, key.dtype(),
        options_.block_tokens, options_.storage};
    PKV_RETURN_IF_ERROR(layout.Validate());
    // Chunks of 16 blocks, or fewer when the cap allows fewer.
    const int64_t blocks = std::min<int64_t>(16, MaxPrivateBlocks(layout));
    if (blocks < 1) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "one block of %d bytes exceeds the private pool limit of %d bytes",
          layout.block_bytes(), options_.max_private_pool_bytes));
    }
    PKV_ASSIGN_OR_RETURN(
        owned_pool_,
        GrowableKVPool::Create(
            {.layout = layout, .num_blocks = static_cast<int32_t>(blocks)}));
    pool_ = owned_pool_.get();
    return absl::OkStatus();
  }
  const int32_t layers = owned_pool_->layout().num_layers;
  if (wanted_layers <= layers) return absl::OkStatus();
  // Double the layers (amortised), but never past the byte cap.
  KVLayout wider = owned_pool_->layout();
  const int64_t max_blocks = MaxPrivateBlocks(wider) * layers;  // Per layer.
  const int64_t cap_layers = max_blocks / owned_pool_->num_blocks();
  if (wanted_layers > cap_layers) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%d layers of %d blocks exceed the private pool limit of %d bytes",
        wanted_layers, owned_pool_->num_blocks(),
        options_.max_private_pool_bytes));
  }
  return owned_pool_->Relayout(static_cast<int32_t>(
      std::min<int64_t>(std::max(wanted_layers, 2 * layers), cap_layers)));
}

absl::Status PagedKVCache::EnsureAvailable(int64_t needed,
                                           bool use_reservation) {
  if (owned_pool_ == nullptr) return absl::OkStatus();
  BlockPool& books = owned_pool_->books();
  const int64_t available = books.num_unreserved_free_blocks() +
                            (use_reservation && reservation_.has_value()
                                 ? reservation_->num_reserved_free()
                                 : 0);
  if (needed <= available) return absl::OkStatus();
  const int64_t chunk = owned_pool_->chunk_blocks();
  const int64_t total = books.num_blocks();
  // Whole chunks under the cap.
  const int64_t max_total =
      std::min<int64_t>(MaxPrivateBlocks(owned_pool_->layout()),
                        std::numeric_limits<int32_t>::max()) /
      chunk * chunk;
  const int64_t missing = needed - available;
  const int64_t min_total = (total + missing + chunk - 1) / chunk * chunk;
  if (min_total > max_total) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "need %d more blocks: a private pool of %d blocks (%d bytes each) "
        "would pass its limit of %d bytes (max_private_pool_bytes)",
        missing, min_total, owned_pool_->block_bytes(),
        options_.max_private_pool_bytes));
  }
  // Double the pool (amortised growth), or more if one update needs it.
  const int64_t new_total = std::min(std::max(min_total, 2 * total), max_total);
  return owned_pool_->Grow(static_cast<int32_t>(new_total - total)).status();
}

absl::Status PagedKVCache::GrowReservation(int64_t batch) {
  if (!is_static()) return absl::OkStatus();
  const int64_t want = batch * blocks_per_row_reserved();
  if (want > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "a reservation of %d blocks for batch %d is too large", want, batch));
  }
  BlockPool& books = pool_->books();
  const int64_t have = reservation_.has_value() ? reservation_->capacity() : 0;
  if (want <= have && reservation_.has_value()) return absl::OkStatus();
  PKV_RETURN_IF_ERROR(EnsureAvailable(want - have, /*use_reservation=*/false));
  if (!reservation_.has_value()) {
    PKV_ASSIGN_OR_RETURN(Reservation r,
                         books.Reserve(static_cast<int32_t>(want)));
    reservation_.emplace(std::move(r));
    return absl::OkStatus();
  }
  return reservation_->Resize(static_cast<int32_t>(want));
}

void PagedKVCache::TrimReservation() {
  if (!reservation_.has_value()) return;
  const int64_t want = num_rows() * blocks_per_row_reserved();
  const int32_t capacity = static_cast<int32_t>(
      std::max<int64_t>(reservation_->num_charged(),
                        std::min<int64_t>(reservation_->capacity(), want)));
  // Shrinking within [charged, capacity] cannot fail.
  const absl::Status s = reservation_->Resize(capacity);
  PKV_CHECK(s.ok(), "shrinking a reservation failed: %s", s.ToString());
}

PagedKVCache::Checkpoint PagedKVCache::TakeCheckpoint() const {
  Checkpoint c;
  c.had_reservation = reservation_.has_value();
  c.reservation_capacity =
      reservation_.has_value() ? reservation_->capacity() : 0;
  c.private_pool = owned_pool_.get();
  if (owned_pool_ != nullptr) {
    c.private_blocks = owned_pool_->num_blocks();
    c.private_layers = owned_pool_->layout().num_layers;
  }
  return c;
}

void PagedKVCache::Rollback(const Checkpoint& checkpoint) {
  if (!checkpoint.had_reservation) reservation_.reset();
  if (reservation_.has_value()) {
    PKV_CHECK(
        checkpoint.reservation_capacity <= reservation_->capacity() &&
            checkpoint.reservation_capacity >= reservation_->num_charged(),
        "rollback of a reservation to %d outside [%d charged, %d]",
        checkpoint.reservation_capacity, reservation_->num_charged(),
        reservation_->capacity());
    const absl::Status s =
        reservation_->Resize(checkpoint.reservation_capacity);
    PKV_CHECK(s.ok(), "shrinking a reservation failed: %s", s.ToString());
  }
  if (owned_pool_.get() != checkpoint.private_pool) {
    // The update made a private pool (the first one, or a rebuild for a new
    // shape after Reset): drop it, and put back the one it replaced.
    PKV_CHECK(num_rows() == 0 && !reservation_.has_value(),
              "rollback drops a private pool in use");
    owned_pool_ = std::move(retired_pool_);
    PKV_CHECK(owned_pool_.get() == checkpoint.private_pool,
              "rollback cannot find the private pool it started with");
    pool_ = owned_pool_.get();
    return;
  }
  retired_pool_.reset();
  if (owned_pool_ == nullptr) return;
  if (owned_pool_->num_blocks() > checkpoint.private_blocks) {
    const absl::Status s = owned_pool_->ShrinkTo(checkpoint.private_blocks);
    PKV_CHECK(s.ok(), "undoing private pool growth failed: %s", s.ToString());
  }
  if (owned_pool_->layout().num_layers != checkpoint.private_layers) {
    // Narrowing keeps the old layers and needs less memory; if even that
    // allocation fails the wider pool stays (it is still correct).
    owned_pool_->Relayout(checkpoint.private_layers).IgnoreError();
  }
}

PagedKVCache::WritePlan PagedKVCache::PlanWrite(int64_t layer_idx,
                                                int64_t new_length) const {
  WritePlan plan;
  const Layer layer = TrimmedForAppend(layer_idx);
  plan.start = layer.start;
  plan.old_end = layer.start + layer.length;
  plan.new_end = layer.start + new_length;
  plan.group = group_of(layer_idx);
  plan.slot = slot_of(layer_idx);
  plan.table_blocks = groups_[plan.group].num_table_blocks;
  plan.grow_blocks = static_cast<int32_t>(
      std::max<int64_t>(0, BlocksFor(plan.new_end) - plan.table_blocks));
  return plan;
}

void PagedKVCache::AddWriteTargets(
    const WritePlan& plan, int64_t seq, const CachePosition& position,
    std::vector<BlockTable>& rows,
    absl::InlinedVector<WriteTarget, 8>* targets) const {
  // An append touches at most the one partly filled tail block per row, so
  // the common decode step names one entry per row and allocates nothing
  // for up to 8 rows.
  const int64_t bt = block_tokens();
  absl::InlinedVector<int32_t, 8> blocks;
  for (size_t b = 0; b < rows.size(); ++b) {
    blocks.clear();
    if (plan.new_end > plan.old_end) {
      const int64_t last = std::min(plan.table_blocks, BlocksFor(plan.new_end));
      for (int64_t i = plan.old_end / bt; i < last; ++i) {
        blocks.push_back(static_cast<int32_t>(i));
      }
    }
    if (!position.is_append()) {
      for (int64_t t = 0; t < seq; ++t) {
        const int64_t i =
            (plan.start + PositionOf(position, static_cast<int64_t>(b), t)) /
            bt;
        if (i < plan.table_blocks) blocks.push_back(static_cast<int32_t>(i));
      }
      std::sort(blocks.begin(), blocks.end());
      blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
    }
    for (int32_t i : blocks) targets->push_back(WriteTarget{&rows[b], i});
  }
}

void PagedKVCache::ZeroFill(const WritePlan& plan, int64_t first,
                            int64_t last) {
  const int64_t bt = block_tokens();
  for (const BlockTable& row : groups_[plan.group].rows) {
    for (int64_t q = first; q < last;) {
      const int64_t run = std::min(bt - q % bt, last - q);
      bytes_zero_filled_ += static_cast<int64_t>(ZeroTokenRun(
          *pool_, row[static_cast<int32_t>(q / bt)], plan.slot,
          static_cast<int32_t>(q % bt), static_cast<int32_t>(run)));
      q += run;
    }
  }
}

void PagedKVCache::WriteTokens(ConstTensorView key, ConstTensorView value,
                               const WritePlan& plan,
                               const CachePosition& position) {
  // The decode hot path: per (row, run of tokens in one block) one
  // WriteTokenRun, which is one memcpy per head for K and one for V.
  const int64_t bt = block_tokens();
  const int64_t seq = key.dim(2);
  const int64_t elem = static_cast<int64_t>(SizeOf(key.dtype()));
  const Strides& ks = key.strides();
  const Strides& vs = value.strides();
  TokenSource k{.data = nullptr,
                .head_stride = ks[1],
                .token_stride = ks[2],
                .dim_stride = ks[3]};
  TokenSource v{.data = nullptr,
                .head_stride = vs[1],
                .token_stride = vs[2],
                .dim_stride = vs[3]};
  const std::vector<BlockTable>& rows = groups_[plan.group].rows;
  for (size_t b = 0; b < rows.size(); ++b) {
    const BlockTable& row = rows[b];
    const int64_t row_index = static_cast<int64_t>(b);
    // Appends go in runs of consecutive slots of one block; positional
    // writes go token by token in input order (the last one wins).
    for (int64_t t = 0; t < seq;) {
      int64_t q = plan.old_end + t;
      int64_t run = std::min(bt - q % bt, seq - t);
      if (!position.is_append()) {
        q = plan.start + PositionOf(position, row_index, t);
        run = 1;
      }
      k.data = key.data() + (row_index * ks[0] + t * ks[2]) * elem;
      v.data = value.data() + (row_index * vs[0] + t * vs[2]) * elem;
      WriteTokenRun(*pool_, row[static_cast<int32_t>(q / bt)], plan.slot,
                    static_cast<int32_t>(q % bt), static_cast<int32_t>(run), k,
                    v);
      t += run;
    }
  }
  bytes_written_ += 2 * key.num_elements() * elem;
}

absl::StatusOr<KVView> PagedKVCache::Update(ConstTensorView key,
                                            ConstTensorView value,
                                            int64_t layer_idx,
                                            const CachePosition& position) {
  // 1. Validate everything; 2. take every block needed (all or nothing,
  // rolling back any private pool growth on failure); 3. apply, which
  // cannot fail.
  int64_t new_length = 0;
  PKV_RETURN_IF_ERROR(
      ValidateUpdate(key, value, layer_idx, position, &new_length));
  const Checkpoint checkpoint = TakeCheckpoint();
  absl::Status status = EnsurePool(key, layer_idx);
  const int64_t batch = key.dim(0);
  const int64_t seq = key.dim(2);

  // The first update after construction or Reset fixes the batch (and a
  // static cache's reservation); every group's rows are made here and kept
  // only if it succeeds.
  const bool fixes_geometry = !has_geometry_;
  const WritePlan plan = PlanWrite(layer_idx, new_length);
  // One (possibly empty) row list per group whenever the update fixes the
  // geometry, so `rows` below binds to a real vector even when the pool
  // could not be made.
  std::vector<std::vector<BlockTable>> new_rows(
      fixes_geometry ? groups_.size() : 0);
  if (status.ok() && fixes_geometry) {
    status = GrowReservation(batch);
    for (std::vector<BlockTable>& group_rows : new_rows) {
      group_rows.reserve(batch);
      for (int64_t b = 0; b < batch; ++b) {
        group_rows.emplace_back(&pool_->books());
      }
    }
  }
  std::vector<BlockTable>& rows =
      fixes_geometry ? new_rows[plan.group] : groups_[plan.group].rows;
  absl::InlinedVector<WriteTarget, 8> targets;
  absl::InlinedVector<TableGrowth, 8> growth;
  Reservation* reservation =
      reservation_.has_value() ? &*reservation_ : nullptr;
  if (status.ok()) {
    AddWriteTargets(plan, seq, position, rows, &targets);
    if (plan.grow_blocks > 0) {
      for (BlockTable& row : rows) {
        growth.push_back(TableGrowth{&row, plan.grow_blocks});
      }
    }
  }
  const WriteRequest request{
      .targets = targets, .growth = growth, .reservation = reservation};
  if (status.ok()) {
    status = EnsureAvailable(FreshBlocksNeeded(pool_->books(), request),
                             /*use_reservation=*/true);
  }
  absl::StatusOr<PendingCopies> copies =
      status.ok() ? PrepareWrite(pool_->books(), request)
                  : absl::StatusOr<PendingCopies>(status);
  if (!copies.ok()) {
    new_rows.clear();  // Empty tables: nothing to release.
    Rollback(checkpoint);
    return copies.status();
  }
  retired_pool_.reset();  // The update succeeds: a replaced pool goes now.
  // Copy-on-write first, so the writes land in private blocks.
  pool_->RunCopies(copies->ops());
  cow_copies_ += copies->size();
  cow_bytes_ += copies->size() * static_cast<int64_t>(pool_->block_bytes());
  copies->MarkDone();

  if (fixes_geometry) {
    // A fresh or reset cache: no layer holds tokens, the tables were empty.
    has_geometry_ = true;
    heads_ = key.dim(1);
    head_dim_ = key.dim(3);
    dtype_ = key.dtype();
    for (size_t g = 0; g < groups_.size(); ++g) {
      PKV_CHECK(groups_[g].num_table_blocks == 0,
                "geometry fixed over %d blocks of group %d",
                groups_[g].num_table_blocks, g);
      groups_[g].rows = std::move(new_rows[g]);
    }
  }
  Group& group = groups_[plan.group];
  group.num_table_blocks += plan.grow_blocks;
  if (layer_idx >= num_layer_slots()) layers_.resize(layer_idx + 1);
  // An append writes every slot it opens; a positional write may open a gap.
  if (!position.is_append() && plan.new_end > plan.old_end) {
    ZeroFill(plan, plan.old_end, plan.new_end);
  }
  WriteTokens(key, value, plan, position);

  // A window layer lets go of what its append trimmed; the leading blocks
  // no layer of its group reads any more return to the pool (after the
  // write, so the write's plan stays in table coordinates).
  const Layer trimmed = TrimmedForAppend(layer_idx);
  const bool trims = trimmed.released != layers_[layer_idx].released;
  Layer& updated = layers_[layer_idx];
  updated = trimmed;
  updated.present = true;
  updated.length = new_length;
  if (trims) DropLeadingBlocks(plan.group);
  return KVView(pool_, group.rows, plan.slot, updated.start, updated.length,
                heads_, head_dim_);
}

// ---------------------------------------------------------------------------
// Reads

absl::StatusOr<std::optional<KVView>> PagedKVCache::Get(
    int64_t layer_idx) const {
  PKV_RETURN_IF_ERROR(CheckLayerIndex(layer_idx));
  if (!is_present(layer_idx)) return std::optional<KVView>();
  const Layer& layer = layers_[layer_idx];
  // A window layer shows what it keeps: its last W - 1 tokens (the rest of
  // what the last Update returned is only read by that step).
  const int32_t window = window_of(layer_idx);
  const int64_t shown =
      window > 0 ? std::min<int64_t>(layer.length, window - 1) : layer.length;
  return std::optional<KVView>(
      KVView(pool_, groups_[group_of(layer_idx)].rows, slot_of(layer_idx),
             layer.start + layer.length - shown, shown, heads_, head_dim_));
}

absl::StatusOr<int64_t> PagedKVCache::GetSeqLength(int64_t layer_idx) const {
  if (layer_idx < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer_idx %d is negative", layer_idx));
  }
  if (layer_idx >= num_layer_slots()) return int64_t{0};
  return layers_[layer_idx].released + layers_[layer_idx].length;
}

}  // namespace pagedkv::internal
