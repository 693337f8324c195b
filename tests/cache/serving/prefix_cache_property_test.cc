// Random serving workloads on a prefix-caching manager, against a simple
// model: the set of every token prefix (in whole blocks) some sequence
// committed. A hit may never be longer than the model allows (nothing
// uncommitted, nothing never seen); with a pool too large to evict and no
// operation that unpublishes, it is exactly as long. In host mode every
// token's bytes are a tag of its whole prefix, checked after every hit and
// for every running sequence often, so a hit that served another prefix's
// KV, a cached block overwritten in place or a wrong switch shows up as a
// wrong word. CheckInvariants() runs after every call (CheckedManager).
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::TableOf;
using ::pagedkv::testing::WriteToken;

constexpr int32_t kBt = 4;

struct Case {
  const char* name;
  StorageMode storage;
  AdmissionMode admission;
  int32_t num_blocks;
  bool exact;  // Big pool; no truncate, reset or preemption by recompute.
  uint32_t seed;
};

// The tag of token t: a mix of every token id up to it (so equal tags mean
// equal prefixes, in practice), never 0.
uint32_t PrefixTag(const std::vector<int32_t>& tokens, size_t t) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i <= t; ++i) {
    h = (h ^ static_cast<uint32_t>(tokens[i])) * 16777619u;
  }
  return h | 1u;
}

