// Tests of the command-line path helper: relative paths go under the
// directory `bazel run` was started from, absolute ones are left alone.
#include "tools/common/paths.h"

#include <stdlib.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace pagedkv::tools {
namespace {

TEST(ResolvePathTest, RelativePathGoesUnderBase) {
  EXPECT_EQ(ResolvePath("kv.json", "/home/me"), "/home/me/kv.json");
  EXPECT_EQ(ResolvePath("out/kv.json", "/home/me/"), "/home/me/out/kv.json");
}

TEST(ResolvePathTest, AbsolutePathIsKept) {
  EXPECT_EQ(ResolvePath("/tmp/kv.json", "/home/me"), "/tmp/kv.json");
}

TEST(ResolvePathTest, EmptyPathStaysEmpty) {
  EXPECT_EQ(ResolvePath("", "/home/me"), "");
}

TEST(ResolvePathTest, EmptyBaseKeepsPathRelative) {
  EXPECT_EQ(ResolvePath("kv.json", ""), "kv.json");
}

TEST(ResolvePathTest, DotComponentsAndRepeatedSlashesAreDropped) {
  EXPECT_EQ(ResolvePath("./kv.json", "/home/me"), "/home/me/kv.json");
  EXPECT_EQ(ResolvePath("a//./b/", "/home//me/."), "/home/me/a/b");
  EXPECT_EQ(ResolvePath(".", "/home/me"), "/home/me");
  EXPECT_EQ(ResolvePath(".", ""), ".");
  EXPECT_EQ(ResolvePath("//", ""), "/");
}

TEST(ResolvePathTest, DotDotIsKept) {
  // A lexical ".." removal would be wrong when "me" is a symlink.
  EXPECT_EQ(ResolvePath("../kv.json", "/home/me"), "/home/me/../kv.json");
}

// Sets BUILD_WORKING_DIRECTORY for one test and restores it afterwards.
class ScopedBuildWorkingDirectory {
 public:
  explicit ScopedBuildWorkingDirectory(std::optional<std::string> value) {
    if (const char* old = getenv(kName); old != nullptr) old_ = old;
    Set(value);
  }
  ~ScopedBuildWorkingDirectory() { Set(old_); }
  ScopedBuildWorkingDirectory(const ScopedBuildWorkingDirectory&) = delete;
  ScopedBuildWorkingDirectory& operator=(const ScopedBuildWorkingDirectory&) =
      delete;

 private:
  static constexpr const char* kName = "BUILD_WORKING_DIRECTORY";
  static void Set(const std::optional<std::string>& value) {
    if (value.has_value()) {
      setenv(kName, value->c_str(), /*overwrite=*/1);
    } else {
      unsetenv(kName);
    }
  }
  std::optional<std::string> old_;
};

std::string CurrentDirectory() {
  char buffer[4096];
  return getcwd(buffer, sizeof(buffer)) != nullptr ? buffer : "";
}

TEST(UserPathTest, UnderBazelRunResolvesAgainstBuildWorkingDirectory) {
  ScopedBuildWorkingDirectory env("/home/me/pagedkv");
  EXPECT_EQ(UserWorkingDirectory(), "/home/me/pagedkv");
  EXPECT_EQ(UserPath("kv.json"), "/home/me/pagedkv/kv.json");
  EXPECT_EQ(UserPath("/tmp/kv.json"), "/tmp/kv.json");
}

TEST(UserPathTest, WithoutBazelRunResolvesAgainstCurrentDirectory) {
  ScopedBuildWorkingDirectory env(std::nullopt);
  const std::string cwd = CurrentDirectory();
  ASSERT_FALSE(cwd.empty());
  EXPECT_EQ(UserWorkingDirectory(), cwd);
  EXPECT_EQ(UserPath("kv.json"), ResolvePath("kv.json", cwd));
  EXPECT_EQ(UserPath("kv.json").front(), '/');
}

TEST(UserPathTest, EmptyBuildWorkingDirectoryMeansCurrentDirectory) {
  ScopedBuildWorkingDirectory env(std::string());
  EXPECT_EQ(UserWorkingDirectory(), CurrentDirectory());
}

}  // namespace
}  // namespace pagedkv::tools
