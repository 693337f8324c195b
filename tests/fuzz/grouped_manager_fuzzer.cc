// tests/fuzz/grouped_manager_fuzzer.cc
//
// libFuzzer target for the serving manager with layer groups
// (KVCacheManager::Options::layer_groups; cache/serving/grouped_sequences.h).
// The input picks 1-3 groups of one layer each, every one full or a window
// of 1-12 tokens, blocks of 2-4 tokens (3: the divide path), a pool of 4-48
// blocks, host storage (mostly) or books-only, and either admission mode
// (kReservation with a max_step_tokens of 0-6), then decodes up to kMaxOps
// operations over sequence ids 0..kIds-1: AddSequence, batched ragged
// AppendSlots (with duplicate, unknown and empty requests now and then),
// Fork, Truncate, Free, Preempt, Readmit, SwapOut and SwapIn to a host
// tier of 0-24 blocks (books-only completes each swap at once; the plan
// must pair every live entry, split per group) and the dense and CSR
// exports of one group (a bad group now and then). With prefix caching
// (half the inputs) sequences are added with token ids from two system
// prompts and a 3-token alphabet, steps give ids and commits (sometimes
// none, sometimes a commit out of range), CommitTokens (1 to 3 entries,
// all or nothing) catches up left-out ids, and ResetPrefixCache runs now
// and then.
//
// The model is per sequence: its state and one tag per token (with prefix
// caching a digest of the token ids up to it, so a cache hit must read
// back exactly the words its own tokens would have written). In host mode
// each new slot of each group gets a word naming (tag, group, K|V) written
// into the pool, as a server would. After every operation:
//   - a failed call changes nothing: every id's presence, state, length and
//     group tables, the pool's used blocks and its books (PoolBooks:
//     allocations, the peak, the prefix cache's counts and eviction order);
//   - kReservation: an AppendSlots of running sequences within their
//     max_tokens and max_step_tokens never runs out of memory;
//   - every running sequence's group tables have BlocksFor(tokens) entries,
//     a full group no hole, a window group holes only before its first
//     live entry and none where the next token's window reads; in host
//     mode every token a group holds reads back its word;
//   - the exports agree with group_table; CheckInvariants().
// At the end every sequence is freed and every block must be free.
//
//   bazel run --config=fuzz //tests/fuzz:grouped_manager_fuzzer --
//       -max_total_time=60
//
// Thread safety: one input at a time (libFuzzer's model).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/serving/group_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/pool_books.h"

namespace pagedkv::fuzzing {
namespace {

constexpr int kMaxOps = 200;
constexpr SequenceId kIds = 8;
constexpr int64_t kMaxTokens = 40;

enum Op { kAdd, kAppend, kFork, kTruncate, kFree, kPreempt, kReadmit,
          kSwapOut, kSwapIn, kExport, kCommit, kNumOps };
// Not a call: the successful SwapIns that took cached blocks back.
constexpr size_t kSwapInRehit = kNumOps;

OpStats& Stats() {
  return OpStats::Get(
      "grouped_manager_fuzzer",
      {"AddSequence", "AppendSlots", "Fork", "Truncate", "Free", "Preempt",
       "Readmit", "SwapOut", "SwapIn", "Export (dense, CSR)",
       "CommitTokens / ResetPrefixCache", "(SwapIn re-hits)"});
}

struct ModelSequence {
  bool running = true;
  bool swapped = false;  // Not running: swapped out (else preempted).
  std::vector<uint32_t> tags;  // One per token.
  int64_t max_tokens = 0;
  // Prefix caching: every token's id, how many of them the manager has
  // (steps may leave them out), and its commit point.
  std::vector<int32_t> ids;
  int64_t known_ids = 0;
  int64_t committed = 0;

