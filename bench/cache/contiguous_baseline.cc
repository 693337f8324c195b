#include "bench/cache/contiguous_baseline.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "bench/cache/workload.h"
#include "tensor/dtype.h"

namespace pagedkv::bench {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
// Largest single memcpy of the memcpy reference: well past the 32 MiB L3, so
// a long stream is not served from cache.
constexpr size_t kMemcpyChunk = 256 * kMiB;
// Positions past `context` the static baseline writes, one per call, before
// it wraps to the first: as many as the paged static cache writes before it
// is rebuilt (its max_cache_len is context + kDecodeSteps). HF's StaticCache
// writes each slot once per sequence into a torch.zeros buffer, so the slot
// is not in cache; 256 slots are 128 MiB (float16) of writes, 4x the L3, so
// a slot is cold again when the walk comes back to it. (A 64-slot cycle,
// 32 MiB, left part of it in cache.)
constexpr int64_t kStaticHeadroom = kDecodeSteps;
// The cold memcpy's destination ring, and the most of its source it reads.
constexpr size_t kColdRingBytes = size_t{1} << 30;
constexpr size_t kColdSourceBytes = 4 * kMiB;
constexpr size_t kCacheLine = 64;

inline void Escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// Owning malloc'ed bytes (what a contiguous cache's tensors are on a CPU).
class Bytes {
 public:
  Bytes() = default;
  // Allocates `size` bytes; touches them (faults every page in) if asked.
  explicit Bytes(size_t size, bool touch = false)
      : data_(size == 0 ? nullptr : static_cast<std::byte*>(std::malloc(size))),
        size_(size) {
    PKV_CHECK(size == 0 || data_ != nullptr, "malloc(%d) failed", size);
    if (touch && size > 0) std::memset(data_, 0x3c, size);
  }
  Bytes(Bytes&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  Bytes& operator=(Bytes&& other) noexcept {
    if (this != &other) {
      std::free(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() { std::free(data_); }

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

void CopyBytes(std::byte* dst, const std::byte* src, size_t n) {
  if (n > 0) std::memcpy(dst, src, n);
}

// ---------------------------------------------------------------------------
// The contiguous baseline: per layer, K and V buffers [batch][heads][cap][dim]
// holding `len` valid tokens per (batch, head). A dynamic cache has
// cap == len; a static one a fixed cap.

struct ContiguousCache {
  DType dtype = DType::kFloat16;
  int64_t batch = 0;
  int64_t len = 0;
  int64_t cap = 0;
  std::vector<Bytes> keys;
  std::vector<Bytes> values;

  size_t elem() const { return SizeOf(dtype); }
  size_t TokenRun(int64_t tokens) const {
    return static_cast<size_t>(tokens) * kHeadDim * elem();
  }
  // Bytes of one batch row of one layer's K (or V).
  size_t RowBytes() const { return kNumKvHeads * TokenRun(cap); }
  std::vector<Bytes*> Buffers() {
    std::vector<Bytes*> all;
    for (int32_t l = 0; l < kNumLayers; ++l) {
      all.push_back(&keys[l]);
      all.push_back(&values[l]);
    }
    return all;
  }
};

ContiguousCache MakeContiguous(DType dtype, int64_t batch, int64_t len,
                               int64_t cap, bool touch) {
  ContiguousCache c;
  c.dtype = dtype;
  c.batch = batch;
  c.len = len;
  c.cap = cap;
  const size_t bytes = static_cast<size_t>(batch) * c.RowBytes();
  for (int32_t l = 0; l < kNumLayers; ++l) {
    c.keys.emplace_back(bytes, touch);
    c.values.emplace_back(bytes, touch);
  }
  return c;
}

// torch.cat([old, new], dim=-2) for every layer, K and V: allocates len + n,
// copies both, frees the old buffer. `tokens` is (batch, heads, n, dim).
void Concat(ContiguousCache& c, const std::byte* tokens, int64_t n) {
  const int64_t new_len = c.len + n;
  const size_t old_run = c.TokenRun(c.len);
  const size_t new_run = c.TokenRun(n);
  const size_t out_run = c.TokenRun(new_len);
  for (Bytes* buf : c.Buffers()) {
    Bytes out(static_cast<size_t>(c.batch) * kNumKvHeads * out_run);
    for (int64_t bh = 0; bh < c.batch * kNumKvHeads; ++bh) {
      CopyBytes(out.data() + bh * out_run, buf->data() + bh * old_run, old_run);
      CopyBytes(out.data() + bh * out_run + old_run, tokens + bh * new_run,
                new_run);
    }
    Escape(out.data());
    *buf = std::move(out);
  }
  c.len = new_len;
  c.cap = new_len;
}

// tensor.index_select(0, indices) for every layer, K and V (reorder, select
// and repeat_interleave are all this copy).
void IndexSelect(ContiguousCache& c, const std::vector<int64_t>& indices) {
  const size_t row = c.RowBytes();
  for (Bytes* buf : c.Buffers()) {
    Bytes out(indices.size() * row);
    for (size_t i = 0; i < indices.size(); ++i) {
      CopyBytes(out.data() + i * row, buf->data() + indices[i] * row, row);
    }
    Escape(out.data());
    *buf = std::move(out);
  }
  c.batch = static_cast<int64_t>(indices.size());
}

// tensor[..., -keep:, :].contiguous(): slice and copy the last `keep` tokens.
void CropLast(ContiguousCache& c, int64_t keep) {
  const size_t old_run = c.TokenRun(c.cap);
  const size_t skip = c.TokenRun(c.len - keep);
  const size_t out_run = c.TokenRun(keep);
  for (Bytes* buf : c.Buffers()) {
    Bytes out(static_cast<size_t>(c.batch) * kNumKvHeads * out_run);
    for (int64_t bh = 0; bh < c.batch * kNumKvHeads; ++bh) {
      CopyBytes(out.data() + bh * out_run, buf->data() + bh * old_run + skip,
                out_run);
    }
    Escape(out.data());
    *buf = std::move(out);
  }
  c.len = keep;
  c.cap = keep;
}

// StaticCache: keys.index_copy_(2, cache_position, token) for every layer.
// `token` is (batch, heads, 1, dim).
void StaticWrite(ContiguousCache& c, const std::byte* token, int64_t pos) {
  const size_t run = c.TokenRun(1);
  const size_t stride = c.TokenRun(c.cap);
  for (Bytes* buf : c.Buffers()) {
    for (int64_t bh = 0; bh < c.batch * kNumKvHeads; ++bh) {
      std::memcpy(buf->data() + bh * stride + c.TokenRun(pos), token + bh * run,
                  run);
    }
    Escape(buf->data());
  }
}

// ---------------------------------------------------------------------------
// Baselines.

class BaselineWorkload : public Workload {
 public:
  size_t bytes_per_run() const override { return bytes_; }

 protected:
  size_t bytes_ = 0;
};

// DynamicCache decode (concatenate) or StaticCache decode (index_copy_) on 4
// contiguous beams.
class BaselineDecode final : public BaselineWorkload {
 public:
  BaselineDecode(DType dtype, int64_t context, bool is_static)
      : is_static_(is_static), context_(context) {
    const int64_t cap = is_static ? context + kStaticHeadroom : context;
    // A static buffer is allocated whole but only its tail is ever written
    // here, so touch just [context, cap) of every (layer, K|V, beam, head).
    cache_ = MakeContiguous(dtype, kNumBeams, context, cap, !is_static);
    if (is_static) {
      for (Bytes* buf : cache_.Buffers()) {
        for (int64_t bh = 0; bh < kNumBeams * kNumKvHeads; ++bh) {
          std::memset(buf->data() + bh * cache_.TokenRun(cap) +
                          cache_.TokenRun(context),
                      0, cache_.TokenRun(kStaticHeadroom));
        }
      }
    }
    step_ = Bytes(kNumBeams * kNumKvHeads * cache_.TokenRun(1), true);
    // Concatenation reads and writes every token; a static write one token.
    bytes_ = is_static ? kNumBeams * TokenBytes(dtype)
                       : kNumBeams * (context + 1) * TokenBytes(dtype);
  }
  void Run() override {
    if (is_static_) {
      StaticWrite(cache_, step_.data(), context_ + calls_++ % kStaticHeadroom);
    } else {
      Concat(cache_, step_.data(), 1);
    }
  }

 private:
  bool is_static_;
  int64_t context_;
  int64_t calls_ = 0;
  ContiguousCache cache_;
  Bytes step_;
};

class BaselinePrefill final : public BaselineWorkload {
 public:
  BaselinePrefill(DType dtype, int64_t context)
      : before_(context - kPrefillTokens),
        cache_(MakeContiguous(dtype, 1, before_, before_, true)),
        chunk_(kNumKvHeads * cache_.TokenRun(kPrefillTokens), true) {
    bytes_ = context * TokenBytes(dtype);
  }
  void Run() override { Concat(cache_, chunk_.data(), kPrefillTokens); }
  void Restore() override { CropLast(cache_, before_); }

 private:
  int64_t before_;
  ContiguousCache cache_;
  Bytes chunk_;
};

class BaselineRemap final : public BaselineWorkload {
 public:
  BaselineRemap(Op op, DType dtype, int64_t context) : op_(op) {
    const int64_t rows = op == Op::kBatchRepeatInterleave ? 1 : kNumBeams;
    cache_ = MakeContiguous(dtype, rows, context, context, true);
    const int64_t rows_copied = op == Op::kBatchSelectIndices ? 2 : kNumBeams;
    bytes_ = rows_copied * context * TokenBytes(dtype);
  }
  void Run() override {
    switch (op_) {
      case Op::kReorderCache:
        IndexSelect(cache_, (++calls_ & 1) ? kPermA : kPermB);
        break;
      case Op::kBatchSelectIndices:
        IndexSelect(cache_, kSelect);
        break;
      default:
        IndexSelect(cache_, kRepeat4);
        break;
    }
  }
  void Restore() override {
    if (op_ == Op::kBatchSelectIndices) {
      IndexSelect(cache_, kRepeat2);
    } else if (op_ == Op::kBatchRepeatInterleave) {
      IndexSelect(cache_, kFirst);
    }
  }

 private:
  static inline const std::vector<int64_t> kPermA = {3, 1, 0, 2};
  static inline const std::vector<int64_t> kPermB = {2, 0, 3, 1};
  static inline const std::vector<int64_t> kSelect = {0, 2};
  static inline const std::vector<int64_t> kRepeat2 = {0, 0, 1, 1};
  static inline const std::vector<int64_t> kRepeat4 = {0, 0, 0, 0};
  static inline const std::vector<int64_t> kFirst = {0};
  Op op_;
  int64_t calls_ = 0;
  ContiguousCache cache_;
};

class BaselineCrop final : public BaselineWorkload {
 public:
  BaselineCrop(DType dtype, int64_t context, int64_t keep)
      : dtype_(dtype), context_(context), keep_(keep) {
    Restore();
    bytes_ = keep * TokenBytes(dtype);
  }
  void Run() override { CropLast(cache_, keep_); }
  void Restore() override {
    cache_ = ContiguousCache();
    cache_ = MakeContiguous(dtype_, 1, context_, context_, true);
  }

 private:
  DType dtype_;
  int64_t context_;
  int64_t keep_;
  ContiguousCache cache_;
};

// A contiguous cache returns its tensors as they are (a view, no copy); the
// baseline for an owned contiguous copy is clone(): allocate, copy, free.
class BaselineGather final : public BaselineWorkload {
 public:
  BaselineGather(DType dtype, int64_t context)
      : key_(kNumBeams * kNumKvHeads * context * kHeadDim * SizeOf(dtype),
             true),
        value_(key_.size(), true) {
    bytes_ = 2 * key_.size();
  }
  void Run() override {
    Bytes key(key_.size());
    Bytes value(value_.size());
    std::memcpy(key.data(), key_.data(), key_.size());
    std::memcpy(value.data(), value_.data(), value_.size());
    Escape(key.data());
    Escape(value.data());
  }

 private:
  Bytes key_;
  Bytes value_;
};

// malloc + free of one block's bytes.
class BaselineAllocFree final : public BaselineWorkload {
 public:
  explicit BaselineAllocFree(DType dtype)
      : block_bytes_(BenchLayout(dtype).block_bytes()) {}
  void Run() override {
    for (int64_t i = 0; i < kAllocPairsPerRun; ++i) {
      void* p = std::malloc(block_bytes_);
      Escape(p);
      std::free(p);
    }
  }
  int64_t items_per_run() const override { return kAllocPairsPerRun; }

 private:
  size_t block_bytes_;
};

// Copying the 256 blocks' bytes into a new buffer (clone of the sequence).
class BaselineFork final : public BaselineWorkload {
 public:
  explicit BaselineFork(DType dtype)
      : source_(kForkBlocks * BenchLayout(dtype).block_bytes(), true) {
    bytes_ = source_.size();
  }
  void Run() override {
    copy_ = Bytes(source_.size());
    std::memcpy(copy_.data(), source_.data(), source_.size());
    Escape(copy_.data());
  }
  void Restore() override { copy_ = Bytes(); }

 private:
  Bytes source_;
  Bytes copy_;
};

// memcpy of `total` bytes between preallocated, touched buffers, in pieces of
// at most kMemcpyChunk.
class MemcpyWorkload final : public Workload {
 public:
  explicit MemcpyWorkload(size_t total)
      : total_(total),
        src_(std::min(total, kMemcpyChunk), true),
        dst_(src_.size(), true) {}
  void Run() override {
    size_t left = total_;
    while (left > 0) {
      const size_t n = std::min(left, src_.size());
      std::memcpy(dst_.data(), src_.data(), n);
      Escape(dst_.data());
      left -= n;
    }
  }
  size_t bytes_per_run() const override { return total_; }

 private:
  size_t total_;
  Bytes src_;
  Bytes dst_;
};

// memcpy of `total` bytes from a warm source into the next `total` bytes of
// a pre-touched kColdRingBytes ring (wrapping), so every call writes memory
// that is not in cache. The source is min(total, kColdSourceBytes) bytes,
// read over and over. Each call starts on a fresh cache line.
class ColdMemcpyWorkload final : public Workload {
 public:
  explicit ColdMemcpyWorkload(size_t total)
      : total_(total),
        src_(std::min(total, kColdSourceBytes), true),
        ring_(kColdRingBytes, true) {}
  void Run() override {
    size_t left = total_;
    while (left > 0) {
      if (cursor_ == ring_.size()) cursor_ = 0;
      const size_t n = std::min({left, src_.size(), ring_.size() - cursor_});
      std::memcpy(ring_.data() + cursor_, src_.data(), n);
      cursor_ += n;
      left -= n;
    }
    Escape(ring_.data());
    cursor_ = std::min(ring_.size(),
                       (cursor_ + kCacheLine - 1) / kCacheLine * kCacheLine);
  }
  size_t bytes_per_run() const override { return total_; }

 private:
  size_t total_;
  size_t cursor_ = 0;
  Bytes src_;
  Bytes ring_;
};

// Bytes the memcpy reference moves for `options`.
absl::StatusOr<size_t> MemcpyBytes(const WorkloadOptions& o) {
  const size_t token = TokenBytes(o.dtype);
  const size_t n = static_cast<size_t>(o.context);
  switch (o.op) {
    case Op::kDecodeAppend:
    case Op::kStaticAppend:
      return kNumBeams * token;
    case Op::kPrefill:
      return kPrefillTokens * token;
    case Op::kReorderCache:
    case Op::kBatchRepeatInterleave:
      return kNumBeams * n * token;
    case Op::kBatchSelectIndices:
      return 2 * n * token;
    case Op::kCrop:
      return static_cast<size_t>(o.keep) * token;
    case Op::kGather:
      return kNumBeams * n * token / kNumLayers;
    case Op::kFork256:
      return kForkBlocks * BenchLayout(o.dtype).block_bytes();
    case Op::kAllocFree:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s moves no bytes: no memcpy reference", OpName(o.op)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Workload>> MakeBaselineWorkload(
    const WorkloadOptions& o) {
  switch (o.op) {
    case Op::kDecodeAppend:
    case Op::kStaticAppend:
      return std::unique_ptr<Workload>(std::make_unique<BaselineDecode>(
          o.dtype, o.context, o.op == Op::kStaticAppend));
    case Op::kPrefill:
      if (o.context < kPrefillTokens) {
        return absl::InvalidArgumentError("context < 512");
      }
      return std::unique_ptr<Workload>(
          std::make_unique<BaselinePrefill>(o.dtype, o.context));
    case Op::kReorderCache:
    case Op::kBatchSelectIndices:
    case Op::kBatchRepeatInterleave:
      return std::unique_ptr<Workload>(
          std::make_unique<BaselineRemap>(o.op, o.dtype, o.context));
    case Op::kCrop:
      if (o.keep <= 0 || o.keep >= o.context) {
        return absl::InvalidArgumentError("need 0 < keep < context");
      }
      return std::unique_ptr<Workload>(
          std::make_unique<BaselineCrop>(o.dtype, o.context, o.keep));
    case Op::kGather:
      return std::unique_ptr<Workload>(
          std::make_unique<BaselineGather>(o.dtype, o.context));
    case Op::kAllocFree:
      return std::unique_ptr<Workload>(
          std::make_unique<BaselineAllocFree>(o.dtype));
    case Op::kFork256:
      return std::unique_ptr<Workload>(std::make_unique<BaselineFork>(o.dtype));
  }
  return absl::InvalidArgumentError("unknown op");
}

absl::StatusOr<std::unique_ptr<Workload>> MakeMemcpyWorkload(
    const WorkloadOptions& options) {
  absl::StatusOr<size_t> bytes = MemcpyBytes(options);
  if (!bytes.ok()) return bytes.status();
  return std::unique_ptr<Workload>(std::make_unique<MemcpyWorkload>(*bytes));
}

absl::StatusOr<std::unique_ptr<Workload>> MakeColdMemcpyWorkload(
    const WorkloadOptions& options) {
  absl::StatusOr<size_t> bytes = MemcpyBytes(options);
  if (!bytes.ok()) return bytes.status();
  return std::unique_ptr<Workload>(
      std::make_unique<ColdMemcpyWorkload>(*bytes));
}

}  // namespace pagedkv::bench
