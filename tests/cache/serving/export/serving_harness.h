// tests/cache/serving/export/serving_harness.h
//
// ServingHarness drives a host-mode KVCacheManager the way a continuous-
// batching server does (admit, prefill, decode and chunked appends, fork,
// truncate, preempt and readmit, swap out and in, free), from a seeded
// std::mt19937, and keeps a trivially correct model: every sequence's tokens
// as tags. With write_kv on it writes each new token's K and V into the
// slots the manager hands out, every element a function of (tag, layer,
// K|V, head, dim) (KVValue), so a test can check that the blocks a table
// names hold exactly the sequence's tokens, after copy-on-write and swaps.
// KVValue gives multiples of 1/128 in [-1, 1]: exact in float32, float16 and
// bfloat16, so those checks compare exactly.
//
//   ServingHarness h({.layout = layout, .num_blocks = 64, .seed = 7});
//   h.Add(/*prompt_tokens=*/10);
//   for (int i = 0; i < 100; ++i) h.RandomStep();
//   std::vector<SequenceId> batch = h.RandomBatch();
//   h.CheckContents(batch[0]);   // EXPECTs every K/V element
//
// Failures of the manager's contract (an unexpected error code, an error
// that changed the books) are reported with ADD_FAILURE, and every step
// ends with KVCacheManager::CheckInvariants().
//
// Thread safety: one test thread.
#ifndef PAGEDKV_TESTS_CACHE_SERVING_EXPORT_SERVING_HARNESS_H_
#define PAGEDKV_TESTS_CACHE_SERVING_EXPORT_SERVING_HARNESS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"

namespace pagedkv::testing {

// The K or V element of a token tagged `tag`: a multiple of 1/128 in [-1, 1].
inline float KVValue(uint32_t tag, int32_t layer, KV kv, int32_t head,
                     int32_t dim) {
  uint64_t x = (uint64_t{tag} << 32) ^ (uint64_t(layer) << 24) ^
               (uint64_t(static_cast<int32_t>(kv)) << 20) ^
               (uint64_t(head) << 12) ^ uint64_t(dim);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<float>(static_cast<int32_t>(x % 257) - 128) / 128.0f;
}

class ServingHarness {
 public:
  struct Options {
    KVLayout layout;
    int32_t num_blocks = 0;
    int32_t num_host_blocks = 0;
    AdmissionMode admission = AdmissionMode::kWatermark;
    uint32_t seed = 1;
    // Write every new token's K/V (host bytes); off for books-only tests.
    bool write_kv = false;
    // Largest prompt of Add during RandomStep.
    int32_t max_prompt = 40;
    // Print every call to stderr (to turn a failing seed into a
    // reproducer).
    bool trace = false;
  };

  explicit ServingHarness(const Options& options)
      : options_(options), rng_(options.seed) {
    absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
        KVCacheManager::Create({.layout = options.layout,
                                .num_blocks = options.num_blocks,
                                .admission = options.admission,
                                .num_host_blocks = options.num_host_blocks});
    PKV_CHECK(made.ok(), "Create: %s", made.status().ToString());
    manager_ = *std::move(made);
  }

  KVCacheManager& manager() { return *manager_; }
  std::mt19937& rng() { return rng_; }
  uint32_t Draw(uint32_t n) { return n == 0 ? 0 : rng_() % n; }

