// cache/remote/redis_block_store.h
//
// RedisBlockStore is a RemoteBlockStore on one Redis connection (hiredis
// connects and formats; values go out with sendmsg and come back through
// RespReader, cache/remote/resp_reader.h). Redis is the shared tier of several
// server replicas: it keeps the blocks, evicts them by its own policy
// (maxmemory + allkeys-lru or allkeys-lfu; an optional TTL per key from
// Options::key_ttl), and survives replica restarts.
//
// It never stalls its caller for long and never fails it:
//   - every call has a deadline (Options::call_timeout): replies of Fetch
//     and PutMany are read without blocking and waited for in poll() with
//     the call's remaining time (RespReader), lookups' with the socket
//     timeout set to it; a call that runs out counts a timeout and returns
//     what it has (fewer hits);
//   - lookups and fetches of a chain, and batches of puts (PutMany), are
//     pipelined: all commands go out before the first reply is read (one
//     round trip); of lookups and fetches only the leading run of hits
//     counts;
//   - a failed or timed-out call drops the connection (its pending replies
//     cannot be trusted); the next call reconnects, with exponential backoff
//     (Options::backoff_initial .. backoff_max) after failures. Until then
//     calls return misses at once (skipped_while_down). The backoff resets
//     after a call that succeeds.
//   - fetched values are read into the store's own buffer (RespReader: a
//     recv of up to 1 MiB at a time, values handed to the sink in place),
//     never into the caller's blocks; a call that timed out wrote nothing
//     anywhere, so no destination can be written after its owner moved on.
//
// Creating a store with a default SIGPIPE disposition sets it to SIG_IGN
// (hiredis writes with write(2): a server that died would otherwise kill
// the process on the next write). A disposition the program set is kept.
//
//   absl::StatusOr<std::unique_ptr<RedisBlockStore>> store =
//       RedisBlockStore::Create({.address = "unix:/run/redis/redis.sock"});
//   if (!store.ok()) return store.status();      // A bad address only.
//   (*store)->Put(key, value).IgnoreError();     // Counted on failure.
//
// Thread safety: one thread at a time (one connection).
#ifndef PAGEDKV_CACHE_REMOTE_REDIS_BLOCK_STORE_H_
#define PAGEDKV_CACHE_REMOTE_REDIS_BLOCK_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "cache/remote/remote_block_store.h"
#include "cache/remote/resp_reader.h"

struct iovec;
struct redisContext;

namespace pagedkv {

class RedisBlockStore final : public RemoteBlockStore {
 public:
  struct Options {
    // "unix:/path/to/redis.sock", "redis://host:port" or "host:port".
    std::string address;
    absl::Duration connect_timeout = absl::Milliseconds(200);
    // The deadline of one call (a chain's lookup, its fetch, one put).
    absl::Duration call_timeout = absl::Milliseconds(250);
    absl::Duration backoff_initial = absl::Milliseconds(10);
    absl::Duration backoff_max = absl::Seconds(1);
    // Expiry of each stored key (Redis PX); zero: none (maxmemory evicts).
    absl::Duration key_ttl = absl::ZeroDuration();
  };

  // INVALID_ARGUMENT for an address it cannot parse or non-positive
  // timeouts. Does not connect (the first call does), so a server that is
  // not up yet is not an error.
  static absl::StatusOr<std::unique_ptr<RedisBlockStore>> Create(
      const Options& options);

  RedisBlockStore(const RedisBlockStore&) = delete;
  RedisBlockStore& operator=(const RedisBlockStore&) = delete;
  ~RedisBlockStore() override;

  int32_t CountLeadingHits(absl::Span<const std::string> keys) override;
  int32_t Fetch(absl::Span<const std::string> keys, FetchSink& sink) override;
  absl::Status Put(std::string_view key, std::string_view value) override;
  // Pipelined: every SET is sent, then every reply read (one round trip).
  void PutMany(absl::Span<const KeyValue> items,
               absl::Span<absl::Status> results) override;
  RemoteStoreStats stats() const override { return stats_; }

  // One round trip per key (EXISTS, wait, next): the baseline the pipelined
  // lookup is measured against (bench/remote/remote_tier_benchmark.cc).
  int32_t CountLeadingHitsOneByOne(absl::Span<const std::string> keys);

  bool connected() const { return ctx_ != nullptr; }

 private:
  enum class Transport { kUnix, kTcp };
  RedisBlockStore(const Options& options, Transport transport, std::string host,
                  int port);

  // A connection, or false (counted) when down or in backoff.
  bool EnsureConnected();
  // Sets the socket timeout to what is left until `deadline`; false when
  // nothing is left (counted as a timeout, connection dropped).
  bool ArmTimeout(absl::Time deadline);
  // Writes a SET of value under key (and the TTL) to the socket, straight
  // from `value`; false on failure (counted, connection dropped).
  bool SendSet(std::string_view key, std::string_view value,
               absl::Time deadline);
  // Reads one reply; nullptr on failure (counted, connection dropped).
  void* ReadReply(absl::Time deadline);
  // Sends `bytes` (whole commands), or the iovecs in order (consumed), by
  // deadline: non-blocking sends, poll() while the socket is full. Never
  // touches hiredis's output buffer (empty between calls). False: failed
  // (counted, connection dropped).
  bool SendAll(std::string_view bytes, absl::Time deadline);
  bool SendAll(absl::Span<iovec> iov, absl::Time deadline);
  // Drops the connection after a failure and schedules the reconnect.
  void Fail(bool timeout);
  void Succeeded();

  const Options options_;
  const Transport transport_;
  const std::string host_;  // Or the socket path.
  const int port_;
  redisContext* ctx_ = nullptr;
  absl::Time next_attempt_ = absl::InfinitePast();
  absl::Duration backoff_;
  RemoteStoreStats stats_;
  // Fetch's GET commands, and the reader of their replies (hiredis reads
  // every other reply; both are empty between calls).
  std::string commands_;
  RespReader values_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_REDIS_BLOCK_STORE_H_
