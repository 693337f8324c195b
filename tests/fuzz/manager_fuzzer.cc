// tests/fuzz/manager_fuzzer.cc
//
// libFuzzer target for the serving manager (cache/serving/kv_cache_manager.h).
// The input picks a manager (host mode, or now and then books-only; either
// admission mode; a small pool of 2-24 blocks of 2-4 tokens; a host tier of
// 0-16 blocks; a watermark) and decodes into up to kMaxOps operations over
// sequence ids 0..kIds-1: AddSequence, batched ragged AppendSlots, Fork,
// Truncate, Free, Preempt, Readmit, SwapOut, SwapIn, CompleteSwap, CanAdmit,
// the dense, CSR and delta exports of a batch (buffers exact or one short),
// and (books-only) releasing copy-on-write sources late. Ids are drawn so
// that unknown, duplicate and wrong-state ids come up.
//
// With prefix caching (half the inputs) sequences are mostly added with
// token ids (two system prompts, then a 3-token alphabet, under one of two
// tenant salts; now and then by count, never cached), decode steps give
// their ids (now and then none) and commits (now and then out of range),
// CommitTokens (1-3 entries, all or nothing) catches up left-out ids, and
// ResetPrefixCache runs now and then. A token's tag is then a digest of
// the salt and every id up to it, so a hit (AddSequence, Readmit, SwapIn)
// must read back exactly what its own tokens would have written. Memory
// bounds take hits as lowering the need (a hit in use costs no block, a
// revived one the free block it is: never more than no hit), AddSequence
// must admit exactly what CanAdmit with the ids admits, and a cached tail
// is one more copy on its next write.
//
// The model is per sequence: its state, one tag per token (so num_tokens is
// the tag count) and its max tokens. Every new slot the manager hands out
// gets a distinct word per (tag, layer, K|V, head, dim) written into the
// pool (host mode: kv_pool()->BlockData at KVLayout::ElementOffset;
// books-only: a simulated device and host memory, where the fuzzer runs the
// copies the manager hands out, as a GPU server would). After every
// operation:
//   - the status code must be one the model allows: the input errors that
//     apply (several when the input is wrong in several ways; the header
//     does not order them), else OK or RESOURCE_EXHAUSTED as the books
//     decide (ExpectMemory: admission by CanAdmit's documented rule, growth
//     and copy-on-write bounds for AppendSlots, reservations);
//   - a failed call changes nothing (stats, the pool's books (PoolBooks),
//     and every id's presence, state, length and block table);
//   - every token of every running sequence reads back its words, block
//     tables have the right size and slot mappings match them, every
//     device block's refcount equals the references the model knows of,
//     and stats agree with the model;
//   - CheckInvariants().
// At the end every sequence is freed and every block of both tiers must be
// free. A divergence prints the last operations and aborts.
//
//   bazel run --config=fuzz //tests/fuzz:manager_fuzzer -- -max_total_time=60
//
// Thread safety: one input at a time (libFuzzer's model).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/copy_on_write.h"
#include "cache/serving/block_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/pool_books.h"

namespace pagedkv::fuzzing {
namespace {

using Code = absl::StatusCode;

constexpr int kMaxOps = 256;
constexpr SequenceId kIds = 10;

enum Op {
  kAdd,
  kAppend,
  kFork,
  kTruncate,
  kFree,
  kPreempt,
  kReadmit,
  kSwapOut,
  kSwapIn,
  kCompleteSwap,
  kCanAdmit,
  kReleaseCopies,
  kCreate,
  kExport,
  kCommit,
  kReset,
  kHit,    // Not calls: successful ones that were served from the cache.
  kRehit,
  kNumOps,
};

OpStats& Stats() {
  return OpStats::Get("manager_fuzzer",
                      {"AddSequence", "AppendSlots", "Fork", "Truncate", "Free",
                       "Preempt", "Readmit", "SwapOut", "SwapIn",
                       "CompleteSwap", "CanAdmit", "release CoW sources",
                       "Create (bad options)", "Export (dense, CSR, delta)",
                       "CommitTokens", "ResetPrefixCache",
                       "(AddSequence hits)", "(Readmit/SwapIn re-hits)"});
}

const char* AdmissionName(Admission a) {
  return a == Admission::kAdmit   ? "admit"
         : a == Admission::kLater ? "later"
                                  : "never";
}

// The word stored for (tag, layer, kv, head, dim): a multiplicative mix,
// never 0 (fresh pool bytes are not mistaken for a token).
uint32_t TokenWord(uint32_t tag, int32_t layer, int32_t kv, int32_t head,
                   int32_t dim) {
  uint32_t x = tag * 0x9E3779B1u;
  x ^= static_cast<uint32_t>((layer << 12) | (kv << 11) | (head << 6) | dim);
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  return x | 1u;
}

bool StatsEqual(const ManagerStats& a, const ManagerStats& b) {
  return a.num_blocks == b.num_blocks && a.used_blocks == b.used_blocks &&
         a.free_blocks == b.free_blocks &&
         a.reserved_blocks == b.reserved_blocks &&
         a.shared_blocks == b.shared_blocks &&
         a.num_sequences == b.num_sequences &&
         a.running_sequences == b.running_sequences &&
         a.preemptions == b.preemptions && a.swap_outs == b.swap_outs &&
         a.swap_ins == b.swap_ins && a.swapped_blocks == b.swapped_blocks &&
         a.swapped_bytes == b.swapped_bytes && a.cow_copies == b.cow_copies &&
         a.host_blocks == b.host_blocks &&
         a.host_used_blocks == b.host_used_blocks;
}

std::string StatsString(const ManagerStats& s) {
  return absl::StrFormat(
      "{blocks %d used %d free %d reserved %d shared %d seqs %d running %d "
      "preemptions %d swap_outs %d swap_ins %d swapped_blocks %d cow %d host "
      "%d host_used %d}",
      s.num_blocks, s.used_blocks, s.free_blocks, s.reserved_blocks,
      s.shared_blocks, s.num_sequences, s.running_sequences, s.preemptions,
      s.swap_outs, s.swap_ins, s.swapped_blocks, s.cow_copies, s.host_blocks,
      s.host_used_blocks);
}

std::string TableString(absl::Span<const BlockId> t) {
  std::string s = "[";
  for (BlockId b : t) absl::StrAppend(&s, b.value(), " ");
  return s + "]";
}

// What a caller can observe of the manager: a failed call must keep it.
struct Snapshot {
  struct Seq {
    bool present = false;
    SequenceState state = SequenceState::kRunning;
    int64_t num_tokens = 0;
    std::vector<BlockId> table;
    bool operator==(const Seq& o) const {
      return present == o.present &&
             (!present || (state == o.state && num_tokens == o.num_tokens &&
                           table == o.table));
    }
  };
  ManagerStats stats;
  int32_t unreserved = 0;
  std::string books;  // PoolBooks.
  std::vector<Seq> seqs;

  bool operator==(const Snapshot& o) const {
    return StatsEqual(stats, o.stats) && unreserved == o.unreserved &&
           books == o.books && seqs == o.seqs;
  }
  std::string ToString() const {
    std::string s = absl::StrCat(StatsString(stats), " unreserved ",
                                 unreserved, " books ", books);
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (!seqs[i].present) continue;
      absl::StrAppend(&s, "; seq ", i, " ", SequenceStateName(seqs[i].state),
                      " ", seqs[i].num_tokens, " tokens ",
                      TableString(seqs[i].table));
    }
    return s;
  }
};

struct ModelSeq {
  SequenceState state = SequenceState::kRunning;
  std::vector<uint32_t> tags;  // One per token.
  int64_t max_tokens = 0;
  SwapPlan pending;           // Books-only: the swap in flight.
  std::vector<BlockId> host;  // Books-only: its host blocks (swapped out).
  // Prefix caching, a sequence added with ids: its ids and their digests
  // (chain[t] covers the salt and ids[0..t]; tags[t] is made of it), how
  // many ids the manager has, its commit point, and (books-only, while
  // swapping in) how many cached blocks SwapIn pinned at the front.
  bool with_ids = false;
  uint64_t salt = 0;
  std::vector<int32_t> ids;
  std::vector<uint64_t> chain;
  int64_t known_ids = 0;
  int64_t committed = 0;
  int64_t swap_hits = 0;

  void PushId(int32_t id) {
    uint64_t x = (chain.empty() ? salt * 0xD6E8FEB86659FD93ull : chain.back()) ^
                 (static_cast<uint64_t>(static_cast<uint32_t>(id)) + 1);
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    ids.push_back(id);
    chain.push_back(x);
    // The top bit set: never one of the fresh tags of sequences without ids.
    tags.push_back(static_cast<uint32_t>(x) | 0x80000000u);
  }
  void Resize(int64_t n) {
    tags.resize(static_cast<size_t>(n));
    if (!with_ids) return;
    ids.resize(static_cast<size_t>(n));
    chain.resize(static_cast<size_t>(n));
    known_ids = std::min(known_ids, n);
    committed = std::min(committed, n);
  }
};

// Whether a call with valid input must succeed, must fail for memory, or
// may do either (the model's bounds do not decide it).
enum class Memory { kMustSucceed, kMustFail, kEither };

class ManagerFuzzer {
 public:
  explicit ManagerFuzzer(FuzzInput& in) : in_(in) {}

