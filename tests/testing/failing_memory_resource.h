// tests/testing/failing_memory_resource.h
//
// FailingMemoryResource is a MemoryResource for rollback tests: it hands the
// first n-1 allocations to an upstream resource and returns nullptr from the
// n-th Allocate call on (numbered from 1 since construction), so a test can
// make exactly one step of a multi-allocation operation run out of memory.
// It also counts calls and live allocations, so a test can check that a
// failed operation returned every byte it took.
//
//   FailingMemoryResource memory;                    // Never fails yet.
//   auto pool = GrowableKVPool::Create({.layout = layout, .num_blocks = 4,
//                                       .memory = &memory});
//   memory.FailFromAllocation(memory.num_allocations() + 2);  // 2nd from now.
//   EXPECT_THAT((*pool)->Grow(12), StatusIs(kResourceExhausted));
//   EXPECT_EQ(memory.num_live_allocations(), 1);      // Only the first chunk.
//
// Thread safety: Allocate and Deallocate may be called concurrently (atomic
// counters), as MemoryResource requires; FailFromAllocation is for the test
// thread between operations.
#ifndef PAGEDKV_TESTS_TESTING_FAILING_MEMORY_RESOURCE_H_
#define PAGEDKV_TESTS_TESTING_FAILING_MEMORY_RESOURCE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "tensor/memory_resource.h"

namespace pagedkv::testing {

class FailingMemoryResource final : public MemoryResource {
 public:
  // A FailFromAllocation value that never fails.
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  // Fails the `fail_from`-th Allocate call (1-based) and every later one;
  // delegates the others to `upstream`, which must outlive this resource.
  explicit FailingMemoryResource(int64_t fail_from = kNever,
                                 MemoryResource* upstream = NewDeleteResource())
      : upstream_(upstream), fail_from_(fail_from) {}

  FailingMemoryResource(const FailingMemoryResource&) = delete;
  FailingMemoryResource& operator=(const FailingMemoryResource&) = delete;

  void* Allocate(size_t bytes, size_t alignment) override {
    const int64_t call = num_allocations_.fetch_add(1) + 1;
    if (call >= fail_from_.load()) {
      num_failed_.fetch_add(1);
      return nullptr;
    }
    void* p = upstream_->Allocate(bytes, alignment);
    if (p != nullptr) {
      num_live_.fetch_add(1);
      live_bytes_.fetch_add(bytes);
    }
    return p;
  }

  void Deallocate(void* p, size_t bytes, size_t alignment) override {
    if (p == nullptr) return;
    num_live_.fetch_sub(1);
    live_bytes_.fetch_sub(bytes);
    upstream_->Deallocate(p, bytes, alignment);
  }

  // Re-arms the resource: Allocate call number `n` (counted since
  // construction, as num_allocations() counts) and all later ones fail.
  // Pass num_allocations() + k to fail the k-th call from now, or kNever.
  void FailFromAllocation(int64_t n) { fail_from_.store(n); }

  // Allocate calls so far, failed ones included.
  int64_t num_allocations() const { return num_allocations_.load(); }
  // Allocate calls this resource failed on purpose (an upstream nullptr is
  // passed through and not counted here).
  int64_t num_failed() const { return num_failed_.load(); }
  // Allocations handed out and not yet deallocated, and their bytes.
  int64_t num_live_allocations() const { return num_live_.load(); }
  size_t live_bytes() const { return live_bytes_.load(); }

 private:
  MemoryResource* const upstream_;
  std::atomic<int64_t> fail_from_;
  std::atomic<int64_t> num_allocations_{0};
  std::atomic<int64_t> num_failed_{0};
  std::atomic<int64_t> num_live_{0};
  std::atomic<size_t> live_bytes_{0};
};

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_TESTING_FAILING_MEMORY_RESOURCE_H_
