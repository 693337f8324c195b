#include "bench/cache/kv_cache_fixtures.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "base/check.h"
#include "bench/cache/contiguous_baseline.h"
#include "bench/cache/workload.h"
#include "cache/cache.h"
#include "cache/cache_stats.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv::bench {
namespace {

// Paged decode steps before Restore rebuilds the cache (Reset + prefill) are
// kDecodeSteps (workload.h): the rows share their prefix, so keeping them at
// `context` by sliding Crop would turn them into 4 private sequences; a
// rebuild keeps one.

// ---------------------------------------------------------------------------
// Paged helpers.

int64_t BlocksFor(int64_t tokens) {
  return (tokens + kBlockTokens - 1) / kBlockTokens;
}

absl::StatusOr<Tensor> Tokens(DType dtype, int64_t rows, int64_t n) {
  return Full(dtype, Shape({rows, kNumKvHeads, n, kHeadDim}), 1.0);
}

// Appends `tokens` (keys and values alike) to every layer.
absl::Status AppendToEveryLayer(KVCache& cache, const Tensor& tokens) {
  for (int32_t l = 0; l < kNumLayers; ++l) {
    absl::StatusOr<KVView> kv = cache.Update(tokens.view(), tokens.view(), l);
    if (!kv.ok()) return kv.status();
  }
  return absl::OkStatus();
}

void CheckOk(const absl::Status& status) {
  PKV_CHECK(status.ok(), "%s", status.ToString());
}

// A cache on its own pool. Members are destroyed cache first.
class PagedWorkload : public Workload {
 public:
  // Takes options.pool_memory and options.make_cache; call before Init.
  void SetHooks(const WorkloadOptions& options) {
    hooks_.pool_memory = options.pool_memory;
    hooks_.make_cache = options.make_cache;
  }

  std::vector<std::pair<std::string, double>> Counters() const override {
    const CacheStats s = cache_->stats();
    return {{"blocks_in_use", static_cast<double>(s.blocks_in_use)},
            {"blocks_shared", static_cast<double>(s.blocks_shared)},
            {"cow_copies", static_cast<double>(s.cow_copies)},
            {"remap_bytes_copied", static_cast<double>(s.remap_bytes_copied)}};
  }

 protected:
  // Makes the pool and a dynamic cache (static when max_cache_len is set),
  // prefills one row with `context` tokens in every layer and repeats it to
  // `rows` rows, which share its blocks.
  absl::Status Init(DType dtype, int64_t num_blocks, int64_t context,
                    int64_t rows, std::optional<int64_t> max_cache_len) {
    absl::StatusOr<std::unique_ptr<KVPool>> pool =
        KVPool::Create({.layout = BenchLayout(dtype),
                        .num_blocks = static_cast<int32_t>(num_blocks),
                        .memory = hooks_.pool_memory});
    if (!pool.ok()) return pool.status();
    pool_ = *std::move(pool);
    // Warm the pool, as a serving pool is after its first pass. Otherwise
    // the first write into each fresh block takes one page fault per (layer,
    // K|V, head) run, and that cost lands in whichever Update opens it.
    // Blocks are handed out lowest id first and reused LIFO, so warming the
    // most this workload ever holds is enough (a static cache's reservation
    // is a count, and touching all of it would cost GiBs of RSS).
    const int64_t most_held =
        BlocksFor(context) + kNumBeams * (BlocksFor(kDecodeSteps) + 2) + 8;
    for (int32_t id = 0; id < std::min<int64_t>(num_blocks, most_held); ++id) {
      std::memset(pool_->BlockData(BlockId(id)), 0, pool_->block_bytes());
    }
    if (hooks_.make_cache) {
      cache_ = hooks_.make_cache(pool_.get(), max_cache_len);
      if (cache_ == nullptr) return absl::InternalError("make_cache failed");
    } else if (max_cache_len.has_value()) {
      absl::StatusOr<std::unique_ptr<StaticKVCache>> cache =
          StaticKVCache::Create({.max_cache_len = *max_cache_len,
                                 .num_layers = kNumLayers,
                                 .pool = pool_.get()});
      if (!cache.ok()) return cache.status();
      cache_ = *std::move(cache);
    } else {
      cache_ = std::make_unique<DynamicKVCache>(pool_.get());
    }
    dtype_ = dtype;
    context_ = context;
    rows_ = rows;
    return Fill();
  }