  void Run() {
    Setup();
    Verify();
    while (!in_.empty() && history_.count() < kMaxOps) Step();
    FreeEverything();
  }

 private:
  // --- Setup -------------------------------------------------------------

  void Setup() {
    // One byte: books-only in a quarter of the inputs, prefix caching in
    // half (a bit the older seeds' books-only pick did not use).
    const uint8_t mode = in_.Byte();
    books_only_ = mode % 4 == 3;
    prefix_ = (mode >> 2) % 2 == 1;
    reservation_ = in_.Bool();
    bt_ = static_cast<int32_t>(2 + in_.Below(3));
    layout_ = KVLayout{.num_layers = static_cast<int32_t>(1 + in_.Below(2)),
                       .num_kv_heads = static_cast<int32_t>(1 + in_.Below(2)),
                       .head_dim = static_cast<int32_t>(1 + in_.Below(2)),
                       .dtype = DType::kFloat32,
                       .block_tokens = bt_};
    num_blocks_ = static_cast<int32_t>(2 + in_.Below(23));
    num_host_blocks_ =
        in_.Below(4) == 3 ? 0 : static_cast<int32_t>(1 + in_.Below(16));
    // Exact fractions, so that the model's ceil(watermark * blocks) is
    // exact: 0, 1/20, 1/10, 1/4, 1/2.
    const int64_t denominators[] = {1, 20, 10, 4, 2};
    watermark_denominator_ = denominators[in_.Below(5)];
    watermark_numerator_ = watermark_denominator_ == 1 ? 0 : 1;
    watermark_ = static_cast<double>(watermark_numerator_) /
                 static_cast<double>(watermark_denominator_);
    KVCacheManager::Options o;
    o.layout = layout_;
    o.num_blocks = num_blocks_;
    o.storage = books_only_ ? StorageMode::kBooksOnly : StorageMode::kHost;
    o.admission =
        reservation_ ? AdmissionMode::kReservation : AdmissionMode::kWatermark;
    o.watermark = watermark_;
    o.num_host_blocks = num_host_blocks_;
    o.prefix_caching.enabled = prefix_;
    history_.Add(absl::StrFormat(
        "setup %s %s%s, layout %s, %d blocks, %d host blocks, watermark %g",
        books_only_ ? "books-only" : "host",
        reservation_ ? "reservation" : "watermark",
        prefix_ ? ", prefix caching" : "", layout_.ToString(), num_blocks_,
        num_host_blocks_, watermark_));
    if (in_.OneIn(16)) {
      KVCacheManager::Options bad = o;
      switch (in_.Below(4)) {
        case 0:
          bad.watermark = in_.Bool() ? 1.0 : -0.5;
          break;
        case 1:
          bad.num_blocks = -static_cast<int32_t>(in_.Below(2));
          break;
        case 2:
          bad.num_host_blocks = -1;
          break;
        default:
          bad.layout.block_tokens = 0;
          break;
      }
      const absl::Status s = KVCacheManager::Create(bad).status();
      Stats().CountOp(kCreate, s);
      if (s.code() != Code::kInvalidArgument) {
        Divergence(history_,
                   absl::StrFormat("Create with a bad option: %s, want "
                                   "INVALID_ARGUMENT",
                                   s.ToString()));
      }
    }
    m_ = *KVCacheManager::Create(o);
    // Any table fits a row as wide as the pool.
    delta_max_blocks_ = num_blocks_;
    delta_.emplace(*BlockTableDeltaExporter::Create(
        {.max_rows = static_cast<int32_t>(kIds),
         .max_blocks = delta_max_blocks_,
         .pad_id = -1}));
    delta_tables_.assign(static_cast<size_t>(kIds) * delta_max_blocks_, -7);
    if (books_only_) {
      device_.assign(static_cast<size_t>(num_blocks_) * bt_, 0);
      host_.assign(static_cast<size_t>(num_host_blocks_) * bt_, 0);
    }
  }

  int64_t BlocksFor(int64_t tokens) const { return (tokens + bt_ - 1) / bt_; }
  // The free blocks this manager may still hand out or reserve: free and
  // not set aside for a sequence (ManagerStats: free_blocks includes the
  // reserved_blocks). With a private pool, the pool's unreserved free blocks
  // plus any the manager's reservation holds beyond its sequences' needs.
  int32_t Unreserved() const {
    const ManagerStats st = m_->stats();
    return st.free_blocks - st.reserved_blocks;
  }
  int32_t HostFree() const {
    const ManagerStats st = m_->stats();
    return st.host_blocks - st.host_used_blocks;
  }

  // --- Picking ids ---------------------------------------------------------

  bool Has(SequenceId id) const { return seqs_.count(id) > 0; }
  bool In(SequenceId id, SequenceState s) const {
    auto it = seqs_.find(id);
    return it != seqs_.end() && it->second.state == s;
  }
  // Mostly an id in state `s` (absent ids for `want_absent`), else any.
  SequenceId PickId(std::optional<SequenceState> s, bool want_absent = false) {
    std::vector<SequenceId> ids;
    for (SequenceId id = 0; id < kIds; ++id) {
      const bool match = want_absent     ? !Has(id)
                         : s.has_value() ? In(id, *s)
                                         : Has(id);
      if (match) ids.push_back(id);
    }
    if (!ids.empty() && in_.Below(8) != 7) {
      return ids[static_cast<size_t>(
          in_.Below(static_cast<int64_t>(ids.size())))];
    }
    return in_.Below(kIds);
  }

  // --- Bytes ---------------------------------------------------------------

  void WriteTag(int64_t slot, uint32_t tag) {
    if (books_only_) {
      device_[static_cast<size_t>(slot)] = tag;
      return;
    }
    std::byte* block = m_->kv_pool()->BlockData(StepOutput::BlockOf(slot, bt_));
    const int32_t offset = StepOutput::OffsetOf(slot, bt_);
    ForEachWord([&](int32_t l, int32_t kv, int32_t h, int32_t d) {
      const uint32_t w = TokenWord(tag, l, kv, h, d);
      std::memcpy(block + WordOffset(l, kv, h, offset, d), &w, sizeof(w));
    });
  }
  // "" when `slot` holds tag's words.
  std::string CheckTag(int64_t slot, uint32_t tag) const {
    if (books_only_) {
      const uint32_t got = device_[static_cast<size_t>(slot)];
      if (got == tag) return "";
      return absl::StrFormat("slot %d holds tag %d, want %d", slot, got, tag);
    }
    const std::byte* block =
        m_->kv_pool()->BlockData(StepOutput::BlockOf(slot, bt_));
    const int32_t offset = StepOutput::OffsetOf(slot, bt_);
    std::string diff;
    ForEachWord([&](int32_t l, int32_t kv, int32_t h, int32_t d) {
      if (!diff.empty()) return;
      uint32_t w;
      std::memcpy(&w, block + WordOffset(l, kv, h, offset, d), sizeof(w));
      if (w != TokenWord(tag, l, kv, h, d)) {
        diff = absl::StrFormat(
            "slot %d (layer %d, %s, head %d, dim %d) holds %#x, want tag %d's "
            "%#x",
            slot, l, kv == 0 ? "K" : "V", h, d, w, tag,
            TokenWord(tag, l, kv, h, d));
      }
    });
    return diff;
  }
  template <typename F>
  void ForEachWord(F f) const {
    for (int32_t l = 0; l < layout_.num_layers; ++l) {
      for (int32_t kv = 0; kv < 2; ++kv) {
        for (int32_t h = 0; h < layout_.num_kv_heads; ++h) {
          for (int32_t d = 0; d < layout_.head_dim; ++d) f(l, kv, h, d);
        }
      }
    }
  }
  size_t WordOffset(int32_t layer, int32_t kv, int32_t head, int32_t offset,
                    int32_t dim) const {
    return static_cast<size_t>(
               layout_.ElementOffset(layer, static_cast<KV>(kv), head, offset) +
               dim) *
           sizeof(uint32_t);
  }
  // Books-only: the caller's copies in the simulated memories.
  void SimCopy(const std::vector<uint32_t>& from, BlockId src,
               std::vector<uint32_t>& to, BlockId dst) const {
    std::copy_n(from.begin() + int64_t{src.value()} * bt_, bt_,
                to.begin() + int64_t{dst.value()} * bt_);
  }
  // Gives fresh tags to request `request`'s slots in `out`.
  void WriteNewTokens(const StepOutput& out, size_t request, ModelSeq& seq) {
    for (int32_t i = out.request_offsets[request];
         i < out.request_offsets[request + 1]; ++i) {
      const uint32_t tag = next_tag_++;
      WriteTag(out.slot_mapping[static_cast<size_t>(i)], tag);
      seq.tags.push_back(tag);
    }
  }

  // Writes the model's tags of tokens first.. into request `request`'s
  // slots in `out` (the KV a server computes for them).
  void WriteModelTokens(const StepOutput& out, size_t request,
                        const ModelSeq& seq, int64_t first) {
    for (int32_t i = out.request_offsets[request];
         i < out.request_offsets[request + 1]; ++i) {
      const int64_t t = first + (i - out.request_offsets[request]);
      WriteTag(out.slot_mapping[static_cast<size_t>(i)],
               seq.tags[static_cast<size_t>(t)]);
    }
  }
  // A prompt's next id: one of two system prompts for its first 6 tokens,
  // then a 3-token alphabet, so prompts share prefixes often.
  int32_t PromptId(int32_t system, int64_t t) {
    return t < 6 ? 100 * (system + 1) + static_cast<int32_t>(t)
                 : static_cast<int32_t>(in_.Below(3));
  }

