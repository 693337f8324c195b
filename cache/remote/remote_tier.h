// cache/remote/remote_tier.h
//
// RemoteTier is one server replica's view of the shared block store: it
// names blocks (remote_key.h), encodes and verifies their values
// (block_value.h), looks up and loads chains on the caller's thread, and
// stores newly committed blocks write-behind (write_behind_queue.h). The
// serving manager uses it on a local prefix miss
// (KVCacheManager::Options::prefix_caching.remote); it can also be used on
// its own.
//
//   absl::StatusOr<std::unique_ptr<RemoteTier>> tier = RemoteTier::Create(
//       {.layout = layout}, std::move(read_store), std::move(write_store));
//   RemoteChain chain{.parent = kRootBlockHash, .hashes = hashes,
//                     .keys = keys, .tokens = tokens};
//   std::byte* dst[] = {pool.BlockData(b0), pool.BlockData(b1)};
//   int32_t loaded = (*tier)->LookupAndLoad(chain, dst);  // Verified.
//   (*tier)->Store(chain, /*index=*/0, block_bytes);        // Write-behind.
//
// What is served is always right: a block is loaded only when its value's
// header names this layout, this block's hash, parent, extra keys and
// token ids, and the checksum of its bytes holds; anything else is a miss,
// counted in verify_failures (by kind), and the chain stops there.
//
// Thread safety: one thread at a time (the manager's), stats() included.
// The write-behind worker uses only the write store, whose counters reach
// stats() through the queue's lock.
#ifndef PAGEDKV_CACHE_REMOTE_REMOTE_TIER_H_
#define PAGEDKV_CACHE_REMOTE_REMOTE_TIER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "cache/remote/block_value.h"
#include "cache/remote/remote_block_store.h"
#include "cache/remote/remote_chain.h"
#include "cache/remote/write_behind_queue.h"
#include "cache/storage/kv_layout.h"

namespace pagedkv {

struct RemoteTierStats {
  int64_t lookups = 0;        // Lookup calls with at least one block.
  int64_t lookup_blocks = 0;  // Blocks asked about.
  // Leading blocks the store had: present keys (EXISTS) or, on a direct
  // fetch, values received up to and including the first refused one.
  int64_t hit_blocks = 0;
  int64_t loaded_blocks = 0;    // Verified and copied into a block.
  int64_t loaded_bytes = 0;     // Their KV bytes.
  int64_t verify_failures = 0;  // Values refused (sum of by_kind).
  // Indexed by BlockValueCheck (kOk's entry stays 0).
  std::array<int64_t, 9> verify_failures_by_kind = {};
  int64_t stores_skipped = 0;   // Known to be remote already.
  WriteBehindStats writes;      // stored, stored_bytes, dropped, failed...
  RemoteStoreStats read_store;  // The lookup/load connection.
  // The worker's connection is writes.store.
};

class RemoteTier {
 public:
  struct Options {
    KVLayout layout;
    // The prefix cache's hasher (nullptr: Xxh3BlockHasher()); part of the
    // layout fingerprint, so replicas must agree.
    const BlockHasher* hasher = nullptr;
    // First field of every key: one per deployment sharing a server.
    std::string key_namespace = "pkv";
    WriteBehindQueue::Options write_behind;
    // Hashes remembered as already remote (loaded or queued for store), so
    // they are not sent again; cleared when it holds more. A lookup or load
    // that misses a block forgets it and the chain's blocks after it (the
    // server evicted them), and a put the worker reports failed forgets its
    // block: their recomputed KV is stored again.
    int32_t max_known_blocks = 1 << 16;
    // LookupAndLoad of a chain of at most this many bytes fetches the
    // values at once (one round trip) instead of asking which exist first
    // (two); a missing block then costs the transfer of the values after
    // it, at most this much. 0: always ask first.
    size_t direct_fetch_bytes = size_t{1} << 20;
  };