  // Prefills one row with context_ tokens in every layer and repeats it to
  // rows_ rows.
  absl::Status Fill() {
    if (context_ == 0) return absl::OkStatus();
    absl::StatusOr<Tensor> prefill = Tokens(dtype_, 1, context_);
    if (!prefill.ok()) return prefill.status();
    if (absl::Status s = AppendToEveryLayer(*cache_, *prefill); !s.ok()) {
      return s;
    }
    if (rows_ == 1) return absl::OkStatus();
    return cache_->BatchRepeatInterleave(rows_);
  }

  WorkloadOptions hooks_;  // Only pool_memory and make_cache are used.
  DType dtype_ = DType::kFloat16;
  int64_t context_ = 0;
  int64_t rows_ = 1;
  std::unique_ptr<KVPool> pool_;
  std::unique_ptr<KVCache> cache_;
};

// Decode: one token into every layer of 4 beams that share a `context`-token
// prefix. Every kDecodeSteps calls, Restore rebuilds the cache, so the pool
// stays the same size however many steps run.
class PagedDecode final : public PagedWorkload {
 public:
  absl::Status Init(DType dtype, int64_t context, bool is_static) {
    bytes_ = kNumBeams * TokenBytes(dtype);
    int64_t num_blocks =
        BlocksFor(context) + kNumBeams * (BlocksFor(kDecodeSteps) + 2) + 8;
    std::optional<int64_t> max_len;
    if (is_static) {
      max_len = context + kDecodeSteps;
      num_blocks = kNumBeams * BlocksFor(*max_len + kBlockTokens - 1) + 8;
    }
    if (absl::Status s =
            PagedWorkload::Init(dtype, num_blocks, context, kNumBeams, max_len);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<Tensor> step = Tokens(dtype, kNumBeams, 1);
    if (!step.ok()) return step.status();
    step_ = *std::move(step);
    return absl::OkStatus();
  }
  void Run() override { CheckOk(AppendToEveryLayer(*cache_, step_)); }
  void Restore() override {
    if (++steps_ < kDecodeSteps) return;
    steps_ = 0;
    cache_->Reset();
    CheckOk(Fill());
  }
  size_t bytes_per_run() const override { return bytes_; }

 private:
  int64_t steps_ = 0;
  size_t bytes_ = 0;
  Tensor step_;
};

// Prefill: a 512-token chunk into every layer of one row holding
// context - 512 tokens. Restore crops the chunk off again.
class PagedPrefill final : public PagedWorkload {
 public:
  absl::Status Init(DType dtype, int64_t context) {
    before_ = context - kPrefillTokens;
    if (before_ < 0) return absl::InvalidArgumentError("context < 512");
    if (absl::Status s = PagedWorkload::Init(dtype, BlocksFor(context) + 8,
                                             before_, 1, std::nullopt);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<Tensor> chunk = Tokens(dtype, 1, kPrefillTokens);
    if (!chunk.ok()) return chunk.status();
    chunk_ = *std::move(chunk);
    bytes_ = kPrefillTokens * TokenBytes(dtype);
    return absl::OkStatus();
  }
  void Run() override { CheckOk(AppendToEveryLayer(*cache_, chunk_)); }
  void Restore() override {
    if (before_ > 0) {
      CheckOk(cache_->Crop(before_));
    } else {
      cache_->Reset();
    }
  }
  size_t bytes_per_run() const override { return bytes_; }

 private:
  int64_t before_ = 0;
  size_t bytes_ = 0;
  Tensor chunk_;
};

// ReorderCache / BatchSelectIndices / BatchRepeatInterleave on rows sharing
// one `context`-token sequence.
class PagedRemap final : public PagedWorkload {
 public:
  absl::Status Init(Op op, DType dtype, int64_t context) {
    op_ = op;
    const int64_t rows = op == Op::kBatchRepeatInterleave ? 1 : kNumBeams;
    return PagedWorkload::Init(dtype, BlocksFor(context) + 8, context, rows,
                               std::nullopt);
  }
  void Run() override {
    switch (op_) {
      case Op::kReorderCache:
        // Alternate two permutations so every call changes every row.
        CheckOk(cache_->ReorderCache((++calls_ & 1) ? kPermA : kPermB));
        break;
      case Op::kBatchSelectIndices:
        CheckOk(cache_->BatchSelectIndices(kSelect));
        break;
      default:
        CheckOk(cache_->BatchRepeatInterleave(kNumBeams));
        break;
    }
  }
  void Restore() override {
    if (op_ == Op::kBatchSelectIndices) {
      CheckOk(cache_->BatchRepeatInterleave(2));
    } else if (op_ == Op::kBatchRepeatInterleave) {
      CheckOk(cache_->BatchSelectIndices(kFirst));
    }
  }
  size_t bytes_per_run() const override { return 0; }

