#include "allocator/copy_on_write.h"

#include <sstream>

#include "allocator/block_id.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

TEST(CopyOpTest, ComparesBothEnds) {
  EXPECT_EQ((CopyOp{BlockId(1), BlockId(2)}), (CopyOp{BlockId(1), BlockId(2)}));
  EXPECT_NE((CopyOp{BlockId(1), BlockId(2)}), (CopyOp{BlockId(2), BlockId(1)}));
}

TEST(CopyOpTest, PrintsSourceAndDestination) {
  std::ostringstream os;
  os << CopyOp{BlockId(1), BlockId(2)};
  EXPECT_EQ(os.str(), "CopyOp{block#1 -> block#2}");
}

}  // namespace
}  // namespace pagedkv