  // The model's sequences and their tokens.
  std::vector<SequenceId> Running() const {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : model_) {
      if (s.state == SequenceState::kRunning) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  std::vector<SequenceId> InState(SequenceState state) const {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : model_) {
      if (s.state == state) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  int64_t ModelTokens(SequenceId seq) const {
    return static_cast<int64_t>(model_.at(seq).tags.size());
  }

  // --- Operations (each returns whether it happened) ------------------

  bool Add(int64_t prompt_tokens, int64_t max_new_tokens = 64) {
    const SequenceId seq = next_id_++;
    const bool fits =
        manager_->CanAdmit(prompt_tokens, max_new_tokens) == Admission::kAdmit;
    Trace("AddSequence(%d, %d, %d)", seq, prompt_tokens, max_new_tokens);
    absl::Status st =
        manager_->AddSequence(seq, prompt_tokens, max_new_tokens, &out_);
    if (!fits) {
      Expect(st.code() == absl::StatusCode::kResourceExhausted, st, "Add");
      return Done(false);
    }
    if (!Expect(st.ok(), st, "Add")) return Done(false);
    Seq& s = model_[seq];
    s.state = SequenceState::kRunning;
    WriteNew(seq, 0, prompt_tokens, /*request=*/0, /*fresh_tags=*/true);
    return Done(true);
  }

  // One AppendSlots of `tokens[i]` new tokens for seqs[i].
  bool Append(absl::Span<const SequenceId> seqs,
              absl::Span<const int32_t> tokens) {
    std::vector<SlotRequest> requests;
    std::vector<int64_t> before;
    std::vector<std::vector<BlockId>> tables_before;
    for (size_t i = 0; i < seqs.size(); ++i) {
      requests.push_back({.seq = seqs[i], .num_tokens = tokens[i]});
      before.push_back(ModelTokens(seqs[i]));
      const absl::Span<const BlockId> t = *manager_->block_table(seqs[i]);
      tables_before.emplace_back(t.begin(), t.end());
    }
    const ManagerStats stats_before = manager_->stats();
    for (const SlotRequest& r : requests) {
      Trace("  request {%d, %d}", r.seq, r.num_tokens);
    }
    Trace("AppendSlots(above)");
    absl::Status st = manager_->AppendSlots(requests, &out_);
    if (st.code() == absl::StatusCode::kResourceExhausted ||
        st.code() == absl::StatusCode::kOutOfRange) {
      for (size_t i = 0; i < seqs.size(); ++i) {
        EXPECT_EQ(*manager_->num_tokens(seqs[i]), before[i])
            << "a failed AppendSlots changed sequence " << seqs[i];
        const absl::Span<const BlockId> t = *manager_->block_table(seqs[i]);
        EXPECT_EQ(std::vector<BlockId>(t.begin(), t.end()), tables_before[i])
            << "a failed AppendSlots changed the table of " << seqs[i];
      }
      EXPECT_EQ(manager_->stats().used_blocks, stats_before.used_blocks);
      EXPECT_EQ(manager_->stats().reserved_blocks,
                stats_before.reserved_blocks);
      return Done(false);
    }
    if (!Expect(st.ok(), st, "AppendSlots")) return Done(false);
    for (size_t i = 0; i < seqs.size(); ++i) {
      WriteNew(seqs[i], before[i], tokens[i], static_cast<int32_t>(i),
               /*fresh_tags=*/true);
    }
    return Done(true);
  }

  bool Fork(SequenceId parent) {
    const SequenceId child = next_id_++;
    Trace("Fork(%d, %d)", parent, child);
    absl::Status st = manager_->Fork(parent, child);
    if (st.code() == absl::StatusCode::kResourceExhausted) return Done(false);
    if (!Expect(st.ok(), st, "Fork")) return Done(false);
    Seq copy = model_.at(parent);  // Before the insert: it may rehash.
    model_[child] = std::move(copy);
    return Done(true);
  }

  bool Free(SequenceId seq) {
    Trace("Free(%d)", seq);
    absl::Status st = manager_->Free(seq);
    if (!Expect(st.ok(), st, "Free")) return Done(false);
    model_.erase(seq);
    return Done(true);
  }

  bool Truncate(SequenceId seq, int64_t new_length) {
    Trace("Truncate(%d, %d)", seq, new_length);
    const int64_t before = *manager_->num_tokens(seq);
    absl::Status st = manager_->Truncate(seq, new_length);
    // kReservation may refuse when the blocks a fork keeps must be reserved
    // again and the pool cannot: then nothing changed.
    if (options_.admission == AdmissionMode::kReservation &&
        absl::IsResourceExhausted(st)) {
      EXPECT_EQ(*manager_->num_tokens(seq), before);
      return Done(false);
    }
    if (!Expect(st.ok(), st, "Truncate")) return Done(false);
    model_.at(seq).tags.resize(static_cast<size_t>(new_length));
    return Done(true);
  }

  bool Preempt(SequenceId seq) {
    Trace("Preempt(%d)", seq);
    absl::Status st = manager_->Preempt(seq);
    if (!Expect(st.ok(), st, "Preempt")) return Done(false);
    model_.at(seq).state = SequenceState::kPreempted;
    return Done(true);
  }

  // The server recomputes the remembered tokens into the new slots.
  bool Readmit(SequenceId seq) {
    Trace("Readmit(%d)", seq);
    absl::Status st = manager_->Readmit(seq, &out_);
    if (st.code() == absl::StatusCode::kResourceExhausted) {
      EXPECT_EQ(*manager_->state(seq), SequenceState::kPreempted);
      return Done(false);
    }
    if (!Expect(st.ok(), st, "Readmit")) return Done(false);
    Seq& s = model_.at(seq);
    s.state = SequenceState::kRunning;
    WriteNew(seq, 0, ModelTokens(seq), 0, /*fresh_tags=*/false);
    return Done(true);
  }

  bool SwapOut(SequenceId seq) {
    Trace("SwapOut(%d)", seq);
    absl::StatusOr<SwapPlan> plan = manager_->SwapOut(seq);
    if (plan.status().code() == absl::StatusCode::kResourceExhausted ||
        (options_.num_host_blocks == 0 &&
         plan.status().code() == absl::StatusCode::kFailedPrecondition)) {
      EXPECT_EQ(*manager_->state(seq), SequenceState::kRunning);
      return Done(false);
    }
    if (!Expect(plan.ok(), plan.status(), "SwapOut")) return Done(false);
    model_.at(seq).state = SequenceState::kSwappedOut;
    return Done(true);
  }

  bool SwapIn(SequenceId seq) {
    Trace("SwapIn(%d)", seq);
    absl::StatusOr<SwapPlan> plan = manager_->SwapIn(seq);
    if (plan.status().code() == absl::StatusCode::kResourceExhausted) {
      EXPECT_EQ(*manager_->state(seq), SequenceState::kSwappedOut);
      return Done(false);
    }
    if (!Expect(plan.ok(), plan.status(), "SwapIn")) return Done(false);
    model_.at(seq).state = SequenceState::kRunning;
    return Done(true);
  }

  // One random operation, weighted like a serving loop (decode dominates).
  void RandomStep() {
    const std::vector<SequenceId> running = Running();
    const uint32_t op = Draw(100);
    if (running.empty() || op < 12) {
      Add(1 + Draw(static_cast<uint32_t>(options_.max_prompt)));
    } else if (op < 60) {
      // Decode (1 token) or a chunk, for a random subset.
      std::vector<SequenceId> seqs;
      std::vector<int32_t> tokens;
      for (SequenceId id : running) {
        if (Draw(3) == 0) continue;
        seqs.push_back(id);
        tokens.push_back(Draw(4) == 0 ? 1 + static_cast<int32_t>(Draw(9)) : 1);
      }
      std::shuffle(seqs.begin(), seqs.end(), rng_);
      if (!seqs.empty()) Append(seqs, tokens);
    } else if (op < 70) {
      Fork(running[Draw(static_cast<uint32_t>(running.size()))]);
    } else if (op < 78) {
      Free(running[Draw(static_cast<uint32_t>(running.size()))]);
    } else if (op < 83) {
      const SequenceId seq =
          running[Draw(static_cast<uint32_t>(running.size()))];
      const int64_t n = ModelTokens(seq);
      Truncate(seq, Draw(4) == 0 ? 0
                                 : static_cast<int64_t>(
                                       Draw(static_cast<uint32_t>(n + 1))));
    } else if (op < 88) {
      Preempt(running[Draw(static_cast<uint32_t>(running.size()))]);
    } else if (op < 92) {
      const std::vector<SequenceId> waiting =
          InState(SequenceState::kPreempted);
      if (!waiting.empty()) {
        Readmit(waiting[Draw(static_cast<uint32_t>(waiting.size()))]);
      }
    } else if (op < 96) {
      SwapOut(running[Draw(static_cast<uint32_t>(running.size()))]);
    } else {
      const std::vector<SequenceId> out = InState(SequenceState::kSwappedOut);
      if (!out.empty()) SwapIn(out[Draw(static_cast<uint32_t>(out.size()))]);
    }
  }

  // A batch of distinct running sequences in random order: all of them,
  // or a random subset.
  std::vector<SequenceId> RandomBatch() {
    std::vector<SequenceId> batch = Running();
    std::shuffle(batch.begin(), batch.end(), rng_);
    if (!batch.empty() && Draw(3) == 0) batch.resize(1 + Draw(batch.size()));
    return batch;
  }

  // EXPECTs that the manager agrees with the model about `seq` (length),
  // and with write_kv, that every K/V element of every layer and head of
  // its tokens, read through block_table(seq), is the model's.
  void CheckContents(SequenceId seq) {
    const Seq& s = model_.at(seq);
    ASSERT_EQ(*manager_->num_tokens(seq), ModelTokens(seq)) << "seq " << seq;
    if (!options_.write_kv || s.state != SequenceState::kRunning) return;
    absl::StatusOr<absl::Span<const BlockId>> table =
        manager_->block_table(seq);
    ASSERT_TRUE(table.ok()) << table.status();
    const KVLayout& layout = options_.layout;
    const KVPool& pool = *manager_->kv_pool();
    int32_t mismatches = 0;
    for (int64_t t = 0; t < ModelTokens(seq); ++t) {
      const BlockId block = (*table)[t / layout.block_tokens];
      const int32_t slot = static_cast<int32_t>(t % layout.block_tokens);
      for (int32_t l = 0; l < layout.num_layers; ++l) {
        for (KV kv : {KV::kKey, KV::kValue}) {
          for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
            for (int32_t d = 0; d < layout.head_dim; ++d) {
              const float got = LoadAsFloat(
                  layout.dtype, pool.BlockData(block) +
                                    (layout.ElementOffset(l, kv, h, slot) + d) *
                                        SizeOf(layout.dtype));
              const float want = KVValue(s.tags[t], l, kv, h, d);
              if (got != want && ++mismatches <= 5) {
                ADD_FAILURE()
                    << "seq " << seq << " token " << t << " (" << block
                    << " slot " << slot << ") layer " << l << " kv "
                    << static_cast<int>(kv) << " head " << h << " dim " << d
                    << ": " << got << ", want " << want;
              }
            }
          }
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << "seq " << seq;
  }

  void CheckAllContents() {
    for (SequenceId seq : Running()) CheckContents(seq);
  }

 private:
  struct Seq {
    SequenceState state = SequenceState::kRunning;
    std::vector<uint32_t> tags;
  };

  template <typename... Args>
  void Trace(const absl::FormatSpec<Args...>& format, const Args&... args) {
    if (options_.trace) {
      std::fprintf(stderr, "%s\n", absl::StrFormat(format, args...).c_str());
    }
  }

  bool Expect(bool ok, const absl::Status& st, const char* op) {
    if (!ok) ADD_FAILURE() << op << ": " << st;
    return ok;
  }

  bool Done(bool happened) {
    manager_->CheckInvariants();
    return happened;
  }

  // Tokens [first, first + n) of `seq` got slots out_ request `request`:
  // tag them (fresh, or the remembered tags on a readmit) and write them.
  void WriteNew(SequenceId seq, int64_t first, int64_t n, int32_t request,
                bool fresh_tags) {
    Seq& s = model_.at(seq);
    if (fresh_tags) {
      for (int64_t i = 0; i < n; ++i) s.tags.push_back(next_tag_++);
    }
    const int32_t begin = out_.request_offsets[request];
    EXPECT_EQ(out_.request_offsets[request + 1] - begin, n)
        << "slots of seq " << seq;
    if (!options_.write_kv) return;
    const KVLayout& layout = options_.layout;
    KVPool& pool = *manager_->kv_pool();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot = out_.slot_mapping[begin + i];
      const BlockId block = StepOutput::BlockOf(slot, layout.block_tokens);
      const int32_t offset = StepOutput::OffsetOf(slot, layout.block_tokens);
      const uint32_t tag = s.tags[first + i];
      for (int32_t l = 0; l < layout.num_layers; ++l) {
        for (KV kv : {KV::kKey, KV::kValue}) {
          for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
            for (int32_t d = 0; d < layout.head_dim; ++d) {
              StoreFromFloat(layout.dtype, KVValue(tag, l, kv, h, d),
                             pool.BlockData(block) +
                                 (layout.ElementOffset(l, kv, h, offset) + d) *
                                     SizeOf(layout.dtype));
            }
          }
        }
      }
    }
  }

  Options options_;
  std::mt19937 rng_;
  std::unique_ptr<KVCacheManager> manager_;
  StepOutput out_;
  absl::flat_hash_map<SequenceId, Seq> model_;
  SequenceId next_id_ = 100;
  uint32_t next_tag_ = 1;
};

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_CACHE_SERVING_EXPORT_SERVING_HARNESS_H_
