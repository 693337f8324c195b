#include "cache/serving/kv_cache_manager.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/copy_on_write.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/failing_memory_resource.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ManagerSnapshot;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TableOf;
using ::pagedkv::testing::TakeSnapshot;
using ::pagedkv::testing::WriteToken;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int32_t kBt = 4;  // SmallLayout's block_tokens.
using Code = absl::StatusCode;

struct Mode {
  StorageMode storage;
  AdmissionMode admission;
};

std::string ModeName(const ::testing::TestParamInfo<Mode>& info) {
  return std::string(testing::StorageName(info.param.storage)) +
         testing::AdmissionName(info.param.admission);
}

KVCacheManager::Options OptionsFor(Mode mode, int32_t num_blocks,
                                   int32_t num_host_blocks = 0,
                                   double watermark = 0.0) {
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = num_blocks;
  o.storage = mode.storage;
  o.admission = mode.admission;
  o.watermark = watermark;
  o.num_host_blocks = num_host_blocks;
  return o;
}

// operator* on an error StatusOr crashes with the status.
CheckedManager MakeManager(Mode mode, int32_t num_blocks,
                           int32_t num_host_blocks = 0,
                           double watermark = 0.0) {
  return CheckedManager(*KVCacheManager::Create(
      OptionsFor(mode, num_blocks, num_host_blocks, watermark)));
}

constexpr Mode kHostWatermark{StorageMode::kHost, AdmissionMode::kWatermark};
constexpr Mode kHostReservation{StorageMode::kHost,
                                AdmissionMode::kReservation};
constexpr Mode kBooksWatermark{StorageMode::kBooksOnly,
                               AdmissionMode::kWatermark};
constexpr Mode kBooksReservation{StorageMode::kBooksOnly,
                                 AdmissionMode::kReservation};

// Expects `slots` to be tokens [first, first + slots.size()) of `table`.
void ExpectSlotsFollowTable(absl::Span<const int64_t> slots,
                            absl::Span<const BlockId> table, int64_t first) {
  for (size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(slots[i], SlotOf(table, kBt, first + static_cast<int64_t>(i)))
        << "token " << first + static_cast<int64_t>(i);
  }
}

std::vector<int64_t> RangeOf(const StepOutput& out, size_t request) {
  return std::vector<int64_t>(
      out.slot_mapping.begin() + out.request_offsets[request],
      out.slot_mapping.begin() + out.request_offsets[request + 1]);
}

KVCacheManager::TableVersion VersionOf(const KVCacheManager& m,
                                       SequenceId seq) {
  absl::StatusOr<KVCacheManager::RunningTable> t = m.running_table(seq);
  EXPECT_THAT(t, IsOk());
  return t.ok() ? t->version : KVCacheManager::TableVersion{};
}

// ---------------------------------------------------------------------------
// Creation and configuration

TEST(KVCacheManagerTest, HeaderExampleRuns) {
  const KVLayout layout = SmallLayout(16);
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
      KVCacheManager::Create({.layout = layout, .num_blocks = 4096});
  ASSERT_THAT(made, IsOk());
  KVCacheManager& m = **made;
  StepOutput out;
  ASSERT_EQ(m.CanAdmit(1024, 256), Admission::kAdmit);
  ASSERT_THAT(m.AddSequence(/*seq=*/7, 1024, 256, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, SizeIs(1024));
  const SlotRequest step[] = {{.seq = 7, .num_tokens = 1}};
  ASSERT_THAT(m.AppendSlots(step, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, SizeIs(1));
  EXPECT_EQ(StepOutput::BlockOf(out.slot_mapping[0], m.block_tokens()),
            (*m.block_table(7))[64]);
  EXPECT_THAT(m.Free(7), IsOk());
  m.CheckInvariants();
  EXPECT_EQ(m.stats().used_blocks, 0);
}

TEST(KVCacheManagerTest, CreateRejectsBadOptions) {
  struct Case {
    const char* name;
    std::function<void(KVCacheManager::Options&)> edit;
    Code code;
    std::string message;
  };
  absl::StatusOr<std::unique_ptr<KVPool>> other_pool =
      KVPool::Create({.layout = SmallLayout(8), .num_blocks = 4});
  ASSERT_THAT(other_pool, IsOk());
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = SmallLayout(), .num_blocks = 4});
  ASSERT_THAT(pool, IsOk());
  const std::vector<Case> cases = {
      {"bad layout", [](auto& o) { o.layout.num_layers = 0; },
       Code::kInvalidArgument, ""},
      {"no blocks", [](auto& o) { o.num_blocks = 0; }, Code::kInvalidArgument,
       "num_blocks must be > 0, got 0"},
      {"negative blocks", [](auto& o) { o.num_blocks = -3; },
       Code::kInvalidArgument, "got -3"},
      {"watermark 1", [](auto& o) { o.watermark = 1.0; },
       Code::kInvalidArgument, "watermark must be in [0, 1), got 1"},
      {"negative watermark", [](auto& o) { o.watermark = -0.5; },
       Code::kInvalidArgument, "got -0.5"},
      {"NaN watermark", [](auto& o) { o.watermark = std::nan(""); },
       Code::kInvalidArgument, "watermark"},
      {"negative host blocks", [](auto& o) { o.num_host_blocks = -1; },
       Code::kInvalidArgument, "num_host_blocks must be >= 0, got -1"},
      {"books-only with a pool",
       [&](auto& o) {
         o.storage = StorageMode::kBooksOnly;
         o.pool = pool->get();
       },
       Code::kInvalidArgument, "books-only manager takes no KVPool"},
      {"pool of another layout", [&](auto& o) { o.pool = other_pool->get(); },
       Code::kInvalidArgument, "block_tokens=8"},
      {"books-only with no blocks",
       [](auto& o) {
         o.storage = StorageMode::kBooksOnly;
         o.num_blocks = 0;
       },
       Code::kInvalidArgument, "num_blocks must be > 0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    KVCacheManager::Options o = OptionsFor(kHostWatermark, 8);
    c.edit(o);
    EXPECT_THAT(KVCacheManager::Create(o),
                StatusIs(c.code, HasSubstr(c.message)));
  }
  // The pool given to a failed Create is untouched.
  EXPECT_EQ((*pool)->books().num_free_blocks(), 4);
}

TEST(KVCacheManagerTest, CreateReportsMemoryExhaustionAndFreesWhatItTook) {
  // The device pool's bytes.
  testing::FailingMemoryResource device_fails(/*fail_from=*/1);
  KVCacheManager::Options o = OptionsFor(kHostWatermark, 8, 4);
  o.memory = &device_fails;
  EXPECT_THAT(KVCacheManager::Create(o),
              StatusIs(Code::kResourceExhausted, HasSubstr("bytes")));
  EXPECT_EQ(device_fails.num_live_allocations(), 0);
  // The host tier's bytes (the second allocation).
  testing::FailingMemoryResource host_fails(/*fail_from=*/2);
  o.memory = &host_fails;
  EXPECT_THAT(KVCacheManager::Create(o),
              StatusIs(Code::kResourceExhausted, HasSubstr("bytes")));
  EXPECT_EQ(host_fails.num_live_allocations(), 0);
  // Books-only takes no bytes at all.
  testing::FailingMemoryResource never(/*fail_from=*/1);
  o = OptionsFor(kBooksWatermark, 8, 4);
  o.memory = &never;
  EXPECT_THAT(KVCacheManager::Create(o), IsOk());
  EXPECT_EQ(never.num_allocations(), 0);
}

TEST(KVCacheManagerTest, CreateOnAGivenPoolUsesItAndIgnoresNumBlocks) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = SmallLayout(), .num_blocks = 6});
  ASSERT_THAT(pool, IsOk());
  for (AdmissionMode admission :
       {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
    KVCacheManager::Options o =
        OptionsFor({StorageMode::kHost, admission}, /*num_blocks=*/0);
    o.pool = pool->get();
    CheckedManager m(*KVCacheManager::Create(o));
    EXPECT_EQ(m->kv_pool(), pool->get());
    EXPECT_EQ(&m->books(), &(*pool)->books());
    EXPECT_EQ(m->stats().num_blocks, 6);
    ASSERT_THAT(m.Add(1, 5, 0), IsOk());
    EXPECT_EQ((*pool)->books().num_used_blocks(), 2);
  }
  // Both managers are gone: their blocks are back.
  EXPECT_EQ((*pool)->books().num_free_blocks(), 6);
  EXPECT_EQ((*pool)->books().stats().num_reservations, 0);
}

TEST(KVCacheManagerTest, AccessorsDescribeTheConfiguration) {
  CheckedManager host = MakeManager(kHostWatermark, 8, 3);
  EXPECT_EQ(host->storage(), StorageMode::kHost);
  EXPECT_EQ(host->block_tokens(), kBt);
  EXPECT_EQ(host->layout(), SmallLayout());
  ASSERT_NE(host->kv_pool(), nullptr);
  EXPECT_EQ(host->kv_pool()->num_blocks(), 8);
  ASSERT_NE(host->host_pool(), nullptr);
  EXPECT_EQ(host->host_pool()->num_blocks(), 3);
  EXPECT_EQ(host->stats().host_blocks, 3);
  EXPECT_EQ(host->stats().free_blocks, 8);

  CheckedManager books = MakeManager(kBooksReservation, 8);
  EXPECT_EQ(books->storage(), StorageMode::kBooksOnly);
  EXPECT_EQ(books->kv_pool(), nullptr);
  EXPECT_EQ(books->host_pool(), nullptr);
  EXPECT_EQ(books->stats().host_blocks, 0);
  EXPECT_EQ(books->books().num_blocks(), 8);
}

// ---------------------------------------------------------------------------
// CanAdmit

TEST(KVCacheManagerTest, WatermarkAdmitsWhileTheWatermarkStaysFree) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    // 20 blocks, watermark 0.1: keep 2 free.
    CheckedManager m =
        MakeManager({storage, AdmissionMode::kWatermark}, 20, 0, 0.1);
    EXPECT_EQ(m->CanAdmit(18 * kBt, 0), Admission::kAdmit);      // 2 left.
    EXPECT_EQ(m->CanAdmit(18 * kBt + 1, 0), Admission::kNever);  // 19 blocks.
    // max_new_tokens does not count in the optimistic mode.
    EXPECT_EQ(m->CanAdmit(kBt, 1'000'000), Admission::kAdmit);
    ASSERT_THAT(m.Add(1, 10 * kBt, 0), IsOk());                 // 10 free.
    EXPECT_EQ(m->CanAdmit(8 * kBt, 0), Admission::kAdmit);      // 2 left.
    EXPECT_EQ(m->CanAdmit(8 * kBt + 1, 0), Admission::kLater);  // 1 left.
    EXPECT_EQ(m->CanAdmit(18 * kBt, 0), Admission::kLater);
    EXPECT_EQ(m->CanAdmit(18 * kBt + 1, 0), Admission::kNever);
    EXPECT_THAT(
        m.Add(2, 8 * kBt + 1, 0),
        StatusIs(Code::kResourceExhausted,
                 AllOf(HasSubstr("sequence 2 (33 prompt + 0 new tokens) "
                                 "does not fit now"),
                       HasSubstr("10 of 20 blocks free"))));
    EXPECT_THAT(
        m.Add(3, 18 * kBt + 1, 5),
        StatusIs(Code::kResourceExhausted,
                 HasSubstr("(73 prompt + 5 new tokens) can never fit")));
    EXPECT_FALSE(m->contains(2));
    EXPECT_FALSE(m->contains(3));
    ASSERT_THAT(m.Add(4, 8 * kBt, 0), IsOk());
    EXPECT_EQ(m->stats().free_blocks, 2);
  }
}

