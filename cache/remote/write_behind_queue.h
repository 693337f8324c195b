// cache/remote/write_behind_queue.h
//
// WriteBehindQueue puts values into a RemoteBlockStore from a worker thread
// of its own, so the step loop never waits on the network: Enqueue copies
// nothing more than it is given (the caller moves in the key and the
// encoded value), never blocks, and when the queue is full (by count or by
// bytes) drops the value and counts it. A slow or dead server therefore
// costs dropped stores (the blocks are simply not shared), never a stall.
//
//   WriteBehindQueue queue(&store, {.max_values = 64});
//   if (!queue.Enqueue(std::move(key), std::move(value))) {
//     // Dropped (counted in stats().dropped).
//   }
//   queue.Flush();  // Tests: wait until everything queued was tried.
//
// The buffers of values already put are kept (up to
// Options::max_spare_values and max_spare_bytes) for the caller's next value:
// TakeSpare() hands one back, so encoding a block reuses memory that is already
// mapped rather than a fresh allocation (for 2 MiB values the page faults and
// zero-filling of new memory cost more than the encoding).
//
// The worker takes the queued values in batches (Options::max_batch_values
// and max_batch_bytes) and puts each batch in one pipelined round trip.
//
// The destructor stops the worker after the batch in progress; values still
// queued are dropped (counted).
//
// Thread safety: Enqueue, TakeSpare, Flush and stats may be called from any
// thread.
// The store is used by the worker only (it must outlive the queue).
#ifndef PAGEDKV_CACHE_REMOTE_WRITE_BEHIND_QUEUE_H_
#define PAGEDKV_CACHE_REMOTE_WRITE_BEHIND_QUEUE_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cache/remote/remote_block_store.h"

namespace pagedkv {

struct WriteBehindStats {
  int64_t enqueued = 0;
  int64_t stored = 0;        // Puts that succeeded.
  int64_t stored_bytes = 0;  // Their value bytes.
  int64_t failed = 0;        // Puts that returned an error.
  int64_t dropped = 0;       // Not queued (full) or left at shutdown.
  int64_t pending = 0;       // Queued now (or being put).
  RemoteStoreStats store;    // The store's counters after the last put.
};

class WriteBehindQueue {
 public:
  struct Options {
    int32_t max_values = 64;               // > 0.
    size_t max_bytes = size_t{256} << 20;  // Queued value bytes.
    // Buffers of put values kept for TakeSpare (>= 0; 0: none kept), at
    // most this many and this many bytes of capacity. Too few and the
    // caller encodes into fresh memory (zero-fill and page faults: about 17% of
    // a 64 x 64 KiB tier store's client CPU with 8 spares).
    int32_t max_spare_values = 64;
    size_t max_spare_bytes = size_t{32} << 20;
    // The worker puts what is queued in batches of up to this many values
    // and bytes (at least one value), one pipelined round trip each
    // (RemoteBlockStore::PutMany). > 0.
    int32_t max_batch_values = 16;
    size_t max_batch_bytes = size_t{4} << 20;
  };

  // REQUIRES: store != nullptr, outliving the queue; max_values,
  // max_bytes, max_batch_values and max_batch_bytes > 0,
  // max_spare_values >= 0.
  WriteBehindQueue(RemoteBlockStore* store, const Options& options);
  WriteBehindQueue(const WriteBehindQueue&) = delete;
  WriteBehindQueue& operator=(const WriteBehindQueue&) = delete;
  ~WriteBehindQueue();

  // Queues one put; false (counted as dropped) when full. Never blocks on
  // the worker's I/O (one short lock). `tag` is the caller's name for the
  // value (RemoteTier: the block hash), returned by TakeFailedTags if the
  // put fails.
  bool Enqueue(std::string key, std::string value, uint64_t tag = 0);

  // The tags of the puts that failed since the last call, in order, into
  // *tags (cleared first). At most Options::max_values are kept; returns
  // false when more failed and some were lost (the caller must assume any
  // value it enqueued may be missing). Cheap when nothing failed (no lock).
  bool TakeFailedTags(std::vector<uint64_t>* tags);

  // The buffer of a value already put (size and bytes unspecified, capacity
  // kept) for the caller to overwrite and enqueue, or an empty string when
  // none is spare. Never blocks on the worker's I/O.
  std::string TakeSpare();

  // Waits until every value enqueued before the call was put or failed.
  void Flush();

  WriteBehindStats stats() const;

 private:
  struct Item {
    std::string key;
    std::string value;
    uint64_t tag = 0;
  };
  void Run();

  RemoteBlockStore* const store_;
  const Options options_;
  // std::mutex, not absl::Mutex: Debian's Abseil is not built for TSan,
  // which would not see absl's happens-before edges (base/maybe_lock.h).
  mutable std::mutex mu_;
  std::condition_variable work_;     // The worker: an item or stop_.
  std::condition_variable drained_;  // Flush: queue_ empty and !busy_.
  std::deque<Item> queue_;
  size_t queued_bytes_ = 0;
  std::vector<std::string> spares_;  // size() <= options_.max_spare_values.
  size_t spare_bytes_ = 0;           // Their capacity() <= max_spare_bytes.
  bool busy_ = false;                // The worker holds a batch.
  bool stop_ = false;
  WriteBehindStats stats_;
  // Failed puts' tags not yet taken (size() <= options_.max_values), and
  // whether more failed; any_failed_ is set with them (read without mu_).
  std::vector<uint64_t> failed_tags_;
  bool failed_tags_lost_ = false;
  std::atomic<bool> any_failed_{false};
  std::thread worker_;  // Last: starts after the members it reads.
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_WRITE_BEHIND_QUEUE_H_
