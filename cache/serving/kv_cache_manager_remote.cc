// KVCacheManager's remote tier (Options::prefix_caching.remote): on a local
// prefix miss, the rest of the prompt's chain is looked up in the store
// shared with other replicas and the verified hits are loaded into the
// sequence's fresh blocks, which are then published like committed local
// blocks; every block the manager publishes is stored write-behind. The
// tier (cache/remote/remote_tier.h) does the I/O with deadlines and no lock
// of the pool held; this file only says which blocks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "base/check.h"
#include "cache/remote/remote_key.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv {
namespace {

RemoteChain ChainFrom(absl::Span<const BlockHash> hashes,
                      absl::Span<const BlockExtraKeys> keys,
                      absl::Span<const int32_t> tokens, int64_t first,
                      int64_t n, int32_t block_tokens) {
  RemoteChain c;
  c.parent = first == 0 ? kRootBlockHash : hashes[first - 1];
  c.hashes = hashes.subspan(first, n);
  c.keys = keys.subspan(first, n);
  c.tokens = tokens.subspan(first * block_tokens, n * block_tokens);
  return c;
}

}  // namespace

absl::Status KVCacheManager::AttachRemote(RemoteTier* remote) {
  if (remote == nullptr) return absl::OkStatus();
  if (!prefix_caching()) {
    return absl::InvalidArgumentError(
        "a remote tier needs prefix_caching.enabled");
  }
  if (storage_ != StorageMode::kHost) {
    return absl::InvalidArgumentError(
        "a remote tier needs host storage (books-only load lists are not "
        "implemented yet, #13)");
  }
  const uint64_t fingerprint = LayoutFingerprint(layout_, *hasher_);
  if (remote->layout_fingerprint() != fingerprint) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the remote tier's layout fingerprint %016x is not the manager's "
        "%016x (layout %s, hasher %s)",
        remote->layout_fingerprint(), fingerprint, layout_.ToString(),
        hasher_->name()));
  }
  remote_ = remote;
  return absl::OkStatus();
}

int32_t KVCacheManager::FillFromRemote(Sequence& s, int32_t local_hits,
                                       StepOutput* out) {
  if (remote_ == nullptr) return 0;
  PrefixState& p = *s.prefix;
  const int32_t bt = layout_.block_tokens;
  // As PinHits: whole blocks, leaving at least the last prompt token.
  const int64_t matchable = (s.num_tokens - 1) / bt;
  if (local_hits >= matchable) return 0;
  EnsureHashes(p, matchable);
  const RemoteChain chain = ChainFrom(p.hashes, p.keys, p.tokens, local_hits,
                                      matchable - local_hits, bt);
  // Place gave the sequence fresh blocks for everything past the local
  // hits; the tier writes into them only what verified (no other holder
  // can see them yet).
  std::vector<std::byte*> dst(static_cast<size_t>(matchable - local_hits));
  for (size_t i = 0; i < dst.size(); ++i) {
    dst[i] = pool_->BlockData(s.table[local_hits + static_cast<int32_t>(i)]);
  }
  const int32_t loaded = remote_->LookupAndLoad(chain, dst);
  if (loaded == 0) return 0;
  // The loaded blocks are committed KV like the local hits: publish them
  // (an equal block published meanwhile is switched to, as for any commit).
  p.committed = int64_t{local_hits + loaded} * bt;
  PublishCommitted(s);
  // Their tokens are served, not computed: drop their slots.
  const int64_t served = int64_t{loaded} * bt;
  PKV_CHECK(static_cast<int64_t>(out->slot_mapping.size()) > served &&
                out->request_offsets.size() == 2,
            "remote fill of %d tokens over %d slots", served,
            out->slot_mapping.size());
  out->slot_mapping.erase(out->slot_mapping.begin(),
                          out->slot_mapping.begin() + served);
  out->request_offsets[1] = static_cast<int32_t>(out->slot_mapping.size());
  out->num_cached_tokens += served;
  return loaded;
}

void KVCacheManager::StoreToRemote(const Sequence& s, int64_t first,
                                   int64_t n) {
  if (n <= 0) return;
  const PrefixState& p = *s.prefix;
  const int32_t bt = layout_.block_tokens;
  const RemoteChain chain = ChainFrom(p.hashes, p.keys, p.tokens, first, n, bt);
  for (int64_t i = 0; i < n; ++i) {
    const std::byte* bytes =
        pool_->BlockData(s.table[static_cast<int32_t>(first + i)]);
    remote_->Store(chain, static_cast<size_t>(i),
                   absl::MakeConstSpan(bytes, pool_->block_bytes()));
  }
}

}  // namespace pagedkv