  // Appends a token with id `token` (its tag: a digest of the ids so far).
  void Push(int32_t token) {
    const uint32_t prev = tags.empty() ? 2166136261u : tags.back();
    ids.push_back(token);
    tags.push_back(((prev ^ static_cast<uint32_t>(token)) * 16777619u) | 1u);
  }
  void Resize(int64_t n) {
    tags.resize(n);
    ids.resize(n);
    known_ids = std::min(known_ids, n);
    committed = std::min(committed, n);
  }
};

// What a failed call must leave as it was.
struct Snapshot {
  std::map<SequenceId, std::string> sequences;  // State, length, tables.
  int32_t used_blocks = 0;
  // The pool's books: allocations, the peak, and the prefix cache's
  // entries, LRU and lifetime counts (a failure counter may move).
  std::string books;
  bool operator==(const Snapshot& o) const {
    return sequences == o.sequences && used_blocks == o.used_blocks &&
           books == o.books;
  }
};

class GroupedFuzzer {
 public:
  explicit GroupedFuzzer(FuzzInput& in) : in_(in) {}

  void Run() {
    if (!Create()) return;
    for (int op = 0; op < kMaxOps && !in_.empty(); ++op) Step();
    for (const auto& [id, s] : model_) {
      if (!m_->Free(id).ok()) Divergence(history_, "Free at the end failed");
    }
    m_->CheckInvariants();
    if (m_->stats().used_blocks != 0) {
      Divergence(history_, absl::StrFormat("%d blocks used at the end",
                                           m_->stats().used_blocks));
    }
  }

 private:
  bool Create() {
    bt_ = static_cast<int32_t>(in_.InRange(2, 4));
    const int32_t groups = static_cast<int32_t>(in_.InRange(1, 3));
    KVCacheManager::Options o;
    o.layout = {.num_layers = groups, .num_kv_heads = 1, .head_dim = 1,
                .dtype = DType::kFloat32, .block_tokens = bt_};
    o.num_blocks = static_cast<int32_t>(in_.InRange(4, 48));
    for (int32_t g = 0; g < groups; ++g) {
      const int32_t w = in_.Bool() ? 0 : static_cast<int32_t>(in_.InRange(1, 12));
      o.layer_groups.push_back({.num_layers = 1, .sliding_window = w});
      windows_.push_back(w);
    }
    host_ = in_.Below(4) != 0;
    o.storage = host_ ? StorageMode::kHost : StorageMode::kBooksOnly;
    reservation_ = in_.Bool();
    if (reservation_) {
      o.admission = AdmissionMode::kReservation;
      o.max_step_tokens = static_cast<int32_t>(in_.InRange(0, 6));
      max_step_ = o.max_step_tokens;
    }
    o.watermark = in_.Bool() ? 0.0 : 0.1;
    o.num_host_blocks = static_cast<int32_t>(in_.Below(25));
    prefix_ = in_.Bool();
    o.prefix_caching.enabled = prefix_;
    absl::StatusOr<std::unique_ptr<KVCacheManager>> m =
        KVCacheManager::Create(o);
    if (!m.ok()) {
      Divergence(history_, absl::StrCat("Create: ", m.status().ToString()));
    }
    m_ = *std::move(m);
    history_.Add(absl::StrFormat(
        "Create(bt %d, %d blocks, %d host, windows {%s}, %s, %s, "
        "max_step %d%s)", bt_, o.num_blocks, o.num_host_blocks,
        absl::StrJoin(windows_, ", "),
        host_ ? "host" : "books-only",
        reservation_ ? "reservation" : "watermark", max_step_,
        prefix_ ? ", prefix caching" : ""));
    return true;
  }

  SequenceId Id() { return static_cast<SequenceId>(in_.Below(kIds)); }
  // Mostly a sequence the model has (so calls mostly succeed), else any id.
  SequenceId Known() {
    if (model_.empty() || in_.OneIn(6)) return Id();
    auto it = model_.begin();
    std::advance(it, in_.Below(static_cast<int64_t>(model_.size())));
    return it->first;
  }
  int64_t BlocksFor(int64_t tokens) const { return (tokens + bt_ - 1) / bt_; }
  int32_t groups() const { return static_cast<int32_t>(windows_.size()); }