  // --- Outcomes ------------------------------------------------------------

  Snapshot Snap() const {
    Snapshot s;
    s.stats = m_->stats();
    s.unreserved = Unreserved();
    s.books = PoolBooks(m_->books());
    for (SequenceId id = 0; id < kIds; ++id) {
      Snapshot::Seq q;
      q.present = m_->contains(id);
      if (q.present) {
        q.state = *m_->state(id);
        q.num_tokens = *m_->num_tokens(id);
        if (q.state == SequenceState::kRunning) {
          absl::Span<const BlockId> t = *m_->block_table(id);
          q.table.assign(t.begin(), t.end());
        }
      }
      s.seqs.push_back(std::move(q));
    }
    return s;
  }

  // `errors`: the input errors that apply (the call must return one of
  // them); when there are none, `memory` says whether it must succeed.
  void CheckOutcome(const absl::Status& got, const std::vector<Code>& errors,
                    Memory memory, const std::string& why,
                    const Snapshot& before) {
    std::vector<std::string> names;
    for (Code c : errors) names.push_back(CodeName(c));
    if (!errors.empty()) {
      if (got.ok() ||
          std::find(errors.begin(), errors.end(), got.code()) == errors.end()) {
        Divergence(history_,
                   absl::StrFormat("%s, model wants one of {%s}",
                                   got.ToString(), absl::StrJoin(names, ", ")));
      }
    } else if (memory == Memory::kMustSucceed && !got.ok()) {
      Divergence(history_, absl::StrFormat("%s, model wants OK (%s)",
                                           got.ToString(), why));
    } else if (memory == Memory::kMustFail &&
               got.code() != Code::kResourceExhausted) {
      Divergence(history_,
                 absl::StrFormat("%s, model wants RESOURCE_EXHAUSTED (%s)",
                                 got.ToString(), why));
    } else if (memory == Memory::kEither && !got.ok() &&
               got.code() != Code::kResourceExhausted) {
      Divergence(history_,
                 absl::StrFormat("%s, model wants OK or RESOURCE_EXHAUSTED "
                                 "(%s)",
                                 got.ToString(), why));
    }
    if (!got.ok()) {
      const Snapshot after = Snap();
      if (!(after == before)) {
        Divergence(history_,
                   absl::StrFormat("a failed call (%s) changed the manager:\n"
                                   "  before %s\n  after  %s",
                                   got.ToString(), before.ToString(),
                                   after.ToString()));
      }
    }
  }

  // Checks a fresh prefix of slots: request i's slots are tokens
  // first .. first + n of the sequence's table.
  void CheckSlots(const StepOutput& out, size_t request, SequenceId id,
                  int64_t first, int64_t n) {
    if (out.request_offsets.size() < request + 2 ||
        out.request_offsets[request + 1] - out.request_offsets[request] != n) {
      Divergence(history_,
                 absl::StrFormat("request %d of sequence %d: offsets {%s} for "
                                 "%d tokens",
                                 request, id,
                                 absl::StrJoin(out.request_offsets, " "), n));
    }
    const absl::Span<const BlockId> table = *m_->block_table(id);
    if (static_cast<int64_t>(table.size()) != BlocksFor(first + n)) {
      Divergence(history_,
                 absl::StrFormat("sequence %d: %d blocks for %d tokens", id,
                                 table.size(), first + n));
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = first + j;
      const int64_t want =
          int64_t{table[static_cast<size_t>(t / bt_)].value()} * bt_ + t % bt_;
      const int64_t got = out.slot_mapping[static_cast<size_t>(
          out.request_offsets[request] + j)];
      if (got != want) {
        Divergence(history_,
                   absl::StrFormat("sequence %d token %d: slot %d, its table "
                                   "%s says %d",
                                   id, t, got, TableString(table), want));
      }
    }
  }

  Admission ExpectedAdmission(int64_t prompt, int64_t max_new) const {
    if (prompt <= 0 || max_new < 0) return Admission::kNever;
    const int64_t total = num_blocks_;
    const int64_t free = Unreserved();
    if (reservation_) {
      const int64_t need = BlocksFor(prompt + max_new);
      if (need > total) return Admission::kNever;
      return need <= free ? Admission::kAdmit : Admission::kLater;
    }
    const int64_t need = BlocksFor(prompt);
    const int64_t keep =
        (watermark_numerator_ * total + watermark_denominator_ - 1) /
        watermark_denominator_;
    if (need > total - keep) return Admission::kNever;
    return free - need >= keep ? Admission::kAdmit : Admission::kLater;
  }

  // --- Operations ----------------------------------------------------------

  int64_t CountIn(SequenceState state) const {
    int64_t n = 0;
    for (const auto& [id, s] : seqs_) n += s.state == state ? 1 : 0;
    return n;
  }

  void Step() {
    int64_t op = in_.Below(16);
    // An operation with no sequence in the state it needs mostly gives way
    // to one that makes progress (an add, or an append).
    const bool keep = in_.OneIn(8);
    const int64_t running = CountIn(SequenceState::kRunning);
    if (!keep && running == 0 && op >= 2 && op <= 11) op = 0;
    if (!keep && op == 10 && CountIn(SequenceState::kPreempted) == 0) op = 2;
    if (!keep && op == 12 && CountIn(SequenceState::kSwappedOut) == 0) op = 2;
    if (!keep && op == 13 && CountIn(SequenceState::kSwappingIn) == 0 &&
        CountIn(SequenceState::kSwappingOut) == 0) {
      op = 2;
    }
    switch (op) {
      case 0:
      case 1:
        Add();
        break;
      case 2:
      case 3:
      case 4:
      case 5:
        Append();
        break;
      case 6:
        Fork();
        break;
      case 7:
        Truncate();
        break;
      case 8:
        Free();
        break;
      case 9:
        Preempt();
        break;
      case 10:
        Readmit();
        break;
      case 11:
        SwapOut();
        break;
      case 12:
        SwapIn();
        break;
      case 13:
        CompleteSwap();
        break;
      case 14:
        CanAdmit();
        break;
      default:
        if (prefix_ && in_.Bool()) {
          if (in_.OneIn(6)) {
            Reset();
          } else {
            Commit();
          }
        } else if (books_only_ && !deferred_.empty() && in_.Bool()) {
          ReleaseCopies();
        } else {
          Export();
        }
        break;
    }
    Verify();
  }

  void Add() {
    const SequenceId id = PickId(std::nullopt, /*want_absent=*/true);
    const int64_t prompt = in_.OneIn(16) ? -in_.Below(2) : 1 + in_.Below(12);
    const int64_t max_new = in_.OneIn(16) ? -1 : in_.Below(17);
    // Prefix caching: mostly with token ids (a prompt of 0 gives none).
    ModelSeq s;
    s.max_tokens = prompt + max_new;
    s.with_ids = prefix_ && !in_.OneIn(8);
    if (s.with_ids) {
      s.salt = in_.Below(4) == 3 ? 1 : 0;
      const int32_t system = static_cast<int32_t>(in_.Below(2));
      for (int64_t t = 0; t < prompt; ++t) s.PushId(PromptId(system, t));
      s.known_ids = std::max<int64_t>(prompt, 0);
    }
    history_.Add(absl::StrFormat("AddSequence(%d, prompt %d%s, max_new %d)",
                                 id, prompt,
                                 s.with_ids ? absl::StrFormat(
                                                  " ids [%s] salt %d",
                                                  absl::StrJoin(s.ids, " "),
                                                  s.salt)
                                            : "",
                                 max_new));
    std::vector<Code> errors;
    if (prompt <= 0 || max_new < 0) errors.push_back(Code::kInvalidArgument);
    if (Has(id)) errors.push_back(Code::kAlreadyExists);
    const Admission admission = ExpectedAdmission(prompt, max_new);
    const PrefixKeys keys{.tenant_salt = s.salt};
    const Admission said = s.with_ids ? m_->CanAdmit(s.ids, max_new, keys)
                                      : m_->CanAdmit(prompt, max_new);
    // A hit costs at most the block it would need anyway: with ids the
    // answer can only be better than the model's, which counts none.
    const bool said_ok = s.with_ids ? (admission != Admission::kAdmit ||
                                       said == Admission::kAdmit)
                                    : said == admission;
    if (!said_ok) {
      Divergence(history_, absl::StrFormat("CanAdmit says %s, model %s",
                                           AdmissionName(said),
                                           AdmissionName(admission)));
    }
    const Snapshot before = Snap();
    const absl::Status got =
        s.with_ids ? m_->AddSequence(id, s.ids, max_new, &out_, keys)
                   : m_->AddSequence(id, prompt, max_new, &out_);
    Stats().CountOp(kAdd, got);
    // AddSequence admits exactly what CanAdmit admits.
    CheckOutcome(got, errors,
                 said == Admission::kAdmit ? Memory::kMustSucceed
                                           : Memory::kMustFail,
                 absl::StrFormat("admission %s (model %s) with %d unreserved "
                                 "free blocks",
                                 AdmissionName(said), AdmissionName(admission),
                                 before.unreserved),
                 before);
    if (!got.ok()) return;
    const int64_t cached = out_.num_cached_tokens;
    if (cached < 0 || cached % bt_ != 0 || (cached > 0 && !s.with_ids) ||
        cached >= prompt) {
      Divergence(history_, absl::StrFormat("%d of %d prompt tokens cached",
                                           cached, prompt));
    }
    CheckSlots(out_, 0, id, cached, prompt - cached);
    if (cached > 0) Stats().CountOp(kHit, got);
    if (s.with_ids) {
      s.committed = cached;
      WriteModelTokens(out_, 0, s, cached);
    } else {
      WriteNewTokens(out_, 0, s);
    }
    seqs_[id] = std::move(s);
  }

