// RedisBlockStore and RemoteTier against a real redis-server that the test
// starts (tests/testing/redis_server.h) and damages: killed with kill -9
// and restarted, paused with SIGSTOP, values corrupted under valid keys,
// keys evicted by maxmemory. Through all of it calls return within their
// deadlines, misses are counted, and every loaded byte is right.
#include "cache/remote/redis_block_store.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cache/remote/remote_tier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/remote/remote_testing.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::Destinations;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::RedisServer;
using ::pagedkv::testing::RemoteTestLayout;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TestChain;

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RedisServer::Available()) GTEST_SKIP() << RedisServer::kSkipMessage;
    absl::StatusOr<std::unique_ptr<RedisServer>> s = RedisServer::Start(opts_);
    ASSERT_THAT(s.status(), IsOk());
    redis_ = std::move(*s);
  }

  RedisBlockStore::Options StoreOptions() const {
    RedisBlockStore::Options o;
    o.address = redis_->address();
    o.call_timeout = absl::Milliseconds(100);
    o.connect_timeout = absl::Milliseconds(100);
    o.backoff_initial = absl::Milliseconds(5);
    o.backoff_max = absl::Milliseconds(40);
    return o;
  }
  std::unique_ptr<RedisBlockStore> MakeStore() const {
    return *RedisBlockStore::Create(StoreOptions());
  }
  std::unique_ptr<RemoteTier> MakeTier(const KVLayout& layout) const {
    RemoteTier::Options o;
    o.layout = layout;
    return *RemoteTier::Create(o, MakeStore(), MakeStore());
  }
  void StoreAll(RemoteTier& tier, const TestChain& c) {
    for (size_t i = 0; i < c.size(); ++i) {
      tier.Store(c.chain(), i, c.Bytes(i));
    }
    tier.Flush();
  }
  // Loads the chain with a fresh tier; checks every loaded byte.
  int32_t LoadChecked(const TestChain& c, const KVLayout& layout) {
    std::unique_ptr<RemoteTier> reader = MakeTier(layout);
    Destinations d(c.size(), layout.block_bytes());
    const int32_t n = reader->LookupAndLoad(c.chain(), d.ptrs);
    for (int32_t i = 0; i < n; ++i) {
      EXPECT_EQ(d.bufs[i], c.Bytes(i)) << "block " << i;
    }
    last_stats_ = reader->stats();
    return n;
  }

  RedisServer::Options opts_;
  std::unique_ptr<RedisServer> redis_;
  RemoteTierStats last_stats_;
};

