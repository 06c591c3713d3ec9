// The fuzz corpus as regression tests: each committed input is parsed and read; it must be accepted
// or rejected with a tpembed::Error, never crash (exercise_safetensors aborts on a broken
// invariant).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "exercise_safetensors.hpp"

namespace {

std::vector<std::filesystem::path> corpus_files() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(TPEMBED_FUZZ_CORPUS)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(FuzzCorpus, EveryInputIsAcceptedOrRejectedCleanly) {
  const auto files = corpus_files();
  ASSERT_GE(files.size(), 10u) << "the corpus in " << TPEMBED_FUZZ_CORPUS << " is missing";
  int accepted = 0;
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    std::ifstream in(file, std::ios::binary);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                          std::istreambuf_iterator<char>());
    accepted += tpembed::fuzz::exercise_safetensors(bytes.data(), bytes.size()) ? 1 : 0;
  }
  std::printf("[ corpus   ] %zu inputs: %d accepted, %zu rejected with a tpembed error\n",
              files.size(), accepted, files.size() - accepted);
  EXPECT_GT(accepted, 0) << "the corpus should hold valid files too";
}

}  // namespace