class PrefixWorkload {
 public:
  explicit PrefixWorkload(const Case& c)
      : c_(c), rng_(c.seed), m_(MakeManager(c)) {}

  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      const int op = static_cast<int>(rng_() % 100);
      if (op < 25) {
        Admit();
      } else if (op < 65) {
        Append();
      } else if (op < 72) {
        FreeOne();
      } else if (op < 78) {
        ForkOne();
      } else if (op < 83) {
        SwapOne();
      } else if (op < 88 && !c_.exact) {
        TruncateOne();
      } else if (op < 92 && !c_.exact) {
        PreemptOne();
      } else if (op < 93 && !c_.exact) {
        m_->ResetPrefixCache();
        m_->CheckInvariants();
      } else {
        ReadmitOne();
      }
      if (step % 50 == 0) CheckAllBytes();
      if (::testing::Test::HasFatalFailure()) return;
    }
    CheckAllBytes();
    const PrefixCacheStats s = m_->stats().prefix;
    EXPECT_GT(s.hit_tokens, 0) << "the workload never hit: a weak test";
    if (c_.exact) {
      EXPECT_EQ(s.evicted_blocks, 0) << "pool too small";
    } else {
      EXPECT_GT(s.evicted_blocks, 0) << "never evicted: a weak test";
    }
    for (const auto& [id, seq] : seqs_) ASSERT_TRUE(m_.Free(id).ok());
    seqs_.clear();
    // Cached blocks are free blocks: all of them.
    m_->books().CheckInvariants();
    EXPECT_EQ(m_->books().num_free_blocks(), m_->books().num_blocks());
    EXPECT_EQ(m_->stats().reserved_blocks, 0);
  }

 private:
  struct Seq {
    std::vector<int32_t> tokens;  // Every token with a slot.
    int64_t committed = 0;
    // Tokens whose ids the manager has: a late sequence's decode steps
    // leave them out, and CatchUp gives them later (TokenCommit::token_ids).
    int64_t known = 0;
    bool late = false;
  };

  static CheckedManager MakeManager(const Case& c) {
    KVCacheManager::Options o;
    o.layout = SmallLayout(kBt);
    o.num_blocks = c.num_blocks;
    o.storage = c.storage;
    o.admission = c.admission;
    o.watermark = 0.0;
    o.num_host_blocks = 16;
    o.prefix_caching.enabled = true;
    return CheckedManager(*KVCacheManager::Create(o));
  }

  bool host() const { return c_.storage == StorageMode::kHost; }

  std::vector<int32_t> NewPrompt() {
    static const std::vector<std::vector<int32_t>> kSystem = {
        {11, 12, 13, 14},
        {21, 22, 23, 24, 25, 26, 27, 28},
        {31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43}};
    std::vector<int32_t> p = kSystem[rng_() % kSystem.size()];
    if (rng_() % 4 == 0) p.clear();
    const int extra = 1 + static_cast<int>(rng_() % 10);
    for (int i = 0; i < extra; ++i) p.push_back(1 + rng_() % 3);
    return p;
  }

  // The longest committed prefix of p the model knows, in blocks, capped
  // as the manager caps a prompt's hit.
  int64_t ModelHits(const std::vector<int32_t>& p) const {
    int64_t hits = 0;
    for (int64_t k = 1; k <= (static_cast<int64_t>(p.size()) - 1) / kBt; ++k) {
      if (committed_.count(Key(p, k)) == 0) break;
      hits = k;
    }
    return hits;
  }
  static std::string Key(const std::vector<int32_t>& p, int64_t blocks) {
    return std::string(reinterpret_cast<const char*>(p.data()),
                       blocks * kBt * sizeof(int32_t));
  }
  // Only blocks whose ids the manager has are published.
  void NoteCommit(Seq& s, int64_t n) {
    s.committed = std::max(s.committed, n);
    for (int64_t k = 1; k <= std::min(s.committed, s.known) / kBt; ++k) {
      committed_.insert(Key(s.tokens, k));
    }
  }

  void WriteSlots(const std::vector<int64_t>& slots, const Seq& s,
                  int64_t first) {
    if (!host()) return;
    for (size_t i = 0; i < slots.size(); ++i) {
      WriteToken(*m_->kv_pool(), slots[i], PrefixTag(s.tokens, first + i));
    }
  }

  void CheckBytes(SequenceId id, const Seq& s, int64_t upto) {
    if (!host()) return;
    const std::vector<BlockId> table = TableOf(*m_, id);
    for (int64_t t = 0; t < upto; ++t) {
      ASSERT_EQ(CheckToken(*m_->kv_pool(), SlotOf(table, kBt, t),
                           PrefixTag(s.tokens, t)),
                "")
          << "sequence " << id << " token " << t;
    }
  }
  void CheckAllBytes() {
    for (const auto& [id, s] : seqs_) {
      if (m_->state(id).value() != SequenceState::kRunning) continue;
      CheckBytes(id, s, static_cast<int64_t>(s.tokens.size()));
    }
  }

  SequenceId Pick(SequenceState want) {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) {
      if (m_->state(id).value() == want) ids.push_back(id);
    }
    if (ids.empty()) return -1;
    std::sort(ids.begin(), ids.end());
    return ids[rng_() % ids.size()];
  }

  void Admit() {
    const std::vector<int32_t> p = NewPrompt();
    if (m_->CanAdmit(p, 8) != Admission::kAdmit) return;
    StepOutput out;
    const SequenceId id = next_id_++;
    ASSERT_TRUE(m_->AddSequence(id, p, 8, &out).ok());
    m_->CheckInvariants();
    const int64_t hits = out.num_cached_tokens / kBt;
    ASSERT_EQ(out.num_cached_tokens % kBt, 0);
    const int64_t model = ModelHits(p);
    ASSERT_LE(hits, model) << "a hit on a prefix nobody committed";
    if (c_.exact) {
      ASSERT_EQ(hits, model);
    }
    Seq& s = seqs_[id];
    s.tokens = p;
    s.committed = hits * kBt;
    s.known = static_cast<int64_t>(p.size());
    s.late = rng_() % 3 == 0;
    CheckBytes(id, s, out.num_cached_tokens);
    WriteSlots(out.slot_mapping, s, out.num_cached_tokens);
    // The prefill is written: commit it (sometimes later).
    if (rng_() % 3 != 0) {
      const TokenCommit commit{.seq = id,
                               .num_tokens = static_cast<int64_t>(p.size())};
      ASSERT_TRUE(m_->CommitTokens(absl::MakeConstSpan(&commit, 1)).ok());
      m_->CheckInvariants();
      NoteCommit(s, commit.num_tokens);
    }
  }

  void Append() {
    const SequenceId id = Pick(SequenceState::kRunning);
    if (id < 0) return;
    Seq& s = seqs_[id];
    const int32_t n = 1 + static_cast<int32_t>(rng_() % 3);
    std::vector<int32_t> ids(n);
    for (int32_t& t : ids) t = 1 + rng_() % 3;
    const int64_t before = static_cast<int64_t>(s.tokens.size());
    const int64_t commit = rng_() % 4 == 0 ? -1 : before;
    if (s.late && rng_() % 4 == 0) {
      CatchUp(id, s);
      if (::testing::Test::HasFatalFailure()) return;
    }
    const bool lagging = s.known < before;
    if (lagging && rng_() % 8 == 0) {
      // Ids after a gap would key the wrong positions: refused (or the
      // step passes the sequence's reserved tokens, checked first).
      const SlotRequest r{.seq = id, .num_tokens = n, .token_ids = ids};
      StepOutput out;
      const absl::Status st = m_->AppendSlots(absl::MakeConstSpan(&r, 1), &out);
      ASSERT_TRUE(absl::IsInvalidArgument(st) || absl::IsOutOfRange(st)) << st;
      m_->CheckInvariants();
    }
    const bool give_ids = !s.late && !lagging;
    SlotRequest r{.seq = id, .num_tokens = n, .commit = commit};
    if (give_ids) r.token_ids = ids;
    StepOutput out;
    const absl::Status st = m_->AppendSlots(absl::MakeConstSpan(&r, 1), &out);
    m_->CheckInvariants();
    if (!st.ok()) {
      ASSERT_TRUE(absl::IsResourceExhausted(st) || absl::IsOutOfRange(st))
          << st;
      if (absl::IsResourceExhausted(st)) PreemptOne();
      return;
    }
    if (give_ids) s.known += n;
    if (commit >= 0) NoteCommit(s, commit);
    s.tokens.insert(s.tokens.end(), ids.begin(), ids.end());
    WriteSlots(out.slot_mapping, s, before);
  }

  // A late sequence's missing ids, with a commit of what was written before
  // its last step (and sometimes per-step ids again from now on).
  void CatchUp(SequenceId id, Seq& s) {
    const int64_t held = static_cast<int64_t>(s.tokens.size());
    const TokenCommit c{
        .seq = id,
        .num_tokens = std::max(s.committed, held - 1),
        .token_ids = absl::MakeConstSpan(s.tokens).subspan(s.known)};
    ASSERT_TRUE(m_->CommitTokens(absl::MakeConstSpan(&c, 1)).ok());
    m_->CheckInvariants();
    s.known = held;
    NoteCommit(s, c.num_tokens);
    if (rng_() % 2 == 0) s.late = false;
  }

  void FreeOne() {
    for (SequenceState st : {SequenceState::kRunning, SequenceState::kPreempted,
                             SequenceState::kSwappedOut}) {
      const SequenceId id = Pick(st);
      if (id < 0) continue;
      ASSERT_TRUE(m_.Free(id).ok());
      seqs_.erase(id);
      return;
    }
  }

  void ForkOne() {
    const SequenceId id = Pick(SequenceState::kRunning);
    if (id < 0) return;
    const SequenceId child = next_id_++;
    if (!m_.Fork(id, child).ok()) return;  // kReservation may refuse.
    seqs_[child] = seqs_[id];
  }

  void SwapOne() {
    const SequenceId out = Pick(SequenceState::kRunning);
    if (out >= 0 && rng_() % 2 == 0) {
      if (m_.SwapOut(out).ok() && !host()) {
        ASSERT_TRUE(m_.CompleteSwap(out).ok());
      }
      return;
    }
    const SequenceId in = Pick(SequenceState::kSwappedOut);
    if (in < 0) return;
    if (m_.SwapIn(in).ok()) {
      if (!host()) {
        ASSERT_TRUE(m_.CompleteSwap(in).ok());
      }
      CheckBytes(in, seqs_[in], static_cast<int64_t>(seqs_[in].tokens.size()));
    }
  }

  void TruncateOne() {
    const SequenceId id = Pick(SequenceState::kRunning);
    if (id < 0) return;
    Seq& s = seqs_[id];
    const int64_t len = static_cast<int64_t>(rng_() % (s.tokens.size() + 1));
    if (!m_.Truncate(id, len).ok()) return;  // kReservation may refuse.
    s.tokens.resize(len);
    s.committed = std::min(s.committed, len);
    s.known = std::min(s.known, len);
  }

  void PreemptOne() {
    const SequenceId id = Pick(SequenceState::kRunning);
    if (id < 0) return;
    ASSERT_TRUE(m_.Preempt(id).ok());
  }

  void ReadmitOne() {
    const SequenceId id = Pick(SequenceState::kPreempted);
    if (id < 0) return;
    Seq& s = seqs_[id];
    if (s.tokens.empty()) return;
    StepOutput out;
    if (!m_.Readmit(id, &out).ok()) return;
    const int64_t hits = out.num_cached_tokens / kBt;
    ASSERT_LE(hits, ModelHits(s.tokens));
    s.committed = out.num_cached_tokens;
    CheckBytes(id, s, out.num_cached_tokens);
    WriteSlots(out.slot_mapping, s, out.num_cached_tokens);
  }

  const Case c_;
  std::mt19937 rng_;
  CheckedManager m_;
  std::map<SequenceId, Seq> seqs_;
  std::set<std::string> committed_;
  SequenceId next_id_ = 1;
};