TEST(KVCacheManagerTest, WatermarkRoundsTheKeptBlocksUp) {
  struct Case {
    int32_t num_blocks;
    double watermark;
    int32_t keep;
  };
  for (const Case& c :
       {Case{20, 0.0, 0}, Case{20, 0.01, 1}, Case{10, 0.25, 3},
        Case{10, 0.3, 3}, Case{4, 0.5, 2}, Case{12, 0.99, 12}}) {
    SCOPED_TRACE(::testing::Message()
                 << c.num_blocks << " blocks, watermark " << c.watermark);
    CheckedManager m =
        MakeManager(kHostWatermark, c.num_blocks, 0, c.watermark);
    const int32_t room = c.num_blocks - c.keep;
    if (room > 0) {
      EXPECT_EQ(m->CanAdmit(room * kBt, 0), Admission::kAdmit);
    }
    EXPECT_EQ(m->CanAdmit(room * kBt + 1, 0), Admission::kNever);
  }
}

// 7% of 100 blocks is 7 blocks, but 0.07 * 100 is 7.000000000000001 in
// double, and ceil() keeps 8.
TEST(KVCacheManagerTest, WatermarkOfAnExactFractionKeepsExactlyThatMany) {
  CheckedManager m = MakeManager(kHostWatermark, 100, 0, 0.07);
  EXPECT_EQ(m->CanAdmit(93 * kBt, 0), Admission::kAdmit);
  EXPECT_EQ(m->CanAdmit(93 * kBt + 1, 0), Admission::kNever);
}

TEST(KVCacheManagerTest, ReservationAdmitsPromptPlusMaxNewTokens) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kReservation}, 10);
    EXPECT_EQ(m->CanAdmit(20, 20), Admission::kAdmit);  // 10 blocks.
    EXPECT_EQ(m->CanAdmit(20, 21), Admission::kNever);  // 11 blocks.
    EXPECT_EQ(m->CanAdmit(1, 39), Admission::kAdmit);
    EXPECT_EQ(m->CanAdmit(1, 40), Admission::kNever);
    ASSERT_THAT(m.Add(1, 4, 16), IsOk());  // 1 block used, 4 reserved.
    EXPECT_EQ(m->stats().used_blocks, 1);
    EXPECT_EQ(m->stats().reserved_blocks, 4);
    EXPECT_EQ(m->stats().free_blocks, 9);
    EXPECT_EQ(m->CanAdmit(20, 0), Admission::kAdmit);  // 5 unreserved.
    EXPECT_EQ(m->CanAdmit(21, 0), Admission::kLater);
    EXPECT_EQ(m->CanAdmit(4, 36), Admission::kLater);  // 10: later, not never.
    EXPECT_THAT(
        m.Add(2, 21, 0),
        StatusIs(Code::kResourceExhausted,
                 AllOf(HasSubstr("does not fit now"),
                       HasSubstr("5 of 10 blocks free and unreserved"))));
    EXPECT_THAT(m.Add(3, 41, 0),
                StatusIs(Code::kResourceExhausted, HasSubstr("can never fit")));
    ASSERT_THAT(m.Add(4, 17, 3), IsOk());
    EXPECT_EQ(m->stats().reserved_blocks, 4);
    EXPECT_EQ(m->stats().used_blocks, 6);
    EXPECT_EQ(m->CanAdmit(1, 0), Admission::kLater);
  }
}

TEST(KVCacheManagerTest, CanAdmitAnswersNeverForBadRequests) {
  for (Mode mode : {kHostWatermark, kBooksReservation}) {
    CheckedManager m = MakeManager(mode, 10);
    EXPECT_EQ(m->CanAdmit(0, 0), Admission::kNever);
    EXPECT_EQ(m->CanAdmit(-5, 0), Admission::kNever);
    EXPECT_EQ(m->CanAdmit(4, -1), Admission::kNever);
  }
}

// A sequence may hold at most kMaxSequenceTokens tokens, so a request past
// it can never run: CanAdmit must not say kAdmit (and AddSequence must not
// admit it), or the request fails later with OUT_OF_RANGE.
TEST(KVCacheManagerTest, CanAdmitNeverAdmitsMoreThanASequenceMayHold) {
  constexpr int64_t kMax = KVCacheManager::kMaxSequenceTokens;
  KVCacheManager::Options o;
  o.layout = SmallLayout(1 << 16);
  o.storage = StorageMode::kBooksOnly;
  o.num_blocks = static_cast<int32_t>(kMax / (1 << 16)) + 4;  // Room for more.
  o.watermark = 0;
  for (AdmissionMode admission :
       {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
    SCOPED_TRACE(testing::AdmissionName(admission));
    o.admission = admission;
    CheckedManager m(*KVCacheManager::Create(o));
    EXPECT_EQ(m->CanAdmit(kMax + 1, 0), Admission::kNever);
    if (admission == AdmissionMode::kReservation) {
      EXPECT_EQ(m->CanAdmit(kMax, 1), Admission::kNever);
    }
  }
}

// BlocksFor(prompt) and prompt + max_new_tokens overflow int64 for huge
// requests; the answer must still be kNever.
TEST(KVCacheManagerTest, CanAdmitAnswersNeverForHugeRequests) {
  constexpr int64_t kHuge = std::numeric_limits<int64_t>::max();
  for (Mode mode : {kHostWatermark, kHostReservation}) {
    SCOPED_TRACE(testing::AdmissionName(mode.admission));
    CheckedManager m = MakeManager(mode, 10);
    EXPECT_EQ(m->CanAdmit(kHuge, 0), Admission::kNever);
    EXPECT_EQ(m->CanAdmit(kHuge - 1, 0), Admission::kNever);
    if (mode.admission == AdmissionMode::kReservation) {
      EXPECT_EQ(m->CanAdmit(4, kHuge), Admission::kNever);
    }
  }
}

// ---------------------------------------------------------------------------
// The operations, in every storage and admission mode.

class KVCacheManagerModesTest : public ::testing::TestWithParam<Mode> {
 protected:
  bool books_only() const {
    return GetParam().storage == StorageMode::kBooksOnly;
  }
  bool reservation() const {
    return GetParam().admission == AdmissionMode::kReservation;
  }
  CheckedManager Make(int32_t num_blocks, int32_t num_host_blocks = 0) {
    return MakeManager(GetParam(), num_blocks, num_host_blocks);
  }
};

INSTANTIATE_TEST_SUITE_P(Modes, KVCacheManagerModesTest,
                         ::testing::Values(kHostWatermark, kHostReservation,
                                           kBooksWatermark, kBooksReservation),
                         ModeName);

TEST_P(KVCacheManagerModesTest, AddSequenceGivesConsecutiveSlotsInEachBlock) {
  CheckedManager m = Make(16);
  StepOutput out;
  ASSERT_THAT(m.Add(1, 10, 6, &out), IsOk());
  EXPECT_EQ(*m->state(1), SequenceState::kRunning);
  EXPECT_EQ(*m->num_tokens(1), 10);
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(table, SizeIs(3));
  EXPECT_THAT(out.request_offsets, ElementsAre(0, 10));
  ASSERT_THAT(out.slot_mapping, SizeIs(10));
  for (int64_t t = 0; t < 10; ++t) {
    EXPECT_EQ(out.slot_mapping[t],
              int64_t{table[t / kBt].value()} * kBt + t % kBt);
    EXPECT_EQ(StepOutput::BlockOf(out.slot_mapping[t], kBt), table[t / kBt]);
    EXPECT_EQ(StepOutput::OffsetOf(out.slot_mapping[t], kBt), t % kBt);
    if ((t + 1) % kBt != 0 && t + 1 < 10) {
      EXPECT_EQ(out.slot_mapping[t + 1], out.slot_mapping[t] + 1);
    }
  }
  EXPECT_TRUE(out.copies.empty());
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.used_blocks, 3);
  EXPECT_EQ(s.free_blocks, 13);
  EXPECT_EQ(s.num_sequences, 1);
  EXPECT_EQ(s.running_sequences, 1);
  EXPECT_EQ(s.reserved_blocks, reservation() ? 1 : 0);  // 4 blocks for 16.
  EXPECT_EQ(s.shared_blocks, 0);
}

TEST_P(KVCacheManagerModesTest, AddSequenceResetsTheOutput) {
  CheckedManager m = Make(16);
  StepOutput out;
  out.slot_mapping = {99, 98};
  out.request_offsets = {0, 1, 2};
  ASSERT_THAT(m.Add(1, 3, 1, &out), IsOk());
  EXPECT_THAT(out.request_offsets, ElementsAre(0, 3));
  EXPECT_THAT(out.slot_mapping, SizeIs(3));
}

TEST_P(KVCacheManagerModesTest, DecodeStepsFillTheTailThenCrossABlockBoundary) {
  CheckedManager m = Make(16);
  ASSERT_THAT(m.Add(1, 6, 10), IsOk());
  const std::vector<BlockId> first = TableOf(*m, 1);
  ASSERT_THAT(first, SizeIs(2));
  StepOutput out;
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, ElementsAre(first[1].value() * kBt + 2));
  EXPECT_THAT(out.request_offsets, ElementsAre(0, 1));
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, ElementsAre(first[1].value() * kBt + 3));
  EXPECT_EQ(TableOf(*m, 1), first);
  EXPECT_EQ(m->stats().used_blocks, 2);
  // Token 8 opens a third block at offset 0.
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  const std::vector<BlockId> grown = TableOf(*m, 1);
  ASSERT_THAT(grown, SizeIs(3));
  EXPECT_EQ(grown[0], first[0]);
  EXPECT_EQ(grown[1], first[1]);
  EXPECT_THAT(out.slot_mapping, ElementsAre(grown[2].value() * kBt + 0));
  EXPECT_EQ(*m->num_tokens(1), 9);
  EXPECT_EQ(m->stats().used_blocks, 3);
  EXPECT_EQ(m->stats().reserved_blocks, reservation() ? 1 : 0);
  // A chunk that crosses two boundaries at once.
  ASSERT_THAT(m.Append(1, 6, &out), IsOk());
  ExpectSlotsFollowTable(out.slot_mapping, TableOf(*m, 1), 9);
  EXPECT_THAT(TableOf(*m, 1), SizeIs(4));
  EXPECT_EQ(*m->num_tokens(1), 15);
}

