// tools/kv_stress/scheduling.h
//
// Internal to the simulator: the scheduling rules both of its servers share,
// so the paged server and the contiguous model differ only in what memory
// they ask for, never in who gets admitted when:
//  - arrivals wait in one FIFO queue of at most max_waiting entries (past
//    that they are refused); preempted requests go back to its front;
//  - each step admits from the front, in order, while fewer than
//    max_running requests run and the step's prefill budget
//    (max_prefill_tokens_per_step) lasts; the first admission of a step may
//    exceed the budget, so a long prompt is never starved; the first entry
//    that does not fit now ends the step's admissions; one that can never
//    fit is dropped and counted;
//  - a sliding-window request is cut back to its window once it is a whole
//    block past it (CropDue), so each crop frees a block.
//
//   WaitingQueue<Request> queue(config.max_waiting);
//   if (!queue.Arrive(r)) ++refused_queue_full;
//   queue.AdmitInOrder(
//       &running, config.max_running, config.max_prefill_tokens_per_step,
//       [](const Request& r) { return int64_t{r.prompt_tokens}; },
//       [&](Request& r) { return fits(r) ? Verdict::kAdmitted
//                                        : Verdict::kLater; },
//       &refused_too_large);
//
// Thread safety: one simulation thread.
#ifndef PAGEDKV_TOOLS_KV_STRESS_SCHEDULING_H_
#define PAGEDKV_TOOLS_KV_STRESS_SCHEDULING_H_

#include <cstdint>
#include <deque>
#include <utility>

#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress::internal {

// What an attempt to admit the front entry gave.
enum class Verdict {
  kAdmitted,  // Running now; the queue drops the entry.
  kLater,     // Does not fit now; admissions stop for this step.
  kNever,     // Cannot fit even in an empty pool; dropped and counted.
};

template <typename Entry>
class WaitingQueue {
 public:
  explicit WaitingQueue(int32_t max_waiting) : max_waiting_(max_waiting) {}

  // Queues an arrival at the back; false (nothing queued) when full.
  bool Arrive(Entry e) {
    if (static_cast<int32_t>(entries_.size()) >= max_waiting_) return false;
    entries_.push_back(std::move(e));
    return true;
  }
  // Requeues a preempted request first (it may exceed max_waiting: a
  // preempted request is never refused).
  void PushFront(Entry e) { entries_.push_front(std::move(e)); }

  // Admits from the front (see the file comment). `running` is the number
  // of running requests and grows with each admission. cost(entry) is the
  // prefill tokens the entry would take from the step's budget;
  // admit(entry) tries it. Returns the number admitted.
  template <typename Cost, typename Admit>
  int32_t AdmitInOrder(int32_t* running, int32_t max_running,
                       int64_t prefill_budget, Cost&& cost, Admit&& admit,
                       int64_t* refused_never) {
    int32_t admitted = 0;
    while (!entries_.empty() && *running < max_running) {
      Entry& front = entries_.front();
      const int64_t tokens = cost(front);
      if (admitted > 0 && tokens > prefill_budget) break;
      const Verdict v = admit(front);
      if (v == Verdict::kLater) break;
      entries_.pop_front();
      if (v == Verdict::kNever) {
        ++*refused_never;
        continue;
      }
      ++admitted;
      ++*running;
      prefill_budget -= tokens;
    }
    return admitted;
  }

  int32_t size() const { return static_cast<int32_t>(entries_.size()); }
  bool empty() const { return entries_.empty(); }
  template <typename F>
  void ForEach(F&& f) const {
    for (const Entry& e : entries_) f(e);
  }

 private:
  const int32_t max_waiting_;
  std::deque<Entry> entries_;
};

// Returns the length to cut a sliding-window request back to, or -1 when
// no crop is due: a request with window w is cut to w once its length is
// at least w + block_tokens.
inline int32_t CropDue(const Request& r, int32_t length, int32_t block_tokens) {
  const int32_t w = r.crop_window;
  if (w <= 0 || length < w + block_tokens) return -1;
  return w;
}

}  // namespace pagedkv::kv_stress::internal

#endif  // PAGEDKV_TOOLS_KV_STRESS_SCHEDULING_H_