  void Append() {
    const int64_t k = 1 + in_.Below(4);
    // kReservation: sequences at their max tokens only now and then.
    const bool full_too = in_.OneIn(8);
    std::vector<SequenceId> running;
    for (const auto& [id, s] : seqs_) {
      if (s.state == SequenceState::kRunning &&
          (!reservation_ || full_too ||
           s.max_tokens > static_cast<int64_t>(s.tags.size()))) {
        running.push_back(id);
      }
    }
    std::vector<SlotRequest> requests;
    // Prefix caching: each request's new ids (the model keeps them whether
    // the request gives them or not).
    std::vector<std::vector<int32_t>> new_ids;
    new_ids.reserve(static_cast<size_t>(k));  // Requests point into them.
    for (int64_t i = 0; i < k; ++i) {
      // Distinct running sequences, and now and then any id (unknown, not
      // running, or one already in the batch).
      SequenceId id;
      if (in_.OneIn(16) || running.empty()) {
        if (i > 0 && running.empty()) break;
        id = in_.Below(kIds);
      } else {
        const size_t j = static_cast<size_t>(
            in_.Below(static_cast<int64_t>(running.size())));
        id = running[j];
        running.erase(running.begin() + static_cast<ptrdiff_t>(j));
      }
      int64_t n = in_.OneIn(16)       ? -in_.Below(2)
                  : in_.Below(4) == 0 ? 1 + in_.Below(6)
                                      : 1;
      auto it = seqs_.find(id);
      if (reservation_ && n > 0 && it != seqs_.end() && !in_.OneIn(8)) {
        const int64_t room = it->second.max_tokens -
                             static_cast<int64_t>(it->second.tags.size());
        if (room > 0) n = std::min(n, room);
      }
      SlotRequest& r = requests.emplace_back(
          SlotRequest{.seq = id, .num_tokens = static_cast<int32_t>(n)});
      std::vector<int32_t>& ids = new_ids.emplace_back();
      if (prefix_ && it != seqs_.end()) {
        for (int64_t j = 0; j < n; ++j) {
          ids.push_back(static_cast<int32_t>(in_.Below(3)));
        }
        // Mostly the ids (a sequence added by count ignores them); now and
        // then none, as a server that keeps them does.
        if (n > 0 && !in_.OneIn(8)) r.token_ids = ids;
        // A commit in [committed, tokens], none, or now and then one out
        // of range.
        const ModelSeq& m = it->second;
        const int64_t len = static_cast<int64_t>(m.tags.size());
        if (in_.OneIn(24)) {
          r.commit = in_.Bool() ? len + 1 : m.committed - 1;
        } else if (!in_.OneIn(4)) {
          r.commit = m.committed + in_.Below(len - m.committed + 1);
        }
      }
    }
    std::vector<std::string> parts;
    for (const SlotRequest& r : requests) {
      parts.push_back(absl::StrFormat(
          "%d+%d%s%s", r.seq, r.num_tokens,
          r.token_ids.empty()
              ? ""
              : absl::StrFormat(" ids [%s]", absl::StrJoin(r.token_ids, " ")),
          r.commit == -1 ? "" : absl::StrFormat(" commit %d", r.commit)));
    }
    history_.Add(absl::StrCat("AppendSlots(", absl::StrJoin(parts, ", "), ")"));

    std::vector<Code> errors;
    std::vector<SequenceId> seen;
    for (const SlotRequest& r : requests) {
      auto it = seqs_.find(r.seq);
      if (it == seqs_.end()) {
        errors.push_back(Code::kNotFound);
      } else if (it->second.state != SequenceState::kRunning) {
        errors.push_back(Code::kFailedPrecondition);
      } else {
        if (r.num_tokens <= 0) errors.push_back(Code::kInvalidArgument);
        if (reservation_ &&
            r.num_tokens > it->second.max_tokens -
                               static_cast<int64_t>(it->second.tags.size())) {
          errors.push_back(Code::kOutOfRange);
        }
        const ModelSeq& m = it->second;
        const int64_t len = static_cast<int64_t>(m.tags.size());
        if (m.with_ids && !r.token_ids.empty() && m.known_ids != len) {
          errors.push_back(Code::kInvalidArgument);  // Ids still missing.
        }
        if (m.with_ids && r.commit != -1 &&
            (r.commit < m.committed || r.commit > len)) {
          errors.push_back(Code::kOutOfRange);
        }
      }
      if (std::find(seen.begin(), seen.end(), r.seq) != seen.end()) {
        errors.push_back(Code::kInvalidArgument);
      }
      seen.push_back(r.seq);
    }
    // Memory: every request's new blocks, plus a copy of each shared,
    // partly filled tail it writes. A block shared only by writers of this
    // call may be kept by one of them.
    Memory memory = Memory::kMustSucceed;
    std::string why = "kReservation: a started request never stalls";
    std::vector<int64_t> firsts;
    if (errors.empty()) {
      int64_t growth = 0;
      std::map<int32_t, int64_t> tail_writers;
      for (const SlotRequest& r : requests) {
        const int64_t len = static_cast<int64_t>(seqs_[r.seq].tags.size());
        firsts.push_back(len);
        growth += BlocksFor(len + r.num_tokens) - BlocksFor(len);
        if (len % bt_ != 0) {
          const BlockId tail =
              (*m_->block_table(r.seq))[static_cast<size_t>(len / bt_)];
          if (m_->books().ref_count(tail) > 1 || m_->books().is_cached(tail)) {
            ++tail_writers[tail.value()];
          }
        }
      }
      // A cached tail is copied even by its last holder (the entry keeps
      // its bytes).
      int64_t copies_min = 0;
      int64_t copies_max = 0;
      for (const auto& [block, writers] : tail_writers) {
        const int32_t refs = m_->books().ref_count(BlockId(block));
        const bool cached = m_->books().is_cached(BlockId(block));
        copies_min += refs > writers || cached ? writers : writers - 1;
        copies_max += writers;
      }
      const int64_t free = Unreserved();
      if (!reservation_) {
        why = absl::StrFormat(
            "%d new blocks and %d..%d copies, %d unreserved free blocks",
            growth, copies_min, copies_max, free);
        memory = growth + copies_min > free    ? Memory::kMustFail
                 : growth + copies_max <= free ? Memory::kMustSucceed
                                               : Memory::kEither;
      }
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->AppendSlots(requests, &out_);
    Stats().CountOp(kAppend, got);
    CheckOutcome(got, errors, memory, why, before);
    if (!got.ok()) {
      if (!out_.slot_mapping.empty() || !out_.copies.empty()) {
        Divergence(history_, "a failed AppendSlots left slots or copies");
      }
      return;
    }
    if (out_.request_offsets.size() != requests.size() + 1) {
      Divergence(history_,
                 absl::StrFormat("%d request offsets for %d requests",
                                 out_.request_offsets.size(), requests.size()));
    }
    if (books_only_) {
      for (const CopyOp& op : out_.copies.ops()) {
        SimCopy(device_, op.src, device_, op.dst);
      }
    } else if (!out_.copies.empty()) {
      Divergence(history_, "host mode left copies to the caller");
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      const SlotRequest& r = requests[i];
      CheckSlots(out_, i, r.seq, firsts[i], r.num_tokens);
      ModelSeq& m = seqs_[r.seq];
      if (!m.with_ids) {
        WriteNewTokens(out_, i, m);
        continue;
      }
      for (int32_t t : new_ids[i]) m.PushId(t);
      if (!r.token_ids.empty()) m.known_ids += r.num_tokens;
      if (r.commit != -1) m.committed = r.commit;
      WriteModelTokens(out_, i, m, firsts[i]);
    }
    // Books-only: now and then the sources stay held for a while.
    if (books_only_ && !out_.copies.empty() && deferred_.size() < 4 &&
        in_.OneIn(3)) {
      deferred_.push_back(std::move(out_.copies));
    }
    out_.copies.MarkDone();
  }

  void Fork() {
    const SequenceId parent = PickId(SequenceState::kRunning);
    const SequenceId child = PickId(std::nullopt, /*want_absent=*/true);
    history_.Add(absl::StrFormat("Fork(%d, %d)", parent, child));
    std::vector<Code> errors;
    auto it = seqs_.find(parent);
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kRunning) {
      errors.push_back(Code::kFailedPrecondition);
    }
    if (Has(child)) errors.push_back(Code::kAlreadyExists);
    Memory memory = Memory::kMustSucceed;
    std::string why = "kWatermark: a fork takes no block";
    if (errors.empty() && reservation_) {
      // The child reserves its future blocks and one copy; the parent one
      // copy unless it already has one.
      const ModelSeq& p = it->second;
      const int64_t len = static_cast<int64_t>(p.tags.size());
      const int64_t base =
          std::max<int64_t>(0, BlocksFor(p.max_tokens) - BlocksFor(len));
      const int64_t free = Unreserved();
      why = absl::StrFormat("reserve %d..%d more, %d unreserved free", base + 1,
                            base + 2, free);
      memory = free < base + 1    ? Memory::kMustFail
               : free >= base + 2 ? Memory::kMustSucceed
                                  : Memory::kEither;
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->Fork(parent, child);
    Stats().CountOp(kFork, got);
    CheckOutcome(got, errors, memory, why, before);
    if (!got.ok()) return;
    ModelSeq c = seqs_[parent];
    seqs_[child] = std::move(c);
  }

  void Truncate() {
    const SequenceId id = PickId(SequenceState::kRunning);
    auto it = seqs_.find(id);
    const int64_t len =
        it != seqs_.end() ? static_cast<int64_t>(it->second.tags.size()) : 0;
    int64_t new_length = len - in_.Below(std::min<int64_t>(len, 9) + 1);
    if (in_.OneIn(10)) new_length = in_.Bool() ? -1 : len + 1 + in_.Below(2);
    history_.Add(absl::StrFormat("Truncate(%d, %d)", id, new_length));
    std::vector<Code> errors;
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kRunning) {
      errors.push_back(Code::kFailedPrecondition);
    } else if (new_length < 0 || new_length > len) {
      errors.push_back(Code::kOutOfRange);
    }
    // kReservation: dropped blocks that stay live in a fork, and a new
    // shared tail (unless the sequence already reserves its copy), are
    // reserved again first (kv_cache_manager.h).
    Memory memory = Memory::kMustSucceed;
    std::string why = "truncation frees";
    if (errors.empty() && reservation_) {
      const absl::Span<const BlockId> table = *m_->block_table(id);
      const int64_t keep = BlocksFor(new_length);
      int64_t dropped_shared = 0;
      for (int64_t i = keep; i < static_cast<int64_t>(table.size()); ++i) {
        if (m_->books().ref_count(table[static_cast<size_t>(i)]) > 1) {
          ++dropped_shared;
        }
      }
      // A tail in a block another holder has or in the prefix cache is
      // copied on its next write.
      const bool shared_tail =
          new_length % bt_ != 0 &&
          (m_->books().ref_count(table[static_cast<size_t>(keep - 1)]) > 1 ||
           m_->books().is_cached(table[static_cast<size_t>(keep - 1)]));
      const int64_t most = dropped_shared + (shared_tail ? 1 : 0);
      // Whether blocks the reservation holds beyond its sequences' needs
      // count is the manager's choice: success is due only when the pool's
      // own unreserved blocks cover the most it may reserve.
      const int64_t free = Unreserved();
      const int64_t pool_free = m_->books().num_unreserved_free_blocks();
      why = absl::StrFormat(
          "reserves %d..%d again, %d free for the manager (%d unreserved in "
          "the pool)",
          dropped_shared, most, free, pool_free);
      memory = free < dropped_shared ? Memory::kMustFail
               : pool_free >= most   ? Memory::kMustSucceed
                                     : Memory::kEither;
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->Truncate(id, new_length);
    Stats().CountOp(kTruncate, got);
    CheckOutcome(got, errors, memory, why, before);
    if (got.ok()) it->second.Resize(new_length);
  }

  void Free() {
    const SequenceId id = PickId(std::nullopt);
    history_.Add(absl::StrFormat("Free(%d)", id));
    std::vector<Code> errors;
    auto it = seqs_.find(id);
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state == SequenceState::kSwappingIn ||
               it->second.state == SequenceState::kSwappingOut) {
      errors.push_back(Code::kFailedPrecondition);
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->Free(id);
    Stats().CountOp(kFree, got);
    CheckOutcome(got, errors, Memory::kMustSucceed, "freeing", before);
    if (got.ok()) seqs_.erase(it);
  }

  void Preempt() {
    const SequenceId id = PickId(SequenceState::kRunning);
    history_.Add(absl::StrFormat("Preempt(%d)", id));
    std::vector<Code> errors;
    auto it = seqs_.find(id);
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kRunning) {
      errors.push_back(Code::kFailedPrecondition);
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->Preempt(id);
    Stats().CountOp(kPreempt, got);
    CheckOutcome(got, errors, Memory::kMustSucceed, "preempting", before);
    if (!got.ok()) return;
    it->second.state = SequenceState::kPreempted;
    ++preemptions_;
  }

  // Readmit and SwapIn: a sequence with `len` tokens gets blocks again.
  // Cached blocks it re-hits may cost none (a hit on a block in use), so
  // with ids short memory may still succeed.
  std::pair<Memory, std::string> PlaceMemory(const ModelSeq& s) const {
    const int64_t len = static_cast<int64_t>(s.tags.size());
    const int64_t need =
        reservation_ ? BlocksFor(s.max_tokens) : BlocksFor(len);
    const int64_t free = Unreserved();
    return {need <= free   ? Memory::kMustSucceed
            : s.with_ids   ? Memory::kEither
                           : Memory::kMustFail,
            absl::StrFormat("needs %d %s without hits, %d unreserved free",
                            need, reservation_ ? "reserved" : "blocks", free)};
  }

  void Readmit() {
    const SequenceId id = PickId(SequenceState::kPreempted);
    history_.Add(absl::StrFormat("Readmit(%d)", id));
    std::vector<Code> errors;
    auto it = seqs_.find(id);
    Memory memory = Memory::kMustSucceed;
    std::string why;
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kPreempted) {
      errors.push_back(Code::kFailedPrecondition);
    } else {
      std::tie(memory, why) = PlaceMemory(it->second);
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->Readmit(id, &out_);
    Stats().CountOp(kReadmit, got);
    CheckOutcome(got, errors, memory, why, before);
    if (!got.ok()) return;
    ModelSeq& s = it->second;
    const int64_t len = static_cast<int64_t>(s.tags.size());
    // Cached whole blocks of ids it has, leaving the last token.
    const int64_t cached = out_.num_cached_tokens;
    if (cached < 0 || cached % bt_ != 0 || (cached > 0 && !s.with_ids) ||
        (cached > 0 && cached >= len) || cached > s.known_ids) {
      Divergence(history_,
                 absl::StrFormat("Readmit cached %d of %d tokens (ids of %d)",
                                 cached, len, s.known_ids));
    }
    CheckSlots(out_, 0, id, cached, len - cached);
    if (cached > 0) Stats().CountOp(kRehit, got);
    // The server recomputes the other tokens into the new slots, and
    // commits them again.
    WriteModelTokens(out_, 0, s, cached);
    s.committed = cached;
    s.state = SequenceState::kRunning;
  }

  void SwapOut() {
    const SequenceId id = PickId(SequenceState::kRunning);
    history_.Add(absl::StrFormat("SwapOut(%d)", id));
    std::vector<Code> errors;
    auto it = seqs_.find(id);
    Memory memory = Memory::kMustSucceed;
    std::string why;
    std::vector<BlockId> table;
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kRunning ||
               num_host_blocks_ == 0) {
      errors.push_back(Code::kFailedPrecondition);
    } else {
      const int64_t blocks =
          BlocksFor(static_cast<int64_t>(it->second.tags.size()));
      memory = blocks > HostFree() ? Memory::kMustFail : Memory::kMustSucceed;
      why =
          absl::StrFormat("%d blocks, %d host blocks free", blocks, HostFree());
      absl::Span<const BlockId> t = *m_->block_table(id);
      table.assign(t.begin(), t.end());
    }
    const Snapshot before = Snap();
    absl::StatusOr<SwapPlan> plan = m_->SwapOut(id);
    Stats().CountOp(kSwapOut, plan.status());
    CheckOutcome(plan.status(), errors, memory, why, before);
    if (!plan.ok()) return;
    ModelSeq& s = it->second;
    ++swap_outs_;
    if (books_only_) {
      if (plan->src != table || plan->dst.size() != table.size()) {
        Divergence(history_,
                   absl::StrFormat("SwapOut plan %s -> %s for table %s",
                                   TableString(plan->src),
                                   TableString(plan->dst), TableString(table)));
      }
      s.state = SequenceState::kSwappingOut;
      s.pending = *std::move(plan);
    } else {
      if (!plan->src.empty() || !plan->dst.empty()) {
        Divergence(history_, "host-mode SwapOut returned copies");
      }
      s.state = SequenceState::kSwappedOut;
    }
  }