TEST_P(KVCacheManagerModesTest, BatchedRaggedRequestsGetTheirOwnRanges) {
  CheckedManager m = Make(16);
  ASSERT_THAT(m.Add(1, 3, 10), IsOk());
  ASSERT_THAT(m.Add(2, 4, 10), IsOk());
  ASSERT_THAT(m.Add(3, 1, 10), IsOk());
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1},
                              {.seq = 2, .num_tokens = 5},
                              {.seq = 3, .num_tokens = 3}};
  StepOutput out;
  ASSERT_THAT(m.Append(step, &out), IsOk());
  EXPECT_THAT(out.request_offsets, ElementsAre(0, 1, 6, 9));
  ASSERT_THAT(out.slot_mapping, SizeIs(9));
  ExpectSlotsFollowTable(RangeOf(out, 0), TableOf(*m, 1), 3);
  ExpectSlotsFollowTable(RangeOf(out, 1), TableOf(*m, 2), 4);
  ExpectSlotsFollowTable(RangeOf(out, 2), TableOf(*m, 3), 1);
  EXPECT_EQ(*m->num_tokens(1), 4);
  EXPECT_EQ(*m->num_tokens(2), 9);
  EXPECT_EQ(*m->num_tokens(3), 4);
  EXPECT_THAT(TableOf(*m, 1), SizeIs(1));
  EXPECT_THAT(TableOf(*m, 2), SizeIs(3));
  EXPECT_THAT(TableOf(*m, 3), SizeIs(1));
  // Every slot is distinct.
  std::vector<int64_t> sorted = out.slot_mapping;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
}

TEST_P(KVCacheManagerModesTest, AppendSlotsWithNoRequestsGivesOneOffset) {
  CheckedManager m = Make(4);
  ASSERT_THAT(m.Add(1, 3, 3), IsOk());
  StepOutput out;
  out.slot_mapping = {5};
  ASSERT_THAT(m.Append(absl::Span<const SlotRequest>(), &out), IsOk());
  EXPECT_THAT(out.request_offsets, ElementsAre(0));
  EXPECT_THAT(out.slot_mapping, IsEmpty());
}

TEST_P(KVCacheManagerModesTest, ForkSharesEveryBlockOfTheParent) {
  CheckedManager m = Make(16);
  ASSERT_THAT(m.Add(1, 6, 10), IsOk());
  const int32_t reserved_before = m->stats().reserved_blocks;
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  EXPECT_EQ(TableOf(*m, 2), TableOf(*m, 1));
  EXPECT_EQ(*m->num_tokens(2), 6);
  EXPECT_EQ(*m->state(2), SequenceState::kRunning);
  for (BlockId b : TableOf(*m, 1)) EXPECT_EQ(m->books().ref_count(b), 2);
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.used_blocks, 2);
  EXPECT_EQ(s.shared_blocks, 2);
  EXPECT_EQ(s.num_sequences, 2);
  EXPECT_EQ(s.running_sequences, 2);
  // kReservation: each may grow to 4 blocks and may need one copy.
  EXPECT_EQ(reserved_before, reservation() ? 2 : 0);
  EXPECT_EQ(s.reserved_blocks, reservation() ? 6 : 0);
}

// The first divergent write of a forked pair copies the shared tail for the
// writer; the other one is then its last holder and writes in place.
TEST_P(KVCacheManagerModesTest, FirstDivergentWriteCopiesAndLastHolderKeeps) {
  for (bool parent_first : {true, false}) {
    SCOPED_TRACE(parent_first ? "parent writes first" : "child writes first");
    CheckedManager m = Make(16);
    ASSERT_THAT(m.Add(1, 6, 10), IsOk());
    ASSERT_THAT(m.Fork(1, 2), IsOk());
    const std::vector<BlockId> shared = TableOf(*m, 1);
    const SequenceId first = parent_first ? 1 : 2;
    const SequenceId second = parent_first ? 2 : 1;

    StepOutput out;
    ASSERT_THAT(m.Append(first, 1, &out), IsOk());
    const std::vector<BlockId> mine = TableOf(*m, first);
    ASSERT_THAT(mine, SizeIs(2));
    EXPECT_EQ(mine[0], shared[0]);  // Full blocks stay shared.
    EXPECT_NE(mine[1], shared[1]);
    EXPECT_EQ(TableOf(*m, second), shared);
    EXPECT_THAT(out.slot_mapping, ElementsAre(mine[1].value() * kBt + 2));
    EXPECT_EQ(m->stats().cow_copies, 1);
    if (books_only()) {
      // The caller runs the copy; its source stays held until MarkDone.
      EXPECT_THAT(out.copies.ops(),
                  ElementsAre(CopyOp{.src = shared[1], .dst = mine[1]}));
      EXPECT_EQ(m->books().ref_count(shared[1]), 2);
      out.copies.MarkDone();
    } else {
      EXPECT_TRUE(out.copies.empty());  // Already run.
    }
    EXPECT_EQ(m->books().ref_count(shared[1]), 1);
    EXPECT_EQ(m->books().ref_count(shared[0]), 2);

    ASSERT_THAT(m.Append(second, 1, &out), IsOk());
    EXPECT_EQ(TableOf(*m, second), shared);  // Kept the block: no copy.
    EXPECT_THAT(out.slot_mapping, ElementsAre(shared[1].value() * kBt + 2));
    EXPECT_TRUE(out.copies.empty());
    EXPECT_EQ(m->stats().cow_copies, 1);
    EXPECT_EQ(m->stats().shared_blocks, 1);
    EXPECT_EQ(m->stats().used_blocks, 3);
  }
}

TEST_P(KVCacheManagerModesTest, ForkedPairWritingInOneBatchCopiesOnce) {
  CheckedManager m = Make(16);
  ASSERT_THAT(m.Add(1, 6, 10), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const std::vector<BlockId> shared = TableOf(*m, 1);
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1},
                              {.seq = 2, .num_tokens = 3}};
  StepOutput out;
  ASSERT_THAT(m.Append(step, &out), IsOk());
  EXPECT_EQ(m->stats().cow_copies, 1);
  const std::vector<BlockId> parent = TableOf(*m, 1);
  const std::vector<BlockId> child = TableOf(*m, 2);
  EXPECT_NE(parent[1], shared[1]);  // The first writer copied.
  EXPECT_EQ(child[1], shared[1]);   // The last holder kept it.
  ASSERT_THAT(child, SizeIs(3));    // And grew into a new block.
  ExpectSlotsFollowTable(RangeOf(out, 0), parent, 6);
  ExpectSlotsFollowTable(RangeOf(out, 1), child, 6);
  if (books_only()) {
    EXPECT_THAT(out.copies.ops(),
                ElementsAre(CopyOp{.src = shared[1], .dst = parent[1]}));
    out.copies.MarkDone();
  }
  EXPECT_EQ(m->books().ref_count(shared[1]), 1);
}

TEST_P(KVCacheManagerModesTest, AppendSlotsIsAllOrNothingOnBadInputPartWay) {
  CheckedManager m = Make(16, 4);
  ASSERT_THAT(m.Add(1, 4, 8), IsOk());
  ASSERT_THAT(m.Add(2, 2, 8), IsOk());
  ASSERT_THAT(m.Add(3, 2, 8), IsOk());
  ASSERT_THAT(m.Preempt(3), IsOk());
  const std::vector<SequenceId> ids = {1, 2, 3};
  const ManagerSnapshot before = TakeSnapshot(*m, ids);
  StepOutput out;
  const SlotRequest not_running[] = {{.seq = 1, .num_tokens = 1},
                                     {.seq = 2, .num_tokens = 3},
                                     {.seq = 3, .num_tokens = 1}};
  EXPECT_THAT(m.Append(not_running, &out),
              StatusIs(Code::kFailedPrecondition,
                       HasSubstr("AppendSlots of sequence 3, which is "
                                 "preempted, not running")));
  EXPECT_EQ(TakeSnapshot(*m, ids), before);
  EXPECT_THAT(out.slot_mapping, IsEmpty());
  // The same two valid requests then succeed (the failed call left no mark).
  const SlotRequest valid[] = {{.seq = 1, .num_tokens = 1},
                               {.seq = 2, .num_tokens = 3}};
  EXPECT_THAT(m.Append(valid, &out), IsOk());
  EXPECT_THAT(out.request_offsets, ElementsAre(0, 1, 4));
}

TEST_P(KVCacheManagerModesTest,
       TruncateFreesWholeTailBlocksAndAppendsReuseThem) {
  CheckedManager m = Make(16);
  ASSERT_THAT(m.Add(1, 10, 10), IsOk());
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(m.Truncate(1, 5), IsOk());
  EXPECT_EQ(*m->num_tokens(1), 5);
  EXPECT_THAT(TableOf(*m, 1), ElementsAre(table[0], table[1]));
  EXPECT_EQ(m->stats().used_blocks, 2);
  EXPECT_EQ(m->stats().reserved_blocks, reservation() ? 3 : 0);
  // Tokens 5..7 land in the kept tail; token 8 reuses the freed block.
  StepOutput out;
  ASSERT_THAT(m.Append(1, 3, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, ElementsAre(table[1].value() * kBt + 1,
                                            table[1].value() * kBt + 2,
                                            table[1].value() * kBt + 3));
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, ElementsAre(table[2].value() * kBt));
  EXPECT_EQ(TableOf(*m, 1), table);
  // Truncating to the length, or at a block boundary, keeps the blocks.
  ASSERT_THAT(m.Truncate(1, 9), IsOk());
  EXPECT_EQ(TableOf(*m, 1), table);
  ASSERT_THAT(m.Truncate(1, 8), IsOk());
  EXPECT_THAT(TableOf(*m, 1), ElementsAre(table[0], table[1]));
}

TEST_P(KVCacheManagerModesTest, TruncateToZeroLeavesAnEmptyRunningSequence) {
  CheckedManager m = Make(8);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(m.Truncate(1, 0), IsOk());
  EXPECT_EQ(*m->num_tokens(1), 0);
  EXPECT_THAT(TableOf(*m, 1), IsEmpty());
  EXPECT_EQ(m->stats().used_blocks, 0);
  EXPECT_EQ(*m->state(1), SequenceState::kRunning);
  StepOutput out;
  ASSERT_THAT(m.Append(1, 2, &out), IsOk());
  // The blocks left tail first, so the first one is on top of the free list.
  EXPECT_THAT(TableOf(*m, 1), ElementsAre(table[0]));
  EXPECT_THAT(out.slot_mapping,
              ElementsAre(table[0].value() * kBt, table[0].value() * kBt + 1));
}