TEST_F(RedisTest, CreateValidatesTheAddress) {
  EXPECT_THAT(RedisBlockStore::Create({.address = "nowhere"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RedisBlockStore::Create({.address = "redis://h:0"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RedisBlockStore::Create({.address = "redis://127.0.0.1:6379"}),
              IsOk());
}

// SET ... PX takes whole milliseconds > 0: a TTL under 1 ms would be PX 0,
// refused by the server on every store, so Create refuses it.
TEST_F(RedisTest, CreateRefusesATtlItCannotSend) {
  RedisBlockStore::Options o{.address = "redis://127.0.0.1:6379"};
  o.key_ttl = absl::Microseconds(500);
  EXPECT_THAT(RedisBlockStore::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("ttl 500us")));
  o.key_ttl = absl::Milliseconds(1);
  EXPECT_THAT(RedisBlockStore::Create(o), IsOk());
  o.key_ttl = absl::ZeroDuration();
  EXPECT_THAT(RedisBlockStore::Create(o), IsOk());
}

TEST_F(RedisTest, PutThenLookupAndFetchPipelined) {
  std::unique_ptr<RedisBlockStore> s = MakeStore();
  ASSERT_THAT(s->Put("a", "1"), IsOk());
  ASSERT_THAT(s->Put("b", std::string(100000, 'x')), IsOk());
  const std::vector<std::string> keys = {"a", "b", "c", "a"};
  EXPECT_EQ(s->CountLeadingHits(keys), 2);
  EXPECT_EQ(s->CountLeadingHitsOneByOne(keys), 2);
  EXPECT_EQ(s->stats().connects, 1);
}

// Every byte value, "\r\n" and NUL included: Put writes the command
// itself, straight from the caller's bytes.
std::string AllByteValues(size_t n) {
  std::string v(n, '\0');
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<char>((i * 7 + i / 256) & 0xff);
  return v;
}

TEST_F(RedisTest, PutStoresTheExactBytesWithAndWithoutATtl) {
  std::unique_ptr<RedisBlockStore> plain = MakeStore();
  RedisBlockStore::Options o = StoreOptions();
  o.key_ttl = absl::Seconds(60);
  std::unique_ptr<RedisBlockStore> expiring = *RedisBlockStore::Create(o);
  for (size_t n : {size_t{0}, size_t{1}, size_t{300}, size_t{3} << 20}) {
    const std::string v = AllByteValues(n);
    const std::string k = "k\r\n" + std::to_string(n);
    ASSERT_THAT(plain->Put(k, v), IsOk());
    EXPECT_EQ(*redis_->Command({"GET", k}), v) << n;
    EXPECT_EQ(*redis_->Command({"PTTL", k}), "-1") << n;
    ASSERT_THAT(expiring->Put(k, v), IsOk());
    EXPECT_EQ(*redis_->Command({"GET", k}), v) << n;
    int64_t ttl_ms = 0;
    ASSERT_TRUE(absl::SimpleAtoi(*redis_->Command({"PTTL", k}), &ttl_ms));
    EXPECT_GT(ttl_ms, 50000) << n;
    EXPECT_LE(ttl_ms, 60000) << n;
  }
  EXPECT_EQ(plain->stats().bytes_sent, 1 + 300 + (3 << 20));
  EXPECT_EQ(plain->stats().connects, 1);  // The connection stayed in step.
}

TEST_F(RedisTest, PutManyStoresEveryValueInOneRoundTrip) {
  std::unique_ptr<RedisBlockStore> s = MakeStore();
  const std::vector<size_t> sizes = {0, 1, 300, 65536, size_t{3} << 20, 7};
  std::vector<std::string> keys;
  std::vector<std::string> values;
  for (size_t i = 0; i < sizes.size(); ++i) {
    keys.push_back("many\r\n" + std::to_string(i));
    values.push_back(AllByteValues(sizes[i]));
  }
  std::vector<RemoteBlockStore::KeyValue> items;
  for (size_t i = 0; i < sizes.size(); ++i) {
    items.push_back({keys[i], values[i]});
  }
  std::vector<absl::Status> results(items.size(),
                                    absl::UnknownError("not set"));
  s->PutMany(items, absl::MakeSpan(results));
  int64_t bytes = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_THAT(results[i], IsOk()) << i;
    EXPECT_EQ(*redis_->Command({"GET", keys[i]}), values[i]) << i;
    bytes += static_cast<int64_t>(sizes[i]);
  }
  EXPECT_EQ(s->stats().calls, 1);
  EXPECT_EQ(s->stats().bytes_sent, bytes);
  // Replies and values stayed in step: the connection serves on.
  EXPECT_EQ(s->CountLeadingHits(keys), static_cast<int32_t>(keys.size()));
  EXPECT_EQ(s->stats().connects, 1);
  s->PutMany({}, {});  // Nothing: fine.
}

TEST_F(RedisTest, PutManyToAFullServerRefusesWhatDoesNotFitAndStaysInStep) {
  std::unique_ptr<RedisBlockStore> s = MakeStore();
  ASSERT_TRUE(
      redis_->Command({"CONFIG", "SET", "maxmemory-policy", "noeviction"})
          .ok());
  // 4 MiB above what the server uses now: of eight 1 MiB values some fit,
  // the rest are refused with OOM.
  const std::string info = *redis_->Command({"INFO", "memory"});
  const size_t at = info.find("used_memory:");
  ASSERT_NE(at, std::string::npos) << info;
  int64_t used = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      info.substr(at + 12, info.find('\r', at) - at - 12), &used));
  ASSERT_TRUE(redis_
                  ->Command({"CONFIG", "SET", "maxmemory",
                             std::to_string(used + (int64_t{4} << 20))})
                  .ok());
  std::vector<std::string> keys;
  const std::string value(size_t{1} << 20, 'm');
  std::vector<RemoteBlockStore::KeyValue> items;
  for (int i = 0; i < 8; ++i) keys.push_back("full" + std::to_string(i));
  for (const std::string& k : keys) items.push_back({k, value});
  std::vector<absl::Status> results(items.size());
  s->PutMany(items, absl::MakeSpan(results));
  int32_t stored = 0;
  int32_t refused = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].ok()) {
      ++stored;
      EXPECT_EQ(*redis_->Command({"STRLEN", keys[i]}), "1048576") << i;
    } else {
      EXPECT_THAT(results[i], StatusIs(absl::StatusCode::kResourceExhausted,
                                       ::testing::HasSubstr("OOM")))
          << i;
      EXPECT_EQ(*redis_->Command({"EXISTS", keys[i]}), "0") << i;
      ++refused;
    }
  }
  EXPECT_GT(stored, 0);
  EXPECT_GT(refused, 0);
  EXPECT_TRUE(s->connected());
  EXPECT_EQ(s->stats().errors, 0);
  EXPECT_EQ(s->stats().bytes_sent, int64_t{stored} << 20);
  ASSERT_TRUE(redis_->Command({"CONFIG", "SET", "maxmemory", "0"}).ok());
  EXPECT_THAT(s->Put("after", "1"), IsOk());
  EXPECT_EQ(s->stats().connects, 1);
}

