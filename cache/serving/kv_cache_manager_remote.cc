// KVCacheManager's remote tier (Options::prefix_caching.remote): on a local
// prefix miss (AddSequence, Readmit), the rest of the chain is looked up in
// the store shared with other replicas and the verified hits are loaded
// into the sequence's fresh blocks, which are then published like committed
// local blocks; every block the manager publishes is stored write-behind.
// Host mode does the loads and stores itself; books-only hands them to the
// caller (a load list and CompleteRemoteLoads; a pinned store list). The
// tier (cache/remote/remote_tier.h) does the I/O with deadlines and no lock
// of the pool held; this file only says which blocks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/remote/remote_key.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/pending_remote_stores.h"
#include "cache/serving/remote_load.h"
#include "cache/serving/step_output.h"

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

absl::Status KVCacheManager::CheckRemote(const Options& options) {
  const RemoteTier* remote = options.prefix_caching.remote;
  if (remote == nullptr) return absl::OkStatus();
  if (!options.prefix_caching.enabled) {
    return absl::InvalidArgumentError(
        "a remote tier needs prefix_caching.enabled");
  }
  const BlockHasher& hasher = PrefixHasher(options);
  const uint64_t fingerprint = LayoutFingerprint(options.layout, hasher);
  if (remote->layout_fingerprint() != fingerprint) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the remote tier's layout fingerprint %016x is not the manager's "
        "%016x (layout %s, hasher %s)",
        remote->layout_fingerprint(), fingerprint, options.layout.ToString(),
        hasher.name()));
  }
  return absl::OkStatus();
}

int32_t KVCacheManager::FillFromRemote(Sequence& s, int32_t local_hits,
                                       StepOutput* out) {
  if (remote_ == nullptr) return 0;
  PrefixState& p = *s.prefix;
  const int32_t bt = layout_.block_tokens;
  // As PinHits: whole blocks with ids, leaving at least the last prompt
  // token.
  const int64_t matchable =
      std::min((s.num_tokens - 1) / bt, BlocksWithIds(p));
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
  remote_stats_.loaded_blocks += loaded;
  // The loaded blocks are committed KV like the local hits: publish them
  // (an equal block published meanwhile is switched to, as for any commit),
  // and do not send them back.
  p.committed = int64_t{local_hits + loaded} * bt;
  PublishCommitted(s, RemoteStore::kAlreadyRemote);
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

bool KVCacheManager::BeginRemoteLoad(Sequence& s, int32_t local_hits,
                                     StepOutput* out) {
  if (remote_ == nullptr) return false;
  PrefixState& p = *s.prefix;
  const int32_t bt = layout_.block_tokens;
  const int64_t matchable =  // As FillFromRemote.
      std::min((s.num_tokens - 1) / bt, BlocksWithIds(p));
  if (local_hits >= matchable) return false;
  EnsureHashes(p, matchable);
  const RemoteChain chain = ChainFrom(p.hashes, p.keys, p.tokens, local_hits,
                                      matchable - local_hits, bt);
  // One pipelined round trip on this thread; the pool's lock is not held.
  const int32_t hits = remote_->Lookup(chain);
  if (hits == 0) return false;
  // Place gave s fresh blocks past the local hits; the first `hits` of them
  // are the destinations. They are s's alone, and stay so until the caller
  // completes (kLoading can be neither freed nor written).
  RemoteLoad& load = out->remote_load;
  load.Clear();
  const absl::Span<const BlockId> dst =
      s.table.blocks().subspan(local_hits, hits);
  load.blocks.assign(dst.begin(), dst.end());
  load.parent = chain.parent;
  load.hashes.assign(chain.hashes.begin(), chain.hashes.begin() + hits);
  load.keys.assign(chain.keys.begin(), chain.keys.begin() + hits);
  load.tokens.assign(chain.tokens.begin(),
                     chain.tokens.begin() + int64_t{hits} * bt);
  load.first_token = int64_t{local_hits} * bt;
  // No slots until the loads are over: the prefill attends to the loaded
  // blocks.
  out->slot_mapping.clear();
  out->request_offsets.assign({0, 0});
  s.state = SequenceState::kLoading;
  s.load_first = local_hits;
  s.load_blocks = hits;
  ++remote_stats_.load_lists;
  remote_stats_.listed_blocks += hits;
  return true;
}

absl::Status KVCacheManager::CompleteRemoteLoads(SequenceId seq,
                                                 int32_t num_loaded_blocks,
                                                 StepOutput* out) {
  if (windows_ != nullptr) return GroupsUnimplemented("CompleteRemoteLoads");
  PKV_CHECK(out != nullptr, "CompleteRemoteLoads needs an output");
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kLoading) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CompleteRemoteLoads of sequence %d, which is %s: no remote load is "
        "pending",
        seq, SequenceStateName(s->state)));
  }
  if (num_loaded_blocks < 0 || num_loaded_blocks > s->load_blocks) {
    return absl::OutOfRangeError(absl::StrFormat(
        "CompleteRemoteLoads of sequence %d: %d blocks loaded, must be in "
        "[0, %d] (the blocks listed)",
        seq, num_loaded_blocks, s->load_blocks));
  }
  const int32_t bt = layout_.block_tokens;
  const int32_t hits = s->load_first + num_loaded_blocks;
  PrefixState& p = *s->prefix;
  p.committed = int64_t{hits} * bt;
  // Verified KV now: published like local hits (an equal block published
  // meanwhile is switched to), and not sent back.
  PublishCommitted(*s, RemoteStore::kAlreadyRemote);
  remote_stats_.loaded_blocks += num_loaded_blocks;
  remote_stats_.failed_blocks += s->load_blocks - num_loaded_blocks;
  if (s->load_at_admission) {
    prefix_stats_.hit_tokens += int64_t{num_loaded_blocks} * bt;
    prefix_stats_.hit_blocks += num_loaded_blocks;
  }
  s->state = SequenceState::kRunning;
  s->load_first = 0;
  s->load_blocks = 0;
  s->load_at_admission = false;
  ++num_running_;
  SyncReservation().IgnoreError();  // Switched blocks only shrink it.
  // The rest is computed: slots from the first block not loaded (the
  // failed ones' destinations are the sequence's own blocks).
  out->Clear();
  const int64_t served = int64_t{hits} * bt;
  out->num_cached_tokens = served;
  out->request_offsets.push_back(0);
  AddSlots(s->table, served, s->num_tokens - served, out);
  out->request_offsets.push_back(
      static_cast<int32_t>(out->slot_mapping.size()));
  return absl::OkStatus();
}

