// cache/remote/in_memory_block_store.h
//
// A RemoteBlockStore over a map in this process: the remote tier's unit
// tests, and "replicas" in one process (tests, kv_stress) without a server.
// Tests may damage it the way a real store can be damaged: Corrupt
// overwrites a value under a valid key, Erase drops a key (an eviction),
// and set_down(true) makes every call fail like a dead server.
//
//   InMemoryBlockStore store;
//   store.Put("k", value).IgnoreError();
//   store.Erase("k");                         // As if evicted.
//
// Thread safety: thread-safe (one mutex); one store may serve several tiers
// and their write-behind workers at once.
#ifndef PAGEDKV_CACHE_REMOTE_IN_MEMORY_BLOCK_STORE_H_
#define PAGEDKV_CACHE_REMOTE_IN_MEMORY_BLOCK_STORE_H_

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cache/remote/remote_block_store.h"

namespace pagedkv {

class InMemoryBlockStore final : public RemoteBlockStore {
 public:
  int32_t CountLeadingHits(absl::Span<const std::string> keys) override;
  int32_t Fetch(absl::Span<const std::string> keys, FetchSink& sink) override;
  absl::Status Put(std::string_view key, std::string_view value) override;
  RemoteStoreStats stats() const override;

  // Test hooks.
  void Corrupt(std::string_view key, std::string value);
  bool Erase(std::string_view key);
  void set_down(bool down);
  int64_t num_keys() const;

 private:
  mutable std::mutex mu_;  // Not absl::Mutex: TSan sees this one.
  absl::flat_hash_map<std::string, std::string> values_;
  bool down_ = false;
  RemoteStoreStats stats_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_IN_MEMORY_BLOCK_STORE_H_
