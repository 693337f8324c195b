#include "cache/storage/kv_pool.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
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

absl::StatusOr<std::unique_ptr<BlockPool>> KVPool::MakeBooks(
    const Options& options) {
  PKV_RETURN_IF_ERROR(options.layout.Validate());
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVPool needs num_blocks > 0, got %d", options.num_blocks));
  }
  return BlockPool::Create(
      {.num_blocks = options.num_blocks, .concurrency = options.concurrency});
}

absl::StatusOr<std::unique_ptr<KVPool>> KVPool::Create(const Options& options) {
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<BlockPool> books, MakeBooks(options));
  MemoryResource* memory =
      options.memory != nullptr ? options.memory : DefaultMemoryResource();
  std::unique_ptr<KVPool> pool(
      new KVPool(options.layout, options.num_blocks, memory, std::move(books)));
  PKV_RETURN_IF_ERROR(pool->AddFirstChunk());
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

absl::Status KVPool::AddFirstChunk() {
  PKV_CHECK(chunks_.empty(), "AddFirstChunk of a pool with %d chunks",
            chunks_.size());
  PKV_ASSIGN_OR_RETURN(Chunk chunk, NewChunk(block_bytes()));
  chunks_.push_back(chunk);
  return absl::OkStatus();
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

void KVPool::RunCopies(absl::Span<const CopyOp> ops) {
  const size_t bytes = block_bytes();
  for (const CopyOp& op : ops) {
    PKV_CHECK(op.src != op.dst, "copy of block %d onto itself", op.src.value());
    PKV_CHECK(op.src.value() >= 0 && op.src.value() < num_blocks() &&
                  op.dst.value() >= 0 && op.dst.value() < num_blocks(),
              "copy %d -> %d outside a pool of %d blocks", op.src.value(),
              op.dst.value(), num_blocks());
    std::memcpy(BlockData(op.dst), BlockData(op.src), bytes);
  }
  NoteCopied(ops.size() * bytes);
}

absl::Status CopyBlocksBetween(const KVPool& src,
                               absl::Span<const BlockId> src_ids, KVPool& dst,
                               absl::Span<const BlockId> dst_ids) {
  if (src.layout() != dst.layout()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block copy between layouts (%s) and (%s)",
                        src.layout().ToString(), dst.layout().ToString()));
  }
  if (src_ids.size() != dst_ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block copy of %d source blocks into %d destinations",
                        src_ids.size(), dst_ids.size()));
  }
  const size_t bytes = src.block_bytes();
  for (size_t i = 0; i < src_ids.size(); ++i) {
    PKV_CHECK(src_ids[i].value() >= 0 && src_ids[i].value() < src.num_blocks(),
              "source block %d outside a pool of %d", src_ids[i].value(),
              src.num_blocks());
    PKV_CHECK(dst_ids[i].value() >= 0 && dst_ids[i].value() < dst.num_blocks(),
              "destination block %d outside a pool of %d", dst_ids[i].value(),
              dst.num_blocks());
    PKV_CHECK(&src != &dst || src_ids[i] != dst_ids[i],
              "copy of block %d onto itself", src_ids[i].value());
    std::memcpy(dst.BlockData(dst_ids[i]), src.BlockData(src_ids[i]), bytes);
  }
  const size_t total = src_ids.size() * bytes;
  src.NoteCopied(total);
  if (&src != &dst) dst.NoteCopied(total);
  return absl::OkStatus();
}

}  // namespace pagedkv