TEST_P(KVCacheManagerModesTest, FreeReturnsEveryBlockTailFirst) {
  CheckedManager m = Make(8, 4);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_FALSE(m->contains(1));
  EXPECT_THAT(m->state(1),
              StatusIs(Code::kNotFound, HasSubstr("no sequence 1")));
  const PoolStats p = m->books().stats();
  EXPECT_EQ(p.num_free_blocks, 8);
  EXPECT_EQ(p.num_used_blocks, 0);
  EXPECT_EQ(p.num_reserved_blocks, 0);
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.num_sequences, 0);
  EXPECT_EQ(s.running_sequences, 0);
  EXPECT_EQ(s.free_blocks, 8);
  // Released last block first: the LIFO free list hands them out again
  // first block first, so an equal sequence gets the very same table.
  ASSERT_THAT(m.Add(2, 10, 2), IsOk());
  EXPECT_EQ(TableOf(*m, 2), table);
  // The id can be used again.
  ASSERT_THAT(m.Add(1, 1, 0), IsOk());
}

TEST_P(KVCacheManagerModesTest, FreeOfAForkedParentLeavesTheChildItsBlocks) {
  CheckedManager m = Make(8);
  ASSERT_THAT(m.Add(1, 6, 4), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_EQ(TableOf(*m, 2), table);
  for (BlockId b : table) EXPECT_EQ(m->books().ref_count(b), 1);
  EXPECT_EQ(m->stats().shared_blocks, 0);
  EXPECT_EQ(m->stats().used_blocks, 2);
  ASSERT_THAT(m.Free(2), IsOk());
  EXPECT_EQ(m->stats().free_blocks, 8);
  EXPECT_EQ(m->stats().reserved_blocks, 0);
}

TEST_P(KVCacheManagerModesTest, PreemptFreesTheBlocksAndRemembersTheLength) {
  CheckedManager m = Make(8);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  ASSERT_THAT(m.Preempt(1), IsOk());
  EXPECT_EQ(*m->state(1), SequenceState::kPreempted);
  EXPECT_EQ(*m->num_tokens(1), 10);
  EXPECT_THAT(m->block_table(1),
              StatusIs(Code::kFailedPrecondition,
                       HasSubstr("block_table of sequence 1, which is "
                                 "preempted, not running")));
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.used_blocks, 0);
  EXPECT_EQ(s.reserved_blocks, 0);
  EXPECT_EQ(s.preemptions, 1);
  EXPECT_EQ(s.num_sequences, 1);
  EXPECT_EQ(s.running_sequences, 0);
  EXPECT_EQ(m->CanAdmit(32, 0), Admission::kAdmit);  // All 8 blocks free.
}

TEST_P(KVCacheManagerModesTest, ReadmitGivesFreshSlotsForTheRememberedTokens) {
  CheckedManager m = Make(8);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  ASSERT_THAT(m.Preempt(1), IsOk());
  ASSERT_THAT(m.Add(2, 3, 0), IsOk());  // Takes a block the sequence had.
  StepOutput out;
  out.slot_mapping = {1, 2, 3};
  ASSERT_THAT(m.Readmit(1, &out), IsOk());
  EXPECT_EQ(*m->state(1), SequenceState::kRunning);
  EXPECT_EQ(*m->num_tokens(1), 10);
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(table, SizeIs(3));
  EXPECT_THAT(out.request_offsets, ElementsAre(0, 10));
  ASSERT_THAT(out.slot_mapping, SizeIs(10));
  ExpectSlotsFollowTable(out.slot_mapping, table, 0);
  for (BlockId b : table) EXPECT_NE(b, TableOf(*m, 2)[0]);
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.used_blocks, 4);
  EXPECT_EQ(s.running_sequences, 2);
  EXPECT_EQ(s.reserved_blocks, 0);  // 12 tokens: its 3 blocks.
  // It decodes on from token 10.
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  EXPECT_THAT(out.slot_mapping, ElementsAre(table[2].value() * kBt + 2));
}

TEST_P(KVCacheManagerModesTest, ReadmitFailsAndStaysPreemptedWhenFull) {
  CheckedManager m = Make(4);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());  // 3 blocks.
  ASSERT_THAT(m.Preempt(1), IsOk());
  ASSERT_THAT(m.Add(2, 8, 0), IsOk());  // 2 blocks: 2 left.
  const std::vector<SequenceId> ids = {1, 2};
  const ManagerSnapshot before = TakeSnapshot(*m, ids);
  StepOutput out;
  EXPECT_THAT(m.Readmit(1, &out),
              StatusIs(Code::kResourceExhausted, HasSubstr("need 3 blocks")));
  EXPECT_EQ(TakeSnapshot(*m, ids), before);
  EXPECT_EQ(*m->state(1), SequenceState::kPreempted);
  ASSERT_THAT(m.Free(2), IsOk());
  EXPECT_THAT(m.Readmit(1, &out), IsOk());
}

TEST_P(KVCacheManagerModesTest, SwapOutThenSwapInBringsTheSequenceBack) {
  CheckedManager m = Make(8, 6);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  const std::vector<BlockId> device = TableOf(*m, 1);
  absl::StatusOr<SwapPlan> out_plan = m.SwapOut(1);
  ASSERT_THAT(out_plan, IsOk());
  EXPECT_EQ(m->stats().host_used_blocks, 3);
  EXPECT_EQ(m->stats().running_sequences, 0);
  if (books_only()) {
    EXPECT_EQ(*m->state(1), SequenceState::kSwappingOut);
    EXPECT_EQ(out_plan->src, device);
    ASSERT_THAT(out_plan->dst, SizeIs(3));
    EXPECT_EQ(m->stats().used_blocks, 3);  // Held until CompleteSwap.
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  } else {
    EXPECT_THAT(out_plan->src, IsEmpty());
    EXPECT_THAT(out_plan->dst, IsEmpty());
  }
  EXPECT_EQ(*m->state(1), SequenceState::kSwappedOut);
  EXPECT_EQ(*m->num_tokens(1), 10);
  EXPECT_EQ(m->stats().used_blocks, 0);
  EXPECT_EQ(m->stats().reserved_blocks, 0);
  EXPECT_EQ(m->stats().host_used_blocks, 3);

  ASSERT_THAT(m.Add(2, 4, 0), IsOk());  // Takes one of its old blocks.
  absl::StatusOr<SwapPlan> in_plan = m.SwapIn(1);
  ASSERT_THAT(in_plan, IsOk());
  if (books_only()) {
    EXPECT_EQ(*m->state(1), SequenceState::kSwappingIn);
    EXPECT_EQ(in_plan->src, out_plan->dst);
    ASSERT_THAT(in_plan->dst, SizeIs(3));
    EXPECT_EQ(m->stats().host_used_blocks, 3);  // Held until CompleteSwap.
    EXPECT_EQ(m->stats().used_blocks, 4);
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
    EXPECT_EQ(TableOf(*m, 1), in_plan->dst);
  } else {
    EXPECT_THAT(in_plan->src, IsEmpty());
  }
  EXPECT_EQ(*m->state(1), SequenceState::kRunning);
  EXPECT_EQ(*m->num_tokens(1), 10);
  EXPECT_THAT(TableOf(*m, 1), SizeIs(3));
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.host_used_blocks, 0);
  EXPECT_EQ(s.used_blocks, 4);
  EXPECT_EQ(s.running_sequences, 2);
  EXPECT_EQ(s.swap_outs, 1);
  EXPECT_EQ(s.swap_ins, 1);
  EXPECT_EQ(s.swapped_blocks, 6);
  EXPECT_EQ(
      s.swapped_bytes,
      books_only() ? 0 : static_cast<int64_t>(6 * SmallLayout().block_bytes()));
  EXPECT_EQ(s.reserved_blocks, 0);  // 12 tokens: its 3 blocks.
  StepOutput out;
  ASSERT_THAT(m.Append(1, 2, &out), IsOk());
  ExpectSlotsFollowTable(out.slot_mapping, TableOf(*m, 1), 10);
}

TEST_P(KVCacheManagerModesTest, SwapOutOfAShortSequenceReservesItsGrowthAgain) {
  // Not yet at its max: the reservation for its growth is given up while
  // swapped out and taken again on the way in.
  CheckedManager m = Make(8, 6);
  ASSERT_THAT(m.Add(1, 5, 7), IsOk());  // 2 of 3 blocks.
  EXPECT_EQ(m->stats().reserved_blocks, reservation() ? 1 : 0);
  ASSERT_THAT(m.SwapOut(1), IsOk());
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  }
  EXPECT_EQ(m->stats().reserved_blocks, 0);
  ASSERT_THAT(m.SwapIn(1), IsOk());
  EXPECT_EQ(m->stats().reserved_blocks, reservation() ? 1 : 0);
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  }
  EXPECT_EQ(m->stats().reserved_blocks, reservation() ? 1 : 0);
  ASSERT_THAT(m.Append(1, 7), IsOk());
}

TEST_P(KVCacheManagerModesTest,
       SwapOutOfAForkedSequenceLeavesTheSiblingItsBlocks) {
  CheckedManager m = Make(8, 6);
  ASSERT_THAT(m.Add(1, 6, 2), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const std::vector<BlockId> table = TableOf(*m, 1);
  ASSERT_THAT(m.SwapOut(1), IsOk());
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  }
  EXPECT_EQ(TableOf(*m, 2), table);
  EXPECT_EQ(m->stats().shared_blocks, 0);
  ASSERT_THAT(m.SwapIn(1), IsOk());
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  }
  EXPECT_EQ(m->stats().used_blocks, 4);  // Private copies now.
  ASSERT_THAT(m.Append(1, 2), IsOk());
  ASSERT_THAT(m.Append(2, 2), IsOk());
  EXPECT_EQ(m->stats().cow_copies, 0);
}

TEST_P(KVCacheManagerModesTest, SwapFailsWhenATierIsFull) {
  CheckedManager m = Make(4, 2);
  ASSERT_THAT(m.Add(1, 10, 0), IsOk());  // 3 blocks; the host tier has 2.
  const std::vector<SequenceId> ids = {1, 2};
  ManagerSnapshot before = TakeSnapshot(*m, ids);
  EXPECT_THAT(m.SwapOut(1), StatusIs(Code::kResourceExhausted,
                                     HasSubstr("need 3 blocks, 2 free")));
  EXPECT_EQ(TakeSnapshot(*m, ids), before);
  ASSERT_THAT(m.Truncate(1, 8), IsOk());
  ASSERT_THAT(m.SwapOut(1), IsOk());
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  }
  ASSERT_THAT(m.Add(2, 12, 0), IsOk());  // 3 of 4 device blocks.
  before = TakeSnapshot(*m, ids);
  // kReservation reserves its growth to 10 tokens too: 3 blocks.
  EXPECT_THAT(
      m.SwapIn(1),
      StatusIs(Code::kResourceExhausted,
               HasSubstr(reservation() ? "need 3 blocks" : "need 2 blocks")));
  EXPECT_EQ(TakeSnapshot(*m, ids), before);
  EXPECT_EQ(*m->state(1), SequenceState::kSwappedOut);
  ASSERT_THAT(m.Free(2), IsOk());
  ASSERT_THAT(m.SwapIn(1), IsOk());
}

