#include "cache/storage/growable_kv_pool.h"

#include <algorithm>
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
#include "base/status_macros.h"
#include "tensor/mimalloc_resource.h"

namespace pagedkv {

absl::StatusOr<std::unique_ptr<GrowableKVPool>> GrowableKVPool::Create(
    const Options& options) {
  if (options.concurrency != PoolConcurrency::kSingleThread) {
    return absl::InvalidArgumentError(
        "a growable pool is private: it needs PoolConcurrency::kSingleThread");
  }
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<BlockPool> books, MakeBooks(options));
  MemoryResource* memory =
      options.memory != nullptr ? options.memory : DefaultMemoryResource();
  std::unique_ptr<GrowableKVPool> pool(new GrowableKVPool(
      options.layout, options.num_blocks, memory, std::move(books)));
  PKV_RETURN_IF_ERROR(pool->AddFirstChunk());
  return pool;
}

absl::StatusOr<int32_t> GrowableKVPool::Grow(int32_t extra_blocks) {
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
  return static_cast<int32_t>(added);
}

absl::Status GrowableKVPool::ShrinkTo(int32_t num_blocks) {
  if (num_blocks <= 0 || num_blocks % chunk_blocks_ != 0 ||
      num_blocks > this->num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ShrinkTo(%d) of a pool of %d blocks in chunks of %d",
                        num_blocks, this->num_blocks(), chunk_blocks_));
  }
  PKV_RETURN_IF_ERROR(books_->Shrink(num_blocks));
  const size_t keep = static_cast<size_t>(num_blocks / chunk_blocks_);
  for (size_t c = keep; c < chunks_.size(); ++c) FreeChunk(chunks_[c]);
  chunks_.resize(keep);
  return absl::OkStatus();
}

absl::Status GrowableKVPool::Relayout(int32_t num_layers) {
  if (num_layers == layout_.num_layers) return absl::OkStatus();
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
  // Layers are the outermost axis inside a block, so the kept layers are a
  // prefix of both blocks: one memcpy per block.
  const size_t old_bytes = block_bytes();
  const size_t new_bytes = wider.block_bytes();
  const size_t kept = std::min(old_bytes, new_bytes);
  for (size_t c = 0; c < chunks_.size(); ++c) {
    for (int32_t b = 0; b < chunk_blocks_; ++b) {
      std::memcpy(fresh[c].data + b * new_bytes,
                  chunks_[c].data + b * old_bytes, kept);
    }
    FreeChunk(chunks_[c]);
  }
  chunks_ = std::move(fresh);
  layout_ = wider;
  return absl::OkStatus();
}

}  // namespace pagedkv