 private:
  static inline const std::vector<int64_t> kPermA = {3, 1, 0, 2};
  static inline const std::vector<int64_t> kPermB = {2, 0, 3, 1};
  static inline const std::vector<int64_t> kSelect = {0, 2};
  static inline const std::vector<int64_t> kFirst = {0};
  Op op_ = Op::kReorderCache;
  int64_t calls_ = 0;
};

// Crop one row from `context` to `keep` tokens; Restore appends the dropped
// tokens again.
class PagedCrop final : public PagedWorkload {
 public:
  absl::Status Init(DType dtype, int64_t context, int64_t keep) {
    if (keep <= 0 || keep >= context) {
      return absl::InvalidArgumentError("need 0 < keep < context");
    }
    keep_ = keep;
    if (absl::Status s = PagedWorkload::Init(dtype, BlocksFor(context) + 8,
                                             context, 1, std::nullopt);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<Tensor> regrow = Tokens(dtype, 1, context - keep);
    if (!regrow.ok()) return regrow.status();
    regrow_ = *std::move(regrow);
    return absl::OkStatus();
  }
  void Run() override { CheckOk(cache_->Crop(keep_)); }
  void Restore() override { CheckOk(AppendToEveryLayer(*cache_, regrow_)); }
  size_t bytes_per_run() const override { return 0; }

 private:
  int64_t keep_ = 0;
  Tensor regrow_;
};

// Get(layer 16) + GatherInto preallocated (4, 8, context, 128) outputs.
class PagedGather final : public PagedWorkload {
 public:
  absl::Status Init(DType dtype, int64_t context) {
    if (absl::Status s = PagedWorkload::Init(dtype, BlocksFor(context) + 8,
                                             context, kNumBeams, std::nullopt);
        !s.ok()) {
      return s;
    }
    const Shape shape({kNumBeams, kNumKvHeads, context, kHeadDim});
    absl::StatusOr<Tensor> key = Tensor::Create(dtype, shape);
    if (!key.ok()) return key.status();
    absl::StatusOr<Tensor> value = Tensor::Create(dtype, shape);
    if (!value.ok()) return value.status();
    key_out_ = *std::move(key);
    value_out_ = *std::move(value);
    return absl::OkStatus();
  }
  void Run() override {
    absl::StatusOr<std::optional<KVView>> kv = cache_->Get(kGatherLayer);
    PKV_CHECK(kv.ok() && kv->has_value(), "Get(%d) failed", kGatherLayer);
    CheckOk((*kv)->GatherInto(key_out_.view(), value_out_.view()));
    Escape(key_out_.data());
    Escape(value_out_.data());
  }
  size_t bytes_per_run() const override {
    return key_out_.num_bytes() + value_out_.num_bytes();
  }

 private:
  Tensor key_out_;
  Tensor value_out_;
};

// Books only: one block allocated and released, kAllocPairsPerRun times.
class PagedAllocFree final : public Workload {
 public:
  absl::Status Init() {
    absl::StatusOr<std::unique_ptr<BlockPool>> pool =
        BlockPool::Create({.num_blocks = 4096});
    if (!pool.ok()) return pool.status();
    pool_ = *std::move(pool);
    return absl::OkStatus();
  }
  void Run() override {
    for (int64_t i = 0; i < kAllocPairsPerRun; ++i) {
      const std::optional<BlockId> id = pool_->TryAllocate();
      PKV_DCHECK(id.has_value(), "pool empty");
      Escape(&id);
      pool_->Release(*id);
    }
  }
  int64_t items_per_run() const override { return kAllocPairsPerRun; }
  size_t bytes_per_run() const override { return 0; }
  std::vector<std::pair<std::string, double>> Counters() const override {
    return {{"free_blocks", static_cast<double>(pool_->num_free_blocks())}};
  }

