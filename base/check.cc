#include "base/check.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace pagedkv::internal {

void CheckFailed(const char* file, int line, const char* condition,
                 const std::string& message) {
  std::fprintf(stderr, "%s:%d: PKV_CHECK(%s) failed: %s\n", file, line,
               condition, message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace pagedkv::internal