TEST_P(KVCacheManagerModesTest, SwapOutWithoutAHostTierIsAPreconditionError) {
  CheckedManager m = Make(4);
  ASSERT_THAT(m.Add(1, 5, 0), IsOk());
  const ManagerSnapshot before = TakeSnapshot(*m, {1});
  EXPECT_THAT(m.SwapOut(1), StatusIs(Code::kFailedPrecondition,
                                     AllOf(HasSubstr("SwapOut of sequence 1"),
                                           HasSubstr("num_host_blocks is 0"))));
  EXPECT_EQ(TakeSnapshot(*m, {1}), before);
}

TEST_P(KVCacheManagerModesTest,
       FreeOfASwappedOutSequenceReleasesItsHostBlocks) {
  CheckedManager m = Make(8, 6);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  ASSERT_THAT(m.SwapOut(1), IsOk());
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(1), IsOk());
  }
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_EQ(m->stats().host_used_blocks, 0);
  EXPECT_EQ(m->stats().used_blocks, 0);
  EXPECT_EQ(m->stats().num_sequences, 0);
}

TEST_P(KVCacheManagerModesTest, FreeOfAPreemptedSequenceForgetsIt) {
  CheckedManager m = Make(8);
  ASSERT_THAT(m.Add(1, 10, 2), IsOk());
  ASSERT_THAT(m.Preempt(1), IsOk());
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_FALSE(m->contains(1));
  EXPECT_EQ(m->stats().num_sequences, 0);
  EXPECT_EQ(m->stats().running_sequences, 0);
}