TEST_F(RedisTest, PutManyToAPausedServerTimesOutEveryValue) {
  std::unique_ptr<RedisBlockStore> s = MakeStore();
  ASSERT_THAT(s->Put("warm", "1"), IsOk());
  redis_->Pause();
  const std::string small = "s";
  const std::vector<RemoteBlockStore::KeyValue> items = {
      {"p0", small}, {"p1", small}, {"p2", small}};
  std::vector<absl::Status> results(items.size());
  const absl::Time start = absl::Now();
  s->PutMany(items, absl::MakeSpan(results));  // Sent; no reply comes.
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(600));
  for (const absl::Status& r : results) {
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  EXPECT_EQ(s->stats().timeouts, 1);
  EXPECT_FALSE(s->connected());
  redis_->Resume();
}

TEST_F(RedisTest, PutOfALargeValueToAPausedServerTimesOutWhileSending) {
  std::unique_ptr<RedisBlockStore> s = MakeStore();
  ASSERT_THAT(s->Put("warm", "1"), IsOk());
  redis_->Pause();
  // 64 MiB cannot fit in the socket buffers: the send itself blocks.
  const std::string big(size_t{64} << 20, 'x');
  const absl::Time start = absl::Now();
  EXPECT_THAT(s->Put("big", big),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(600));
  EXPECT_EQ(s->stats().timeouts, 1);
  EXPECT_FALSE(s->connected());
  redis_->Resume();
  absl::SleepFor(absl::Milliseconds(60));  // Past the backoff.
  ASSERT_THAT(s->Put("after", "2"), IsOk());
  EXPECT_EQ(*redis_->Command({"GET", "after"}), "2");
}

TEST(RedisServerTest, LoopbackTcpServerServesAStoreOverTcp) {
  if (!RedisServer::Available()) GTEST_SKIP() << RedisServer::kSkipMessage;
  RedisServer::Options o;
  o.loopback_tcp = true;
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start(o);
  ASSERT_THAT(redis.status(), IsOk());
  ASSERT_GT((*redis)->tcp_port(), 0);
  EXPECT_EQ((*redis)->tcp_address(),
            "127.0.0.1:" + std::to_string((*redis)->tcp_port()));
  std::unique_ptr<RedisBlockStore> s =
      *RedisBlockStore::Create({.address = (*redis)->tcp_address()});
  const std::string v = AllByteValues(100000);
  ASSERT_THAT(s->Put("tcp", v), IsOk());
  EXPECT_EQ(*(*redis)->Command({"GET", "tcp"}), v);  // Over the socket.
  const std::string keys[] = {"tcp"};
  EXPECT_EQ(s->CountLeadingHits(keys), 1);
}

TEST_F(RedisTest, ReplicasShareBlocksThroughRedis) {
  const KVLayout layout = RemoteTestLayout();
  const TestChain c(layout, 16, 100, /*salt=*/7);
  std::unique_ptr<RemoteTier> writer = MakeTier(layout);
  StoreAll(*writer, c);
  EXPECT_EQ(writer->stats().writes.stored, 16);
  EXPECT_EQ(LoadChecked(c, layout), 16);
  EXPECT_EQ(last_stats_.loaded_blocks, 16);
  // Another tenant's chain of the same tokens shares nothing.
  EXPECT_EQ(LoadChecked(TestChain(layout, 16, 100, /*salt=*/8), layout), 0);
}

TEST_F(RedisTest, KilledServerGivesFastMissesThenReconnectsAfterRestart) {
  const KVLayout layout = RemoteTestLayout();
  const TestChain c(layout, 8, 100);
  std::unique_ptr<RemoteTier> tier = MakeTier(layout);
  StoreAll(*tier, c);
  Destinations d(8, layout.block_bytes());
  ASSERT_EQ(tier->LookupAndLoad(c.chain(), d.ptrs), 8);

  redis_->Kill();  // kill -9 with the connection open.
  const absl::Time start = absl::Now();
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(tier->LookupAndLoad(c.chain(), d.ptrs), 0);
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  const TestChain more(layout, 4, 5000);
  StoreAll(*tier, more);  // Fails (counted), never hangs.
  RemoteTierStats s = tier->stats();
  EXPECT_GE(s.read_store.errors + s.read_store.connect_failures, 1);
  EXPECT_GE(s.read_store.skipped_while_down, 1);
  EXPECT_EQ(s.writes.failed, 4);

  ASSERT_THAT(redis_->Restart(), IsOk());  // Empty: no persistence.
  absl::SleepFor(absl::Milliseconds(50));  // Past the backoff.
  EXPECT_EQ(tier->LookupAndLoad(c.chain(), d.ptrs), 0);
  const TestChain fresh(layout, 4, 9000);
  StoreAll(*tier, fresh);
  EXPECT_EQ(tier->stats().writes.stored, 8 + 4);
  EXPECT_EQ(LoadChecked(fresh, layout), 4);
}

