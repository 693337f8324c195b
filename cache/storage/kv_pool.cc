#include "cache/kv_pool.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "allocator/block_pool.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "tensor/mimalloc_resource.h"

namespace pagedkv {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kCacheLine = 64;

}  // namespace

absl::StatusOr<std::unique_ptr<KVPool>> KVPool::Create(const Options& options) {
  PKV_RETURN_IF_ERROR(options.layout.Validate());
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVPool needs num_blocks > 0, got %d", options.num_blocks));
  }
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<BlockPool> books,
                       BlockPool::Create({.num_blocks = options.num_blocks,
                                          .concurrency = options.concurrency}));
  MemoryResource* memory =
      options.memory != nullptr ? options.memory : DefaultMemoryResource();
  std::unique_ptr<KVPool> pool(
      new KVPool(options.layout, options.num_blocks, memory, std::move(books)));
  PKV_ASSIGN_OR_RETURN(Chunk chunk, pool->NewChunk(pool->block_bytes()));
  pool->chunks_.push_back(chunk);
  return pool;
}

KVPool::KVPool(const KVLayout& layout, int32_t chunk_blocks,
               MemoryResource* memory, std::unique_ptr<BlockPool> books)
    : layout_(layout),
      chunk_blocks_(chunk_blocks),
      memory_(memory),
      books_(std::move(books)) {}

KVPool::~KVPool() {
  for (const Chunk& chunk : chunks_) FreeChunk(chunk);
}

size_t KVPool::capacity_bytes() const {
  return static_cast<size_t>(books_->num_blocks()) * block_bytes();
}

absl::StatusOr<KVPool::Chunk> KVPool::NewChunk(size_t block_bytes) const {
  Chunk chunk;
  chunk.bytes = static_cast<size_t>(chunk_blocks_) * block_bytes;
  chunk.alignment = chunk.bytes >= kHugePage ? kHugePage : kCacheLine;
  chunk.data =
      static_cast<std::byte*>(memory_->Allocate(chunk.bytes, chunk.alignment));
  if (chunk.data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate %d bytes for %d KV blocks",
                        chunk.bytes, chunk_blocks_));
  }
  return chunk;
}

void KVPool::FreeChunk(const Chunk& chunk) const {
  memory_->Deallocate(chunk.data, chunk.bytes, chunk.alignment);
}

void KVPool::CopyBlock(BlockId src, BlockId dst) {
  PKV_CHECK(src != dst, "CopyBlock of block %d onto itself", src.value());
  std::memcpy(BlockData(dst), BlockData(src), block_bytes());
}

absl::Status KVPool::Grow(int32_t extra_blocks) {
  PKV_CHECK(books_->concurrency() == PoolConcurrency::kSingleThread,
            "Grow of a shared pool (%d blocks)", books_->num_blocks());
  if (extra_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Grow needs extra_blocks > 0, got %d", extra_blocks));
  }
  const int64_t num_chunks =
      (int64_t{extra_blocks} + chunk_blocks_ - 1) / chunk_blocks_;
  const int64_t added = num_chunks * chunk_blocks_;
  if (added + books_->num_blocks() > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "pool of %d blocks cannot grow by %d", books_->num_blocks(), added));
  }
  std::vector<Chunk> fresh;
  for (int64_t i = 0; i < num_chunks; ++i) {
    absl::StatusOr<Chunk> chunk = NewChunk(block_bytes());
    if (!chunk.ok()) {
      for (const Chunk& c : fresh) FreeChunk(c);
      return chunk.status();
    }
    fresh.push_back(*chunk);
  }
  if (absl::Status s = books_->Grow(static_cast<int32_t>(added)); !s.ok()) {
    for (const Chunk& c : fresh) FreeChunk(c);
    return s;
  }
  chunks_.insert(chunks_.end(), fresh.begin(), fresh.end());
  return absl::OkStatus();
}

absl::Status KVPool::Relayout(int32_t num_layers) {
  PKV_CHECK(books_->concurrency() == PoolConcurrency::kSingleThread,
            "Relayout of a shared pool (%d blocks)", books_->num_blocks());
  if (num_layers <= layout_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Relayout to %d layers from %d: can only add layers",
                        num_layers, layout_.num_layers));
  }
  KVLayout wider = layout_;
  wider.num_layers = num_layers;
  PKV_RETURN_IF_ERROR(wider.Validate());
  std::vector<Chunk> fresh;
  for (size_t i = 0; i < chunks_.size(); ++i) {
    absl::StatusOr<Chunk> chunk = NewChunk(wider.block_bytes());
    if (!chunk.ok()) {
      for (const Chunk& c : fresh) FreeChunk(c);
      return chunk.status();
    }
    fresh.push_back(*chunk);
  }
  // Layers are the outermost axis inside a block, so the old block is a
  // prefix of the new one: one memcpy per block.
  const size_t old_bytes = block_bytes();
  const size_t new_bytes = wider.block_bytes();
  for (size_t c = 0; c < chunks_.size(); ++c) {
    for (int32_t b = 0; b < chunk_blocks_; ++b) {
      std::memcpy(fresh[c].data + b * new_bytes,
                  chunks_[c].data + b * old_bytes, old_bytes);
    }
    FreeChunk(chunks_[c]);
  }
  chunks_ = std::move(fresh);
  layout_ = wider;
  return absl::OkStatus();
}

}  // namespace pagedkv