 private:
  std::unique_ptr<BlockPool> pool_;
};

// Books only: Fork of a 256-block table; Restore drops the fork.
class PagedFork final : public Workload {
 public:
  absl::Status Init() {
    absl::StatusOr<std::unique_ptr<BlockPool>> pool =
        BlockPool::Create({.num_blocks = 2 * kForkBlocks});
    if (!pool.ok()) return pool.status();
    pool_ = *std::move(pool);
    table_.emplace(pool_.get());
    fork_.emplace(pool_.get());
    return table_->Grow(kForkBlocks);
  }
  void Run() override {
    *fork_ = table_->Fork();
    Escape(fork_->blocks().data());
  }
  void Restore() override { fork_->Clear(); }
  size_t bytes_per_run() const override { return 0; }
  std::vector<std::pair<std::string, double>> Counters() const override {
    return {{"table_blocks", static_cast<double>(table_->num_blocks())}};
  }

 private:
  std::unique_ptr<BlockPool> pool_;
  // Declared after pool_: destroyed first.
  std::optional<BlockTable> table_;
  std::optional<BlockTable> fork_;
};

template <typename T>
absl::StatusOr<std::unique_ptr<Workload>> Ready(std::unique_ptr<T> w,
                                                absl::Status status) {
  if (!status.ok()) return status;
  return std::unique_ptr<Workload>(std::move(w));
}

absl::StatusOr<std::unique_ptr<Workload>> MakePaged(const WorkloadOptions& o) {
  switch (o.op) {
    case Op::kDecodeAppend:
    case Op::kStaticAppend: {
      auto w = std::make_unique<PagedDecode>();
      w->SetHooks(o);
      absl::Status s = w->Init(o.dtype, o.context, o.op == Op::kStaticAppend);
      return Ready(std::move(w), s);
    }
    case Op::kPrefill: {
      auto w = std::make_unique<PagedPrefill>();
      w->SetHooks(o);
      absl::Status s = w->Init(o.dtype, o.context);
      return Ready(std::move(w), s);
    }
    case Op::kReorderCache:
    case Op::kBatchSelectIndices:
    case Op::kBatchRepeatInterleave: {
      auto w = std::make_unique<PagedRemap>();
      w->SetHooks(o);
      absl::Status s = w->Init(o.op, o.dtype, o.context);
      return Ready(std::move(w), s);
    }
    case Op::kCrop: {
      auto w = std::make_unique<PagedCrop>();
      w->SetHooks(o);
      absl::Status s = w->Init(o.dtype, o.context, o.keep);
      return Ready(std::move(w), s);
    }
    case Op::kGather: {
      auto w = std::make_unique<PagedGather>();
      w->SetHooks(o);
      absl::Status s = w->Init(o.dtype, o.context);
      return Ready(std::move(w), s);
    }
    case Op::kAllocFree: {
      auto w = std::make_unique<PagedAllocFree>();
      absl::Status s = w->Init();
      return Ready(std::move(w), s);
    }
    case Op::kFork256: {
      auto w = std::make_unique<PagedFork>();
      absl::Status s = w->Init();
      return Ready(std::move(w), s);
    }
  }
  return absl::InvalidArgumentError("unknown op");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Workload>> MakeWorkload(
    const WorkloadOptions& options) {
  if (options.context <= 0 || options.context % kBlockTokens != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("context %d must be a positive multiple of %d",
                        options.context, kBlockTokens));
  }
  switch (options.impl) {
    case Impl::kPaged:
      return MakePaged(options);
    case Impl::kBaseline:
      return MakeBaselineWorkload(options);
    case Impl::kMemcpy:
      return MakeMemcpyWorkload(options);
    case Impl::kColdMemcpy:
      return MakeColdMemcpyWorkload(options);
  }
  return absl::InvalidArgumentError("unknown impl");
}

}  // namespace pagedkv::bench