  Snapshot Take() const {
    Snapshot s;
    s.used_blocks = m_->stats().used_blocks;
    s.books = PoolBooks(m_->books());
    for (SequenceId id = 0; id < kIds; ++id) {
      if (!m_->contains(id)) continue;
      std::string& d = s.sequences[id];
      d = absl::StrCat(SequenceStateName(*m_->state(id)), " ",
                       *m_->num_tokens(id));
      for (int32_t g = 0; g < groups(); ++g) {
        absl::StatusOr<KVCacheManager::RunningTable> t = m_->group_table(id, g);
        if (!t.ok()) continue;
        absl::StrAppend(&d, " |");
        for (BlockId b : t->blocks) absl::StrAppend(&d, " ", b.value());
      }
    }
    return s;
  }

  // Host mode: writes the words of request i's new tokens (tags from
  // `first`) into every group's slots of out_.
  void WriteSlots(size_t i, SequenceId id, int64_t first) {
    if (!host_) return;
    KVPool& pool = *m_->kv_pool();
    const std::vector<uint32_t>& tags = model_[id].tags;
    const int32_t begin = out_.request_offsets[i];
    const int32_t end = out_.request_offsets[i + 1];
    for (int32_t g = 0; g < groups(); ++g) {
      for (int32_t j = begin; j < end; ++j) {
        const int64_t slot = out_.slot_mapping[g * out_.group_stride + j];
        const BlockId b = StepOutput::BlockOf(slot, bt_);
        const int32_t off = StepOutput::OffsetOf(slot, bt_);
        for (KV kv : {KV::kKey, KV::kValue}) {
          const uint32_t word = Word(tags[first + (j - begin)], g, kv);
          std::memcpy(pool.BlockData(b) + pool.layout().DataOffset(0, kv, 0, off),
                      &word, sizeof(word));
        }
      }
    }
  }
  static uint32_t Word(uint32_t tag, int32_t g, KV kv) {
    return tag * 8 + static_cast<uint32_t>(g) * 2 + static_cast<uint32_t>(kv);
  }