  // Borrows the stores (they must outlive the tier). `reads` is used by the
  // caller's thread, `writes` by the worker; they may be one object only if
  // it is thread-safe (InMemoryBlockStore). INVALID_ARGUMENT for a bad
  // layout, null stores or bounds <= 0.
  static absl::StatusOr<std::unique_ptr<RemoteTier>> Create(
      const Options& options, RemoteBlockStore* reads,
      RemoteBlockStore* writes);
  // The same, owning the stores (two Redis connections, say).
  static absl::StatusOr<std::unique_ptr<RemoteTier>> Create(
      const Options& options, std::unique_ptr<RemoteBlockStore> reads,
      std::unique_ptr<RemoteBlockStore> writes);

  RemoteTier(const RemoteTier&) = delete;
  RemoteTier& operator=(const RemoteTier&) = delete;
  ~RemoteTier();

  // The store's key of chain block `index`, and what its value must say.
  std::string KeyOf(const RemoteChain& chain, size_t index) const;
  BlockIdentity IdentityOf(const RemoteChain& chain, size_t index) const;

  // How many leading blocks of `chain` the store has (one pipelined round
  // trip; a failure or timeout is a miss from there).
  int32_t Lookup(const RemoteChain& chain);
  // Loads the first dst.size() blocks of `chain` into dst[i] (block_bytes
  // each), verifying each; returns how many leading blocks were loaded
  // (the rest of dst holds unspecified bytes and must be recomputed).
  int32_t Load(const RemoteChain& chain, absl::Span<std::byte* const> dst);
  // Lookup, then Load of the hits: what a prefix miss does. A chain of at
  // most Options::direct_fetch_bytes is fetched in one round trip (its
  // values until the first absent or refused one), counted as one lookup.
  int32_t LookupAndLoad(const RemoteChain& chain,
                        absl::Span<std::byte* const> dst);

  // Queues chain block `index`, whose KV is `bytes`, for the store (copies
  // it; returns at once). False when skipped (known remote) or dropped
  // (queue full: counted).
  bool Store(const RemoteChain& chain, size_t index,
             absl::Span<const std::byte> bytes);

  // Whether `hash` is remembered as remote (Store would skip it): a
  // books-only server need not copy such a block out of the device. A
  // block whose put failed is forgotten here (and by Store) once the
  // worker has reported the failure, so it is stored again.
  bool Knows(BlockHash hash) {
    ForgetFailedStores();
    return known_.contains(hash);
  }

  // Waits for the write-behind queue to drain (tests, shutdown).
  void Flush();

  uint64_t layout_fingerprint() const { return fingerprint_; }
  size_t block_bytes() const { return block_bytes_; }
  RemoteTierStats stats() const;

 private:
  RemoteTier(const Options& options, uint64_t fingerprint,
             RemoteBlockStore* reads, RemoteBlockStore* writes);
  void Remember(BlockHash hash);
  // Forgets the blocks whose puts the queue reports failed (all it
  // remembers, when it lost count).
  void ForgetFailedStores();
  // Forgets chain blocks [first, last): asked for, not found.
  void Forget(const RemoteChain& chain, size_t first, size_t last);
  // Aborts unless keys and tokens match hashes in number (a caller's bug).
  void CheckChain(const RemoteChain& chain) const;
  // Load, also telling how many leading values the store had (`present`,
  // the refused one included) when asked.
  int32_t FetchInto(const RemoteChain& chain, absl::Span<std::byte* const> dst,
                    int32_t* present);

  const Options options_;
  const uint64_t fingerprint_;
  const size_t block_bytes_;
  const int32_t block_tokens_;
  std::unique_ptr<RemoteBlockStore> owned_reads_;
  std::unique_ptr<RemoteBlockStore> owned_writes_;
  RemoteBlockStore* const reads_;
  RemoteBlockStore* const writes_;
  absl::flat_hash_set<BlockHash> known_;  // Caller's thread only.
  std::vector<uint64_t> failed_scratch_;
  std::vector<std::string> scratch_keys_;
  RemoteTierStats stats_;  // The caller's counters (not writes/stores).
  std::unique_ptr<WriteBehindQueue> queue_;  // Last: stops first.
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_REMOTE_TIER_H_