TEST_F(RedisTest, PausedServerTimesOutWithinTheDeadline) {
  const KVLayout layout = RemoteTestLayout();
  const TestChain c(layout, 8, 100);
  std::unique_ptr<RemoteTier> tier = MakeTier(layout);
  StoreAll(*tier, c);
  redis_->Pause();  // SIGSTOP: connections stay open, nothing answers.
  Destinations d(8, layout.block_bytes());
  const absl::Time start = absl::Now();
  EXPECT_EQ(tier->LookupAndLoad(c.chain(), d.ptrs), 0);
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Milliseconds(600));
  EXPECT_EQ(tier->stats().read_store.timeouts, 1);
  // While it stays paused, later calls are skipped or time out: bounded.
  for (int i = 0; i < 3; ++i) tier->LookupAndLoad(c.chain(), d.ptrs);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  redis_->Resume();
  absl::SleepFor(absl::Milliseconds(60));
  EXPECT_EQ(tier->LookupAndLoad(c.chain(), d.ptrs), 8);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(d.bufs[i], c.Bytes(i));
}

TEST_F(RedisTest, CorruptedValuesUnderValidKeysAreNeverServed) {
  const KVLayout layout = RemoteTestLayout();
  const TestChain c(layout, 6, 100);
  std::unique_ptr<RemoteTier> tier = MakeTier(layout);
  StoreAll(*tier, c);
  const std::string key2 = tier->KeyOf(c.chain(), 2);
  absl::StatusOr<std::string> v = redis_->Command({"GET", key2});
  ASSERT_THAT(v.status(), IsOk());
  std::string bad = *v;
  bad[bad.size() - 1] ^= 0x01;  // One bit of the KV bytes.
  ASSERT_THAT(redis_->Command({"SET", key2, bad}).status(), IsOk());
  EXPECT_EQ(LoadChecked(c, layout), 2);
  EXPECT_EQ(last_stats_.verify_failures_by_kind[static_cast<size_t>(
                BlockValueCheck::kBadChecksum)],
            1);
  ASSERT_THAT(redis_->Command({"SET", key2, "garbage"}).status(), IsOk());
  EXPECT_EQ(LoadChecked(c, layout), 2);
  EXPECT_EQ(last_stats_.verify_failures, 1);
  ASSERT_THAT(redis_->Command({"SET", key2, *v}).status(), IsOk());
  EXPECT_EQ(LoadChecked(c, layout), 6);
}

class RedisEvictionTest : public RedisTest {
 protected:
  RedisEvictionTest() {
    opts_.maxmemory = "3mb";
    opts_.maxmemory_policy = "allkeys-lru";
  }
};

TEST_F(RedisEvictionTest, MaxmemoryEvictionMidChainIsAMissFromThere) {
  // 64 KiB blocks: 48 of them (3 MiB) do not all fit in maxmemory 3mb.
  const KVLayout layout = RemoteTestLayout(/*head_dim=*/512);
  ASSERT_EQ(layout.block_bytes(), size_t{64} << 10);
  const TestChain c(layout, 48, 100);
  std::unique_ptr<RemoteTier> tier = MakeTier(layout);
  StoreAll(*tier, c);
  int32_t present = 0;
  std::unique_ptr<RedisBlockStore> probe = MakeStore();
  std::vector<std::string> keys;
  for (size_t i = 0; i < c.size(); ++i)
    keys.push_back(tier->KeyOf(c.chain(), i));
  for (const std::string& k : keys) {
    present += probe->CountLeadingHits(absl::MakeConstSpan(&k, 1));
  }
  EXPECT_LT(present, 48) << "nothing was evicted";
  // Whatever survived, the load stops inside the leading run, every byte
  // right (LoadChecked). Not equal: under allkeys-lru Redis may evict again
  // between the probe and the load (seen once under ASan).
  const int32_t leading = probe->CountLeadingHits(keys);
  EXPECT_LE(LoadChecked(c, layout), leading);
  // A key evicted in the middle of a surviving run: a miss from there (on
  // an emptied server, so maxmemory evicts none of these).
  ASSERT_THAT(redis_->Command({"FLUSHALL"}).status(), IsOk());
  const TestChain small(RemoteTestLayout(), 8, 70000);
  std::unique_ptr<RemoteTier> small_tier = MakeTier(RemoteTestLayout());
  StoreAll(*small_tier, small);
  ASSERT_THAT(
      redis_->Command({"DEL", small_tier->KeyOf(small.chain(), 5)}).status(),
      IsOk());
  EXPECT_EQ(LoadChecked(small, RemoteTestLayout()), 5);
}

}  // namespace
}  // namespace pagedkv
