// cache/remote/remote_block_store.h
//
// RemoteBlockStore is the transport of the remote tier: a key-value store
// shared by server replicas (Redis in production, redis_block_store.h; an
// in-memory map in unit tests, in_memory_block_store.h). It moves opaque
// values; what a key means and whether a value may be used is decided above
// it (remote_key.h, block_value.h, remote_tier.h).
//
// Failure is never an error the step loop has to handle: a dead, slow or
// full server makes lookups and fetches return fewer hits (counted in
// stats()), and a Put returns a Status the write-behind worker counts. No
// call blocks past its deadline (see the implementation's options).
//
//   InMemoryBlockStore store;
//   PKV_RETURN_IF_ERROR(store.Put("k0", value0));
//   const std::string keys[] = {"k0", "k1"};
//   int32_t hits = store.CountLeadingHits(keys);  // 1: "k1" is absent.
//
// Thread safety: an instance is used by one thread at a time unless the
// implementation says otherwise (a Redis store is one connection; the tier
// gives its write-behind worker a store of its own).
#ifndef PAGEDKV_CACHE_REMOTE_REMOTE_BLOCK_STORE_H_
#define PAGEDKV_CACHE_REMOTE_REMOTE_BLOCK_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace pagedkv {

// Transport counters of one store (a connection).
struct RemoteStoreStats {
  int64_t calls = 0;               // CountLeadingHits + Fetch + Put.
  int64_t timeouts = 0;            // Calls cut short by their deadline.
  int64_t errors = 0;              // Connection and protocol failures.
  int64_t connects = 0;            // Successful (re)connections.
  int64_t connect_failures = 0;    // Attempts that failed (then backoff).
  int64_t skipped_while_down = 0;  // Calls answered "miss" during backoff.
  int64_t bytes_sent = 0;          // Values put.
  int64_t bytes_received = 0;      // Values fetched.
};

// Receives Fetch's values in key order.
class FetchSink {
 public:
  virtual ~FetchSink() = default;
  // Value of keys[index], valid for the call; return false to stop.
  virtual bool OnValue(int32_t index, std::string_view value) = 0;
};

class RemoteBlockStore {
 public:
  virtual ~RemoteBlockStore() = default;

  // How many of `keys`, from the first, exist: the count stops at the first
  // absent key. A failure counts as a miss from where it happened (all the
  // keys are asked in one pipelined round trip where the store can).
  virtual int32_t CountLeadingHits(absl::Span<const std::string> keys) = 0;

  // Fetches the values of `keys` in order, handing each to sink, until the
  // first absent key, a failure, or sink returning false. Returns how many
  // values sink accepted.
  virtual int32_t Fetch(absl::Span<const std::string> keys,
                        FetchSink& sink) = 0;

  // Stores value under key (replacing it). UNAVAILABLE (no connection),
  // DEADLINE_EXCEEDED (timeout), RESOURCE_EXHAUSTED (the server is out of
  // memory and evicts nothing) or INTERNAL (a protocol error).
  virtual absl::Status Put(std::string_view key, std::string_view value) = 0;

  // One value of PutMany.
  struct KeyValue {
    std::string_view key;
    std::string_view value;
  };
  // Stores every item, results[i] saying what Put would of items[i]. A store
  // that can pipelines them (one round trip for all); this default puts
  // them one by one. REQUIRES: results.size() == items.size().
  virtual void PutMany(absl::Span<const KeyValue> items,
                       absl::Span<absl::Status> results) {
    for (size_t i = 0; i < items.size(); ++i) {
      results[i] = Put(items[i].key, items[i].value);
    }
  }

  virtual RemoteStoreStats stats() const = 0;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_REMOTE_BLOCK_STORE_H_
