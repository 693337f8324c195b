// Several prefix-caching KVCacheManagers, one per thread, on one KVPool
// made with PoolConcurrency::kShared: the prefix index is the pool's, so a
// prompt one thread committed is a hit for the others. Every thread writes
// each token's bytes as a tag of its whole prefix and checks the bytes of
// every hit it gets, so a block matched before its writer committed it, or
// stolen between lookup and pin, shows up as a wrong word (or as a race
// under ThreadSanitizer: run with tags = ["threads"]).
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::WriteToken;

constexpr int kThreads = 3;
constexpr int kRequests = 600;
constexpr int32_t kPoolBlocks = 96;
constexpr int32_t kBt = 4;

uint32_t PrefixTag(const std::vector<int32_t>& tokens, size_t t) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i <= t; ++i) {
    h = (h ^ static_cast<uint32_t>(tokens[i])) * 16777619u;
  }
  return h | 1u;
}

// One thread's requests: a shared system prompt, a short private suffix, a
// few decode steps, then free. Returns "" or the first problem.
std::string RunThread(KVPool* pool, int index, int64_t* hits) {
  KVCacheManager::Options o;
  o.layout = SmallLayout(kBt);
  o.pool = pool;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
      KVCacheManager::Create(o);
  if (!made.ok()) return made.status().ToString();
  KVCacheManager& m = **made;
  std::mt19937 rng(100 + index);
  StepOutput out;
  for (int r = 0; r < kRequests; ++r) {
    std::vector<int32_t> tokens(8 + rng() % 9);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = i < 8 ? static_cast<int32_t>(1000 * (1 + rng() % 3) + i)
                        : static_cast<int32_t>(rng() % 5);
    }
    const SequenceId seq = r;
    const absl::Status added = m.AddSequence(seq, tokens, 4, &out);
    if (absl::IsResourceExhausted(added)) continue;  // Others hold the pool.
    if (!added.ok()) return added.ToString();
    absl::Span<const BlockId> table = *m.block_table(seq);
    for (int64_t t = 0; t < out.num_cached_tokens; ++t) {
      const std::string bad =
          CheckToken(*pool, SlotOf(table, kBt, t), PrefixTag(tokens, t));
      if (!bad.empty()) return absl::StrFormat("hit token %d: %s", t, bad);
    }
    *hits += out.num_cached_tokens;
    for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
      WriteToken(*pool, out.slot_mapping[i],
                 PrefixTag(tokens, out.num_cached_tokens + i));
    }
    for (int step = 0; step < 4; ++step) {
      const int32_t next = static_cast<int32_t>(rng() % 5);
      const int64_t written = static_cast<int64_t>(tokens.size());
      tokens.push_back(next);
      const SlotRequest req{.seq = seq,
                            .num_tokens = 1,
                            .token_ids = absl::MakeConstSpan(&next, 1),
                            .commit = written};
      const absl::Status st = m.AppendSlots(absl::MakeConstSpan(&req, 1), &out);
      if (absl::IsResourceExhausted(st)) {
        tokens.pop_back();
        break;
      }
      if (!st.ok()) return st.ToString();
      WriteToken(*pool, out.slot_mapping[0],
                 PrefixTag(tokens, tokens.size() - 1));
    }
    if (!m.Free(seq).ok()) return "free failed";
    m.CheckInvariants();
  }
  return "";
}

TEST(PrefixCacheThreadsTest, ManagersShareCommittedPrefixesAcrossThreads) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = SmallLayout(kBt),
                      .num_blocks = kPoolBlocks,
                      .concurrency = PoolConcurrency::kShared});
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<std::string> errors(kThreads);
  std::vector<int64_t> hits(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back(
        [&, i] { errors[i] = RunThread(pool->get(), i, &hits[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(errors[i], "") << "thread " << i;
    EXPECT_GT(hits[i], 0) << "thread " << i << " never hit";
  }
  const BlockPool& books = (*pool)->books();
  books.CheckInvariants();
  EXPECT_EQ(books.num_free_blocks(), books.num_blocks());
  EXPECT_GT(books.prefix_stats().evicted_blocks, 0);
}

}  // namespace
}  // namespace pagedkv
