// tests/cache/serving/manager_worker.h
//
// One thread's serving workload for the threaded tests: a KVCacheManager on
// a shared KVPool (PoolConcurrency::kShared) driven by its own seeded random
// mix (admit, batched decode and prefill, fork, truncate, free, preempt /
// readmit, swap out / in through its own host tier), every token's bytes
// tagged with the thread and checked after every step, every failed call
// checked to have changed none of its sequences. Odd workers admit by
// reservation: their started requests must never run out, however greedy
// the others are. Errors are collected, not thrown: read error() after the
// thread joined.
//
//   ManagerWorker w(pool, /*index=*/0);
//   std::thread t([&] { w.Run([](int step) { return step < 2500; }); });
//   t.join();
//   EXPECT_EQ(w.error(), "");
//
// Thread safety: each worker is used by one thread.
#ifndef PAGEDKV_TESTS_CACHE_SERVING_MANAGER_WORKER_H_
#define PAGEDKV_TESTS_CACHE_SERVING_MANAGER_WORKER_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_pool.h"
#include "tests/cache/serving/manager_testing.h"

namespace pagedkv::testing {

inline int64_t WorkerBlocksFor(int64_t tokens, int32_t bt) {
  return (tokens + bt - 1) / bt;
}

// One thread's manager, workload and model.
class ManagerWorker {
 public:
  // Odd indices admit by reservation, even ones by watermark.
  ManagerWorker(KVPool* pool, int index, int32_t host_blocks = 12,
                size_t max_sequences = 8)
      : index_(index),
        reservation_(index % 2 == 1),
        host_blocks_(host_blocks),
        max_sequences_(max_sequences),
        rng_(static_cast<uint32_t>(1000 + index)) {
    KVCacheManager::Options o;
    o.layout = pool->layout();
    o.pool = pool;
    o.admission =
        reservation_ ? AdmissionMode::kReservation : AdmissionMode::kWatermark;
    o.watermark = 0.0;
    o.num_host_blocks = host_blocks_;
    absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
        KVCacheManager::Create(o);
    if (!made.ok()) {
      Fail("Create: " + made.status().ToString());
      return;
    }
    m_ = std::make_unique<CheckedManager>(*std::move(made));
  }

  // Runs steps while keep_going(step) says so (and nothing failed), then
  // frees everything and destroys the manager on this thread.
  template <typename KeepGoing>
  void Run(KeepGoing&& keep_going) {
    for (int step = 0; keep_going(step) && ok() && m_ != nullptr; ++step) {
      step_ = step;
      Step();
      if (ok()) Verify();
    }
    if (ok() && m_ != nullptr) FreeEverything();
    m_.reset();  // Destroyed on its own thread, like a server's.
  }

  const std::string& error() const { return error_; }
  int64_t appends() const { return appends_; }
  int64_t cow_copies() const { return cow_copies_; }
  int64_t exhausted() const { return exhausted_; }
  int steps() const { return step_ + 1; }

 private:
  struct Seq {
    SequenceState state = SequenceState::kRunning;
    std::vector<uint32_t> tags;
    int64_t max_tokens = 0;
  };

  bool ok() const { return error_.empty(); }
  void Fail(const std::string& what) {
    if (!ok()) return;
    std::ostringstream os;
    os << "thread " << index_ << " ("
       << (reservation_ ? "reservation" : "watermark") << ") step " << step_
       << ": " << what;
    error_ = os.str();
  }
  void Expect(bool condition, const std::string& what) {
    if (!condition) Fail(what);
  }
  void ExpectOk(const absl::Status& status, const char* op) {
    if (!status.ok()) Fail(std::string(op) + ": " + status.ToString());
  }
  // A failed call changes nothing of this manager's own sequences (the
  // pool-wide stats move with the other threads).
  std::vector<SequenceSnapshot> Mine() const {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) ids.push_back(id);
    ids.push_back(next_id_);
    return TakeSnapshot(**m_, ids).sequences;
  }

  KVCacheManager& mgr() { return **m_; }
  int32_t bt() const { return (*m_)->block_tokens(); }
  uint32_t NewTag() {
    return static_cast<uint32_t>(index_ + 1) * 0x01000000u + next_tag_++;
  }

