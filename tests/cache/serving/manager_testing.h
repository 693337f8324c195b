// tests/cache/serving/manager_testing.h
//
// Test helpers for KVCacheManager (cache/serving/kv_cache_manager.h):
//   - CheckedManager wraps a manager and runs CheckInvariants() after every
//     mutating call, so a test cannot forget it;
//   - ManagerSnapshot is what a caller can observe of a manager (stats, and
//     every named sequence's presence, state, length and block table): a
//     call that fails must leave it equal;
//   - WriteToken / CheckToken put a distinct word per (tag, layer, K|V, head,
//     dim) into a token slot of a KVPool and read it back, so a test can
//     follow every token's bytes through copy-on-write and swaps.
//
//   CheckedManager m(MakeManager(...));
//   const ManagerSnapshot before = TakeSnapshot(*m, {1, 2});
//   EXPECT_THAT(m.Truncate(1, 99), StatusIs(absl::StatusCode::kOutOfRange));
//   EXPECT_EQ(TakeSnapshot(*m, {1, 2}), before);
//
// Thread safety: functions of their arguments; a CheckedManager is used by
// one thread, like the manager it wraps.
#ifndef PAGEDKV_TESTS_CACHE_SERVING_MANAGER_TESTING_H_
#define PAGEDKV_TESTS_CACHE_SERVING_MANAGER_TESTING_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"

namespace pagedkv::testing {

// Small blocks of 4 tokens; 2 layers x 2 heads x 2 dims of 4-byte words, so
// a token is 16 words and a block 256 bytes.
inline KVLayout SmallLayout(int32_t block_tokens = 4) {
  return KVLayout{.num_layers = 2,
                  .num_kv_heads = 2,
                  .head_dim = 2,
                  .dtype = DType::kFloat32,
                  .block_tokens = block_tokens};
}

// A books-only manager's options with `full` full layer groups, then
// `windows` window groups of `window` tokens, 2 layers of SmallLayout-sized
// heads each (float16), and the default admission and watermark.
inline KVCacheManager::Options GroupedBooksOnlyOptions(int32_t num_blocks,
                                                       int32_t block_tokens,
                                                       int32_t full,
                                                       int32_t windows,
                                                       int32_t window) {
  KVCacheManager::Options o{
      .layout = {.num_layers = 2 * (full + windows),
                 .num_kv_heads = 1,
                 .head_dim = 4,
                 .dtype = DType::kFloat16,
                 .block_tokens = block_tokens},
      .num_blocks = num_blocks,
      .storage = StorageMode::kBooksOnly};
  for (int32_t i = 0; i < full; ++i) {
    o.layer_groups.push_back({.num_layers = 2});
  }
  for (int32_t i = 0; i < windows; ++i) {
    o.layer_groups.push_back({.num_layers = 2, .sliding_window = window});
  }
  return o;
}

inline const char* StorageName(StorageMode m) {
  return m == StorageMode::kHost ? "Host" : "BooksOnly";
}
inline const char* AdmissionName(AdmissionMode m) {
  return m == AdmissionMode::kWatermark ? "Watermark" : "Reservation";
}

// Wraps a manager; every mutating call is followed by CheckInvariants().
class CheckedManager {
 public:
  explicit CheckedManager(std::unique_ptr<KVCacheManager> manager)
      : m_(std::move(manager)) {
    m_->CheckInvariants();
  }

  KVCacheManager* operator->() { return m_.get(); }
  const KVCacheManager* operator->() const { return m_.get(); }
  KVCacheManager& operator*() { return *m_; }
  const KVCacheManager& operator*() const { return *m_; }
  KVCacheManager* get() { return m_.get(); }