  void Step() {
    const Op op = static_cast<Op>(in_.Below(kNumOps));
    const Snapshot before = Take();
    absl::Status st;
    bool must_fit = false;
    switch (op) {
      case kAdd: {
        const SequenceId id = Id();
        const int64_t prompt = in_.OneIn(16) ? 0 : in_.InRange(1, 14);
        const int64_t max_new = in_.InRange(0, kMaxTokens - 14);
        ModelSequence s;
        s.max_tokens = prompt + max_new;
        if (prefix_) {
          // One of two system prompts, then ids from a 3-token alphabet.
          const int32_t system = static_cast<int32_t>(in_.Below(2));
          for (int64_t t = 0; t < prompt; ++t) {
            s.Push(t < 6 ? 100 * (system + 1) + static_cast<int32_t>(t)
                         : static_cast<int32_t>(in_.Below(3)));
          }
          s.known_ids = prompt;
          history_.Add(absl::StrFormat("AddSequence(%d, ids of %d, %d)", id,
                                       prompt, max_new));
          st = m_->AddSequence(id, s.ids, max_new, &out_);
        } else {
          for (int64_t t = 0; t < prompt; ++t) s.tags.push_back(next_tag_++);
          history_.Add(absl::StrFormat("AddSequence(%d, %d, %d)", id, prompt,
                                       max_new));
          st = m_->AddSequence(id, prompt, max_new, &out_);
        }
        if (st.ok()) {
          s.committed = out_.num_cached_tokens;
          model_[id] = std::move(s);
          WriteSlots(0, id, out_.num_cached_tokens);
        }
        break;
      }
      case kAppend: {
        // Mostly every running sequence (a decode step), now and then a
        // random or repeated id.
        std::vector<SequenceId> ids;
        for (const auto& [id, s] : model_) {
          if (s.running && !in_.OneIn(4)) ids.push_back(id);
        }
        if (ids.empty() || in_.OneIn(12)) ids.push_back(Id());
        std::vector<SlotRequest> requests;
        must_fit = reservation_;
        std::vector<SequenceId> seen;
        std::vector<std::vector<int32_t>> new_ids(ids.size());
        for (size_t r = 0; r < ids.size(); ++r) {
          const SequenceId id = ids[r];
          int32_t k = in_.Below(4) == 0 ? static_cast<int32_t>(in_.InRange(1, 7)) : 1;
          if (in_.OneIn(32)) k = 0;
          for (int32_t j = 0; j < k; ++j) {
            new_ids[r].push_back(static_cast<int32_t>(in_.Below(3)));
          }
          SlotRequest req{.seq = id, .num_tokens = k};
          auto it = model_.find(id);
          if (prefix_ && it != model_.end()) {
            const ModelSequence& s = it->second;
            const int64_t n = static_cast<int64_t>(s.tags.size());
            // Mostly the ids; now and then none (the server keeps them).
            if (!in_.OneIn(16)) req.token_ids = new_ids[r];
            // A commit in [committed, n], none, or now and then one out of
            // range (refused, nothing changed).
            if (in_.OneIn(24)) {
              req.commit = in_.Bool() ? n + 1 : s.committed - 1;
            } else if (!in_.OneIn(4)) {
              req.commit = s.committed + in_.Below(n - s.committed + 1);
            }
            if (req.commit != -1 &&
                (req.commit < s.committed || req.commit > n)) {
              must_fit = false;
            }
            if (!req.token_ids.empty() && s.known_ids != n) must_fit = false;
          }
          requests.push_back(req);
          const bool fits =
              it != model_.end() && it->second.running && k > 0 &&
              static_cast<int64_t>(it->second.tags.size()) + k <=
                  it->second.max_tokens &&
              (max_step_ == 0 || k <= max_step_) &&
              std::find(seen.begin(), seen.end(), id) == seen.end();
          must_fit = must_fit && fits;
          seen.push_back(id);
        }
        std::string line = "AppendSlots(";
        for (const SlotRequest& r : requests) {
          absl::StrAppend(&line, r.seq, ":", r.num_tokens, " ");
        }
        history_.Add(line + ")");
        st = m_->AppendSlots(requests, &out_);
        if (st.ok()) {
          if (!host_) out_.copies.MarkDone();  // The caller ran them.
          for (size_t i = 0; i < requests.size(); ++i) {
            ModelSequence& s = model_[requests[i].seq];
            const int64_t first = static_cast<int64_t>(s.tags.size());
            if (prefix_) {
              for (int32_t t : new_ids[i]) s.Push(t);
              if (!requests[i].token_ids.empty()) {
                s.known_ids += requests[i].num_tokens;
              }
              if (requests[i].commit != -1) s.committed = requests[i].commit;
            } else {
              for (int64_t t = 0; t < requests[i].num_tokens; ++t) {
                s.tags.push_back(next_tag_++);
              }
            }
            WriteSlots(i, requests[i].seq, first);
          }
        }
        break;
      }
      case kFork: {
        const SequenceId parent = Known(), child = Id();
        history_.Add(absl::StrFormat("Fork(%d, %d)", parent, child));
        st = m_->Fork(parent, child);
        if (st.ok()) model_[child] = model_[parent];
        break;
      }
      case kTruncate: {
        const SequenceId id = Known();
        const int64_t len = model_.count(id) ? model_[id].tags.size() : 4;
        const int64_t n = in_.InRange(0, len + 1);
        history_.Add(absl::StrFormat("Truncate(%d, %d)", id, n));
        st = m_->Truncate(id, n);
        if (st.ok()) model_[id].Resize(n);
        break;
      }
      case kFree: {
        const SequenceId id = Known();
        history_.Add(absl::StrFormat("Free(%d)", id));
        st = m_->Free(id);
        if (st.ok()) model_.erase(id);
        break;
      }
      case kPreempt: {
        const SequenceId id = Known();
        history_.Add(absl::StrFormat("Preempt(%d)", id));
        st = m_->Preempt(id);
        if (st.ok()) {
          model_[id].running = false;
          model_[id].swapped = false;
        }
        break;
      }
      case kReadmit: {
        const SequenceId id = Known();
        history_.Add(absl::StrFormat("Readmit(%d)", id));
        st = m_->Readmit(id, &out_);
        if (st.ok()) {
          if (model_[id].swapped) {
            Divergence(history_, "Readmit of a swapped-out sequence");
          }
          model_[id].running = true;
          model_[id].committed = out_.num_cached_tokens;
          WriteSlots(0, id, out_.num_cached_tokens);  // Recomputed.
        }
        break;
      }
      case kSwapOut:
      case kSwapIn:
        st = Swap(op == kSwapOut);
        break;
      case kCommit:
        if (prefix_) {
          st = Commit();
          break;
        }
        [[fallthrough]];
      case kExport:
      case kNumOps:
        st = Export();
        break;
    }
    Stats().CountOp(op, st);
    if (!st.ok()) {
      if (must_fit && st.code() == absl::StatusCode::kResourceExhausted) {
        Divergence(history_, "kReservation: a step within the reservation "
                             "ran out of memory: " + st.ToString());
      }
      if (!(Take() == before)) {
        Divergence(history_, "a failed call changed the books: " +
                                 st.ToString());
      }
    }
    Check();
  }

