// tests/fuzz/corpus_main.cc
//
// The main of the corpus replays: feeds every file named on the command line
// (a directory means every regular file in it, in name order) once through
// LLVMFuzzerTestOneInput, as libFuzzer does when given files, so a fuzz
// target builds and runs with gcc and no libFuzzer. A divergence aborts, so
// the test fails and names the file that was running.
//
//   bazel test //tests/fuzz:cache_fuzzer_corpus_test
//   bazel run //tests/fuzz:cache_fuzzer -- tests/fuzz/corpus/cache_fuzzer/static
//
// Relative paths are tried against the working directory (a test's runfiles)
// and then against $BUILD_WORKSPACE_DIRECTORY (set by `bazel run`). Exits 1
// if a path does not exist or no file was found: a missing corpus must not
// pass silently.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool Resolve(const std::string& arg, fs::path* out) {
  std::error_code ec;
  if (fs::exists(arg, ec)) {
    *out = arg;
    return true;
  }
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (workspace != nullptr && fs::path(arg).is_relative() &&
      fs::exists(fs::path(workspace) / arg, ec)) {
    *out = fs::path(workspace) / arg;
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    fs::path path;
    if (!Resolve(argv[i], &path)) {
      std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      return 1;
    }
    if (fs::is_directory(path)) {
      std::vector<fs::path> in_dir;
      for (const fs::directory_entry& e : fs::directory_iterator(path)) {
        if (fs::is_regular_file(e.path())) in_dir.push_back(e.path());
      }
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else {
      files.push_back(path);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR...: no input files found\n",
                 argv[0]);
    return 1;
  }
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    std::fprintf(stderr, "running %s (%zu bytes)\n", file.c_str(),
                 bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                           bytes.size());
  }
  std::fprintf(stderr, "ran %zu inputs\n", files.size());
  return 0;
}
