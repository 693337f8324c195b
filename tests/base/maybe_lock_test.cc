#include "base/maybe_lock.h"

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

// The example in maybe_lock.h, plus a reader.
class Counter {
 public:
  explicit Counter(bool shared) : mu_(shared) {}
  void Add() {
    MaybeLock lock(&mu_);
    ++count_;
  }
  int64_t count() {
    MaybeLock lock(&mu_);
    return count_;
  }

 private:
  OptionalMutex mu_;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(MaybeLockTest, HeaderExampleCountsFromOneThread) {
  Counter counter(/*shared=*/false);
  for (int i = 0; i < 10; ++i) counter.Add();
  EXPECT_EQ(counter.count(), 10);
}

TEST(MaybeLockTest, EnabledMutexExcludesOtherThreads) {
  constexpr int kThreads = 2;
  constexpr int kAdds = 100000;
  Counter counter(/*shared=*/true);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&counter, &ready] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {  // Start together: contend.
      }
      for (int i = 0; i < kAdds; ++i) counter.Add();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(counter.count(), int64_t{kThreads} * kAdds);  // No update lost.
}

// Nobody else is inside the critical section while one thread is. The
// occupancy is an atomic so that the compiler cannot fold it away, and a
// thread sometimes yields while inside, so a broken lock shows as an overlap
// in any build and even on one core, not only under TSan.
TEST(MaybeLockTest, EnabledMutexAdmitsOneThreadAtATime) {
  OptionalMutex mu(/*enabled=*/true);
  EXPECT_TRUE(mu.enabled());
  std::atomic<int> ready{0};
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  auto work = [&] {
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    for (int i = 0; i < 20000; ++i) {
      MaybeLock lock(&mu);
      if (inside.fetch_add(1) != 0) overlapped.store(true);
      if (i % 64 == 0) std::this_thread::yield();  // The other may run now.
      for (int spin = 0; spin < 16; ++spin) {
        if (inside.load() != 1) overlapped.store(true);
      }
      inside.fetch_sub(1);
    }
  };
  std::thread a(work);
  std::thread b(work);
  a.join();
  b.join();
  EXPECT_FALSE(overlapped.load());
}

// Takes a disabled mutex twice on one thread (which would deadlock on an
// absl::Mutex) and once more from a second thread while the first is inside.
// Returns whether all of them got through. Clang's thread-safety analysis
// cannot know the mutex is disabled, so it is off for this function only.
bool NestedAndConcurrentEntriesGoThrough(OptionalMutex* mu)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  bool entered = false;
  {
    MaybeLock outer(mu);
    MaybeLock inner(mu);
    std::thread other([mu, &entered] {
      MaybeLock lock(mu);
      entered = true;
    });
    other.join();
  }
  mu->Lock();
  mu->Lock();
  mu->Unlock();
  mu->Unlock();
  return entered;
}

TEST(MaybeLockTest, DisabledMutexIsANoOp) {
  OptionalMutex mu(/*enabled=*/false);
  EXPECT_FALSE(mu.enabled());
  EXPECT_TRUE(NestedAndConcurrentEntriesGoThrough(&mu));
}

}  // namespace
}  // namespace pagedkv