class PrefixCachePropertyTest : public ::testing::TestWithParam<Case> {};

TEST_P(PrefixCachePropertyTest, HitsAreCommittedPrefixesWithTheirBytes) {
  PrefixWorkload w(GetParam());
  // Exact cases check every block of a large pool after every call.
  w.Run(GetParam().exact ? 1500 : 5000);
}

constexpr StorageMode kHost = StorageMode::kHost;
constexpr StorageMode kBooks = StorageMode::kBooksOnly;
constexpr AdmissionMode kWatermark = AdmissionMode::kWatermark;
constexpr AdmissionMode kReservation = AdmissionMode::kReservation;

INSTANTIATE_TEST_SUITE_P(
    Workloads, PrefixCachePropertyTest,
    ::testing::Values(
        Case{"HostWatermarkExact", kHost, kWatermark, 4096, true, 1},
        Case{"HostReservationExact", kHost, kReservation, 4096, true, 2},
        Case{"BooksWatermarkExact", kBooks, kWatermark, 4096, true, 3},
        Case{"HostWatermarkSmall", kHost, kWatermark, 24, false, 4},
        Case{"HostReservationSmall", kHost, kReservation, 32, false, 5},
        Case{"BooksWatermarkSmall", kBooks, kWatermark, 24, false, 6},
        Case{"BooksReservationSmall", kBooks, kReservation, 32, false, 7},
        Case{"HostWatermarkTiny", kHost, kWatermark, 10, false, 8}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace pagedkv