  void SwapIn() {
    const SequenceId id = PickId(SequenceState::kSwappedOut);
    history_.Add(absl::StrFormat("SwapIn(%d)", id));
    std::vector<Code> errors;
    auto it = seqs_.find(id);
    Memory memory = Memory::kMustSucceed;
    std::string why;
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kSwappedOut) {
      errors.push_back(Code::kFailedPrecondition);
    } else {
      std::tie(memory, why) = PlaceMemory(it->second);
    }
    const Snapshot before = Snap();
    absl::StatusOr<SwapPlan> plan = m_->SwapIn(id);
    Stats().CountOp(kSwapIn, plan.status());
    CheckOutcome(plan.status(), errors, memory, why, before);
    if (!plan.ok()) return;
    ModelSeq& s = it->second;
    ++swap_ins_;
    const int64_t len = static_cast<int64_t>(s.tags.size());
    const size_t blocks = static_cast<size_t>(BlocksFor(len));
    // Its commit point stays the server's (hits past it are cached
    // already).
    const int64_t rehits =
        m_->stats().prefix.rehit_blocks - before.stats.prefix.rehit_blocks;
    if (rehits > 0) Stats().CountOp(kRehit, plan.status());
    if (books_only_) {
      // With prefix caching, the blocks still cached (whole blocks of ids
      // it has, from the first) are pinned and only the others copied.
      const size_t hits = blocks - std::min(blocks, plan->dst.size());
      if (plan->src.size() != plan->dst.size() ||
          plan->dst.size() > blocks || (hits > 0 && !s.with_ids) ||
          static_cast<int64_t>(hits) > std::min(len / bt_, s.known_ids / bt_) ||
          static_cast<int64_t>(hits) != rehits ||
          !std::equal(plan->src.begin(), plan->src.end(),
                      s.host.begin() + static_cast<ptrdiff_t>(hits))) {
        Divergence(history_, absl::StrFormat(
                                 "SwapIn plan %s -> %s, host blocks %s",
                                 TableString(plan->src), TableString(plan->dst),
                                 TableString(s.host)));
      }
      s.swap_hits = static_cast<int64_t>(hits);
      s.state = SequenceState::kSwappingIn;
      s.pending = *std::move(plan);
    } else {
      if (!plan->src.empty() || !plan->dst.empty()) {
        Divergence(history_, "host-mode SwapIn returned copies");
      }
      s.state = SequenceState::kRunning;
    }
  }

