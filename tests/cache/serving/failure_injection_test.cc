// Failure injection for every KVCacheManager call that can run out of
// blocks. Each case builds a state, then runs one operation on pools of
// every size from the smallest that holds the state to one where the
// operation fits, so the operation runs out at each possible point: with
// 0, 1, ... of the blocks it needs free, including part-way through a
// batch of sequences and between a copy-on-write copy and the fresh blocks
// of the same step. Whenever it returns RESOURCE_EXHAUSTED the manager
// must be deep-equal to its state before the call (every sequence's state,
// length and table, every counter, the pool's books and, in host mode,
// every byte of both tiers), no block may leak, and freeing everything
// must return the pool to empty. Sizes at or past the first success must
// all succeed. Every case runs in host and books-only storage and in each
// admission mode where the call can run out.
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::ManagerSnapshot;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::TakeSnapshot;

constexpr int32_t kMaxPool = 48;
constexpr int32_t kHostBlocks = 24;

struct Case {
  std::string name;
  // Builds the state; RESOURCE_EXHAUSTED means the pool is too small for
  // it (that size is skipped), anything else fails the test.
  std::function<absl::Status(CheckedManager&)> setup;
  std::function<absl::Status(CheckedManager&)> op;
  // Ids the snapshot compares (present or not).
  std::vector<SequenceId> ids;
  // Scan the host tier's size instead of the device pool's.
  bool scan_host = false;
  // kReservation guarantees this call never runs out (the sequences'
  // futures were reserved): the scan must see no failure at all.
  bool reserved = false;
  // The manager caches prefixes (Options::prefix_caching).
  bool prefix = false;
};

// Every byte of a pool (empty for books-only).
std::vector<std::byte> Bytes(const KVPool* pool) {
  std::vector<std::byte> out;
  if (pool == nullptr) return out;
  for (int32_t b = 0; b < pool->num_blocks(); ++b) {
    const std::byte* p = pool->BlockData(BlockId(b));
    out.insert(out.end(), p, p + pool->block_bytes());
  }
  return out;
}

// Writes a distinct tag into every slot of `out` (host mode), so that a
// failed call that moved bytes shows up.
void Fill(KVCacheManager& m, const StepOutput& out) {
  if (m.kv_pool() == nullptr) return;
  static uint32_t tag = 1;
  for (int64_t slot : out.slot_mapping) {
    testing::WriteToken(*m.kv_pool(), slot, tag++);
  }
}

absl::Status Add(CheckedManager& m, SequenceId id, int64_t prompt,
                 int64_t max_new) {
  StepOutput out;
  absl::Status s = m.Add(id, prompt, max_new, &out);
  if (s.ok()) Fill(*m, out);
  return s;
}

absl::Status Append(CheckedManager& m, std::vector<SlotRequest> requests) {
  StepOutput out;
  absl::Status s = m.Append(requests, &out);
  if (s.ok()) Fill(*m, out);
  out.copies.MarkDone();
  return s;
}

absl::Status SwapOut(CheckedManager& m, SequenceId id) {
  absl::StatusOr<SwapPlan> plan = m.SwapOut(id);
  if (!plan.ok()) return plan.status();
  if (m->storage() == StorageMode::kBooksOnly) return m.CompleteSwap(id);
  return absl::OkStatus();
}

absl::Status SwapIn(CheckedManager& m, SequenceId id) {
  absl::StatusOr<SwapPlan> plan = m.SwapIn(id);
  if (!plan.ok()) return plan.status();
  if (m->storage() == StorageMode::kBooksOnly) return m.CompleteSwap(id);
  return absl::OkStatus();
}

// Prefix caching: adds `id` with token ids first..first+n-1 and commits
// them all (they are written).
absl::Status AddIds(CheckedManager& m, SequenceId id, int32_t first, int32_t n,
                    int64_t max_new, bool commit = true) {
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = first + i;
  StepOutput out;
  absl::Status s = m->AddSequence(id, ids, max_new, &out);
  m->CheckInvariants();
  if (!s.ok()) return s;
  Fill(*m, out);
  if (!commit) return absl::OkStatus();
  const TokenCommit c{.seq = id, .num_tokens = n};
  return m->CommitTokens(absl::MakeConstSpan(&c, 1));
}

