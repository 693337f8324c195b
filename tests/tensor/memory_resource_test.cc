#include "tensor/memory_resource.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>

#include "gtest/gtest.h"

// Under AddressSanitizer an impossible allocation aborts by default instead
// of returning null; this test checks the null. No effect without ASan.
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1";
}

namespace pagedkv {
namespace {

bool IsAligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

TEST(NewDeleteResourceTest, IsOneProcessWideInstance) {
  EXPECT_NE(NewDeleteResource(), nullptr);
  EXPECT_EQ(NewDeleteResource(), NewDeleteResource());
}

TEST(NewDeleteResourceTest, ReturnsWritableMemoryWithTheRequestedAlignment) {
  MemoryResource* resource = NewDeleteResource();
  for (size_t alignment = 1; alignment <= (size_t{1} << 16); alignment *= 2) {
    for (size_t bytes : {size_t{1}, size_t{24}, size_t{4096}, size_t{100000}}) {
      void* p = resource->Allocate(bytes, alignment);
      ASSERT_NE(p, nullptr) << bytes << " bytes, alignment " << alignment;
      EXPECT_TRUE(IsAligned(p, alignment)) << p << " for " << alignment;
      std::memset(p, 0xAB, bytes);  // ASan flags a short block here.
      resource->Deallocate(p, bytes, alignment);
    }
  }
}

TEST(NewDeleteResourceTest, ZeroBytesGiveUniqueNonNullPointers) {
  MemoryResource* resource = NewDeleteResource();
  void* a = resource->Allocate(0, 64);
  void* b = resource->Allocate(0, 64);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_TRUE(IsAligned(a, 64));
  resource->Deallocate(a, 0, 64);
  resource->Deallocate(b, 0, 64);
}

TEST(NewDeleteResourceTest, ReturnsNullWhenMemoryCannotBeHad) {
  const size_t impossible = std::numeric_limits<size_t>::max() / 2;
  EXPECT_EQ(NewDeleteResource()->Allocate(impossible, 64), nullptr);
}

TEST(NewDeleteResourceTest, DeallocateOfNullDoesNothing) {
  NewDeleteResource()->Deallocate(nullptr, 16, 64);
}

TEST(NewDeleteResourceTest, LiveBlocksDoNotOverlap) {
  MemoryResource* resource = NewDeleteResource();
  std::set<uintptr_t> starts;
  void* blocks[64];
  for (void*& p : blocks) {
    p = resource->Allocate(128, 64);
    ASSERT_NE(p, nullptr);
    starts.insert(reinterpret_cast<uintptr_t>(p));
  }
  uintptr_t previous_end = 0;
  for (uintptr_t start : starts) {
    EXPECT_GE(start, previous_end);
    previous_end = start + 128;
  }
  for (void* p : blocks) resource->Deallocate(p, 128, 64);
}

TEST(NewDeleteResourceDeathTest, NonPowerOfTwoAlignmentAborts) {
  EXPECT_DEATH(NewDeleteResource()->Allocate(16, 48),
               "alignment 48 is not a power of two");
  EXPECT_DEATH(NewDeleteResource()->Allocate(16, 0),
               "alignment 0 is not a power of two");
}

}  // namespace
}  // namespace pagedkv