// Every bad input returns its code with the numbers and changes nothing.
TEST_P(KVCacheManagerModesTest, BadInputChangesNothing) {
  CheckedManager m = Make(16, 8);
  // 1: running, 10 tokens (max 16); 2: preempted; 3: swapped out;
  // 4 (books-only): swapping out.
  ASSERT_THAT(m.Add(1, 10, 6), IsOk());
  ASSERT_THAT(m.Add(2, 3, 3), IsOk());
  ASSERT_THAT(m.Preempt(2), IsOk());
  ASSERT_THAT(m.Add(3, 5, 3), IsOk());
  ASSERT_THAT(m.SwapOut(3), IsOk());
  if (books_only()) {
    ASSERT_THAT(m.CompleteSwap(3), IsOk());
    ASSERT_THAT(m.Add(4, 2, 0), IsOk());
    ASSERT_THAT(m.SwapOut(4), IsOk());
  }
  const std::vector<SequenceId> ids = {1, 2, 3, 4, 5, 99};

  struct Case {
    const char* name;
    std::function<absl::Status()> call;
    Code code;
    std::vector<std::string> message;
  };
  auto append = [&](std::vector<SlotRequest> r) {
    return [&m, r] {
      StepOutput out;
      absl::Status st = m.Append(r, &out);
      EXPECT_THAT(out.slot_mapping, IsEmpty());
      return st;
    };
  };
  auto status_of = [](auto statusor) { return statusor.status(); };
  std::vector<Case> cases = {
      {"append to an unknown id",
       append({{99, 1}}),
       Code::kNotFound,
       {"no sequence 99"}},
      {"unknown id after a good one",
       append({{1, 1}, {99, 2}}),
       Code::kNotFound,
       {"no sequence 99"}},
      {"append zero tokens",
       append({{1, 0}}),
       Code::kInvalidArgument,
       {"AppendSlots of 0 tokens to sequence 1"}},
      {"append negative tokens",
       append({{1, -3}}),
       Code::kInvalidArgument,
       {"AppendSlots of -3 tokens to sequence 1"}},
      {"an id twice in one call",
       append({{1, 1}, {1, 1}}),
       Code::kInvalidArgument,
       {"sequence 1 appears twice"}},
      {"append to a preempted sequence",
       append({{1, 1}, {2, 1}}),
       Code::kFailedPrecondition,
       {"AppendSlots of sequence 2, which is preempted, not running"}},
      {"append to a swapped-out sequence",
       append({{3, 1}}),
       Code::kFailedPrecondition,
       {"sequence 3, which is swapped out"}},
      {"add a duplicate id",
       [&] { return m.Add(1, 4, 0); },
       Code::kAlreadyExists,
       {"sequence 1 already exists"}},
      {"add a duplicate of a preempted id",
       [&] { return m.Add(2, 4, 0); },
       Code::kAlreadyExists,
       {"sequence 2 already exists"}},
      {"add an empty prompt",
       [&] { return m.Add(5, 0, 4); },
       Code::kInvalidArgument,
       {"sequence 5", "prompt_tokens 0"}},
      {"add negative max_new_tokens",
       [&] { return m.Add(5, 4, -1); },
       Code::kInvalidArgument,
       {"max_new_tokens -1"}},
      {"add a prompt past int32",
       [&] { return m.Add(5, int64_t{1} << 31, 0); },
       Code::kInvalidArgument,
       {"prompt_tokens 2147483648"}},
      {"truncate past the length",
       [&] { return m.Truncate(1, 11); },
       Code::kOutOfRange,
       {"Truncate of sequence 1 to 11 tokens: it has 10"}},
      {"truncate to a negative length",
       [&] { return m.Truncate(1, -1); },
       Code::kOutOfRange,
       {"to -1 tokens: it has 10"}},
      {"truncate a preempted sequence",
       [&] { return m.Truncate(2, 1); },
       Code::kFailedPrecondition,
       {"Truncate of sequence 2, which is preempted"}},
      {"truncate an unknown id",
       [&] { return m.Truncate(99, 0); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"fork onto an existing id",
       [&] { return m.Fork(1, 2); },
       Code::kAlreadyExists,
       {"Fork onto sequence 2, which exists"}},
      {"fork onto itself",
       [&] { return m.Fork(1, 1); },
       Code::kAlreadyExists,
       {"Fork onto sequence 1"}},
      {"fork an unknown parent",
       [&] { return m.Fork(99, 5); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"fork a preempted parent",
       [&] { return m.Fork(2, 5); },
       Code::kFailedPrecondition,
       {"Fork of sequence 2, which is preempted"}},
      {"fork a swapped-out parent",
       [&] { return m.Fork(3, 5); },
       Code::kFailedPrecondition,
       {"Fork of sequence 3, which is swapped out"}},
      {"free an unknown id",
       [&] { return m.Free(99); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"preempt a preempted sequence",
       [&] { return m.Preempt(2); },
       Code::kFailedPrecondition,
       {"Preempt of sequence 2, which is preempted"}},
      {"preempt a swapped-out sequence",
       [&] { return m.Preempt(3); },
       Code::kFailedPrecondition,
       {"Preempt of sequence 3, which is swapped"}},
      {"preempt an unknown id",
       [&] { return m.Preempt(99); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"readmit a running sequence",
       [&] { return m.Readmit(1); },
       Code::kFailedPrecondition,
       {"Readmit of sequence 1, which is running, not preempted"}},
      {"readmit a swapped-out sequence",
       [&] { return m.Readmit(3); },
       Code::kFailedPrecondition,
       {"Readmit of sequence 3, which is swapped"}},
      {"readmit an unknown id",
       [&] { return m.Readmit(99); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"swap out a swapped-out sequence",
       [&] { return status_of(m.SwapOut(3)); },
       Code::kFailedPrecondition,
       {"SwapOut of sequence 3, which is swapped out, not running"}},
      {"swap out a preempted sequence",
       [&] { return status_of(m.SwapOut(2)); },
       Code::kFailedPrecondition,
       {"SwapOut of sequence 2, which is preempted"}},
      {"swap in a running sequence",
       [&] { return status_of(m.SwapIn(1)); },
       Code::kFailedPrecondition,
       {"SwapIn of sequence 1, which is running, not swapped out"}},
      {"swap in a preempted sequence",
       [&] { return status_of(m.SwapIn(2)); },
       Code::kFailedPrecondition,
       {"SwapIn of sequence 2, which is preempted"}},
      {"swap out an unknown id",
       [&] { return status_of(m.SwapOut(99)); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"swap in an unknown id",
       [&] { return status_of(m.SwapIn(99)); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"complete a swap of a running sequence",
       [&] { return m.CompleteSwap(1); },
       Code::kFailedPrecondition,
       {"CompleteSwap of sequence 1, which is running: no swap is pending"}},
      {"complete a swap of a swapped-out sequence",
       [&] { return m.CompleteSwap(3); },
       Code::kFailedPrecondition,
       {"CompleteSwap of sequence 3, which is swapped out: no swap"}},
      {"complete a swap of an unknown id",
       [&] { return m.CompleteSwap(99); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"state of an unknown id",
       [&] { return status_of(m->state(99)); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"length of an unknown id",
       [&] { return status_of(m->num_tokens(99)); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"table of an unknown id",
       [&] { return status_of(m->block_table(99)); },
       Code::kNotFound,
       {"no sequence 99"}},
      {"table of a swapped-out sequence",
       [&] { return status_of(m->block_table(3)); },
       Code::kFailedPrecondition,
       {"block_table of sequence 3, which is swapped out, not running"}},
  };
  if (reservation()) {
    cases.push_back({"append past max tokens",
                     append({{1, 7}}),
                     Code::kOutOfRange,
                     {"sequence 1: 10 + 7 tokens pass its reserved 16"}});
  }
  if (books_only()) {
    cases.push_back({"free during a pending swap",
                     [&] { return m.Free(4); },
                     Code::kFailedPrecondition,
                     {"Free of sequence 4 while a swap is pending"}});
    cases.push_back({"swap out during a pending swap",
                     [&] { return status_of(m.SwapOut(4)); },
                     Code::kFailedPrecondition,
                     {"SwapOut of sequence 4, which is swapping out"}});
    cases.push_back({"swap in during a pending swap",
                     [&] { return status_of(m.SwapIn(4)); },
                     Code::kFailedPrecondition,
                     {"SwapIn of sequence 4, which is swapping out"}});
    cases.push_back({"append during a pending swap",
                     append({{4, 1}}),
                     Code::kFailedPrecondition,
                     {"sequence 4, which is swapping out, not running"}});
    cases.push_back({"truncate during a pending swap",
                     [&] { return m.Truncate(4, 1); },
                     Code::kFailedPrecondition,
                     {"swapping out"}});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const ManagerSnapshot before = TakeSnapshot(*m, ids);
    const absl::Status status = c.call();
    EXPECT_THAT(status, StatusIs(c.code));
    for (const std::string& part : c.message) {
      EXPECT_THAT(std::string(status.message()), HasSubstr(part));
    }
    m->CheckInvariants();
    EXPECT_EQ(TakeSnapshot(*m, ids), before);
  }
}

// ---------------------------------------------------------------------------
// Running out of blocks part-way (kWatermark: nothing is set aside)

TEST(KVCacheManagerTest, AppendSlotsIsAllOrNothingWhenThePoolRunsOutPartWay) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kWatermark}, 6);
    ASSERT_THAT(m.Add(1, 4, 0), IsOk());  // Full block.
    ASSERT_THAT(m.Add(2, 2, 0), IsOk());  // Half a block.
    ASSERT_THAT(m.Add(3, 6, 0), IsOk());  // 2 blocks, the tail half full.
    ASSERT_THAT(m.Fork(3, 4), IsOk());    // Shares 3's blocks.
    // 4 used, 2 free.
    const std::vector<SequenceId> ids = {1, 2, 3, 4};
    const ManagerSnapshot before = TakeSnapshot(*m, ids);
    // 1 needs a block, 2 fits in its tail, 3 needs a copy and a block: 3 > 2.
    const SlotRequest step[] = {{.seq = 1, .num_tokens = 1},
                                {.seq = 2, .num_tokens = 2},
                                {.seq = 3, .num_tokens = 3}};
    StepOutput out;
    EXPECT_THAT(m.Append(step, &out),
                StatusIs(Code::kResourceExhausted,
                         HasSubstr("need 3 blocks (1 copies, 2 appended), 2 "
                                   "free")));
    // No sequence got slots; tables, lengths and stats are as before.
    EXPECT_THAT(out.slot_mapping, IsEmpty());
    EXPECT_TRUE(out.copies.empty());
    EXPECT_EQ(TakeSnapshot(*m, ids), before);
    EXPECT_EQ(m->stats().cow_copies, 0);
    // Preempting the fork makes room for the same step.
    ASSERT_THAT(m.Preempt(4), IsOk());
    ASSERT_THAT(m.Append(step, &out), IsOk());
    EXPECT_THAT(out.request_offsets, ElementsAre(0, 1, 3, 6));
    EXPECT_EQ(m->stats().cow_copies, 0);  // 3's tail is private again.
    EXPECT_EQ(m->stats().free_blocks, 0);
  }
}

TEST(KVCacheManagerTest, ForkInWatermarkModeNeedsNoBlocks) {
  CheckedManager m = MakeManager(kBooksWatermark, 2);
  ASSERT_THAT(m.Add(1, 6, 0), IsOk());  // Both blocks.
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  // The divergent write needs a copy and there is no block for it.
  EXPECT_THAT(m.Append(2, 1),
              StatusIs(Code::kResourceExhausted, HasSubstr("1 copies")));
  // The full first block stays shared; a block-aligned truncate avoids it.
  ASSERT_THAT(m.Truncate(2, 4), IsOk());
  EXPECT_THAT(m.Append(2, 1), StatusIs(Code::kResourceExhausted));
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_THAT(m.Append(2, 1), IsOk());
}

// ---------------------------------------------------------------------------
// Host mode: the bytes

// Writes a distinct tag per token of `seq` into every new slot of `out`
// (request `request`), first token `first`; returns the tags.
void WriteTags(KVPool& pool, const StepOutput& out, size_t request,
               uint32_t base, std::vector<uint32_t>* tags) {
  for (int32_t i = out.request_offsets[request];
       i < out.request_offsets[request + 1]; ++i) {
    const uint32_t tag = base + static_cast<uint32_t>(tags->size());
    WriteToken(pool, out.slot_mapping[i], tag);
    tags->push_back(tag);
  }
}

void ExpectTokens(const KVCacheManager& m, SequenceId seq,
                  const std::vector<uint32_t>& tags) {
  const std::vector<BlockId> table = TableOf(m, seq);
  ASSERT_EQ(*m.num_tokens(seq), static_cast<int64_t>(tags.size()));
  for (size_t t = 0; t < tags.size(); ++t) {
    EXPECT_EQ(CheckToken(*m.kv_pool(), SlotOf(table, kBt, t), tags[t]), "")
        << "sequence " << seq << " token " << t;
  }
}

TEST(KVCacheManagerTest, HostForkKeepsTheSharedPrefixAfterDivergentWrites) {
  for (bool batched : {false, true}) {
    SCOPED_TRACE(batched ? "one batch" : "two calls");
    CheckedManager m = MakeManager(kHostWatermark, 8);
    StepOutput out;
    ASSERT_THAT(m.Add(1, 6, 10, &out), IsOk());
    std::vector<uint32_t> parent;
    WriteTags(*m->kv_pool(), out, 0, 1000, &parent);
    ASSERT_THAT(m.Fork(1, 2), IsOk());
    std::vector<uint32_t> child = parent;
    const int64_t copied_before = m->kv_pool()->bytes_copied();

    // Parent and child write different tokens 6.. into the shared tail.
    if (batched) {
      const SlotRequest step[] = {{.seq = 2, .num_tokens = 2},
                                  {.seq = 1, .num_tokens = 1}};
      ASSERT_THAT(m.Append(step, &out), IsOk());
      child.push_back(2000);
      child.push_back(2001);
      WriteToken(*m->kv_pool(), out.slot_mapping[0], 2000);
      WriteToken(*m->kv_pool(), out.slot_mapping[1], 2001);
      parent.push_back(3000);
      WriteToken(*m->kv_pool(), out.slot_mapping[2], 3000);
    } else {
      ASSERT_THAT(m.Append(1, 1, &out), IsOk());
      parent.push_back(3000);
      WriteToken(*m->kv_pool(), out.slot_mapping[0], 3000);
      ASSERT_THAT(m.Append(2, 2, &out), IsOk());
      child.push_back(2000);
      child.push_back(2001);
      WriteToken(*m->kv_pool(), out.slot_mapping[0], 2000);
      WriteToken(*m->kv_pool(), out.slot_mapping[1], 2001);
    }
    EXPECT_EQ(m->stats().cow_copies, 1);
    EXPECT_EQ(m->kv_pool()->bytes_copied() - copied_before,
              static_cast<int64_t>(m->kv_pool()->block_bytes()));
    ExpectTokens(*m, 1, parent);
    ExpectTokens(*m, 2, child);

    // More divergent writes, both sides: no more copies.
    ASSERT_THAT(m.Append(1, 3, &out), IsOk());
    WriteTags(*m->kv_pool(), out, 0, 4000, &parent);
    ASSERT_THAT(m.Append(2, 3, &out), IsOk());
    WriteTags(*m->kv_pool(), out, 0, 5000, &child);
    EXPECT_EQ(m->stats().cow_copies, 1);
    ExpectTokens(*m, 1, parent);
    ExpectTokens(*m, 2, child);
  }
}

TEST(KVCacheManagerTest, HostTruncateIntoASharedBlockCopiesOnTheNextWrite) {
  CheckedManager m = MakeManager(kHostWatermark, 8);
  StepOutput out;
  ASSERT_THAT(m.Add(1, 10, 10, &out), IsOk());
  std::vector<uint32_t> parent;
  WriteTags(*m->kv_pool(), out, 0, 100, &parent);
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  std::vector<uint32_t> child = parent;
  // Speculative rollback of the child into block 1, which both hold.
  ASSERT_THAT(m.Truncate(2, 6), IsOk());
  child.resize(6);
  ASSERT_THAT(m.Append(2, 3, &out), IsOk());
  WriteTags(*m->kv_pool(), out, 0, 200, &child);
  EXPECT_EQ(m->stats().cow_copies, 1);
  ExpectTokens(*m, 1, parent);  // Tokens 6..9 of the parent are intact.
  ExpectTokens(*m, 2, child);
}

TEST(KVCacheManagerTest, HostSwapRoundTripKeepsEveryByte) {
  for (AdmissionMode admission :
       {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
    SCOPED_TRACE(testing::AdmissionName(admission));
    CheckedManager m = MakeManager({StorageMode::kHost, admission}, 8, 6);
    KVPool& pool = *m->kv_pool();
    const size_t bytes = pool.block_bytes();
    ASSERT_THAT(m.Add(1, 10, 2), IsOk());
    // Fill every byte of its blocks (the unused tail slots too).
    std::vector<std::vector<std::byte>> pattern;
    for (BlockId b : TableOf(*m, 1)) {
      std::vector<std::byte> p(bytes);
      for (size_t i = 0; i < bytes; ++i) {
        p[i] = static_cast<std::byte>((i * 7 + b.value() * 31 + 1) & 0xFF);
      }
      std::memcpy(pool.BlockData(b), p.data(), bytes);
      pattern.push_back(std::move(p));
    }
    const int64_t copied = pool.bytes_copied();
    ASSERT_THAT(m.SwapOut(1), IsOk());
    EXPECT_EQ(pool.bytes_copied() - copied, static_cast<int64_t>(3 * bytes));
    // Churn: other sequences take every device block and overwrite it.
    for (SequenceId s = 10; s < 12; ++s) {
      ASSERT_THAT(m.Add(s, 16, 0), IsOk());
      for (BlockId b : TableOf(*m, s)) {
        std::memset(pool.BlockData(b), 0xEE, bytes);
      }
    }
    EXPECT_EQ(m->stats().free_blocks, 0);
    EXPECT_THAT(m.SwapIn(1), StatusIs(Code::kResourceExhausted));
    ASSERT_THAT(m.Free(10), IsOk());
    ASSERT_THAT(m.SwapIn(1), IsOk());
    const std::vector<BlockId> table = TableOf(*m, 1);
    ASSERT_THAT(table, SizeIs(3));
    for (size_t i = 0; i < table.size(); ++i) {
      EXPECT_EQ(std::memcmp(pool.BlockData(table[i]), pattern[i].data(), bytes),
                0)
          << "block " << i << " (" << table[i] << ")";
    }
    EXPECT_EQ(m->stats().swapped_bytes, static_cast<int64_t>(6 * bytes));
    EXPECT_EQ(m->stats().host_used_blocks, 0);
  }
}

TEST(KVCacheManagerTest, HostReadmitGivesSlotsTheServerRecomputesInto) {
  CheckedManager m = MakeManager(kHostReservation, 4);
  StepOutput out;
  ASSERT_THAT(m.Add(1, 7, 1, &out), IsOk());
  std::vector<uint32_t> tags;
  WriteTags(*m->kv_pool(), out, 0, 10, &tags);
  ASSERT_THAT(m.Preempt(1), IsOk());
  ASSERT_THAT(m.Readmit(1, &out), IsOk());
  ASSERT_THAT(out.slot_mapping, SizeIs(7));
  for (size_t t = 0; t < 7; ++t)
    WriteToken(*m->kv_pool(), out.slot_mapping[t], tags[t]);
  ExpectTokens(*m, 1, tags);
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  EXPECT_THAT(m.Append(1, 1, &out), StatusIs(Code::kOutOfRange));
}

// ---------------------------------------------------------------------------
// Books-only: the caller runs the copies

TEST(KVCacheManagerTest, BooksOnlyCopiesHoldTheirSourceUntilMarkDone) {
  CheckedManager m = MakeManager(kBooksWatermark, 8);
  ASSERT_THAT(m.Add(1, 6, 0), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const std::vector<BlockId> shared = TableOf(*m, 1);
  StepOutput parent_out;
  ASSERT_THAT(m.Append(1, 1, &parent_out), IsOk());
  ASSERT_THAT(parent_out.copies.ops(), SizeIs(1));
  const CopyOp op = parent_out.copies.ops()[0];
  EXPECT_EQ(op.src, shared[1]);
  EXPECT_EQ(op.dst, TableOf(*m, 1)[1]);
  // Freeing the other holder does not free the source: the copy holds it.
  ASSERT_THAT(m.Free(2), IsOk());
  EXPECT_EQ(m->books().ref_count(shared[1]), 1);
  EXPECT_EQ(m->stats().used_blocks, 3);
  parent_out.copies.MarkDone();
  EXPECT_EQ(m->books().ref_count(shared[1]), 0);
  EXPECT_EQ(m->stats().used_blocks, 2);
  m->CheckInvariants();
}

TEST(KVCacheManagerTest, BooksOnlyWriterBeforeMarkDoneCopiesToo) {
  // Until the first copy ran, its source must not be written: the second
  // writer copies as well instead of keeping the block.
  CheckedManager m = MakeManager(kBooksReservation, 8);
  ASSERT_THAT(m.Add(1, 6, 2), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const std::vector<BlockId> shared = TableOf(*m, 1);
  StepOutput first, second;
  ASSERT_THAT(m.Append(1, 1, &first), IsOk());
  ASSERT_THAT(m.Append(2, 1, &second), IsOk());
  ASSERT_THAT(second.copies.ops(), SizeIs(1));
  EXPECT_EQ(second.copies.ops()[0].src, shared[1]);
  EXPECT_EQ(m->stats().cow_copies, 2);
  first.copies.MarkDone();
  second.copies.MarkDone();
  EXPECT_EQ(m->books().ref_count(shared[1]), 0);
  m->CheckInvariants();
}

// A copy's source block was charged to the reservation; when MarkDone frees
// it, it must not stay set aside for nobody.
TEST(KVCacheManagerTest,
     BooksOnlyReservationGivesBackACopySourceAfterMarkDone) {
  CheckedManager m = MakeManager(kBooksReservation, 8);
  ASSERT_THAT(m.Add(1, 6, 2), IsOk());  // Its 2 blocks: nothing reserved.
  ASSERT_THAT(m.Fork(1, 2), IsOk());    // One copy each reserved.
  StepOutput out;
  ASSERT_THAT(m.Append(1, 1, &out), IsOk());
  ASSERT_THAT(m.Free(2), IsOk());
  out.copies.MarkDone();  // The old tail is free now.
  EXPECT_EQ(m->stats().used_blocks, 2);
  EXPECT_EQ(m->stats().reserved_blocks, 0);
  EXPECT_EQ(m->CanAdmit(6 * kBt, 0), Admission::kAdmit);  // 6 blocks free.
}

TEST(KVCacheManagerTest, BooksOnlySwapPlansMoveBetweenTiers) {
  for (AdmissionMode admission :
       {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
    SCOPED_TRACE(testing::AdmissionName(admission));
    CheckedManager m = MakeManager({StorageMode::kBooksOnly, admission}, 8, 6);
    ASSERT_THAT(m.Add(1, 10, 2), IsOk());
    const std::vector<BlockId> device = TableOf(*m, 1);
    absl::StatusOr<SwapPlan> out_plan = m.SwapOut(1);
    ASSERT_THAT(out_plan, IsOk());
    EXPECT_EQ(out_plan->src, device);
    ASSERT_THAT(out_plan->dst, SizeIs(3));
    std::vector<BlockId> host = out_plan->dst;
    std::sort(host.begin(), host.end(),
              [](BlockId a, BlockId b) { return a.value() < b.value(); });
    EXPECT_EQ(std::adjacent_find(host.begin(), host.end()), host.end());
    for (BlockId b : host) {
      EXPECT_GE(b.value(), 0);
      EXPECT_LT(b.value(), 6);
    }
    EXPECT_EQ(*m->state(1), SequenceState::kSwappingOut);
    // Both tiers are held while the copies run.
    EXPECT_EQ(m->stats().used_blocks, 3);
    EXPECT_EQ(m->stats().host_used_blocks, 3);
    for (BlockId b : device) EXPECT_EQ(m->books().ref_count(b), 1);
    ASSERT_THAT(m.CompleteSwap(1), IsOk());  // Releases the device side.
    EXPECT_EQ(*m->state(1), SequenceState::kSwappedOut);
    EXPECT_EQ(m->stats().used_blocks, 0);
    EXPECT_EQ(m->stats().host_used_blocks, 3);

    absl::StatusOr<SwapPlan> in_plan = m.SwapIn(1);
    ASSERT_THAT(in_plan, IsOk());
    EXPECT_EQ(in_plan->src, out_plan->dst);
    ASSERT_THAT(in_plan->dst, SizeIs(3));
    EXPECT_EQ(*m->state(1), SequenceState::kSwappingIn);
    EXPECT_EQ(m->stats().used_blocks, 3);
    EXPECT_EQ(m->stats().host_used_blocks, 3);
    EXPECT_THAT(m.Append(1, 1),
                StatusIs(Code::kFailedPrecondition, HasSubstr("swapping in")));
    ASSERT_THAT(m.CompleteSwap(1), IsOk());  // Releases the host side.
    EXPECT_EQ(*m->state(1), SequenceState::kRunning);
    EXPECT_EQ(TableOf(*m, 1), in_plan->dst);
    EXPECT_EQ(m->stats().host_used_blocks, 0);
    EXPECT_EQ(m->stats().swapped_bytes, 0);
    EXPECT_THAT(m.CompleteSwap(1), StatusIs(Code::kFailedPrecondition,
                                            HasSubstr("no swap is pending")));
  }
}

// ---------------------------------------------------------------------------
// kReservation: a started request never stalls

TEST(KVCacheManagerTest, ReservationStartedRequestNeverRunsOutOfBlocks) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kReservation}, 20);
    ASSERT_THAT(m.Add(1, 4, 12), IsOk());  // 4 blocks reserved in all.
    // Fill the rest of the pool with other requests.
    SequenceId next = 100;
    while (m->CanAdmit(4, 0) == Admission::kAdmit) {
      ASSERT_THAT(m.Add(next++, 4, 0), IsOk());
    }
    EXPECT_EQ(next - 100, 16);
    EXPECT_EQ(m->books().num_unreserved_free_blocks(), 0);
    for (int i = 0; i < 12; ++i) {
      ASSERT_THAT(m.Append(1, 1), IsOk()) << "token " << 4 + i;
    }
    EXPECT_EQ(m->stats().free_blocks, 0);
    EXPECT_THAT(m.Append(1, 1),
                StatusIs(Code::kOutOfRange,
                         HasSubstr("sequence 1: 16 + 1 tokens pass its "
                                   "reserved 16")));
  }
}

TEST(KVCacheManagerTest, ReservationForkedPairNeverRunsOutOfBlocks) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kReservation}, 20);
    ASSERT_THAT(m.Add(1, 6, 10), IsOk());  // 2 of 4 blocks.
    ASSERT_THAT(m.Fork(1, 2), IsOk());     // 2 + 1 copy each.
    EXPECT_EQ(m->stats().reserved_blocks, 6);
    SequenceId next = 100;
    while (m->CanAdmit(4, 0) == Admission::kAdmit) {
      ASSERT_THAT(m.Add(next++, 4, 0), IsOk());
    }
    EXPECT_EQ(next - 100, 12);
    for (int i = 0; i < 10; ++i) {
      const SlotRequest step[] = {{.seq = i % 2 == 0 ? 1 : 2, .num_tokens = 1},
                                  {.seq = i % 2 == 0 ? 2 : 1, .num_tokens = 1}};
      StepOutput out;
      ASSERT_THAT(m.Append(step, &out), IsOk()) << "step " << i;
    }
    EXPECT_THAT(m.Append(2, 1), StatusIs(Code::kOutOfRange));
  }
}

TEST(KVCacheManagerTest, ReservationForkFailsWhenTheChildCannotBeReserved) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kReservation}, 8);
    ASSERT_THAT(m.Add(1, 6, 10), IsOk());  // 2 used, 2 reserved, 4 left.
    ASSERT_THAT(m.Fork(1, 2), IsOk());     // Parent +1, child 2 + 1: 0 left.
    EXPECT_EQ(m->books().num_unreserved_free_blocks(), 0);
    const std::vector<SequenceId> ids = {1, 2, 3};
    const ManagerSnapshot before = TakeSnapshot(*m, ids);
    EXPECT_THAT(m.Fork(1, 3),
                StatusIs(Code::kResourceExhausted, HasSubstr("need 3 blocks")));
    EXPECT_EQ(TakeSnapshot(*m, ids), before);
    EXPECT_FALSE(m->contains(3));
    for (BlockId b : TableOf(*m, 1)) EXPECT_EQ(m->books().ref_count(b), 2);
    ASSERT_THAT(m.Free(2), IsOk());
    ASSERT_THAT(m.Fork(1, 3), IsOk());
  }
}