  void CompleteSwap() {
    std::vector<SequenceId> swapping;
    for (const auto& [id, s] : seqs_) {
      if (s.state == SequenceState::kSwappingIn ||
          s.state == SequenceState::kSwappingOut) {
        swapping.push_back(id);
      }
    }
    SequenceId id = in_.Below(kIds);
    if (!swapping.empty() && in_.Below(8) != 7) {
      id = swapping[static_cast<size_t>(
          in_.Below(static_cast<int64_t>(swapping.size())))];
    }
    history_.Add(absl::StrFormat("CompleteSwap(%d)", id));
    std::vector<Code> errors;
    auto it = seqs_.find(id);
    if (it == seqs_.end()) {
      errors.push_back(Code::kNotFound);
    } else if (it->second.state != SequenceState::kSwappingIn &&
               it->second.state != SequenceState::kSwappingOut) {
      errors.push_back(Code::kFailedPrecondition);
    }
    if (errors.empty()) {
      // Run the copies as late as allowed: both sides are still held.
      ModelSeq& s = it->second;
      for (size_t i = 0; i < s.pending.src.size(); ++i) {
        if (s.state == SequenceState::kSwappingOut) {
          SimCopy(device_, s.pending.src[i], host_, s.pending.dst[i]);
        } else {
          SimCopy(host_, s.pending.src[i], device_, s.pending.dst[i]);
        }
      }
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->CompleteSwap(id);
    Stats().CountOp(kCompleteSwap, got);
    CheckOutcome(got, errors, Memory::kMustSucceed, "completing", before);
    if (!got.ok()) return;
    ModelSeq& s = it->second;
    if (s.state == SequenceState::kSwappingOut) {
      s.state = SequenceState::kSwappedOut;
      s.host = s.pending.dst;
    } else {
      s.state = SequenceState::kRunning;
      s.host.clear();
      // The pinned hits, then the plan's blocks.
      absl::Span<const BlockId> t = *m_->block_table(id);
      if (t.size() != s.pending.dst.size() + static_cast<size_t>(s.swap_hits) ||
          std::vector<BlockId>(t.begin() + s.swap_hits, t.end()) !=
              s.pending.dst) {
        Divergence(history_,
                   absl::StrFormat("swapped in to %s, the plan said %d hits "
                                   "and %s",
                                   TableString(t), s.swap_hits,
                                   TableString(s.pending.dst)));
      }
      s.swap_hits = 0;
    }
    s.pending = SwapPlan();
  }

  void CanAdmit() {
    const int64_t prompt = in_.Below(20) - 2;
    const int64_t max_new = in_.Below(40) - 2;
    history_.Add(absl::StrFormat("CanAdmit(%d, %d)", prompt, max_new));
    const Admission want = ExpectedAdmission(prompt, max_new);
    const Admission got = m_->CanAdmit(prompt, max_new);
    Stats().CountOp(kCanAdmit, absl::OkStatus());
    if (got != want) {
      Divergence(history_,
                 absl::StrFormat("CanAdmit says %s, model %s",
                                 AdmissionName(got), AdmissionName(want)));
    }
  }

  // Prefix caching: CommitTokens of 1-3 entries, all or nothing: mostly
  // distinct running sequences with ids, giving the ids the manager lacks
  // (all or some) and a count in range; now and then an entry that fails
  // the call (another sequence, a count out of range, one id too many).
  // A bad entry in one of 16 each: 45-56% of the calls succeed in runs of
  // 4 to 7 minutes (38% did when any sequence and any id count were
  // drawn).
  void Commit() {
    const int64_t k = 1 + in_.Below(3);
    std::vector<TokenCommit> commits;
    std::vector<std::vector<int32_t>> ids(static_cast<size_t>(k));
    std::vector<std::string> parts;
    std::vector<SequenceId> committable;
    for (const auto& [id, m] : seqs_) {
      if (m.state == SequenceState::kRunning && m.with_ids) {
        committable.push_back(id);
      }
    }
    // Nothing to commit (most often: no running sequence): mostly an
    // export instead, so such states do not spend the op on NOT_FOUND.
    if (committable.empty() && !in_.OneIn(8)) {
      Export();
      return;
    }
    for (int64_t i = 0; i < k; ++i) {
      SequenceId id;
      if (!committable.empty() && !in_.OneIn(16)) {
        const size_t j = static_cast<size_t>(
            in_.Below(static_cast<int64_t>(committable.size())));
        id = committable[j];
        committable.erase(committable.begin() + static_cast<ptrdiff_t>(j));
      } else {
        id = PickId(SequenceState::kRunning);
      }
      TokenCommit c{.seq = id, .num_tokens = 0};
      auto it = seqs_.find(id);
      if (it != seqs_.end()) {
        const ModelSeq& m = it->second;
        const int64_t len = static_cast<int64_t>(m.tags.size());
        c.num_tokens = in_.OneIn(16)
                           ? (in_.Bool() ? len + 1 : m.committed - 1)
                           : m.committed + in_.Below(len - m.committed + 1);
        if (m.with_ids && m.known_ids < len) {
          const int64_t missing = len - m.known_ids;
          const int64_t n = in_.OneIn(16) ? missing + 1
                            : in_.Bool()  ? missing
                                          : in_.Below(missing + 1);
          for (int64_t j = 0; j < n; ++j) {
            const int64_t t = m.known_ids + j;
            ids[i].push_back(t < len ? m.ids[static_cast<size_t>(t)] : 0);
          }
        }
      } else {
        c.num_tokens = in_.Below(4);
      }
      c.token_ids = ids[i];
      commits.push_back(c);
      parts.push_back(absl::StrFormat("%d:%d +%d ids", c.seq, c.num_tokens,
                                      c.token_ids.size()));
    }
    history_.Add(
        absl::StrCat("CommitTokens(", absl::StrJoin(parts, ", "), ")"));
    // Every entry is checked against the state before the call.
    std::vector<Code> errors;
    std::vector<SequenceId> given;
    for (const TokenCommit& c : commits) {
      auto it = seqs_.find(c.seq);
      if (it == seqs_.end()) {
        errors.push_back(Code::kNotFound);
        continue;
      }
      const ModelSeq& m = it->second;
      const int64_t len = static_cast<int64_t>(m.tags.size());
      if (m.state != SequenceState::kRunning || !m.with_ids) {
        errors.push_back(Code::kFailedPrecondition);
      } else if (c.num_tokens < m.committed || c.num_tokens > len) {
        errors.push_back(Code::kOutOfRange);
      } else if (!c.token_ids.empty()) {
        if (static_cast<int64_t>(c.token_ids.size()) > len - m.known_ids ||
            std::find(given.begin(), given.end(), c.seq) != given.end()) {
          errors.push_back(Code::kInvalidArgument);
        }
        given.push_back(c.seq);
      }
    }
    const Snapshot before = Snap();
    const absl::Status got = m_->CommitTokens(commits);
    Stats().CountOp(kCommit, got);
    CheckOutcome(got, errors, Memory::kMustSucceed, "commits take no block",
                 before);
    if (!got.ok()) return;
    for (const TokenCommit& c : commits) {
      ModelSeq& m = seqs_[c.seq];
      m.known_ids += static_cast<int64_t>(c.token_ids.size());
      m.committed = std::max(m.committed, c.num_tokens);
    }
  }

  void Reset() {
    history_.Add("ResetPrefixCache");
    const ManagerStats before = m_->stats();
    m_->ResetPrefixCache();
    Stats().CountOp(kReset, absl::OkStatus());
    const ManagerStats st = m_->stats();
    if (st.prefix.cached_blocks != 0 || st.used_blocks != before.used_blocks ||
        st.free_blocks != before.free_blocks) {
      Divergence(history_, absl::StrFormat(
                               "after ResetPrefixCache: %s, %d cached blocks",
                               StatsString(st), st.prefix.cached_blocks));
    }
  }

  void ReleaseCopies() {
    const size_t i =
        static_cast<size_t>(in_.Below(static_cast<int64_t>(deferred_.size())));
    history_.Add(absl::StrFormat("release deferred copies %d of %d", i,
                                 deferred_.size()));
    deferred_[i].MarkDone();
    deferred_.erase(deferred_.begin() + static_cast<ptrdiff_t>(i));
    Stats().CountOp(kReleaseCopies, absl::OkStatus());
  }

  // Exports a batch (mostly running ids, duplicates allowed, now and then
  // an id that is unknown or not running, or more rows than the delta
  // exporter holds) in all three forms, into buffers of the size the batch
  // needs or one entry short, and checks every entry against the tables.
  void Export() {
    std::vector<SequenceId> batch;
    const int64_t n = in_.Below(kIds + 3);
    for (int64_t i = 0; i < n; ++i) {
      batch.push_back(PickId(SequenceState::kRunning));
    }
    const int32_t max_blocks =
        static_cast<int32_t>(1 + in_.Below(num_blocks_ + 1));
    const bool short_tables = in_.OneIn(8);
    const bool short_indices = in_.OneIn(8);
    history_.Add(absl::StrFormat("Export [%s] max_blocks %d%s%s",
                                 absl::StrJoin(batch, " "), max_blocks,
                                 short_tables ? " short tables" : "",
                                 short_indices ? " short indices" : ""));
    // What the model says: each row's table and length, or the errors.
    std::vector<Code> errors;
    int64_t total = 0;
    int64_t widest = 0;
    for (SequenceId id : batch) {
      if (!Has(id)) {
        errors.push_back(Code::kNotFound);
      } else if (!In(id, SequenceState::kRunning)) {
        errors.push_back(Code::kFailedPrecondition);
      } else {
        const int64_t blocks =
            BlocksFor(static_cast<int64_t>(seqs_[id].tags.size()));
        total += blocks;
        widest = std::max(widest, blocks);
      }
    }
    const int64_t rows = static_cast<int64_t>(batch.size());
    const size_t dense_size = static_cast<size_t>(
        std::max<int64_t>(0, rows * max_blocks - (short_tables ? 1 : 0)));
    const size_t indices_size = static_cast<size_t>(
        std::max<int64_t>(0, total - (short_indices ? 1 : 0)));
    std::vector<Code> dense_errors = errors;
    if (widest > max_blocks || (short_tables && rows > 0)) {
      dense_errors.push_back(Code::kInvalidArgument);
    }
    std::vector<Code> csr_errors = errors;
    if (short_indices && total > 0)
      csr_errors.push_back(Code::kInvalidArgument);
    const Snapshot before = Snap();
    constexpr int32_t kSentinel = -7;
    constexpr int32_t kPad = -1;

    // Dense.
    std::vector<int32_t> tables(dense_size, kSentinel), lens(rows, kSentinel);
    absl::Status got = ExportDenseBlockTables(
        *m_, batch, {.max_blocks = max_blocks, .pad_id = kPad},
        absl::MakeSpan(tables), absl::MakeSpan(lens));
    Stats().CountOp(kExport, got);
    CheckOutcome(got, dense_errors, Memory::kMustSucceed, "dense export",
                 before);
    if (got.ok()) {
      for (int64_t r = 0; r < rows; ++r) {
        CheckDenseRow(tables, lens, r, batch[r], max_blocks, kPad, "dense");
      }
    } else if (!std::all_of(tables.begin(), tables.end(),
                            [](int32_t x) { return x == kSentinel; }) ||
               !std::all_of(lens.begin(), lens.end(),
                            [](int32_t x) { return x == kSentinel; })) {
      Divergence(history_, "a failed dense export wrote its buffers");
    }

    // CSR.
    std::vector<int32_t> indptr(rows + 1, kSentinel),
        indices(indices_size, kSentinel), last(rows, kSentinel);
    got = ExportCsrPageTable(*m_, batch, absl::MakeSpan(indptr),
                             absl::MakeSpan(indices), absl::MakeSpan(last));
    Stats().CountOp(kExport, got);
    CheckOutcome(got, csr_errors, Memory::kMustSucceed, "CSR export", before);
    if (got.ok()) {
      int64_t at = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const absl::Span<const BlockId> t = *m_->block_table(batch[r]);
        const int64_t len = static_cast<int64_t>(seqs_[batch[r]].tags.size());
        const int32_t want_last =
            len == 0 ? 0 : static_cast<int32_t>((len - 1) % bt_ + 1);
        bool ok = indptr[r] == at && last[r] == want_last;
        for (size_t j = 0; ok && j < t.size(); ++j) {
          ok = indices[static_cast<size_t>(at) + j] == t[j].value();
        }
        at += static_cast<int64_t>(t.size());
        if (!ok || indptr[r + 1] != at) {
          Divergence(history_,
                     absl::StrFormat("CSR row %d (sequence %d, table %s, %d "
                                     "tokens): indptr %d..%d, last page %d",
                                     r, batch[r], TableString(t), len,
                                     indptr[r], indptr[r + 1], last[r]));
        }
      }
    } else if (!std::all_of(indptr.begin(), indptr.end(),
                            [](int32_t x) { return x == kSentinel; }) ||
               !std::all_of(indices.begin(), indices.end(),
                            [](int32_t x) { return x == kSentinel; }) ||
               !std::all_of(last.begin(), last.end(),
                            [](int32_t x) { return x == kSentinel; })) {
      Divergence(history_, "a failed CSR export wrote its buffers");
    }

    // Delta, into the exporter's buffer kept across steps.
    std::vector<Code> delta_errors = errors;
    const bool fits_width = widest <= delta_max_blocks_;
    if (rows > kIds || !fits_width)
      delta_errors.push_back(Code::kInvalidArgument);
    const std::vector<int32_t> tables_before = delta_tables_;
    std::vector<int32_t> delta_lens(rows, kSentinel), changed(rows, kSentinel);
    absl::StatusOr<absl::Span<const int32_t>> reported =
        delta_->Export(*m_, batch, absl::MakeSpan(delta_tables_),
                       absl::MakeSpan(delta_lens), absl::MakeSpan(changed));
    Stats().CountOp(kExport, reported.status());
    CheckOutcome(reported.status(), delta_errors, Memory::kMustSucceed,
                 "delta export", before);
    if (!reported.ok()) {
      if (delta_tables_ != tables_before) {
        Divergence(history_, "a failed delta export wrote its table buffer");
      }
      return;
    }
    // Every row that differs from the last successful export is reported.
    std::vector<bool> was_reported(rows, false);
    for (int32_t r : *reported) {
      if (r < 0 || r >= rows || was_reported[r]) {
        Divergence(history_,
                   absl::StrFormat("delta export reported row %d of %d "
                                   "(twice or out of range)",
                                   r, rows));
      }
      was_reported[r] = true;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const absl::Span<const BlockId> t = *m_->block_table(batch[r]);
      const bool same =
          r < static_cast<int64_t>(delta_rows_.size()) &&
          delta_rows_[r].first == batch[r] &&
          delta_rows_[r].second == std::vector<BlockId>(t.begin(), t.end());
      if (!same && !was_reported[r]) {
        Divergence(history_, absl::StrFormat("delta export missed row %d "
                                             "(sequence %d, table %s)",
                                             r, batch[r], TableString(t)));
      }
      CheckDenseRow(delta_tables_, delta_lens, r, batch[r], delta_max_blocks_,
                    kPad, "delta");
    }
    delta_rows_.clear();
    for (SequenceId id : batch) {
      const absl::Span<const BlockId> t = *m_->block_table(id);
      delta_rows_.emplace_back(id, std::vector<BlockId>(t.begin(), t.end()));
    }
  }