// Prefix caching: the cases where a hit, a re-hit or a switch meets a pool
// that runs out.
std::vector<Case> PrefixCases() {
  return {
      {"AddSequence of 29 tokens hitting 16 cached, evicting cached free "
       "blocks",
       [](CheckedManager& m) {
         if (absl::Status s = AddIds(m, 1, 100, 16, 4); !s.ok()) return s;
         if (absl::Status s = AddIds(m, 2, 500, 9, 4); !s.ok()) return s;
         return m.Free(2);  // Its 2 full blocks stay cached, free.
       },
       [](CheckedManager& m) { return AddIds(m, 3, 100, 29, 4, false); },
       {1, 2, 3},
       false,
       false,
       /*prefix=*/true},
      {"Readmit of a preempted 12-token sequence that re-hits 8",
       [](CheckedManager& m) {
         if (absl::Status s = AddIds(m, 1, 100, 12, 4); !s.ok()) return s;
         if (absl::Status s = m.Preempt(1); !s.ok()) return s;
         return AddIds(m, 2, 500, 5, 4);
       },
       [](CheckedManager& m) {
         StepOutput out;
         absl::Status s = m.Readmit(1, &out);
         if (s.ok()) Fill(*m, out);
         return s;
       },
       {1, 2},
       false,
       false,
       true},
      {"SwapIn of a 14-token sequence that re-hits its cached blocks",
       [](CheckedManager& m) {
         if (absl::Status s = AddIds(m, 1, 100, 14, 4); !s.ok()) return s;
         if (absl::Status s = SwapOut(m, 1); !s.ok()) return s;
         return AddIds(m, 2, 500, 5, 4);
       },
       [](CheckedManager& m) { return SwapIn(m, 1); },
       {1, 2},
       false,
       false,
       true},
      {"AppendSlots whose commit switches a block computed twice",
       [](CheckedManager& m) {
         if (absl::Status s = AddIds(m, 1, 100, 9, 8); !s.ok()) return s;
         return AddIds(m, 2, 100, 9, 8, false);  // Admitted: no hits yet.
       },
       [](CheckedManager& m) {
         static const int32_t kIds[6] = {7, 7, 7, 7, 7, 7};
         return Append(m, {{.seq = 2,
                            .num_tokens = 6,
                            .token_ids = absl::MakeConstSpan(kIds),
                            .commit = 9}});
       },
       {1, 2},
       false,
       /*reserved=*/true,
       true},
  };
}

std::vector<Case> Cases() {
  return {
      {"AddSequence of 13 tokens next to a running sequence",
       [](CheckedManager& m) { return Add(m, 1, 5, 3); },
       [](CheckedManager& m) { return Add(m, 2, 13, 3); },
       {1, 2}},
      {"AppendSlots of 6 tokens to each of 3 sequences (one batch)",
       [](CheckedManager& m) {
         for (SequenceId id : {1, 2, 3}) {
           if (absl::Status s = Add(m, id, 3, 12); !s.ok()) return s;
         }
         return absl::OkStatus();
       },
       [](CheckedManager& m) {
         return Append(m, {{.seq = 1, .num_tokens = 6},
                           {.seq = 2, .num_tokens = 6},
                           {.seq = 3, .num_tokens = 6}});
       },
       {1, 2, 3},
       /*scan_host=*/false,
       /*reserved=*/true},
      {"AppendSlots into forks sharing a partial tail (copies + fresh)",
       [](CheckedManager& m) {
         if (absl::Status s = Add(m, 1, 6, 10); !s.ok()) return s;
         if (absl::Status s = m.Fork(1, 2); !s.ok()) return s;
         return m.Fork(1, 3);
       },
       [](CheckedManager& m) {
         return Append(m, {{.seq = 2, .num_tokens = 1},
                           {.seq = 1, .num_tokens = 5},
                           {.seq = 3, .num_tokens = 3}});
       },
       {1, 2, 3},
       /*scan_host=*/false,
       /*reserved=*/true},
      {"Readmit of a preempted 9-token sequence",
       [](CheckedManager& m) {
         if (absl::Status s = Add(m, 1, 9, 4); !s.ok()) return s;
         if (absl::Status s = m.Preempt(1); !s.ok()) return s;
         return Add(m, 2, 5, 4);  // Takes part of the room 1 gave back.
       },
       [](CheckedManager& m) {
         StepOutput out;
         absl::Status s = m.Readmit(1, &out);
         if (s.ok()) Fill(*m, out);
         return s;
       },
       {1, 2}},
      {"SwapIn of a swapped-out 9-token sequence",
       [](CheckedManager& m) {
         if (absl::Status s = Add(m, 1, 9, 4); !s.ok()) return s;
         if (absl::Status s = SwapOut(m, 1); !s.ok()) return s;
         return Add(m, 2, 5, 4);
       },
       [](CheckedManager& m) { return SwapIn(m, 1); },
       {1, 2}},
      {"SwapOut of a 9-token sequence into a small host tier",
       [](CheckedManager& m) {
         if (absl::Status s = Add(m, 1, 5, 4); !s.ok()) return s;
         if (absl::Status s = SwapOut(m, 1); !s.ok()) return s;
         return Add(m, 2, 9, 4);
       },
       [](CheckedManager& m) { return SwapOut(m, 2); },
       {1, 2},
       /*scan_host=*/true},
  };
}

