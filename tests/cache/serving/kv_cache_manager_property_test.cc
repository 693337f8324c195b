// A seeded random mix of every KVCacheManager operation (add, batched ragged
// append, fork, truncate, free, preempt, readmit, swap out / in, complete
// swap, and bad input) against a trivially correct model, in every storage
// and admission mode, on small pools that run out often.
//
// The model keeps, per sequence, its state and the tag of every token. Each
// new slot gets a fresh tag written into every layer, K/V and head of the
// slot (host mode: through kv_pool(); books-only: into a simulated device
// and host memory, where the test runs the copies the manager hands out, as
// a GPU server would). After every step every visible token of every running
// sequence must read back its tag, which catches copy-on-write and swap bugs,
// and every block's refcount must equal the references the model knows of.
// Failed calls must change nothing (snapshot before and after).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/copy_on_write.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ManagerSnapshot;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TakeSnapshot;
using ::pagedkv::testing::WriteToken;
using ::testing::HasSubstr;
using Code = absl::StatusCode;

constexpr int32_t kBt = 4;
constexpr int kSteps = 1500;
constexpr size_t kMaxSequences = 12;

struct Mode {
  StorageMode storage;
  AdmissionMode admission;
};

using Param = std::tuple<Mode, uint32_t>;

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  const Mode mode = std::get<0>(info.param);
  return std::string(testing::StorageName(mode.storage)) +
         testing::AdmissionName(mode.admission) + "Seed" +
         std::to_string(std::get<1>(info.param));
}

// Two layers, two heads, one dim: 8 words a token.
KVLayout PropertyLayout() {
  return KVLayout{.num_layers = 2,
                  .num_kv_heads = 2,
                  .head_dim = 1,
                  .dtype = DType::kFloat32,
                  .block_tokens = kBt};
}

int64_t BlocksFor(int64_t tokens) { return (tokens + kBt - 1) / kBt; }

struct ModelSequence {
  SequenceState state = SequenceState::kRunning;
  std::vector<uint32_t> tags;  // One per token: num_tokens == tags.size().
  int64_t max_tokens = 0;
  SwapPlan pending;           // Books-only: the swap in flight.
  std::vector<BlockId> host;  // Books-only: its host blocks.
};

class KVCacheManagerRandomOpsTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const Mode mode = std::get<0>(GetParam());
    rng_.seed(std::get<1>(GetParam()));
    books_only_ = mode.storage == StorageMode::kBooksOnly;
    reservation_ = mode.admission == AdmissionMode::kReservation;
    num_blocks_ = 12 + static_cast<int32_t>(rng_() % 29);  // 12..40.
    num_host_blocks_ =
        rng_() % 4 == 0 ? 0 : 4 + static_cast<int32_t>(rng_() % 20);
    const double watermarks[] = {0.0, 0.05, 0.1, 0.25};
    KVCacheManager::Options o;
    o.layout = PropertyLayout();
    o.num_blocks = num_blocks_;
    o.storage = mode.storage;
    o.admission = mode.admission;
    o.watermark = watermarks[rng_() % 4];
    o.num_host_blocks = num_host_blocks_;
    absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
        KVCacheManager::Create(o);
    ASSERT_THAT(made, IsOk());
    m_ = std::make_unique<CheckedManager>(*std::move(made));
    if (books_only_) {
      device_.assign(static_cast<size_t>(num_blocks_) * kBt, 0);
      host_.assign(static_cast<size_t>(num_host_blocks_) * kBt, 0);
    }
  }

  KVCacheManager& manager() { return **m_; }
  CheckedManager& m() { return *m_; }

  // --- Picking -----------------------------------------------------------

  std::vector<SequenceId> IdsWhere(bool (*pred)(SequenceState)) const {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) {
      if (pred(s.state)) ids.push_back(id);
    }
    return ids;
  }
  static bool Any(SequenceState) { return true; }
  static bool Running(SequenceState s) { return s == SequenceState::kRunning; }
  static bool Preempted(SequenceState s) {
    return s == SequenceState::kPreempted;
  }
  static bool SwappedOut(SequenceState s) {
    return s == SequenceState::kSwappedOut;
  }
  static bool Swapping(SequenceState s) {
    return s == SequenceState::kSwappingOut || s == SequenceState::kSwappingIn;
  }
  static bool NotRunning(SequenceState s) { return !Running(s); }

  SequenceId Pick(const std::vector<SequenceId>& ids) {
    return ids[rng_() % ids.size()];
  }

  // Every id the model knows plus the next fresh one.
  std::vector<SequenceId> SnapshotIds() const {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) ids.push_back(id);
    ids.push_back(next_id_);
    return ids;
  }
  ManagerSnapshot Snap() { return TakeSnapshot(manager(), SnapshotIds()); }

  // --- Bytes -------------------------------------------------------------

  void WriteTag(int64_t slot, uint32_t tag) {
    if (books_only_) {
      device_[static_cast<size_t>(slot)] = tag;
    } else {
      WriteToken(*manager().kv_pool(), slot, tag);
    }
  }
  std::string CheckTag(int64_t slot, uint32_t tag) {
    if (!books_only_) return CheckToken(*manager().kv_pool(), slot, tag);
    const uint32_t got = device_[static_cast<size_t>(slot)];
    if (got == tag) return "";
    return "slot " + std::to_string(slot) + " holds tag " +
           std::to_string(got) + ", want " + std::to_string(tag);
  }
  static void SimCopy(const std::vector<uint32_t>& from, BlockId src,
                      std::vector<uint32_t>& to, BlockId dst) {
    std::copy_n(from.begin() + int64_t{src.value()} * kBt, kBt,
                to.begin() + int64_t{dst.value()} * kBt);
  }
  // Gives new tags to out's slots of request `request` of `seq`.
  void WriteNewTokens(const StepOutput& out, size_t request,
                      ModelSequence& seq) {
    for (int32_t i = out.request_offsets[request];
         i < out.request_offsets[request + 1]; ++i) {
      const uint32_t tag = next_tag_++;
      WriteTag(out.slot_mapping[i], tag);
      seq.tags.push_back(tag);
    }
  }

  // --- Operations --------------------------------------------------------

  void Add() {
    if (seqs_.size() >= kMaxSequences) return;
    const SequenceId id = next_id_;
    const int64_t prompt = 1 + rng_() % 16;
    const int64_t max_new = rng_() % 25;
    const Admission admission = manager().CanAdmit(prompt, max_new);
    if (BlocksFor(reservation_ ? prompt + max_new : prompt) > num_blocks_) {
      EXPECT_EQ(admission, Admission::kNever);
    }
    const ManagerSnapshot before = Snap();
    StepOutput out;
    const absl::Status status = m().Add(id, prompt, max_new, &out);
    if (admission != Admission::kAdmit) {
      EXPECT_THAT(status, StatusIs(Code::kResourceExhausted,
                                   HasSubstr(admission == Admission::kNever
                                                 ? "can never fit"
                                                 : "does not fit now")));
      EXPECT_EQ(Snap(), before);
      return;
    }
    ASSERT_THAT(status, IsOk());
    ++next_id_;
    ASSERT_EQ(out.slot_mapping.size(), static_cast<size_t>(prompt));
    ASSERT_EQ(out.request_offsets, (std::vector<int32_t>{0, int32_t(prompt)}));
    ModelSequence& s = seqs_[id];
    s.max_tokens = prompt + max_new;
    WriteNewTokens(out, 0, s);
  }

  void Append() {
    std::vector<SequenceId> running = IdsWhere(Running);
    if (running.empty()) return;
    const size_t k = 1 + rng_() % std::min<size_t>(4, running.size());
    std::vector<SlotRequest> requests;
    bool past_max = false;
    int64_t growth = 0;
    int64_t shared_tails = 0;
    for (size_t i = 0; i < k; ++i) {
      // A partial Fisher-Yates: distinct ids.
      std::swap(running[i], running[i + rng_() % (running.size() - i)]);
      const SequenceId id = running[i];
      const ModelSequence& s = seqs_[id];
      const int64_t length = static_cast<int64_t>(s.tags.size());
      int32_t n = rng_() % 4 == 0 ? 1 + static_cast<int32_t>(rng_() % 9) : 1;
      if (reservation_) {
        const int64_t room = s.max_tokens - length;
        if (room == 0) {
          if (rng_() % 8 != 0) continue;
          past_max = true;  // Asks for one token past its max.
        } else {
          n = static_cast<int32_t>(std::min<int64_t>(n, room));
        }
      }
      requests.push_back({.seq = id, .num_tokens = n});
      growth += BlocksFor(length + n) - BlocksFor(length);
      if (length % kBt != 0) {
        const BlockId tail = (*manager().block_table(id))[length / kBt];
        if (manager().books().ref_count(tail) > 1) ++shared_tails;
      }
    }
    if (requests.empty()) return;
    const int64_t unreserved = manager().books().num_unreserved_free_blocks();
    const ManagerSnapshot before = Snap();
    StepOutput out;
    const absl::Status status = m().Append(requests, &out);
    if (past_max) {
      EXPECT_THAT(status,
                  StatusIs(Code::kOutOfRange, HasSubstr("pass its reserved")));
      EXPECT_EQ(Snap(), before);
      return;
    }
    if (!status.ok()) {
      EXPECT_THAT(status, StatusIs(Code::kResourceExhausted));
      EXPECT_EQ(Snap(), before);
      EXPECT_TRUE(out.slot_mapping.empty());
      if (reservation_) {
        ADD_FAILURE() << "kReservation: a started request ran out: " << status;
      } else {
        EXPECT_GT(growth + shared_tails, unreserved) << "spurious " << status;
      }
      return;
    }
    if (!reservation_) {
      EXPECT_LE(growth, unreserved);
    }
    ASSERT_EQ(out.request_offsets.size(), requests.size() + 1);
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_EQ(out.request_offsets[i + 1] - out.request_offsets[i],
                requests[i].num_tokens);
    }
    if (books_only_) {
      for (const CopyOp& op : out.copies.ops()) {
        SimCopy(device_, op.src, device_, op.dst);
      }
    } else {
      EXPECT_TRUE(out.copies.empty());
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      ModelSequence& s = seqs_[requests[i].seq];
      const int64_t first = static_cast<int64_t>(s.tags.size());
      WriteNewTokens(out, i, s);
      const absl::Span<const BlockId> table =
          *manager().block_table(requests[i].seq);
      for (int32_t j = 0; j < requests[i].num_tokens; ++j) {
        ASSERT_EQ(out.slot_mapping[out.request_offsets[i] + j],
                  SlotOf(table, kBt, first + j));
      }
    }
    // Books-only: the sources stay held for a while now and then.
    if (!out.copies.empty() && deferred_.size() < 4 && rng_() % 3 == 0) {
      deferred_.push_back(std::move(out.copies));
    } else {
      out.copies.MarkDone();
    }
  }

  void Fork() {
    const std::vector<SequenceId> running = IdsWhere(Running);
    if (running.empty() || seqs_.size() >= kMaxSequences) return;
    const SequenceId parent = Pick(running);
    const SequenceId child = next_id_;
    const ManagerSnapshot before = Snap();
    const absl::Status status = m().Fork(parent, child);
    if (reservation_ && !status.ok()) {
      EXPECT_THAT(status, StatusIs(Code::kResourceExhausted));
      EXPECT_EQ(Snap(), before);
      return;
    }
    ASSERT_THAT(status, IsOk());
    ++next_id_;
    ModelSequence c = seqs_[parent];
    seqs_[child] = std::move(c);
  }

  void Truncate() {
    const std::vector<SequenceId> running = IdsWhere(Running);
    if (running.empty()) return;
    const SequenceId id = Pick(running);
    ModelSequence& s = seqs_[id];
    const int64_t length = static_cast<int64_t>(s.tags.size());
    if (rng_() % 10 == 0) {
      const ManagerSnapshot before = Snap();
      EXPECT_THAT(m().Truncate(id, length + 1 + rng_() % 3),
                  StatusIs(Code::kOutOfRange, HasSubstr("it has")));
      EXPECT_EQ(Snap(), before);
      return;
    }
    const int64_t new_length =
        length -
        static_cast<int64_t>(rng_() % (std::min<int64_t>(length, 9) + 1));
    const ManagerSnapshot before = Snap();
    const absl::Status status = m().Truncate(id, new_length);
    if (reservation_ && status.code() == Code::kResourceExhausted) {
      // Allowed instead of a reservation that falls short: dropping blocks
      // another sequence keeps (or a tail in a shared block) raises this
      // one's need, and the pool may not have the blocks.
      EXPECT_EQ(Snap(), before);
      return;
    }
    ASSERT_THAT(status, IsOk());
    s.tags.resize(static_cast<size_t>(new_length));
  }

  void Free() {
    if (seqs_.empty()) return;
    const SequenceId id = Pick(IdsWhere(Any));
    if (Swapping(seqs_[id].state)) {
      const ManagerSnapshot before = Snap();
      EXPECT_THAT(m().Free(id), StatusIs(Code::kFailedPrecondition,
                                         HasSubstr("swap is pending")));
      EXPECT_EQ(Snap(), before);
      return;
    }
    ASSERT_THAT(m().Free(id), IsOk());
    seqs_.erase(id);
  }

  void Preempt() {
    const std::vector<SequenceId> running = IdsWhere(Running);
    if (running.empty()) return;
    const SequenceId id = Pick(running);
    ASSERT_THAT(m().Preempt(id), IsOk());
    seqs_[id].state = SequenceState::kPreempted;
  }

  void Readmit() {
    const std::vector<SequenceId> preempted = IdsWhere(Preempted);
    if (preempted.empty()) return;
    const SequenceId id = Pick(preempted);
    ModelSequence& s = seqs_[id];
    const int64_t length = static_cast<int64_t>(s.tags.size());
    const int64_t unreserved = manager().books().num_unreserved_free_blocks();
    const ManagerSnapshot before = Snap();
    StepOutput out;
    const absl::Status status = m().Readmit(id, &out);
    if (!reservation_) {
      EXPECT_EQ(status.ok(), BlocksFor(length) <= unreserved) << status;
    }
    if (!status.ok()) {
      EXPECT_THAT(status, StatusIs(Code::kResourceExhausted));
      EXPECT_EQ(Snap(), before);
      return;
    }
    // The server recomputes the remembered tokens into the new slots.
    ASSERT_EQ(out.slot_mapping.size(), static_cast<size_t>(length));
    for (int64_t t = 0; t < length; ++t)
      WriteTag(out.slot_mapping[t], s.tags[t]);
    s.state = SequenceState::kRunning;
  }

  int32_t HostFree() const {
    const ManagerStats st = (*m_)->stats();
    return st.host_blocks - st.host_used_blocks;
  }

  void SwapOut() {
    const std::vector<SequenceId> running = IdsWhere(Running);
    if (running.empty()) return;
    const SequenceId id = Pick(running);
    ModelSequence& s = seqs_[id];
    const int64_t blocks = BlocksFor(static_cast<int64_t>(s.tags.size()));
    const std::vector<BlockId> table = testing::TableOf(manager(), id);
    const int32_t host_free = HostFree();
    const ManagerSnapshot before = Snap();
    absl::StatusOr<SwapPlan> plan = m().SwapOut(id);
    if (num_host_blocks_ == 0) {
      EXPECT_THAT(
          plan, StatusIs(Code::kFailedPrecondition, HasSubstr("no host tier")));
      EXPECT_EQ(Snap(), before);
      return;
    }
    if (blocks > host_free) {
      EXPECT_THAT(plan, StatusIs(Code::kResourceExhausted));
      EXPECT_EQ(Snap(), before);
      return;
    }
    ASSERT_THAT(plan, IsOk());
    if (books_only_) {
      EXPECT_EQ(plan->src, table);
      ASSERT_EQ(plan->dst.size(), table.size());
      s.state = SequenceState::kSwappingOut;
      s.pending = *std::move(plan);
    } else {
      EXPECT_TRUE(plan->src.empty() && plan->dst.empty());
      s.state = SequenceState::kSwappedOut;
    }
  }

  void SwapIn() {
    const std::vector<SequenceId> swapped = IdsWhere(SwappedOut);
    if (swapped.empty()) return;
    const SequenceId id = Pick(swapped);
    ModelSequence& s = seqs_[id];
    const int64_t blocks = BlocksFor(static_cast<int64_t>(s.tags.size()));
    const int64_t unreserved = manager().books().num_unreserved_free_blocks();
    const ManagerSnapshot before = Snap();
    absl::StatusOr<SwapPlan> plan = m().SwapIn(id);
    if (!reservation_) {
      EXPECT_EQ(plan.ok(), blocks <= unreserved) << plan.status();
    }
    if (!plan.ok()) {
      EXPECT_THAT(plan, StatusIs(Code::kResourceExhausted));
      EXPECT_EQ(Snap(), before);
      return;
    }
    if (books_only_) {
      EXPECT_EQ(plan->src, s.host);
      ASSERT_EQ(plan->dst.size(), static_cast<size_t>(blocks));
      s.state = SequenceState::kSwappingIn;
      s.pending = *std::move(plan);
    } else {
      s.state = SequenceState::kRunning;
    }
  }

  void CompleteSwap() {
    const std::vector<SequenceId> swapping = IdsWhere(Swapping);
    if (swapping.empty()) return;
    const SequenceId id = Pick(swapping);
    ModelSequence& s = seqs_[id];
    // Run the copies as late as allowed: both sides are still held.
    if (s.state == SequenceState::kSwappingOut) {
      for (size_t i = 0; i < s.pending.src.size(); ++i) {
        SimCopy(device_, s.pending.src[i], host_, s.pending.dst[i]);
      }
      ASSERT_THAT(m().CompleteSwap(id), IsOk());
      s.state = SequenceState::kSwappedOut;
      s.host = s.pending.dst;
    } else {
      for (size_t i = 0; i < s.pending.src.size(); ++i) {
        SimCopy(host_, s.pending.src[i], device_, s.pending.dst[i]);
      }
      ASSERT_THAT(m().CompleteSwap(id), IsOk());
      s.state = SequenceState::kRunning;
      s.host.clear();
      EXPECT_EQ(testing::TableOf(manager(), id), s.pending.dst);
    }
    s.pending = SwapPlan();
  }

  void ReleaseDeferred() {
    if (deferred_.empty()) return;
    const size_t i = rng_() % deferred_.size();
    deferred_[i].MarkDone();
    deferred_.erase(deferred_.begin() + static_cast<ptrdiff_t>(i));
  }

  // A call that must fail and change nothing.
  void BadInput() {
    const ManagerSnapshot before = Snap();
    const SequenceId unknown = next_id_ + 1000;
    switch (rng_() % 6) {
      case 0:
        if (seqs_.empty()) return;
        EXPECT_THAT(
            m().Add(Pick(IdsWhere(Any)), 1, 0),
            StatusIs(Code::kAlreadyExists, HasSubstr("already exists")));
        break;
      case 1: {
        const std::vector<SequenceId> idle = IdsWhere(NotRunning);
        if (idle.empty()) return;
        EXPECT_THAT(
            m().Append(Pick(idle), 1),
            StatusIs(Code::kFailedPrecondition, HasSubstr("not running")));
        break;
      }
      case 2: {
        // kReservation: one with room, or the first entry is OUT_OF_RANGE.
        std::vector<SequenceId> running;
        for (SequenceId id : IdsWhere(Running)) {
          if (!reservation_ ||
              seqs_[id].max_tokens >
                  static_cast<int64_t>(seqs_[id].tags.size())) {
            running.push_back(id);
          }
        }
        if (running.empty()) return;
        const SequenceId id = Pick(running);
        const SlotRequest twice[] = {{.seq = id, .num_tokens = 1},
                                     {.seq = id, .num_tokens = 1}};
        EXPECT_THAT(m().Append(twice),
                    StatusIs(Code::kInvalidArgument, HasSubstr("twice")));
        break;
      }
      case 3:
        EXPECT_THAT(m().Append(unknown, 1), StatusIs(Code::kNotFound));
        EXPECT_THAT(m().Fork(unknown, unknown + 1), StatusIs(Code::kNotFound));
        EXPECT_THAT(m().Free(unknown), StatusIs(Code::kNotFound));
        break;
      case 4: {
        const std::vector<SequenceId> running = IdsWhere(Running);
        if (running.empty()) return;
        const SequenceId id = Pick(running);
        EXPECT_THAT(m().Readmit(id), StatusIs(Code::kFailedPrecondition));
        EXPECT_THAT(m().CompleteSwap(id), StatusIs(Code::kFailedPrecondition));
        EXPECT_THAT(m().SwapIn(id), StatusIs(Code::kFailedPrecondition));
        break;
      }
      case 5: {
        const std::vector<SequenceId> running = IdsWhere(Running);
        if (running.empty()) return;
        EXPECT_THAT(m().Append(Pick(running), 0),
                    StatusIs(Code::kInvalidArgument));
        break;
      }
    }
    EXPECT_EQ(Snap(), before);
  }

  // --- Checks ------------------------------------------------------------

  void Verify() {
    const KVCacheManager& mgr = manager();
    std::vector<int32_t> refs(static_cast<size_t>(num_blocks_), 0);
    int32_t running = 0;
    int64_t host_used = 0;
    for (const auto& [id, s] : seqs_) {
      ASSERT_TRUE(mgr.contains(id)) << "sequence " << id;
      ASSERT_EQ(*mgr.state(id), s.state) << "sequence " << id;
      ASSERT_EQ(*mgr.num_tokens(id), static_cast<int64_t>(s.tags.size()))
          << "sequence " << id;
      const int64_t blocks = BlocksFor(static_cast<int64_t>(s.tags.size()));
      switch (s.state) {
        case SequenceState::kRunning: {
          ++running;
          const absl::Span<const BlockId> table = *mgr.block_table(id);
          ASSERT_EQ(static_cast<int64_t>(table.size()), blocks);
          for (BlockId b : table) ++refs[static_cast<size_t>(b.value())];
          for (size_t t = 0; t < s.tags.size(); ++t) {
            ASSERT_EQ(CheckTag(SlotOf(table, kBt, static_cast<int64_t>(t)),
                               s.tags[t]),
                      "")
                << "sequence " << id << " token " << t << " of "
                << s.tags.size();
          }
          break;
        }
        case SequenceState::kSwappingOut:
          for (BlockId b : s.pending.src)
            ++refs[static_cast<size_t>(b.value())];
          host_used += blocks;
          break;
        case SequenceState::kSwappingIn:
          for (BlockId b : s.pending.dst)
            ++refs[static_cast<size_t>(b.value())];
          host_used += blocks;
          break;
        case SequenceState::kSwappedOut:
          host_used += blocks;
          break;
        case SequenceState::kPreempted:
          break;
        case SequenceState::kLoading:  // Needs a remote tier: never here.
          FAIL() << "sequence " << id << " is loading";
      }
    }
    for (const PendingCopies& copies : deferred_) {
      for (const CopyOp& op : copies.ops()) {
        ++refs[static_cast<size_t>(op.src.value())];
      }
    }
    int32_t used = 0;
    for (int32_t b = 0; b < num_blocks_; ++b) {
      ASSERT_EQ(mgr.books().ref_count(BlockId(b)), refs[static_cast<size_t>(b)])
          << "block " << b;
      if (refs[static_cast<size_t>(b)] > 0) ++used;
    }
    const ManagerStats st = mgr.stats();
    ASSERT_EQ(st.num_sequences, static_cast<int32_t>(seqs_.size()));
    ASSERT_EQ(st.running_sequences, running);
    ASSERT_EQ(st.used_blocks, used);
    ASSERT_EQ(st.host_used_blocks, host_used);
    ASSERT_LE(st.reserved_blocks, st.free_blocks);
    if (!reservation_) {
      ASSERT_EQ(st.reserved_blocks, 0);
    }
    ASSERT_FALSE(mgr.contains(next_id_));
  }

  // Releases everything; every block of both tiers must be free.
  void FreeEverything() {
    for (PendingCopies& copies : deferred_) copies.MarkDone();
    deferred_.clear();
    while (!IdsWhere(Swapping).empty()) {
      ASSERT_NO_FATAL_FAILURE(CompleteSwap());
    }
    for (SequenceId id : IdsWhere(Any)) ASSERT_THAT(m().Free(id), IsOk());
    seqs_.clear();
    const KVCacheManager& mgr = manager();
    EXPECT_EQ(mgr.books().num_free_blocks(), num_blocks_);
    EXPECT_EQ(mgr.books().num_reserved_blocks(), 0);
    const ManagerStats st = mgr.stats();
    EXPECT_EQ(st.used_blocks, 0);
    EXPECT_EQ(st.reserved_blocks, 0);
    EXPECT_EQ(st.num_sequences, 0);
    EXPECT_EQ(st.host_used_blocks, 0);
    if (mgr.host_pool() != nullptr) {
      EXPECT_EQ(mgr.host_pool()->books().num_free_blocks(), num_host_blocks_);
    }
  }

  void Step() {
    const uint32_t r = rng_() % 100;
    if (r < 12) {
      Add();
    } else if (r < 47) {
      Append();
    } else if (r < 55) {
      Fork();
    } else if (r < 61) {
      Truncate();
    } else if (r < 69) {
      Free();
    } else if (r < 74) {
      Preempt();
    } else if (r < 80) {
      Readmit();
    } else if (r < 85) {
      SwapOut();
    } else if (r < 90) {
      SwapIn();
    } else if (r < 95) {
      CompleteSwap();
    } else if (r < 98) {
      ReleaseDeferred();
    } else {
      BadInput();
    }
  }

  std::mt19937 rng_;
  bool books_only_ = false;
  bool reservation_ = false;
  int32_t num_blocks_ = 0;
  int32_t num_host_blocks_ = 0;
  std::unique_ptr<CheckedManager> m_;
  std::map<SequenceId, ModelSequence> seqs_;
  SequenceId next_id_ = 1;
  uint32_t next_tag_ = 1;
  // Books-only: one word per token slot of each tier (the test's "GPU").
  std::vector<uint32_t> device_;
  std::vector<uint32_t> host_;
  std::deque<PendingCopies> deferred_;  // Copies run, sources still held.
};

TEST_P(KVCacheManagerRandomOpsTest, MatchesReferenceModel) {
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    ASSERT_NO_FATAL_FAILURE(Step());
    ASSERT_NO_FATAL_FAILURE(Verify());
    if (HasFailure()) return;  // The first failing step is the reproducer.
  }
  ASSERT_NO_FATAL_FAILURE(FreeEverything());
}

INSTANTIATE_TEST_SUITE_P(
    Seeds, KVCacheManagerRandomOpsTest,
    ::testing::Combine(
        ::testing::Values(
            Mode{StorageMode::kHost, AdmissionMode::kWatermark},
            Mode{StorageMode::kHost, AdmissionMode::kReservation},
            Mode{StorageMode::kBooksOnly, AdmissionMode::kWatermark},
            Mode{StorageMode::kBooksOnly, AdmissionMode::kReservation}),
        ::testing::Range<uint32_t>(0, 32)),
    ParamName);

}  // namespace
}  // namespace pagedkv