// A fork that copied its tail (so its copy-on-write allowance is spent) and
// then truncates back into a block it still shares needs one more block for
// the next copy. On a full pool that block cannot be reserved; the manager
// must then either refuse the Truncate (RESOURCE_EXHAUSTED, nothing changed)
// or keep its books usable: later calls must not abort, and started
// requests must still reach their max tokens.
TEST(KVCacheManagerTest, ReservationTruncateIntoASharedBlockOnAFullPool) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kReservation}, 10);
    ASSERT_THAT(m.Add(4, 4, 0), IsOk());
    ASSERT_THAT(m.Preempt(4), IsOk());     // Waits with nothing held.
    ASSERT_THAT(m.Add(1, 6, 6), IsOk());   // [a b]; 3 blocks at most.
    ASSERT_THAT(m.Fork(1, 2), IsOk());     // 2 + 2 reserved.
    ASSERT_THAT(m.Add(3, 16, 0), IsOk());  // The pool is now spoken for.
    ASSERT_EQ(m->books().num_unreserved_free_blocks(), 0);
    StepOutput out;
    ASSERT_THAT(m.Append(2, 1, &out), IsOk());  // 2 copies b: allowance spent.
    out.copies.MarkDone();
    ASSERT_THAT(m.Append(2, 4, &out), IsOk());  // 11 tokens: [a b' c].
    // Back into block a, which 1 still holds.
    const absl::Status truncated = m.Truncate(2, 3);
    ASSERT_TRUE(truncated.ok() || truncated.code() == Code::kResourceExhausted)
        << truncated;
    // Both started requests still reach their max tokens.
    ASSERT_THAT(m.Append(1, 6, &out), IsOk());
    out.copies.MarkDone();
    const int32_t room = static_cast<int32_t>(12 - *m->num_tokens(2));
    ASSERT_THAT(m.Append(2, room, &out), IsOk());
    out.copies.MarkDone();
    // And the books stay usable.
    EXPECT_THAT(m.Free(4), IsOk());
    EXPECT_THAT(m.Free(3), IsOk());
    EXPECT_THAT(m.Free(2), IsOk());
    EXPECT_THAT(m.Free(1), IsOk());
    EXPECT_EQ(m->stats().free_blocks, 10);
    EXPECT_EQ(m->stats().reserved_blocks, 0);
  }
}