// kReservation only: the calls that reserve a sequence's future.
std::vector<Case> ReservationCases() {
  return {
      {"Fork of a sequence with 10 tokens still to come",
       [](CheckedManager& m) { return Add(m, 1, 6, 10); },
       [](CheckedManager& m) { return m.Fork(1, 2); },
       {1, 2}},
      {"Truncate of a fork below the blocks its parent keeps live",
       [](CheckedManager& m) {
         if (absl::Status s = Add(m, 1, 10, 4); !s.ok()) return s;
         return m.Fork(1, 2);
       },
       [](CheckedManager& m) { return m.Truncate(2, 3); },
       {1, 2}},
  };
}

void Scan(const Case& c, StorageMode storage, AdmissionMode admission) {
  SCOPED_TRACE(c.name + std::string(" / ") + testing::StorageName(storage) +
               " / " + testing::AdmissionName(admission));
  int failures = 0;
  int successes = 0;
  for (int32_t size = 1; size <= kMaxPool; ++size) {
    SCOPED_TRACE("pool of " + std::to_string(size) + " blocks");
    KVCacheManager::Options o;
    o.layout = SmallLayout();
    o.num_blocks = c.scan_host ? kMaxPool : size;
    o.num_host_blocks = c.scan_host ? size : kHostBlocks;
    o.storage = storage;
    o.admission = admission;
    o.watermark = 0;
    o.prefix_caching.enabled = c.prefix;
    absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
        KVCacheManager::Create(o);
    ASSERT_TRUE(made.ok()) << made.status();
    CheckedManager m(*std::move(made));
    const absl::Status setup = c.setup(m);
    if (absl::IsResourceExhausted(setup)) continue;
    ASSERT_TRUE(setup.ok()) << setup;

    const ManagerSnapshot before = TakeSnapshot(*m, c.ids);
    const std::vector<std::byte> device = Bytes(m->kv_pool());
    const std::vector<std::byte> host = Bytes(m->host_pool());
    const int32_t free_before = m->books().num_free_blocks();
    const absl::Status status = c.op(m);
    if (status.ok()) {
      ++successes;
    } else {
      ASSERT_TRUE(absl::IsResourceExhausted(status)) << status;
      // Sizes past the first success must succeed too.
      ASSERT_EQ(successes, 0) << "failed after a smaller pool succeeded";
      ++failures;
      EXPECT_EQ(TakeSnapshot(*m, c.ids), before) << status;
      EXPECT_EQ(m->books().num_free_blocks(), free_before);
      EXPECT_TRUE(Bytes(m->kv_pool()) == device) << "device bytes moved";
      EXPECT_TRUE(Bytes(m->host_pool()) == host) << "host bytes moved";
    }
    // No block leaked either way.
    for (SequenceId id : c.ids) {
      if (m->contains(id)) {
        ASSERT_TRUE(m.Free(id).ok());
      }
    }
    EXPECT_EQ(m->books().num_free_blocks(), m->books().num_blocks());
    EXPECT_EQ(m->books().num_reserved_blocks(), 0);
    EXPECT_EQ(m->stats().host_used_blocks, 0);
  }
  EXPECT_GT(successes, 0);
  if (c.reserved && admission == AdmissionMode::kReservation) {
    EXPECT_EQ(failures, 0) << "a reserved sequence ran out";
  } else {
    // The scan reached both sides of every exhaustion point.
    EXPECT_GT(failures, 0);
  }
}

TEST(FailureInjectionTest, EveryCallThatRunsOutChangesNothing) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    for (AdmissionMode admission :
         {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
      for (const Case& c : Cases()) Scan(c, storage, admission);
    }
  }
}

TEST(FailureInjectionTest, PrefixCacheCallsThatRunOutChangeNothing) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    for (AdmissionMode admission :
         {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
      for (const Case& c : PrefixCases()) Scan(c, storage, admission);
    }
  }
}

TEST(FailureInjectionTest, ReservationsThatRunOutChangeNothing) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    for (const Case& c : ReservationCases()) {
      Scan(c, storage, AdmissionMode::kReservation);
    }
  }
}

}  // namespace
}  // namespace pagedkv