  absl::Status Add(SequenceId seq, int64_t prompt_tokens,
                   int64_t max_new_tokens, StepOutput* out = nullptr) {
    StepOutput local;
    return Checked(m_->AddSequence(seq, prompt_tokens, max_new_tokens,
                                   out != nullptr ? out : &local));
  }
  absl::Status Append(absl::Span<const SlotRequest> requests,
                      StepOutput* out = nullptr) {
    StepOutput local;
    return Checked(m_->AppendSlots(requests, out != nullptr ? out : &local));
  }
  // One request.
  absl::Status Append(SequenceId seq, int32_t num_tokens,
                      StepOutput* out = nullptr) {
    const SlotRequest r{.seq = seq, .num_tokens = num_tokens};
    return Append(absl::MakeConstSpan(&r, 1), out);
  }
  absl::Status Fork(SequenceId parent, SequenceId child) {
    return Checked(m_->Fork(parent, child));
  }
  absl::Status Free(SequenceId seq) { return Checked(m_->Free(seq)); }
  absl::Status Truncate(SequenceId seq, int64_t new_length) {
    return Checked(m_->Truncate(seq, new_length));
  }
  absl::Status Preempt(SequenceId seq) { return Checked(m_->Preempt(seq)); }
  absl::Status Readmit(SequenceId seq, StepOutput* out = nullptr) {
    StepOutput local;
    return Checked(m_->Readmit(seq, out != nullptr ? out : &local));
  }
  absl::StatusOr<SwapPlan> SwapOut(SequenceId seq) {
    absl::StatusOr<SwapPlan> plan = m_->SwapOut(seq);
    m_->CheckInvariants();
    return plan;
  }
  absl::StatusOr<SwapPlan> SwapIn(SequenceId seq) {
    absl::StatusOr<SwapPlan> plan = m_->SwapIn(seq);
    m_->CheckInvariants();
    return plan;
  }
  absl::Status CompleteSwap(SequenceId seq) {
    return Checked(m_->CompleteSwap(seq));
  }
  absl::Status CompleteRemoteLoads(SequenceId seq, int32_t num_loaded_blocks,
                                   StepOutput* out = nullptr) {
    StepOutput local;
    return Checked(m_->CompleteRemoteLoads(seq, num_loaded_blocks,
                                           out != nullptr ? out : &local));
  }

 private:
  absl::Status Checked(absl::Status status) {
    m_->CheckInvariants();
    return status;
  }

  std::unique_ptr<KVCacheManager> m_;
};

// --- Snapshots ---------------------------------------------------------

inline bool PrefixStatsEqual(const PrefixCacheStats& a,
                             const PrefixCacheStats& b) {
  return a.queries == b.queries && a.query_tokens == b.query_tokens &&
         a.hit_tokens == b.hit_tokens && a.query_blocks == b.query_blocks &&
         a.hit_blocks == b.hit_blocks && a.rehit_blocks == b.rehit_blocks &&
         a.switched_blocks == b.switched_blocks &&
         a.cached_blocks == b.cached_blocks &&
         a.evictable_blocks == b.evictable_blocks &&
         a.stored_blocks == b.stored_blocks &&
         a.evicted_blocks == b.evicted_blocks &&
         a.dropped_blocks == b.dropped_blocks;
}

inline bool RemoteStatsEqual(const RemoteManagerStats& a,
                             const RemoteManagerStats& b) {
  return a.loaded_blocks == b.loaded_blocks && a.load_lists == b.load_lists &&
         a.listed_blocks == b.listed_blocks &&
         a.failed_blocks == b.failed_blocks &&
         a.store_listed_blocks == b.store_listed_blocks &&
         a.store_dropped_blocks == b.store_dropped_blocks &&
         a.store_known_blocks == b.store_known_blocks &&
         a.pending_store_blocks == b.pending_store_blocks;
}

inline bool StatsEqual(const ManagerStats& a, const ManagerStats& b) {
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
         a.host_used_blocks == b.host_used_blocks &&
         PrefixStatsEqual(a.prefix, b.prefix) &&
         RemoteStatsEqual(a.remote, b.remote);
}

inline std::string StatsString(const ManagerStats& s) {
  return absl::StrFormat(
      "{blocks=%d used=%d free=%d reserved=%d shared=%d seqs=%d running=%d "
      "preemptions=%d swap_outs=%d swap_ins=%d swapped_blocks=%d "
      "swapped_bytes=%d cow=%d host=%d host_used=%d prefix{queries=%d "
      "hit_tokens=%d rehit=%d switched=%d cached=%d evictable=%d "
      "evicted=%d dropped=%d} remote{loaded=%d lists=%d listed=%d failed=%d "
      "store_listed=%d store_dropped=%d store_known=%d pending=%d}}",
      s.num_blocks, s.used_blocks, s.free_blocks, s.reserved_blocks,
      s.shared_blocks, s.num_sequences, s.running_sequences, s.preemptions,
      s.swap_outs, s.swap_ins, s.swapped_blocks, s.swapped_bytes, s.cow_copies,
      s.host_blocks, s.host_used_blocks, s.prefix.queries, s.prefix.hit_tokens,
      s.prefix.rehit_blocks, s.prefix.switched_blocks, s.prefix.cached_blocks,
      s.prefix.evictable_blocks, s.prefix.evicted_blocks,
      s.prefix.dropped_blocks, s.remote.loaded_blocks, s.remote.load_lists,
      s.remote.listed_blocks, s.remote.failed_blocks,
      s.remote.store_listed_blocks, s.remote.store_dropped_blocks,
      s.remote.store_known_blocks, s.remote.pending_store_blocks);
}

struct SequenceSnapshot {
  SequenceId id = 0;
  bool present = false;
  SequenceState state = SequenceState::kRunning;
  int64_t num_tokens = 0;
  std::vector<BlockId> table;  // Running sequences only.

