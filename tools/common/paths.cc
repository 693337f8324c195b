// tools/common/paths.cc
#include "tools/common/paths.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace pagedkv::tools {

std::string ResolvePath(std::string_view path, std::string_view base) {
  if (path.empty()) return std::string();
  std::string joined;
  if (path.front() == '/' || base.empty()) {
    joined = std::string(path);
  } else {
    joined = std::string(base) + "/" + std::string(path);
  }
  // Drop "." components and empty ones (repeated slashes), keep the rest.
  const bool absolute = joined.front() == '/';
  std::string out = absolute ? "/" : "";
  size_t begin = 0;
  while (begin <= joined.size()) {
    size_t end = joined.find('/', begin);
    if (end == std::string::npos) end = joined.size();
    const std::string_view part(joined.data() + begin, end - begin);
    if (!part.empty() && part != ".") {
      if (!out.empty() && out.back() != '/') out += '/';
      out += part;
    }
    begin = end + 1;
  }
  if (out.empty()) return ".";  // The path was only "." components.
  return out;
}

std::string UserWorkingDirectory() {
  if (const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
      dir != nullptr && dir[0] != '\0') {
    return dir;
  }
  std::vector<char> buffer(4096);
  if (getcwd(buffer.data(), buffer.size()) == nullptr) return std::string();
  return buffer.data();
}

std::string UserPath(std::string_view path) {
  return ResolvePath(path, UserWorkingDirectory());
}

}  // namespace pagedkv::tools
