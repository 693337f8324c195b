#include "cache/remote/remote_tier.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/remote/remote_key.h"

namespace pagedkv {
namespace {

// Decodes each fetched value into its destination block; refuses (and so
// stops the chain at) the first value that does not verify.
class VerifyingSink final : public FetchSink {
 public:
  VerifyingSink(const RemoteTier& tier, const RemoteChain& chain,
                absl::Span<std::byte* const> dst,
                std::array<int64_t, 9>& failures)
      : tier_(tier), chain_(chain), dst_(dst), failures_(failures) {}

  // How many values the store had (the refused one included).
  int32_t seen() const { return seen_; }

  bool OnValue(int32_t index, std::string_view value) override {
    ++seen_;
    const BlockValueCheck check =
        DecodeBlockValue(value, tier_.IdentityOf(chain_, index),
                         absl::MakeSpan(dst_[index], tier_.block_bytes()));
    if (check == BlockValueCheck::kOk) return true;
    ++failures_[static_cast<size_t>(check)];
    return false;
  }

 private:
  const RemoteTier& tier_;
  const RemoteChain& chain_;
  absl::Span<std::byte* const> dst_;
  std::array<int64_t, 9>& failures_;
  int32_t seen_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteTier>> RemoteTier::Create(
    const Options& options, RemoteBlockStore* reads, RemoteBlockStore* writes) {
  PKV_RETURN_IF_ERROR(options.layout.Validate());
  if (reads == nullptr || writes == nullptr) {
    return absl::InvalidArgumentError("remote tier: a store is null");
  }
  if (options.write_behind.max_values <= 0 ||
      options.write_behind.max_bytes == 0 ||
      options.write_behind.max_batch_values <= 0 ||
      options.write_behind.max_batch_bytes == 0 ||
      options.write_behind.max_spare_values < 0 ||
      options.max_known_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "remote tier: bounds must be > 0 (write-behind values %d, bytes %d, "
        "batch values %d, batch bytes %d; known blocks %d) and spare values "
        ">= 0 (%d)",
        options.write_behind.max_values, options.write_behind.max_bytes,
        options.write_behind.max_batch_values,
        options.write_behind.max_batch_bytes, options.max_known_blocks,
        options.write_behind.max_spare_values));
  }
  const BlockHasher& hasher =
      options.hasher != nullptr ? *options.hasher : Xxh3BlockHasher();
  return std::unique_ptr<RemoteTier>(new RemoteTier(
      options, LayoutFingerprint(options.layout, hasher), reads, writes));
}

absl::StatusOr<std::unique_ptr<RemoteTier>> RemoteTier::Create(
    const Options& options, std::unique_ptr<RemoteBlockStore> reads,
    std::unique_ptr<RemoteBlockStore> writes) {
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<RemoteTier> tier,
                       Create(options, reads.get(), writes.get()));
  tier->owned_reads_ = std::move(reads);
  tier->owned_writes_ = std::move(writes);
  return tier;
}

RemoteTier::RemoteTier(const Options& options, uint64_t fingerprint,
                       RemoteBlockStore* reads, RemoteBlockStore* writes)
    : options_(options),
      fingerprint_(fingerprint),
      block_bytes_(options.layout.block_bytes()),
      block_tokens_(options.layout.block_tokens),
      reads_(reads),
      writes_(writes),
      queue_(std::make_unique<WriteBehindQueue>(writes, options.write_behind)) {
}

RemoteTier::~RemoteTier() {
  queue_.reset();  // Stops the worker before the stores go.
}

std::string RemoteTier::KeyOf(const RemoteChain& chain, size_t index) const {
  return RemoteBlockKey(options_.key_namespace, fingerprint_,
                        chain.keys[index].tenant_salt, chain.hashes[index]);
}

BlockIdentity RemoteTier::IdentityOf(const RemoteChain& chain,
                                     size_t index) const {
  BlockIdentity id;
  id.layout_fingerprint = fingerprint_;
  id.hash = chain.hashes[index];
  id.parent = index == 0 ? chain.parent : chain.hashes[index - 1];
  id.keys = chain.keys[index];
  id.tokens = chain.tokens.subspan(index * block_tokens_, block_tokens_);
  return id;
}

void RemoteTier::CheckChain(const RemoteChain& chain) const {
  PKV_CHECK(chain.keys.size() == chain.hashes.size() &&
                chain.tokens.size() == chain.hashes.size() * block_tokens_,
            "remote chain of %d hashes, %d keys, %d tokens",
            chain.hashes.size(), chain.keys.size(), chain.tokens.size());
}

