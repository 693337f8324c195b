#include "cache/serving/pending_remote_stores.h"

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/check.h"

namespace pagedkv {

PendingRemoteStores::PendingRemoteStores(PendingRemoteStores&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      block_tokens_(other.block_tokens_),
      blocks_(std::move(other.blocks_)),
      parents_(std::move(other.parents_)),
      hashes_(std::move(other.hashes_)),
      keys_(std::move(other.keys_)),
      tokens_(std::move(other.tokens_)),
      listed_(std::move(other.listed_)) {
  other.blocks_.clear();
  other.parents_.clear();
  other.hashes_.clear();
  other.keys_.clear();
  other.tokens_.clear();
  other.listed_.clear();
}

PendingRemoteStores& PendingRemoteStores::operator=(
    PendingRemoteStores&& other) noexcept {
  if (this != &other) {
    MarkDone();
    pool_ = std::exchange(other.pool_, nullptr);
    block_tokens_ = other.block_tokens_;
    blocks_ = std::move(other.blocks_);
    parents_ = std::move(other.parents_);
    hashes_ = std::move(other.hashes_);
    keys_ = std::move(other.keys_);
    tokens_ = std::move(other.tokens_);
    listed_ = std::move(other.listed_);
    other.blocks_.clear();
    other.parents_.clear();
    other.hashes_.clear();
    other.keys_.clear();
    other.tokens_.clear();
    other.listed_.clear();
  }
  return *this;
}

PendingRemoteStores::~PendingRemoteStores() { MarkDone(); }

BlockId PendingRemoteStores::block(int32_t i) const {
  PKV_CHECK(i >= 0 && i < size(), "store entry %d of %d", i, size());
  return blocks_[static_cast<size_t>(i)];
}

RemoteChain PendingRemoteStores::chain(int32_t i) const {
  PKV_CHECK(i >= 0 && i < size(), "store entry %d of %d", i, size());
  const size_t k = static_cast<size_t>(i);
  const size_t bt = static_cast<size_t>(block_tokens_);
  return RemoteChain{
      .parent = parents_[k],
      .hashes = absl::MakeConstSpan(hashes_).subspan(k, 1),
      .keys = absl::MakeConstSpan(keys_).subspan(k, 1),
      .tokens = absl::MakeConstSpan(tokens_).subspan(k * bt, bt)};
}

void PendingRemoteStores::Add(BlockPool* pool, absl::Span<const BlockId> blocks,
                              const RemoteChain& chain) {
  if (blocks.empty()) return;
  PKV_CHECK(pool != nullptr && (pool_ == nullptr || pool_ == pool),
            "store list entries from two pools");
  const size_t n = blocks.size();
  PKV_CHECK(chain.hashes.size() == n && chain.keys.size() == n &&
                chain.tokens.size() % n == 0 && !chain.tokens.empty(),
            "store list of %d blocks from a chain of %d hashes, %d keys, %d "
            "tokens",
            n, chain.hashes.size(), chain.keys.size(), chain.tokens.size());
  const int32_t bt = static_cast<int32_t>(chain.tokens.size() / n);
  PKV_CHECK(block_tokens_ == 0 || blocks_.empty() || block_tokens_ == bt,
            "store list of %d-token blocks given %d-token blocks",
            block_tokens_, bt);
  for (BlockId b : blocks) {
    PKV_CHECK(listed_.insert(b.value()).second, "block %d listed twice",
              b.value());
  }
  pool->AddCopyHolds(blocks);
  pool_ = pool;
  block_tokens_ = bt;
  blocks_.insert(blocks_.end(), blocks.begin(), blocks.end());
  for (size_t i = 0; i < n; ++i) {
    parents_.push_back(i == 0 ? chain.parent : chain.hashes[i - 1]);
  }
  hashes_.insert(hashes_.end(), chain.hashes.begin(), chain.hashes.end());
  keys_.insert(keys_.end(), chain.keys.begin(), chain.keys.end());
  tokens_.insert(tokens_.end(), chain.tokens.begin(), chain.tokens.end());
}

void PendingRemoteStores::swap(PendingRemoteStores& other) noexcept {
  std::swap(pool_, other.pool_);
  std::swap(block_tokens_, other.block_tokens_);
  blocks_.swap(other.blocks_);
  parents_.swap(other.parents_);
  hashes_.swap(other.hashes_);
  keys_.swap(other.keys_);
  tokens_.swap(other.tokens_);
  listed_.swap(other.listed_);
}

void PendingRemoteStores::MarkDone() {
  if (blocks_.empty()) return;
  pool_->ReleaseCopyHoldsTailFirst(blocks_);  // Chains leave tail first.
  blocks_.clear();
  parents_.clear();
  hashes_.clear();
  keys_.clear();
  tokens_.clear();
  listed_.clear();
}

}  // namespace pagedkv