  void CheckDenseRow(const std::vector<int32_t>& tables,
                     const std::vector<int32_t>& lens, int64_t r, SequenceId id,
                     int32_t max_blocks, int32_t pad, const char* form) {
    const absl::Span<const BlockId> t = *m_->block_table(id);
    const int64_t len = static_cast<int64_t>(seqs_[id].tags.size());
    bool ok = lens[static_cast<size_t>(r)] == len;
    for (int32_t j = 0; ok && j < max_blocks; ++j) {
      const int32_t want = j < static_cast<int32_t>(t.size())
                               ? t[static_cast<size_t>(j)].value()
                               : pad;
      ok = tables[static_cast<size_t>(r * max_blocks + j)] == want;
    }
    if (!ok) {
      Divergence(history_,
                 absl::StrFormat("%s row %d (sequence %d, table %s, %d tokens) "
                                 "is wrong",
                                 form, r, id, TableString(t), len));
    }
  }

  // --- Checks --------------------------------------------------------------

  void Verify() {
    m_->CheckInvariants();
    std::vector<int32_t> refs(static_cast<size_t>(num_blocks_), 0);
    int32_t running = 0;
    int64_t host_used = 0;
    int64_t unknown_pins = 0;
    for (SequenceId id = 0; id < kIds; ++id) {
      auto it = seqs_.find(id);
      if (it == seqs_.end()) {
        if (m_->contains(id) ||
            m_->state(id).status().code() != Code::kNotFound ||
            m_->num_tokens(id).status().code() != Code::kNotFound ||
            m_->block_table(id).status().code() != Code::kNotFound) {
          Divergence(history_,
                     absl::StrFormat("sequence %d is known to the manager "
                                     "only",
                                     id));
        }
        continue;
      }
      const ModelSeq& s = it->second;
      const int64_t len = static_cast<int64_t>(s.tags.size());
      absl::StatusOr<SequenceState> state = m_->state(id);
      absl::StatusOr<int64_t> tokens = m_->num_tokens(id);
      if (!state.ok() || *state != s.state || !tokens.ok() || *tokens != len) {
        Divergence(history_,
                   absl::StrFormat("sequence %d: %s with %s tokens, model %s "
                                   "with %d",
                                   id,
                                   state.ok() ? SequenceStateName(*state)
                                              : state.status().ToString(),
                                   tokens.ok() ? absl::StrCat(*tokens)
                                               : tokens.status().ToString(),
                                   SequenceStateName(s.state), len));
      }
      absl::StatusOr<absl::Span<const BlockId>> table = m_->block_table(id);
      if (s.state != SequenceState::kRunning) {
        if (table.status().code() != Code::kFailedPrecondition) {
          Divergence(history_,
                     absl::StrFormat("block_table of %s sequence %d: %s",
                                     SequenceStateName(s.state), id,
                                     table.status().ToString()));
        }
      }
      switch (s.state) {
        case SequenceState::kRunning: {
          ++running;
          if (!table.ok() ||
              static_cast<int64_t>(table->size()) != BlocksFor(len)) {
            Divergence(
                history_,
                absl::StrFormat("sequence %d (%d tokens): table %s", id, len,
                                table.ok() ? TableString(*table)
                                           : table.status().ToString()));
          }
          for (BlockId b : *table) ++refs[static_cast<size_t>(b.value())];
          for (int64_t t = 0; t < len; ++t) {
            const int64_t slot =
                int64_t{(*table)[static_cast<size_t>(t / bt_)].value()} * bt_ +
                t % bt_;
            const std::string diff =
                CheckTag(slot, s.tags[static_cast<size_t>(t)]);
            if (!diff.empty()) {
              Divergence(history_, absl::StrFormat(
                                       "sequence %d token %d of %d (table "
                                       "%s): %s",
                                       id, t, len, TableString(*table), diff));
            }
          }
          break;
        }
        case SequenceState::kSwappingOut:
          for (BlockId b : s.pending.src)
            ++refs[static_cast<size_t>(b.value())];
          host_used += BlocksFor(len);
          break;
        case SequenceState::kSwappingIn:
          for (BlockId b : s.pending.dst)
            ++refs[static_cast<size_t>(b.value())];
          unknown_pins += s.swap_hits;
          host_used += BlocksFor(len);
          break;
        case SequenceState::kSwappedOut:
          host_used += BlocksFor(len);
          break;
        case SequenceState::kPreempted:
          break;
        case SequenceState::kLoading:  // Needs a remote tier: never here.
          Divergence(history_, absl::StrFormat("sequence %d is loading", id));
          break;
      }
    }
    for (const PendingCopies& copies : deferred_) {
      for (const CopyOp& op : copies.ops()) {
        ++refs[static_cast<size_t>(op.src.value())];
      }
    }
    // Books-only SwapIn pins cached blocks the model learns only at
    // CompleteSwap (unknown_pins of them): blocks with references the model
    // does not know of (a ResetPrefixCache may have unpublished them since).
    int32_t used = 0;
    int64_t extra = 0;
    for (int32_t b = 0; b < num_blocks_; ++b) {
      const int32_t want = refs[static_cast<size_t>(b)];
      const int32_t got = m_->books().ref_count(BlockId(b));
      const bool pinned = got > want;
      if (got != want && !(pinned && extra + (got - want) <= unknown_pins)) {
        Divergence(history_,
                   absl::StrFormat("block %d has %d references, the model "
                                   "knows of %d (and of %d unknown pins)",
                                   b, got, want, unknown_pins));
      }
      if (pinned) extra += got - want;
      if (got > 0) ++used;
    }
    if (extra != unknown_pins) {
      Divergence(history_, absl::StrFormat("%d unknown pins, %d found",
                                           unknown_pins, extra));
    }
    const ManagerStats st = m_->stats();
    if (st.num_sequences != static_cast<int32_t>(seqs_.size()) ||
        st.running_sequences != running || st.used_blocks != used ||
        st.host_used_blocks != host_used || st.preemptions != preemptions_ ||
        st.swap_outs != swap_outs_ || st.swap_ins != swap_ins_ ||
        st.reserved_blocks > st.free_blocks ||
        st.free_blocks + st.used_blocks != st.num_blocks ||
        (!reservation_ && st.reserved_blocks != 0)) {
      Divergence(history_, absl::StrFormat(
                               "stats %s; model: %d sequences, %d running, "
                               "%d used blocks, %d host blocks used, %d "
                               "preemptions, %d swap-outs, %d swap-ins",
                               StatsString(st), seqs_.size(), running, used,
                               host_used, preemptions_, swap_outs_, swap_ins_));
    }
  }