// Truncating a fork back over blocks its parent still holds frees none of
// them, yet the fork will need fresh blocks for those tokens again. If the
// pool cannot reserve them, the shortfall must not fall on another started
// request: the parent (never truncated) must still reach its max tokens.
TEST(KVCacheManagerTest,
     ReservationTruncateOverSharedBlocksSparesOtherRequests) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    SCOPED_TRACE(testing::StorageName(storage));
    CheckedManager m = MakeManager({storage, AdmissionMode::kReservation}, 12);
    ASSERT_THAT(m.Add(1, 12, 4), IsOk());  // [a b c], one more block at most.
    ASSERT_THAT(m.Fork(1, 2), IsOk());     // 2 + 2 reserved.
    SequenceId next = 100;
    while (m->CanAdmit(4, 0) == Admission::kAdmit) {
      ASSERT_THAT(m.Add(next++, 4, 0), IsOk());
    }
    ASSERT_EQ(next - 100, 5);
    const absl::Status truncated = m.Truncate(2, 0);  // Frees nothing.
    ASSERT_TRUE(truncated.ok() || truncated.code() == Code::kResourceExhausted)
        << truncated;
    StepOutput out;
    ASSERT_THAT(m.Append(2, static_cast<int32_t>(16 - *m->num_tokens(2)), &out),
                IsOk());
    out.copies.MarkDone();
    EXPECT_THAT(m.Append(1, 4, &out), IsOk());
    out.copies.MarkDone();
  }
}

TEST(KVCacheManagerTest, ReservationHoldsAgainstAGreedyManagerOnASharedPool) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = SmallLayout(), .num_blocks = 20});
  ASSERT_THAT(pool, IsOk());
  KVCacheManager::Options ro = OptionsFor(kHostReservation, 0);
  ro.pool = pool->get();
  KVCacheManager::Options wo = OptionsFor(kHostWatermark, 0);
  wo.pool = pool->get();
  CheckedManager reserving(*KVCacheManager::Create(ro));
  CheckedManager greedy(*KVCacheManager::Create(wo));
  ASSERT_THAT(reserving.Add(1, 6, 10), IsOk());
  ASSERT_THAT(reserving.Fork(1, 2), IsOk());  // 2 used; 3 + 3 reserved.
  // The greedy manager takes every block it can, then runs out.
  SequenceId next = 100;
  while (greedy->CanAdmit(4, 0) == Admission::kAdmit) {
    ASSERT_THAT(greedy.Add(next++, 4, 0), IsOk());
  }
  EXPECT_EQ(next - 100, 12);  // 20 - 2 used - 6 reserved.
  EXPECT_THAT(greedy.Append(100, 1), StatusIs(Code::kResourceExhausted));
  for (int i = 0; i < 10; ++i) {
    ASSERT_THAT(reserving.Append(1 + i % 2, 1), IsOk()) << i;
    ASSERT_THAT(reserving.Append(2 - i % 2, 1), IsOk()) << i;
  }
  EXPECT_THAT(reserving.Append(1, 1), StatusIs(Code::kOutOfRange));
  // One copy-on-write allowance is left over (the second writer kept its
  // block); nothing else is free.
  EXPECT_EQ((*pool)->books().num_free_blocks(),
            (*pool)->books().num_reserved_blocks());
}

// ---------------------------------------------------------------------------
// Contracts

TEST(KVCacheManagerDeathTest, CallsWithoutAnOutputAbort) {
  CheckedManager m = MakeManager(kHostWatermark, 4);
  ASSERT_THAT(m.Add(1, 2, 0), IsOk());
  EXPECT_DEATH((void)m->AddSequence(2, 1, 0, nullptr),
               "AddSequence needs an output");
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1}};
  EXPECT_DEATH((void)m->AppendSlots(step, nullptr),
               "AppendSlots needs an output");
  ASSERT_THAT(m.Preempt(1), IsOk());
  EXPECT_DEATH((void)m->Readmit(1, nullptr), "Readmit needs an output");
}

// Regressions: Truncate of a forked sequence left the reservation short and
// a later Free / Readmit aborted ("shrinking a reservation failed").
TEST(KVCacheManagerRegressionTest, TruncateOfAForkThenFreeDoesNotAbort) {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> m =
      KVCacheManager::Create({.layout = {.num_layers = 1,
                                         .num_kv_heads = 1,
                                         .head_dim = 2,
                                         .dtype = DType::kFloat32,
                                         .block_tokens = 4},
                              .num_blocks = 5,
                              .admission = AdmissionMode::kReservation});
  ASSERT_THAT(m, IsOk());
  StepOutput out;
  ASSERT_THAT((*m)->AddSequence(1, 8, 0, &out), IsOk());
  ASSERT_THAT((*m)->Fork(1, 2), IsOk());
  ASSERT_THAT((*m)->Fork(1, 3), IsOk());
  const absl::Status truncated = (*m)->Truncate(2, 0);
  EXPECT_TRUE(truncated.ok() || absl::IsResourceExhausted(truncated))
      << truncated;
  (*m)->CheckInvariants();
  EXPECT_THAT((*m)->Free(3), IsOk());
  (*m)->CheckInvariants();
}

TEST(KVCacheManagerRegressionTest, TruncateOfAForkThenReadmitDoesNotAbort) {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> m =
      KVCacheManager::Create({.layout = {.num_layers = 1,
                                         .num_kv_heads = 1,
                                         .head_dim = 2,
                                         .dtype = DType::kFloat32,
                                         .block_tokens = 4},
                              .num_blocks = 6,
                              .admission = AdmissionMode::kReservation});
  ASSERT_THAT(m, IsOk());
  StepOutput out;
  ASSERT_THAT((*m)->AddSequence(4, 4, 0, &out), IsOk());
  ASSERT_THAT((*m)->AddSequence(1, 8, 0, &out), IsOk());
  ASSERT_THAT((*m)->Fork(1, 2), IsOk());
  ASSERT_THAT((*m)->Fork(1, 3), IsOk());
  ASSERT_THAT((*m)->Preempt(4), IsOk());
  const absl::Status truncated = (*m)->Truncate(2, 0);
  EXPECT_TRUE(truncated.ok() || absl::IsResourceExhausted(truncated))
      << truncated;
  const absl::Status readmitted = (*m)->Readmit(4, &out);
  EXPECT_TRUE(readmitted.ok() || absl::IsResourceExhausted(readmitted))
      << readmitted;
  (*m)->CheckInvariants();
}

// ---------------------------------------------------------------------------
// Table versions (what the delta export skips rows by)

TEST(KVCacheManagerTest, TableVersionMovesWithEveryChangeOfTheIds) {
  CheckedManager m = MakeManager(kHostWatermark, 16, 8);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 0, &out), IsOk());  // 2 blocks.
  const KVCacheManager::TableVersion v0 = VersionOf(*m, 1);
  EXPECT_EQ(v0.manager, m->instance_id());
  EXPECT_NE(v0.sequence, 0u);

  // A token inside the tail block changes no id: same version.
  const SlotRequest in_block[] = {{.seq = 1, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(in_block, &out), IsOk());
  EXPECT_EQ(VersionOf(*m, 1), v0);
  // Lookups and forks of it read the table only.
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  EXPECT_EQ(VersionOf(*m, 1), v0);
  EXPECT_NE(VersionOf(*m, 2), v0);  // Another sequence, same blocks.

  // Copy-on-write of the shared tail; a new block; truncate; copy-on-write
  // of a shared block that truncation made the tail; preempt + readmit;
  // swap out + in: each gives a new version, never an old one.
  std::vector<KVCacheManager::TableVersion> seen = {v0};
  auto expect_new = [&](const char* what) {
    const KVCacheManager::TableVersion v = VersionOf(*m, 1);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), v), 0) << what;
    seen.push_back(v);
  };
  const absl::Span<const BlockId> forked = *m->block_table(2);
  ASSERT_THAT(m->AppendSlots(in_block, &out), IsOk());  // 8 tokens.
  EXPECT_NE((*m->block_table(1))[1], forked[1]);
  expect_new("copy-on-write of the tail");
  ASSERT_THAT(m->AppendSlots(in_block, &out), IsOk());  // 9: a third block.
  expect_new("new block");
  ASSERT_THAT(m->Truncate(1, 2), IsOk());  // Its first block, shared.
  expect_new("truncate");
  ASSERT_THAT(m->AppendSlots(in_block, &out), IsOk());
  EXPECT_NE((*m->block_table(1))[0], forked[0]);
  expect_new("copy-on-write of a truncated-to block");
  ASSERT_THAT(m->Preempt(1), IsOk());
  ASSERT_THAT(m->Readmit(1, &out), IsOk());
  expect_new("readmit");
  ASSERT_THAT(m->SwapOut(1), IsOk());
  ASSERT_THAT(m->SwapIn(1), IsOk());
  expect_new("swap");

  // A freed id admitted again is a new entry; so is every sequence of
  // another manager.
  const KVCacheManager::TableVersion before_free = VersionOf(*m, 2);
  ASSERT_THAT(m->Free(2), IsOk());
  ASSERT_THAT(m->AddSequence(2, 6, 0, &out), IsOk());
  EXPECT_NE(VersionOf(*m, 2).sequence, before_free.sequence);
  CheckedManager other = MakeManager(kHostWatermark, 16);
  ASSERT_THAT(other->AddSequence(1, 6, 0, &out), IsOk());
  EXPECT_NE(other->instance_id(), m->instance_id());
  EXPECT_NE(VersionOf(*other, 1), VersionOf(*m, 1));
}

TEST(KVCacheManagerTest, FindRunningTableAnswersOnlyForRunningSequences) {
  CheckedManager m = MakeManager(kBooksWatermark, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 5, 0, &out), IsOk());
  ASSERT_THAT(m->AddSequence(2, 3, 0, &out), IsOk());
  ASSERT_THAT(m->Preempt(2), IsOk());
  KVCacheManager::RunningTable t;
  ASSERT_TRUE(m->FindRunningTable(1, &t));
  const KVCacheManager::RunningTable want = *m->running_table(1);
  EXPECT_EQ(t.blocks.data(), want.blocks.data());
  EXPECT_EQ(t.blocks.size(), 2u);
  EXPECT_EQ(t.num_tokens, 5);
  EXPECT_EQ(t.version, want.version);
  KVCacheManager::RunningTable untouched;
  untouched.num_tokens = -3;
  EXPECT_FALSE(m->FindRunningTable(2, &untouched));  // Preempted.
  EXPECT_FALSE(m->FindRunningTable(9, &untouched));  // Unknown.
  EXPECT_EQ(untouched.num_tokens, -3);
  EXPECT_THAT(m->running_table(2), StatusIs(Code::kFailedPrecondition));
  EXPECT_THAT(m->running_table(9), StatusIs(Code::kNotFound));
}

}  // namespace
}  // namespace pagedkv
