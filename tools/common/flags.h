// tools/common/flags.h
//
// Parses a tool's command line with the exit codes its help text promises.
// Debian's Abseil (20220623) makes absl::ParseCommandLine exit 1 both on a
// parse error (an unknown flag, an illegal value) and after printing
// --help, while the tools document 0 for help and 2 for bad flags (1 means
// an invariant or scenario failure). ParseFlagsOrExit keeps Abseil's
// parsing and messages and changes only those two exit codes.
//
//   int main(int argc, char** argv) {
//     absl::SetProgramUsageMessage(kUsage);
//     std::vector<char*> args = tools::ParseFlagsOrExit(argc, argv);
//     ...
//   }
//
// Thread safety: call once, from main(), before starting threads.
#ifndef PAGEDKV_TOOLS_COMMON_FLAGS_H_
#define PAGEDKV_TOOLS_COMMON_FLAGS_H_

#include <vector>

namespace pagedkv::tools {

// Exit code of a command line that does not parse.
inline constexpr int kExitBadFlags = 2;

// Returns the positional arguments (argv[0] first), as
// absl::ParseCommandLine does. Does not return after a usage flag (--help,
// --helpfull, --helpshort, --helppackage, --helpon, --helpmatch, --version,
// --only_check_args): prints what Abseil prints and exits 0. On a parse
// error prints Abseil's message and exits kExitBadFlags.
std::vector<char*> ParseFlagsOrExit(int argc, char** argv);

}  // namespace pagedkv::tools

#endif  // PAGEDKV_TOOLS_COMMON_FLAGS_H_
