// tools/common/flags.cc
#include "tools/common/flags.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage.h"

namespace pagedkv::tools {
namespace {

// True while Abseil parses: an exit() then is its exit(1) on a parse error
// (ParseCommandLineImpl reports the error and calls std::exit(1); Abseil
// 20220623 has no hook to change the code), which the atexit handler turns
// into kExitBadFlags.
bool parsing = false;

void ExitBadFlagsIfParsing() {
  if (!parsing) return;
  std::fflush(nullptr);  // What Abseil printed (std::cout is synced).
  std::_Exit(kExitBadFlags);
}

}  // namespace

std::vector<char*> ParseFlagsOrExit(int argc, char** argv) {
  std::atexit(ExitBadFlagsIfParsing);
  parsing = true;
  // absl::ParseCommandLine is this call with kHandleUsage; usage flags are
  // handled below instead, to choose their exit code.
  std::vector<char*> args = absl::flags_internal::ParseCommandLineImpl(
      argc, argv, absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  parsing = false;
  // -1: no usage flag; else Abseil's exit code (1 after printing help).
  const int usage = absl::flags_internal::HandleUsageFlags(
      std::cout, absl::ProgramUsageMessage());
  if (usage != -1) {
    std::cout.flush();
    std::exit(0);
  }
  return args;
}

}  // namespace pagedkv::tools