int32_t RemoteTier::Lookup(const RemoteChain& chain) {
  CheckChain(chain);
  if (chain.hashes.empty()) return 0;
  scratch_keys_.clear();
  for (size_t i = 0; i < chain.hashes.size(); ++i) {
    scratch_keys_.push_back(KeyOf(chain, i));
  }
  ++stats_.lookups;
  stats_.lookup_blocks += static_cast<int64_t>(chain.hashes.size());
  const int32_t hits = reads_->CountLeadingHits(scratch_keys_);
  stats_.hit_blocks += hits;
  Forget(chain, static_cast<size_t>(hits), chain.hashes.size());
  return hits;
}

int32_t RemoteTier::Load(const RemoteChain& chain,
                         absl::Span<std::byte* const> dst) {
  return FetchInto(chain, dst, /*present=*/nullptr);
}

int32_t RemoteTier::FetchInto(const RemoteChain& chain,
                              absl::Span<std::byte* const> dst,
                              int32_t* present) {
  CheckChain(chain);
  PKV_CHECK(dst.size() <= chain.hashes.size(),
            "loading %d blocks of a chain of %d", dst.size(),
            chain.hashes.size());
  if (present != nullptr) *present = 0;
  if (dst.empty()) return 0;
  scratch_keys_.clear();
  for (size_t i = 0; i < dst.size(); ++i) {
    scratch_keys_.push_back(KeyOf(chain, i));
  }
  VerifyingSink sink(*this, chain, dst, stats_.verify_failures_by_kind);
  const int32_t loaded = reads_->Fetch(scratch_keys_, sink);
  if (present != nullptr) *present = sink.seen();
  stats_.loaded_blocks += loaded;
  stats_.loaded_bytes += static_cast<int64_t>(loaded) * block_bytes_;
  for (int32_t i = 0; i < loaded; ++i) Remember(chain.hashes[i]);
  Forget(chain, static_cast<size_t>(loaded), dst.size());
  return loaded;
}

int32_t RemoteTier::LookupAndLoad(const RemoteChain& chain,
                                  absl::Span<std::byte* const> dst) {
  const size_t n = chain.hashes.size();
  if (n > 0 && dst.size() == n &&
      n * block_bytes_ <= options_.direct_fetch_bytes) {
    // One round trip: the GETs' nil replies end the chain as EXISTS would.
    ++stats_.lookups;
    stats_.lookup_blocks += static_cast<int64_t>(n);
    int32_t present = 0;
    const int32_t loaded = FetchInto(chain, dst, &present);
    stats_.hit_blocks += present;
    return loaded;
  }
  const int32_t hits = Lookup(chain);
  return Load(chain, dst.subspan(0, std::min<size_t>(hits, dst.size())));
}

bool RemoteTier::Store(const RemoteChain& chain, size_t index,
                       absl::Span<const std::byte> bytes) {
  PKV_CHECK(index < chain.hashes.size() && bytes.size() == block_bytes_,
            "storing block %d of a chain of %d, %d bytes (block %d)", index,
            chain.hashes.size(), bytes.size(), block_bytes_);
  if (Knows(chain.hashes[index])) {
    ++stats_.stores_skipped;
    return false;
  }
  // Into the buffer of a value already put, when there is one: no fresh
  // allocation (page faults, zero-fill) per block.
  std::string value = queue_->TakeSpare();
  EncodeBlockValue(IdentityOf(chain, index), bytes, &value);
  if (!queue_->Enqueue(KeyOf(chain, index), std::move(value),
                       chain.hashes[index])) {
    return false;
  }
  Remember(chain.hashes[index]);
  return true;
}

void RemoteTier::Remember(BlockHash hash) {
  if (static_cast<int64_t>(known_.size()) >= options_.max_known_blocks) {
    known_.clear();
  }
  known_.insert(hash);
}

void RemoteTier::ForgetFailedStores() {
  if (!queue_->TakeFailedTags(&failed_scratch_)) {
    known_.clear();  // Some failures went uncounted: trust nothing.
    return;
  }
  for (uint64_t hash : failed_scratch_) known_.erase(hash);
}

void RemoteTier::Forget(const RemoteChain& chain, size_t first, size_t last) {
  if (known_.empty()) return;
  for (size_t i = first; i < last; ++i) known_.erase(chain.hashes[i]);
}

void RemoteTier::Flush() { queue_->Flush(); }

RemoteTierStats RemoteTier::stats() const {
  RemoteTierStats s = stats_;
  s.verify_failures = 0;
  for (int64_t n : s.verify_failures_by_kind) s.verify_failures += n;
  s.writes = queue_->stats();
  s.read_store = reads_->stats();
  return s;
}

}  // namespace pagedkv