PendingRemoteStores KVCacheManager::TakeRemoteStores() {
  return std::move(pending_stores_);
}

void KVCacheManager::TakeRemoteStores(PendingRemoteStores* stores) {
  PKV_CHECK(stores != nullptr && stores->empty(),
            "TakeRemoteStores into a list still holding %d stores (MarkDone "
            "it first: their pins would be lost)",
            stores == nullptr ? 0 : stores->size());
  stores->swap(pending_stores_);
}

void KVCacheManager::StoreToRemote(const Sequence& s, int64_t first,
                                   int64_t n) {
  if (n <= 0) return;
  const PrefixState& p = *s.prefix;
  const int32_t bt = layout_.block_tokens;
  if (storage_ == StorageMode::kBooksOnly) {
    // The caller copies the bytes out (TakeRemoteStores); each block is
    // pinned until it says it has. Blocks the tier has already (loaded or
    // stored before) are left off: their device copy would be skipped. So
    // are blocks on the list already (republished after a reset).
    const auto listed = [&](int64_t i) {
      return pending_stores_.Lists(s.table[static_cast<int32_t>(i)]);
    };
    for (int64_t i = first; i < first + n;) {
      if (remote_->Knows(p.hashes[static_cast<size_t>(i)])) {
        ++remote_stats_.store_known_blocks;
        ++i;
        continue;
      }
      if (listed(i)) {
        ++i;
        continue;
      }
      int64_t run = 1;  // Blocks [i, i + run) are neither known nor listed.
      while (i + run < first + n &&
             !remote_->Knows(p.hashes[static_cast<size_t>(i + run)]) &&
             !listed(i + run)) {
        ++run;
      }
      const int64_t room = std::max<int64_t>(
          0, max_pending_remote_stores_ - pending_stores_.size());
      const int64_t added = std::min(run, room);
      if (added > 0) {
        pending_stores_.Add(
            books_, s.table.blocks().subspan(static_cast<size_t>(i), added),
            ChainFrom(p.hashes, p.keys, p.tokens, i, added, bt));
      }
      remote_stats_.store_listed_blocks += added;
      remote_stats_.store_dropped_blocks += run - added;
      i += run;
    }
    return;
  }
  const RemoteChain chain = ChainFrom(p.hashes, p.keys, p.tokens, first, n, bt);
  for (int64_t i = 0; i < n; ++i) {
    const std::byte* bytes =
        pool_->BlockData(s.table[static_cast<int32_t>(first + i)]);
    remote_->Store(chain, static_cast<size_t>(i),
                   absl::MakeConstSpan(bytes, pool_->block_bytes()));
  }
}

}  // namespace pagedkv
