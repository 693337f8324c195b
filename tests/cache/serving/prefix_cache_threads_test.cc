// Several prefix-caching KVCacheManagers, one per thread, on one KVPool
// made with PoolConcurrency::kShared: the prefix index is the pool's, so a
// prompt one thread committed is a hit for the others. Every thread writes
// each token's bytes as a tag of its whole prefix and checks the bytes of
// every hit it gets, so a block matched before its writer committed it, or
// stolen between lookup and pin, shows up as a wrong word (or as a race
// under ThreadSanitizer: run with tags = ["threads"]). The same with layer
// groups (a full group and a window group; window groups only): every
// group's slots get their own tag, and each hit's window is checked.
#include <algorithm>
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
#include "allocator/window_blocks.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
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

// Layer groups of SmallLayout's 2 layers: none, a full group and a window
// group of 6 tokens, or two window groups (6 and 10: a window anchor).
enum class Grouping { kNone, kFullAndWindow, kWindowsOnly };

std::vector<LayerGroup> GroupsOf(Grouping g) {
  switch (g) {
    case Grouping::kNone:
      return {};
    case Grouping::kFullAndWindow:
      return {{.num_layers = 1}, {.num_layers = 1, .sliding_window = 6}};
    case Grouping::kWindowsOnly:
      return {{.num_layers = 1, .sliding_window = 6},
              {.num_layers = 1, .sliding_window = 10}};
  }
  return {};
}

// Group g's tag of token t (group 0's is the ungrouped tag).
uint32_t GroupTag(const std::vector<int32_t>& tokens, size_t t, int32_t g) {
  return (PrefixTag(tokens, t) ^ (static_cast<uint32_t>(g) * 0x9e3779b9u)) |
         1u;
}

// The hit blocks of every group hold the tokens' tags (a window group from
// its first needed block on, holes below). Returns "" or the problem.
std::string CheckHit(const KVCacheManager& m, const KVPool& pool,
                     SequenceId seq, const std::vector<int32_t>& tokens,
                     int64_t cached, const std::vector<LayerGroup>& groups) {
  if (groups.empty()) {
    absl::Span<const BlockId> table = *m.block_table(seq);
    for (int64_t t = 0; t < cached; ++t) {
      const std::string bad =
          CheckToken(pool, SlotOf(table, kBt, t), PrefixTag(tokens, t));
      if (!bad.empty()) return absl::StrFormat("hit token %d: %s", t, bad);
    }
    return "";
  }
  for (int32_t g = 0; g < static_cast<int32_t>(groups.size()); ++g) {
    absl::Span<const BlockId> table = m.group_table(seq, g)->blocks;
    const int64_t first =
        groups[g].is_window()
            ? WindowFirstNeededBlock(cached, groups[g].sliding_window, kBt)
            : 0;
    for (int64_t t = 0; t < cached; ++t) {
      const bool live = table[t / kBt].is_valid();
      if (live != (t / kBt >= first)) {
        return absl::StrFormat("group %d token %d: a hit of %d tokens %s", g,
                               t, cached, live ? "holds it" : "lacks it");
      }
      if (!live) continue;
      const std::string bad =
          CheckToken(pool, SlotOf(table, kBt, t), GroupTag(tokens, t, g));
      if (!bad.empty()) {
        return absl::StrFormat("group %d hit token %d: %s", g, t, bad);
      }
    }
  }
  return "";
}

// Writes the tags of tokens [first, first + k) from a step's group-major
// slots (request 0 only).
void WriteTags(KVPool& pool, const StepOutput& out,
               const std::vector<int32_t>& tokens, int64_t first, int64_t k,
               int32_t num_groups) {
  for (int32_t g = 0; g < std::max(num_groups, 1); ++g) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t slot = out.slot_mapping[g * out.group_stride + j];
      WriteToken(pool, slot,
                 num_groups == 0 ? PrefixTag(tokens, first + j)
                                 : GroupTag(tokens, first + j, g));
    }
  }
}

// One thread's requests: a shared system prompt, a short private suffix
// (a third of the hits then truncated back into the prompt), a few decode
// steps, then free. Returns "" or the first problem.
std::string RunThread(KVPool* pool, int index, Grouping grouping,
                      int64_t* hits) {
  const std::vector<LayerGroup> groups = GroupsOf(grouping);
  const int32_t num_groups = static_cast<int32_t>(groups.size());
  KVCacheManager::Options o;
  o.layout = SmallLayout(kBt);
  o.pool = pool;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.layer_groups = groups;
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
    const std::string bad =
        CheckHit(m, *pool, seq, tokens, out.num_cached_tokens, groups);
    if (!bad.empty()) return bad;
    *hits += out.num_cached_tokens;
    WriteTags(*pool, out, tokens, out.num_cached_tokens,
              static_cast<int64_t>(tokens.size()) - out.num_cached_tokens,
              num_groups);
    if (out.num_cached_tokens >= 8 && rng() % 3 == 0) {
      // Back into the system prompt's second block, a hit (published, and
      // maybe pinned by other threads right now): the steps below rewrite
      // it with other tokens, which must copy it, never change it in place.
      const absl::Status st = m.Truncate(seq, 6);
      if (!st.ok()) return st.ToString();
      tokens.resize(6);
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
      WriteTags(*pool, out, tokens, written, 1, num_groups);
    }
    if (!m.Free(seq).ok()) return "free failed";
    m.CheckInvariants();
  }
  return "";
}

class PrefixCacheThreadsTest : public ::testing::TestWithParam<Grouping> {};

TEST_P(PrefixCacheThreadsTest, ManagersShareCommittedPrefixesAcrossThreads) {
  const Grouping grouping = GetParam();
  absl::StatusOr<std::unique_ptr<KVPool>> pool = KVPool::Create(
      {.layout = GroupBlockLayout(SmallLayout(kBt), GroupsOf(grouping)),
       .num_blocks = kPoolBlocks * (grouping == Grouping::kNone ? 1 : 2),
       .concurrency = PoolConcurrency::kShared});
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<std::string> errors(kThreads);
  std::vector<int64_t> hits(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back(
        [&, i] { errors[i] = RunThread(pool->get(), i, grouping, &hits[i]); });
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

INSTANTIATE_TEST_SUITE_P(Groupings, PrefixCacheThreadsTest,
                         ::testing::Values(Grouping::kNone,
                                           Grouping::kFullAndWindow,
                                           Grouping::kWindowsOnly),
                         [](const auto& info) {
                           switch (info.param) {
                             case Grouping::kNone:
                               return std::string("Ungrouped");
                             case Grouping::kFullAndWindow:
                               return std::string("FullAndWindow");
                             case Grouping::kWindowsOnly:
                               return std::string("WindowsOnly");
                           }
                           return std::string();
                         });

}  // namespace
}  // namespace pagedkv
