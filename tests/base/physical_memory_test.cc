#include "base/physical_memory.h"

#include <unistd.h>

#include <cstdint>

#include "gtest/gtest.h"

namespace pagedkv {
namespace {

// The machines this runs on say: at least a page, a whole number of pages.
TEST(PhysicalMemoryTest, IsAWholeNumberOfPages) {
  const uint64_t bytes = PhysicalMemoryBytes();
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  ASSERT_GT(page, 0u);
  EXPECT_GE(bytes, page);
  EXPECT_EQ(bytes % page, 0u);
}

}  // namespace
}  // namespace pagedkv