  // SwapOut (out) or SwapIn of a sequence; books-only completes the swap
  // at once (the fuzzer has no device bytes to copy), host mode by itself.
  absl::Status Swap(bool out) {
    const SequenceId id = Known();
    history_.Add(absl::StrFormat("%s(%d)", out ? "SwapOut" : "SwapIn", id));
    int64_t live = 0;
    for (int32_t g = 0; out && g < groups(); ++g) {
      absl::StatusOr<KVCacheManager::RunningTable> t = m_->group_table(id, g);
      if (!t.ok()) break;
      for (BlockId b : t->blocks) live += b.is_valid() ? 1 : 0;
    }
    const int64_t rehits_before = m_->stats().prefix.rehit_blocks;
    absl::StatusOr<SwapPlan> plan = out ? m_->SwapOut(id) : m_->SwapIn(id);
    if (!plan.ok()) return plan.status();
    // Blocks SwapIn found cached hold final KV (in host mode the reads
    // below check their words); its commit point stays the server's.
    const int64_t rehits = m_->stats().prefix.rehit_blocks - rehits_before;
    if (rehits > 0) {
      if (out) Divergence(history_, "SwapOut counted re-hits");
      Stats().CountOp(kSwapInRehit, absl::OkStatus());
    }
    const size_t pairs = plan->src.size();
    const bool shaped =
        host_ ? pairs == 0 && plan->dst.empty()
              : plan->dst.size() == pairs &&
                    plan->group_offsets.size() ==
                        static_cast<size_t>(groups()) + 1 &&
                    plan->group_offsets.front() == 0 &&
                    static_cast<size_t>(plan->group_offsets.back()) == pairs &&
                    (!out || static_cast<int64_t>(pairs) == live);
    if (!shaped) {
      Divergence(history_, absl::StrFormat("%s(%d): a plan of %d pairs, %d "
                                           "offsets, %d live entries",
                                           out ? "SwapOut" : "SwapIn", id,
                                           pairs, plan->group_offsets.size(),
                                           live));
    }
    if (!host_) {
      const absl::Status done = m_->CompleteSwap(id);
      if (!done.ok()) {
        Divergence(history_, "CompleteSwap after a swap: " + done.ToString());
      }
    }
    ModelSequence& s = model_[id];
    s.running = !out;
    s.swapped = out;
    return absl::OkStatus();
  }