  // Releases everything; every block of both tiers must then be free.
  void FreeEverything() {
    history_.Add("free everything");
    for (PendingCopies& copies : deferred_) copies.MarkDone();
    deferred_.clear();
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) ids.push_back(id);
    for (SequenceId id : ids) {
      ModelSeq& s = seqs_[id];
      if (s.state == SequenceState::kSwappingIn ||
          s.state == SequenceState::kSwappingOut) {
        const absl::Status st = m_->CompleteSwap(id);
        Stats().CountOp(kCompleteSwap, st);
        if (!st.ok()) Divergence(history_, "CompleteSwap: " + st.ToString());
      }
      const absl::Status st = m_->Free(id);
      Stats().CountOp(kFree, st);
      if (!st.ok()) Divergence(history_, "Free: " + st.ToString());
      m_->CheckInvariants();
    }
    seqs_.clear();
    const ManagerStats st = m_->stats();
    const bool host_free =
        m_->host_pool() == nullptr ||
        m_->host_pool()->books().num_free_blocks() == num_host_blocks_;
    // The whole pool is free again: a request of every block (kReservation)
    // or of every block the watermark leaves (kWatermark) is admitted.
    const int64_t keep =
        (watermark_numerator_ * num_blocks_ + watermark_denominator_ - 1) /
        watermark_denominator_;
    const int64_t largest =
        (reservation_ ? num_blocks_ : num_blocks_ - keep) * int64_t{bt_};
    const Admission whole =
        largest > 0 ? m_->CanAdmit(largest, 0) : Admission::kAdmit;
    if (m_->books().num_free_blocks() != num_blocks_ || st.used_blocks != 0 ||
        st.reserved_blocks != 0 || st.num_sequences != 0 ||
        st.running_sequences != 0 || st.host_used_blocks != 0 || !host_free ||
        whole != Admission::kAdmit) {
      Divergence(history_,
                 absl::StrFormat("after freeing everything: %d of %d blocks "
                                 "free (%d of them reserved in the books), "
                                 "CanAdmit(%d, 0) says %s; stats %s",
                                 m_->books().num_free_blocks(), num_blocks_,
                                 m_->books().num_reserved_blocks(), largest,
                                 AdmissionName(whole), StatsString(st)));
    }
  }

  FuzzInput& in_;
  History history_;
  bool books_only_ = false;
  bool prefix_ = false;
  bool reservation_ = false;
  int32_t bt_ = 2;
  KVLayout layout_;
  int32_t num_blocks_ = 0;
  int32_t num_host_blocks_ = 0;
  double watermark_ = 0;
  int64_t watermark_numerator_ = 0;
  int64_t watermark_denominator_ = 1;
  std::unique_ptr<KVCacheManager> m_;
  StepOutput out_;  // Reused every call, as a server does.
  std::map<SequenceId, ModelSeq> seqs_;
  uint32_t next_tag_ = 1;
  int64_t preemptions_ = 0;
  int64_t swap_outs_ = 0;
  int64_t swap_ins_ = 0;
  // Books-only: one tag per token slot of each tier (the fuzzer's "GPU").
  std::vector<uint32_t> device_;
  std::vector<uint32_t> host_;
  std::deque<PendingCopies> deferred_;  // Copies run, sources still held.
  // The delta exporter, its table buffer, and (sequence, table) per row of
  // its last successful export.
  std::optional<BlockTableDeltaExporter> delta_;
  int32_t delta_max_blocks_ = 0;
  std::vector<int32_t> delta_tables_;
  std::vector<std::pair<SequenceId, std::vector<BlockId>>> delta_rows_;
};

}  // namespace
}  // namespace pagedkv::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ::pagedkv::fuzzing::Stats().CountInput();
  ::pagedkv::fuzzing::FuzzInput in(data, size);
  ::pagedkv::fuzzing::ManagerFuzzer fuzzer(in);
  fuzzer.Run();
  return 0;
}
