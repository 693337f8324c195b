#include "allocator/block_id.h"

#include <map>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

TEST(BlockIdTest, DefaultIsInvalid) {
  constexpr BlockId id;
  EXPECT_FALSE(id.is_valid());
  EXPECT_EQ(id.value(), -1);
}

TEST(BlockIdTest, ExplicitValueIsValid) {
  constexpr BlockId id(7);
  static_assert(id.value() == 7);
  EXPECT_TRUE(id.is_valid());
  EXPECT_TRUE(BlockId(0).is_valid());
}

TEST(BlockIdTest, ComparesByValue) {
  EXPECT_EQ(BlockId(3), BlockId(3));
  EXPECT_NE(BlockId(3), BlockId(4));
  EXPECT_LT(BlockId(3), BlockId(4));
  EXPECT_FALSE(BlockId(4) < BlockId(3));
}

TEST(BlockIdTest, KeysHashAndOrderedContainers) {
  absl::flat_hash_set<BlockId> set = {BlockId(1), BlockId(2), BlockId(1)};
  EXPECT_EQ(set.size(), 2u);
  EXPECT_TRUE(set.contains(BlockId(2)));
  std::map<BlockId, int> map = {{BlockId(5), 1}, {BlockId(2), 2}};
  EXPECT_EQ(map.begin()->first, BlockId(2));
}

TEST(BlockIdTest, PrintsWithPrefix) {
  std::ostringstream os;
  os << BlockId(7) << " " << BlockId();
  EXPECT_EQ(os.str(), "block#7 block#-1");
}

}  // namespace
}  // namespace pagedkv