  // CommitTokens of one sequence: its left-out ids (all or some) and a
  // commit point, now and then out of range; or a ResetPrefixCache.
  absl::Status Commit() {
    if (in_.OneIn(8)) {
      history_.Add("ResetPrefixCache()");
      m_->ResetPrefixCache();
      return absl::OkStatus();
    }
    // 1 to 3 entries of distinct sequences, all or nothing: one bad entry
    // (an unknown or stopped sequence, a count past its tokens) fails the
    // call, and the snapshot check sees that nothing changed.
    const int entries = static_cast<int>(in_.InRange(1, 3));
    std::vector<SequenceId> seqs;
    std::vector<int64_t> gives, commits_at;
    std::vector<std::vector<int32_t>> ids(entries);
    std::vector<TokenCommit> commits;
    std::string text;
    for (int e = 0; e < entries; ++e) {
      const SequenceId id = Known();
      if (std::find(seqs.begin(), seqs.end(), id) != seqs.end()) continue;
      auto it = model_.find(id);
      const int64_t n = it != model_.end() ? it->second.tags.size() : 4;
      const int64_t known = it != model_.end() ? it->second.known_ids : 0;
      const int64_t give = in_.InRange(0, n - known);
      const int64_t commit = in_.OneIn(16) ? n + 1 : in_.InRange(0, n);
      if (it != model_.end()) {
        ids[e].assign(it->second.ids.begin() + known,
                      it->second.ids.begin() + known + give);
      }
      seqs.push_back(id);
      gives.push_back(give);
      commits_at.push_back(commit);
      commits.push_back({.seq = id, .num_tokens = commit, .token_ids = ids[e]});
      absl::StrAppend(&text, text.empty() ? "" : ", ",
                      absl::StrFormat("(%d, %d, %d ids)", id, commit, give));
    }
    history_.Add(absl::StrCat("CommitTokens(", text, ")"));
    const absl::Status st = m_->CommitTokens(commits);
    if (st.ok()) {
      for (size_t e = 0; e < seqs.size(); ++e) {
        ModelSequence& s = model_.at(seqs[e]);
        s.known_ids += gives[e];
        s.committed = std::max(s.committed, commits_at[e]);
      }
    }
    return st;
  }

  absl::Status Export() {
    const int32_t g = in_.OneIn(16) ? groups() : static_cast<int32_t>(
                                                     in_.Below(groups()));
    std::vector<SequenceId> batch;
    for (const auto& [id, s] : model_) {
      if (s.running) batch.push_back(id);
    }
    if (!batch.empty() && in_.OneIn(8)) batch.push_back(kIds + 1);  // Unknown.
    history_.Add(absl::StrFormat("Export(group %d, %d rows)", g, batch.size()));
    // Wide enough for every row (watermark admission does not bound a
    // sequence's length by its max_tokens).
    int64_t longest = 0;
    for (const auto& [id, s] : model_) {
      longest = std::max<int64_t>(longest, s.tags.size());
    }
    const int32_t width = static_cast<int32_t>(BlocksFor(longest) + 1);
    std::vector<int32_t> dense(batch.size() * width), lens(batch.size());
    absl::Status st = ExportDenseGroupBlockTables(
        *m_, g, batch, {.max_blocks = width, .pad_id = -2, .hole_id = -1},
        absl::MakeSpan(dense), absl::MakeSpan(lens));
    std::vector<int32_t> indptr(batch.size() + 1),
        indices(batch.size() * width), last(batch.size()), first(batch.size());
    const absl::Status csr = ExportCsrGroupPageTable(
        *m_, g, batch, absl::MakeSpan(indptr), absl::MakeSpan(indices),
        absl::MakeSpan(last), absl::MakeSpan(first));
    if (st.code() != csr.code()) {
      Divergence(history_, absl::StrCat("dense says ", st.ToString(),
                                        ", CSR says ", csr.ToString()));
    }
    if (!st.ok()) return st;
    for (size_t b = 0; b < batch.size(); ++b) {
      const KVCacheManager::RunningTable t = *m_->group_table(batch[b], g);
      const int32_t n = static_cast<int32_t>(t.blocks.size());
      int32_t holes = 0;
      while (holes < n && !t.blocks[holes].is_valid()) ++holes;
      bool same = lens[b] == t.num_tokens && first[b] == holes &&
                  indptr[b + 1] - indptr[b] == n - holes;
      for (int32_t i = 0; same && i < width; ++i) {
        const int32_t want = i < n ? t.blocks[i].value() : -2;
        same = dense[b * width + i] == want &&
               (i < holes || i >= n || indices[indptr[b] + i - holes] == want);
      }
      if (!same) {
        Divergence(history_, absl::StrFormat("row %d (sequence %d) of group "
                                             "%d's exports differs", b,
                                             batch[b], g));
      }
    }
    return absl::OkStatus();
  }

