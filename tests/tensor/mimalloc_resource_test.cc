#include "tensor/mimalloc_resource.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "absl/base/config.h"
#include "gtest/gtest.h"
#include "tensor/memory_resource.h"

namespace pagedkv {
namespace {

bool IsAligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

TEST(MimallocResourceTest, IsTheDefaultAndOneInstance) {
  EXPECT_NE(MimallocResource(), nullptr);
  EXPECT_EQ(MimallocResource(), MimallocResource());
#ifdef ABSL_HAVE_THREAD_SANITIZER
  // Under TSan the default is the instrumented operator new.
  EXPECT_EQ(DefaultMemoryResource(), NewDeleteResource());
#else
  EXPECT_EQ(DefaultMemoryResource(), MimallocResource());
#endif
  EXPECT_NE(MimallocResource(), NewDeleteResource());
}

TEST(MimallocResourceTest, ReturnsWritableMemoryWithTheRequestedAlignment) {
  MemoryResource* resource = MimallocResource();
  // Up to 2 MiB: DESIGN.md aligns large KV arenas to huge pages.
  for (size_t alignment = 1; alignment <= (size_t{2} << 20); alignment *= 2) {
    for (size_t bytes : {size_t{1}, size_t{24}, size_t{4096}, size_t{100000}}) {
      void* p = resource->Allocate(bytes, alignment);
      ASSERT_NE(p, nullptr) << bytes << " bytes, alignment " << alignment;
      EXPECT_TRUE(IsAligned(p, alignment)) << p << " for " << alignment;
      std::memset(p, 0xAB, bytes);
      resource->Deallocate(p, bytes, alignment);
    }
  }
}

TEST(MimallocResourceTest, ZeroBytesGiveUniqueNonNullPointers) {
  MemoryResource* resource = MimallocResource();
  void* a = resource->Allocate(0, 64);
  void* b = resource->Allocate(0, 64);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  resource->Deallocate(a, 0, 64);
  resource->Deallocate(b, 0, 64);
}

TEST(MimallocResourceTest, ReturnsNullWhenMemoryCannotBeHad) {
  const size_t impossible = std::numeric_limits<size_t>::max() / 2;
  EXPECT_EQ(MimallocResource()->Allocate(impossible, 64), nullptr);
}

// Caches allocate and free from many threads; a private mi_heap would fail
// this (a heap allocates only from its own thread).
TEST(MimallocResourceTest, AllocatesConcurrentlyAndFreesOnAnotherThread) {
  constexpr int kThreads = 4;
  constexpr int kBlocksPerThread = 256;
  constexpr size_t kBytes = 4096;
  std::vector<std::vector<void*>> blocks(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&blocks, t] {
      for (int i = 0; i < kBlocksPerThread; ++i) {
        void* p = MimallocResource()->Allocate(kBytes, 64);
        if (p != nullptr) std::memset(p, t, kBytes);
        blocks[t].push_back(p);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  threads.clear();
  for (int t = 0; t < kThreads; ++t) {
    for (void* p : blocks[t]) {
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(*static_cast<unsigned char*>(p), t);
    }
  }
  // Each thread frees the blocks another thread allocated.
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&blocks, t] {
      for (void* p : blocks[(t + 1) % kThreads]) {
        MimallocResource()->Deallocate(p, kBytes, 64);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
}

TEST(MimallocResourceDeathTest, NonPowerOfTwoAlignmentAborts) {
  EXPECT_DEATH(MimallocResource()->Allocate(16, 96),
               "alignment 96 is not a power of two");
}

}  // namespace
}  // namespace pagedkv
