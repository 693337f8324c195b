// tools/common/paths.h
//
// Where a path the user typed on a tool's command line really points. Under
// `bazel run` a tool starts in its runfiles tree, not where the user stands,
// so a relative `--json_out=kv.json` would land inside bazel-bin and a
// relative trace file would not be found. Bazel sets BUILD_WORKING_DIRECTORY
// to the directory `bazel run` was invoked from; the tools resolve relative
// paths against it, and against the current directory when it is not set (a
// binary started directly).
//
//   ResolvePath("kv.json", "/home/me")        // "/home/me/kv.json"
//   ResolvePath("/tmp/kv.json", "/home/me")   // "/tmp/kv.json"
//
//   // In a tool's main():
//   const std::string out = UserPath(absl::GetFlag(FLAGS_json_out));
//   // ... write `out`, then tell the user: "wrote /home/me/kv.json".
//
// Thread safety: ResolvePath is pure. UserPath reads the environment and the
// current directory; call it from main() before starting threads.
#ifndef PAGEDKV_TOOLS_COMMON_PATHS_H_
#define PAGEDKV_TOOLS_COMMON_PATHS_H_

#include <string>
#include <string_view>

namespace pagedkv::tools {

// Returns `path` if it is absolute (or empty, or `base` is empty), else
// `base` joined with `path`. "." components and repeated slashes are dropped
// from the result; ".." is kept, since removing it lexically would be wrong
// across symlinks.
std::string ResolvePath(std::string_view path, std::string_view base);

// Returns the directory relative command-line paths are meant against:
// $BUILD_WORKING_DIRECTORY when it is set and not empty (under `bazel run`),
// else the current directory, else "" (getcwd failed).
std::string UserWorkingDirectory();

// Returns ResolvePath(path, UserWorkingDirectory()): an absolute path for a
// non-empty `path` (unless the working directory is unknown), so it is also
// the path to print when telling the user where a file went.
std::string UserPath(std::string_view path);

}  // namespace pagedkv::tools

#endif  // PAGEDKV_TOOLS_COMMON_PATHS_H_
