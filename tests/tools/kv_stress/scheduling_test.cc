// The scheduling rules both simulated servers share: queue bounds, the
// front-first requeue, in-order admission under max_running and the prefill
// budget, and the crop rule.
#include "tools/kv_stress/scheduling.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress::internal {
namespace {

Request Req(int64_t id, int32_t prompt) {
  Request r;
  r.id = id;
  r.prompt_tokens = prompt;
  return r;
}

std::vector<int64_t> Ids(const WaitingQueue<Request>& q) {
  std::vector<int64_t> ids;
  q.ForEach([&](const Request& r) { ids.push_back(r.id); });
  return ids;
}

int64_t Cost(const Request& r) { return r.prompt_tokens; }

TEST(WaitingQueueTest, RefusesArrivalsPastMaxWaitingButNotRequeues) {
  WaitingQueue<Request> q(2);
  EXPECT_TRUE(q.Arrive(Req(1, 10)));
  EXPECT_TRUE(q.Arrive(Req(2, 10)));
  EXPECT_FALSE(q.Arrive(Req(3, 10)));
  q.PushFront(Req(0, 10));  // A preempted request is never refused.
  EXPECT_EQ(Ids(q), (std::vector<int64_t>{0, 1, 2}));
}

TEST(WaitingQueueTest, AdmitsInOrderUntilTheFirstThatDoesNotFit) {
  WaitingQueue<Request> q(10);
  for (int64_t id = 1; id <= 4; ++id) q.Arrive(Req(id, 10));
  int32_t running = 0;
  int64_t never = 0;
  std::vector<int64_t> admitted;
  const int32_t n = q.AdmitInOrder(
      &running, 10, 1000, Cost,
      [&](Request& r) {
        if (r.id == 3) return Verdict::kLater;  // 4 would fit: order wins.
        admitted.push_back(r.id);
        return Verdict::kAdmitted;
      },
      &never);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(running, 2);
  EXPECT_EQ(admitted, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Ids(q), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(never, 0);
}

TEST(WaitingQueueTest, DropsAndCountsWhatCanNeverFit) {
  WaitingQueue<Request> q(10);
  for (int64_t id = 1; id <= 3; ++id) q.Arrive(Req(id, 10));
  int32_t running = 0;
  int64_t never = 0;
  q.AdmitInOrder(
      &running, 10, 1000, Cost,
      [&](Request& r) {
        return r.id == 2 ? Verdict::kNever : Verdict::kAdmitted;
      },
      &never);
  EXPECT_EQ(running, 2);
  EXPECT_EQ(never, 1);
  EXPECT_TRUE(q.empty());
}

TEST(WaitingQueueTest, StopsAtMaxRunning) {
  WaitingQueue<Request> q(10);
  for (int64_t id = 1; id <= 5; ++id) q.Arrive(Req(id, 1));
  int32_t running = 3;
  int64_t never = 0;
  q.AdmitInOrder(
      &running, 4, 1000, Cost, [](Request&) { return Verdict::kAdmitted; },
      &never);
  EXPECT_EQ(running, 4);
  EXPECT_EQ(q.size(), 4);
}

TEST(WaitingQueueTest, FirstAdmissionMayExceedThePrefillBudget) {
  WaitingQueue<Request> q(10);
  q.Arrive(Req(1, 500));  // Over the budget, but first: admitted.
  q.Arrive(Req(2, 1));    // The budget is spent: waits.
  int32_t running = 0;
  int64_t never = 0;
  q.AdmitInOrder(
      &running, 10, 100, Cost, [](Request&) { return Verdict::kAdmitted; },
      &never);
  EXPECT_EQ(running, 1);
  EXPECT_EQ(Ids(q), (std::vector<int64_t>{2}));

  WaitingQueue<Request> budget(10);
  for (int64_t id = 1; id <= 4; ++id) budget.Arrive(Req(id, 40));
  running = 0;
  budget.AdmitInOrder(
      &running, 10, 100, Cost, [](Request&) { return Verdict::kAdmitted; },
      &never);
  EXPECT_EQ(running, 2);  // 40 + 40; a third would make 120 > 100.
}

TEST(CropDueTest, CutsToTheWindowOnceABlockPastIt) {
  Request r = Req(1, 10);
  EXPECT_EQ(CropDue(r, 1000, 16), -1);  // No window.
  r.crop_window = 64;
  EXPECT_EQ(CropDue(r, 79, 16), -1);
  EXPECT_EQ(CropDue(r, 80, 16), 64);
  EXPECT_EQ(CropDue(r, 200, 16), 64);
}

}  // namespace
}  // namespace pagedkv::kv_stress::internal