  void Check() {
    m_->CheckInvariants();
    for (SequenceId id = 0; id < kIds; ++id) {
      auto it = model_.find(id);
      if (m_->contains(id) != (it != model_.end())) {
        Divergence(history_, absl::StrFormat("sequence %d: presence", id));
      }
      if (it == model_.end()) continue;
      const ModelSequence& s = it->second;
      const int64_t n = static_cast<int64_t>(s.tags.size());
      const SequenceState state = *m_->state(id);
      const SequenceState want = s.running   ? SequenceState::kRunning
                                 : s.swapped ? SequenceState::kSwappedOut
                                             : SequenceState::kPreempted;
      if (*m_->num_tokens(id) != n || state != want) {
        Divergence(history_, absl::StrFormat("sequence %d: length or state",
                                             id));
      }
      if (!s.running) continue;
      for (int32_t g = 0; g < groups(); ++g) {
        const KVCacheManager::RunningTable t = *m_->group_table(id, g);
        const int64_t entries = static_cast<int64_t>(t.blocks.size());
        int64_t holes = 0;
        while (holes < entries && !t.blocks[holes].is_valid()) ++holes;
        // The next token (position n) reads tokens [n - W + 1, n - 1] from
        // the cache: their blocks must be live (a full group: all).
        const int64_t first_read =
            windows_[g] == 0 ? 0 : std::max<int64_t>(0, n - windows_[g] + 1);
        bool ok = entries == BlocksFor(n) && holes <= first_read / bt_;
        for (int64_t i = holes; ok && i < entries; ++i) {
          ok = t.blocks[i].is_valid();
        }
        if (!ok) {
          Divergence(history_, absl::StrFormat(
                                   "sequence %d group %d: %d entries, %d "
                                   "leading holes, %d tokens", id, g, entries,
                                   holes, n));
        }
        if (!host_) continue;
        const KVPool& pool = *m_->kv_pool();
        for (int64_t tok = holes * bt_; tok < n; ++tok) {
          const BlockId b = t.blocks[tok / bt_];
          for (KV kv : {KV::kKey, KV::kValue}) {
            uint32_t word;
            std::memcpy(&word,
                        pool.BlockData(b) +
                            pool.layout().DataOffset(0, kv, 0, tok % bt_),
                        sizeof(word));
            if (word != Word(s.tags[tok], g, kv)) {
              Divergence(history_, absl::StrFormat(
                                       "sequence %d group %d token %d reads "
                                       "%d, wrote %d", id, g, tok, word,
                                       Word(s.tags[tok], g, kv)));
            }
          }
        }
      }
    }
  }

  FuzzInput& in_;
  History history_;
  std::unique_ptr<KVCacheManager> m_;
  int32_t bt_ = 0;
  std::vector<int32_t> windows_;
  bool host_ = true;
  bool reservation_ = false;
  int32_t max_step_ = 0;
  bool prefix_ = false;
  std::map<SequenceId, ModelSequence> model_;
  uint32_t next_tag_ = 1;
  StepOutput out_;
};

}  // namespace
}  // namespace pagedkv::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pagedkv::fuzzing::FuzzInput in(data, size);
  pagedkv::fuzzing::Stats().CountInput();
  pagedkv::fuzzing::GroupedFuzzer(in).Run();
  return 0;
}