  std::vector<SequenceId> In(SequenceState state) const {
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) {
      if (s.state == state) ids.push_back(id);
    }
    return ids;
  }
  SequenceId Pick(const std::vector<SequenceId>& ids) {
    return ids[rng_() % ids.size()];
  }

  void Write(const StepOutput& out, size_t request, Seq& s) {
    for (int32_t i = out.request_offsets[request];
         i < out.request_offsets[request + 1]; ++i) {
      const uint32_t tag = NewTag();
      WriteToken(*mgr().kv_pool(), out.slot_mapping[i], tag);
      s.tags.push_back(tag);
    }
  }

  void Step() {
    const uint32_t r = rng_() % 100;
    if (r < 15) {
      Add();
    } else if (r < 55) {
      Append();
    } else if (r < 65) {
      Fork();
    } else if (r < 71) {
      Truncate();
    } else if (r < 81) {
      Free();
    } else if (r < 86) {
      Preempt();
    } else if (r < 91) {
      Readmit();
    } else if (r < 96) {
      SwapOut();
    } else {
      SwapIn();
    }
  }

  void Add() {
    if (seqs_.size() >= max_sequences_) return;
    const int64_t prompt = 1 + rng_() % 12;
    const int64_t max_new = rng_() % 20;
    StepOutput out;
    const absl::Status status = m_->Add(next_id_, prompt, max_new, &out);
    if (!status.ok()) {
      ++exhausted_;
      Expect(status.code() == absl::StatusCode::kResourceExhausted,
             "Add: " + status.ToString());
      return;
    }
    Seq& s = seqs_[next_id_++];
    s.max_tokens = prompt + max_new;
    Write(out, 0, s);
  }

  void Append() {
    std::vector<SequenceId> running = In(SequenceState::kRunning);
    if (running.empty()) return;
    const size_t k = 1 + rng_() % std::min<size_t>(3, running.size());
    std::vector<SlotRequest> requests;
    for (size_t i = 0; i < k; ++i) {
      std::swap(running[i], running[i + rng_() % (running.size() - i)]);
      const Seq& s = seqs_[running[i]];
      int64_t n = rng_() % 4 == 0 ? 1 + rng_() % 7 : 1;
      if (reservation_) {
        n = std::min<int64_t>(
            n, s.max_tokens - static_cast<int64_t>(s.tags.size()));
      }
      if (n > 0) {
        requests.push_back(
            {.seq = running[i], .num_tokens = static_cast<int32_t>(n)});
      }
    }
    if (requests.empty()) return;
    const std::vector<SequenceSnapshot> before = Mine();
    StepOutput out;
    const absl::Status status = m_->Append(requests, &out);
    if (!status.ok()) {
      ++exhausted_;
      Expect(status.code() == absl::StatusCode::kResourceExhausted,
             "AppendSlots: " + status.ToString());
      // kReservation: a started request never runs out.
      Expect(!reservation_, "kReservation ran out: " + status.ToString());
      Expect(Mine() == before, "a failed AppendSlots changed the sequences");
      return;
    }
    ++appends_;
    for (size_t i = 0; i < requests.size(); ++i) {
      Write(out, i, seqs_[requests[i].seq]);
    }
  }

  void Fork() {
    const std::vector<SequenceId> running = In(SequenceState::kRunning);
    if (running.empty() || seqs_.size() >= max_sequences_) return;
    const SequenceId parent = Pick(running);
    const absl::Status status = m_->Fork(parent, next_id_);
    if (!status.ok()) {
      Expect(
          reservation_ && status.code() == absl::StatusCode::kResourceExhausted,
          "Fork: " + status.ToString());
      return;
    }
    Seq child = seqs_[parent];
    seqs_[next_id_++] = std::move(child);
  }

  void Truncate() {
    const std::vector<SequenceId> running = In(SequenceState::kRunning);
    if (running.empty()) return;
    const SequenceId id = Pick(running);
    Seq& s = seqs_[id];
    const int64_t n = static_cast<int64_t>(s.tags.size());
    const int64_t new_length =
        n - static_cast<int64_t>(rng_() % (std::min<int64_t>(n, 6) + 1));
    const absl::Status status = m_->Truncate(id, new_length);
    if (reservation_ && status.code() == absl::StatusCode::kResourceExhausted) {
      return;  // Allowed: the rollback would raise its need past the pool.
    }
    ExpectOk(status, "Truncate");
    s.tags.resize(static_cast<size_t>(new_length));
  }

  void Free() {
    if (seqs_.empty()) return;
    std::vector<SequenceId> ids;
    for (const auto& [id, s] : seqs_) ids.push_back(id);
    const SequenceId id = Pick(ids);
    ExpectOk(m_->Free(id), "Free");
    seqs_.erase(id);
  }

  void Preempt() {
    const std::vector<SequenceId> running = In(SequenceState::kRunning);
    if (running.empty()) return;
    const SequenceId id = Pick(running);
    ExpectOk(m_->Preempt(id), "Preempt");
    seqs_[id].state = SequenceState::kPreempted;
  }

  void Readmit() {
    const std::vector<SequenceId> preempted = In(SequenceState::kPreempted);
    if (preempted.empty()) return;
    const SequenceId id = Pick(preempted);
    Seq& s = seqs_[id];
    StepOutput out;
    const absl::Status status = m_->Readmit(id, &out);
    if (!status.ok()) {
      Expect(status.code() == absl::StatusCode::kResourceExhausted,
             "Readmit: " + status.ToString());
      return;
    }
    Expect(out.slot_mapping.size() == s.tags.size(), "Readmit slot count");
    for (size_t t = 0; t < s.tags.size() && t < out.slot_mapping.size(); ++t) {
      WriteToken(*mgr().kv_pool(), out.slot_mapping[t], s.tags[t]);
    }
    s.state = SequenceState::kRunning;
  }

  void SwapOut() {
    const std::vector<SequenceId> running = In(SequenceState::kRunning);
    if (running.empty()) return;
    const SequenceId id = Pick(running);
    absl::StatusOr<SwapPlan> plan = m_->SwapOut(id);
    if (!plan.ok()) {
      Expect(plan.status().code() == absl::StatusCode::kResourceExhausted,
             "SwapOut: " + plan.status().ToString());
      return;
    }
    seqs_[id].state = SequenceState::kSwappedOut;
  }

  void SwapIn() {
    const std::vector<SequenceId> swapped = In(SequenceState::kSwappedOut);
    if (swapped.empty()) return;
    const SequenceId id = Pick(swapped);
    absl::StatusOr<SwapPlan> plan = m_->SwapIn(id);
    if (!plan.ok()) {
      Expect(plan.status().code() == absl::StatusCode::kResourceExhausted,
             "SwapIn: " + plan.status().ToString());
      return;
    }
    seqs_[id].state = SequenceState::kRunning;
  }

  void Verify() {
    for (const auto& [id, s] : seqs_) {
      absl::StatusOr<SequenceState> state = mgr().state(id);
      if (!state.ok() || *state != s.state) {
        Fail("sequence " + std::to_string(id) + " state");
        return;
      }
      absl::StatusOr<int64_t> n = mgr().num_tokens(id);
      if (!n.ok() || *n != static_cast<int64_t>(s.tags.size())) {
        Fail("sequence " + std::to_string(id) + " length");
        return;
      }
      if (s.state != SequenceState::kRunning) continue;
      const absl::Span<const BlockId> table = *mgr().block_table(id);
      if (static_cast<int64_t>(table.size()) != WorkerBlocksFor(*n, bt())) {
        Fail("sequence " + std::to_string(id) + " table size");
        return;
      }
      for (size_t t = 0; t < s.tags.size(); ++t) {
        const std::string diff =
            CheckToken(*mgr().kv_pool(),
                       SlotOf(table, bt(), static_cast<int64_t>(t)), s.tags[t]);
        if (!diff.empty()) {
          Fail("sequence " + std::to_string(id) + " token " +
               std::to_string(t) + ": " + diff);
          return;
        }
      }
    }
    const ManagerStats st = mgr().stats();
    Expect(st.num_sequences == static_cast<int32_t>(seqs_.size()),
           "num_sequences");
  }

  void FreeEverything() {
    cow_copies_ = mgr().stats().cow_copies;
    for (const auto& [id, s] : seqs_) ExpectOk(m_->Free(id), "final Free");
    seqs_.clear();
    Expect(mgr().stats().num_sequences == 0, "sequences left");
    Expect(mgr().stats().host_used_blocks == 0, "host blocks left");
    Expect(mgr().host_pool()->books().num_free_blocks() == host_blocks_,
           "host pool not free");
  }

  const int index_;
  const bool reservation_;
  const int32_t host_blocks_;
  const size_t max_sequences_;
  std::mt19937 rng_;
  std::unique_ptr<CheckedManager> m_;
  std::map<SequenceId, Seq> seqs_;
  SequenceId next_id_ = 1;
  uint32_t next_tag_ = 1;
  int step_ = -1;
  int64_t appends_ = 0;
  int64_t cow_copies_ = 0;
  int64_t exhausted_ = 0;  // AddSequence / AppendSlots calls that ran out.
  std::string error_;
};

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_CACHE_SERVING_MANAGER_WORKER_H_
