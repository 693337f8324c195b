#include "allocator/pool_stats.h"

#include <sstream>

#include "gtest/gtest.h"

namespace pagedkv {
namespace {

TEST(PoolStatsTest, DefaultIsAllZero) {
  const PoolStats s;
  EXPECT_EQ(s.num_blocks, 0);
  EXPECT_EQ(s.num_allocations, 0);
  EXPECT_EQ(s, PoolStats());
}

TEST(PoolStatsTest, EqualityLooksAtEveryField) {
  PoolStats a;
  PoolStats b;
  b.peak_used_blocks = 1;
  EXPECT_NE(a, b);
  b = a;
  b.num_failed_allocations = 2;
  EXPECT_NE(a, b);
}

TEST(PoolStatsTest, PrintsEveryCounter) {
  PoolStats s;
  s.num_blocks = 8;
  s.num_free_blocks = 5;
  s.num_reserved_blocks = 2;
  s.num_used_blocks = 3;
  s.num_shared_blocks = 1;
  s.num_reservations = 1;
  s.num_allocations = 10;
  s.num_failed_allocations = 4;
  s.peak_used_blocks = 6;
  std::ostringstream os;
  os << s;
  EXPECT_EQ(os.str(),
            "PoolStats{blocks=8 free=5 reserved=2 used=3 shared=1 "
            "reservations=1 allocations=10 failed=4 peak_used=6}");
}

}  // namespace
}  // namespace pagedkv