  friend bool operator==(const SequenceSnapshot& a, const SequenceSnapshot& b) {
    return a.id == b.id && a.present == b.present &&
           (!a.present || (a.state == b.state && a.num_tokens == b.num_tokens &&
                           a.table == b.table));
  }
};

struct ManagerSnapshot {
  ManagerStats stats;
  std::vector<SequenceSnapshot> sequences;

  friend bool operator==(const ManagerSnapshot& a, const ManagerSnapshot& b) {
    return StatsEqual(a.stats, b.stats) && a.sequences == b.sequences;
  }
  friend bool operator!=(const ManagerSnapshot& a, const ManagerSnapshot& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const ManagerSnapshot& s) {
    os << StatsString(s.stats);
    for (const SequenceSnapshot& q : s.sequences) {
      os << "\n  seq " << q.id << ": ";
      if (!q.present) {
        os << "absent";
        continue;
      }
      os << SequenceStateName(q.state) << ", " << q.num_tokens << " tokens, [";
      for (BlockId b : q.table) os << b.value() << " ";
      os << "]";
    }
    return os;
  }
};

inline ManagerSnapshot TakeSnapshot(const KVCacheManager& m,
                                    absl::Span<const SequenceId> ids) {
  ManagerSnapshot snap;
  snap.stats = m.stats();
  for (SequenceId id : ids) {
    SequenceSnapshot q;
    q.id = id;
    q.present = m.contains(id);
    if (q.present) {
      q.state = *m.state(id);
      q.num_tokens = *m.num_tokens(id);
      if (q.state == SequenceState::kRunning) {
        absl::Span<const BlockId> t = *m.block_table(id);
        q.table.assign(t.begin(), t.end());
      }
    }
    snap.sequences.push_back(std::move(q));
  }
  return snap;
}

// A copy of a running sequence's block table (crashes with the status
// otherwise).
inline std::vector<BlockId> TableOf(const KVCacheManager& m, SequenceId seq) {
  absl::Span<const BlockId> t = *m.block_table(seq);
  return std::vector<BlockId>(t.begin(), t.end());
}

// The flat slot of token `token` of a table.
inline int64_t SlotOf(absl::Span<const BlockId> table, int32_t block_tokens,
                      int64_t token) {
  return int64_t{table[static_cast<size_t>(token / block_tokens)].value()} *
             block_tokens +
         token % block_tokens;
}

// Every block of `books` is free, none reserved, no reservation left, and
// the books are consistent: what a test checks at its end.
inline void ExpectEveryBlockFree(const BlockPool& books) {
  books.CheckInvariants();
  EXPECT_EQ(books.num_free_blocks(), books.num_blocks());
  EXPECT_EQ(books.num_reserved_blocks(), 0);
  EXPECT_EQ(books.stats().num_reservations, 0);
}

// --- Token bytes -------------------------------------------------------

// The word stored for (tag, layer, kv, head, dim): distinct for distinct
// arguments in practice (a multiplicative mix), never 0 for tag != 0.
inline uint32_t TokenWord(uint32_t tag, int32_t layer, int32_t kv, int32_t head,
                          int32_t dim) {
  uint32_t x = tag * 0x9E3779B1u;
  x ^= static_cast<uint32_t>((layer << 12) | (kv << 11) | (head << 6) | dim);
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  return x | 1u;
}

// Byte offset inside a block of (layer, kv, head, slot offset, dim).
inline size_t WordOffset(const KVLayout& layout, int32_t layer, int32_t kv,
                         int32_t head, int32_t offset, int32_t dim) {
  return static_cast<size_t>(
             layout.ElementOffset(layer, static_cast<KV>(kv), head, offset) +
             dim) *
         sizeof(uint32_t);
}

// Writes tag's words into every layer, K and V, head and dim of `slot`.
// REQUIRES: a 4-byte dtype; slot inside the pool.
inline void WriteToken(KVPool& pool, int64_t slot, uint32_t tag) {
  const KVLayout& layout = pool.layout();
  const int32_t bt = layout.block_tokens;
  std::byte* block = pool.BlockData(StepOutput::BlockOf(slot, bt));
  const int32_t offset = StepOutput::OffsetOf(slot, bt);
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    for (int32_t kv = 0; kv < 2; ++kv) {
      for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
        for (int32_t d = 0; d < layout.head_dim; ++d) {
          const uint32_t w = TokenWord(tag, l, kv, h, d);
          std::memcpy(block + WordOffset(layout, l, kv, h, offset, d), &w,
                      sizeof(w));
        }
      }
    }
  }
}

// Returns "" when `slot` holds tag's words everywhere, else the first
// difference.
inline std::string CheckToken(const KVPool& pool, int64_t slot, uint32_t tag) {
  const KVLayout& layout = pool.layout();
  const int32_t bt = layout.block_tokens;
  const std::byte* block = pool.BlockData(StepOutput::BlockOf(slot, bt));
  const int32_t offset = StepOutput::OffsetOf(slot, bt);
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    for (int32_t kv = 0; kv < 2; ++kv) {
      for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
        for (int32_t d = 0; d < layout.head_dim; ++d) {
          uint32_t w;
          std::memcpy(&w, block + WordOffset(layout, l, kv, h, offset, d),
                      sizeof(w));
          if (w != TokenWord(tag, l, kv, h, d)) {
            return absl::StrFormat(
                "slot %d (layer %d, %s, head %d, dim %d): word %#x, want tag "
                "%d's %#x",
                slot, l, kv == 0 ? "K" : "V", h, d, w, tag,
                TokenWord(tag, l, kv, h, d));
          }
        }
      }
    }
  }
  return "";
}

}  // namespace pagedkv::testing

namespace pagedkv {

// GoogleTest prints these by name (found by argument-dependent lookup).
inline void PrintTo(SequenceState s, std::ostream* os) {
  *os << SequenceStateName(s);
}
inline void PrintTo(Admission a, std::ostream* os) {
  *os << (a == Admission::kAdmit   ? "kAdmit"
          : a == Admission::kLater ? "kLater"
                                   : "kNever");
}

}  // namespace pagedkv

#endif  // PAGEDKV_TESTS_CACHE_SERVING_MANAGER_TESTING_H_
