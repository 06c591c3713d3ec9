// What the io layer promises against careless or hostile use: a file truncated after it was opened
// gives a CheckpointError (not SIGBUS) on the next read; a header of 40,000 tensors parses in
// linear time; fingerprints tell checkpoints apart; outputs never replace devices, links, read-only
// files or their inputs; index entries stay inside their directory, links included; names are shown
// whole.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>

#include "expect_error.hpp"
#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::testing {
namespace {

const float kTable[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // [4, 3]
const float kScales[4] = {0.5f, 1, 2, 4};

void write_table(const std::string& path) {
  write_safetensors(path, {{"embed", TensorView(kTable, DType::f32, {4, 3})},
                           {"embed_scale", TensorView(kScales, DType::f32, {4})}});
}

TEST(TruncatedWhileOpen, EveryReadAfterTheCutIsACheckpointError) {
  ScratchDir dir;
  const std::string path = dir.file("t.safetensors");
  write_table(path);
  const SafetensorsFile file(path);
  EXPECT_EQ(file.rows("embed", 1, 2).as<float>()[0], 4.0f);  // fine before the cut
  const std::int64_t size = file.file_size();
  ASSERT_EQ(::truncate(path.c_str(), size - 16), 0);
  const std::string needle = "file is now " + std::to_string(size - 16) + " bytes but was " +
                             std::to_string(size) +
                             " when it was opened: it was truncated while open";
  expect_error<CheckpointError>([&] { file.rows("embed", 0, 4); }, needle);
  expect_error<CheckpointError>([&] { file.tensor("embed"); }, needle);
  expect_error<CheckpointError>([&] { file.columns("embed", 1, 2); }, needle);
  expect_error<CheckpointError>([&] { file.copy_rows("embed", 0, 2); }, needle);
  // A file that grew was rewritten in place: refused too.
  ASSERT_EQ(::truncate(path.c_str(), size + 64), 0);
  expect_error<CheckpointError>([&] { file.rows("embed", 0, 1); }, "it was rewritten while open");
}

std::string many_tensors_header(int tensors) {
  std::string header = "{";
  for (int t = 0; t < tensors; ++t) {
    header += (t ? "," : "") + std::string("\"layer.") + std::to_string(t) +
              ".weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(4 * t) + "," + std::to_string(4 * t + 4) + "]}";
  }
  return header + "}";
}

// The fastest of a few parses of a file: how long the header of `path` takes to parse.
double parse_seconds(const std::string& path, std::size_t expected_names) {
  double best = 1e30;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const auto start = std::chrono::steady_clock::now();
    const SafetensorsFile file(path);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    EXPECT_EQ(file.names().size(), expected_names);
  }
  return best;
}

// Linear, measured as a ratio rather than against a clock: four times the tensors take about four
// times as long (a quadratic parser takes sixteen times, and over a minute at 40,000), whatever the
// machine's speed or a sanitizer's slowdown.
TEST(LargeHeader, FortyThousandTensorsParseInLinearTime) {
  ScratchDir dir;
  constexpr int kTensors = 40000;
  const std::string header = many_tensors_header(kTensors);
  write_file(dir.file("big.safetensors"),
             safetensors_bytes(header, std::string(4 * kTensors, '\0')));
  write_file(dir.file("quarter.safetensors"),
             safetensors_bytes(many_tensors_header(kTensors / 4),
                               std::string(kTensors, '\0')));
  const double quarter = parse_seconds(dir.file("quarter.safetensors"), kTensors / 4);
  const double whole = parse_seconds(dir.file("big.safetensors"), kTensors);
  EXPECT_LT(whole, 8.0 * quarter + 0.05)
      << "the header parser is not linear: " << kTensors / 4 << " tensors parse in " << quarter
      << " s, " << kTensors << " in " << whole << " s";
  const SafetensorsFile file(dir.file("big.safetensors"));
  EXPECT_EQ(file.info("layer.39999.weight").begin, 4 * 39999);
  // The duplicate-name check still holds at that size.
  write_file(dir.file("dup.safetensors"),
             safetensors_bytes(
                 header.substr(0, header.size() - 1) +
                     R"(,"layer.7.weight":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
                 std::string(4 * kTensors, '\0')));
  expect_error<CheckpointError>([&] { SafetensorsFile bad(dir.file("dup.safetensors")); },
                                "duplicate tensor name 'layer.7.weight'");
}

TEST(Fingerprint, CopiesAgreeAndDifferentLayoutsDiffer) {
  ScratchDir dir;
  write_table(dir.file("a.safetensors"));
  std::filesystem::copy_file(dir.file("a.safetensors"), dir.file("copy.safetensors"));
  write_safetensors(dir.file("rows.safetensors"),
                    {{"embed", TensorView(kTable, DType::f32, {3, 3})},
                     {"embed_scale", TensorView(kScales, DType::f32, {3})}});
  write_safetensors(dir.file("shape.safetensors"),
                    {{"embed", TensorView(kTable, DType::f32, {3, 4})},
                     {"embed_scale", TensorView(kScales, DType::f32, {4})}});
  const SafetensorsFile a(dir.file("a.safetensors")), copy(dir.file("copy.safetensors"));
  EXPECT_EQ(a.fingerprint("embed"), copy.fingerprint("embed"));
  EXPECT_NE(a.fingerprint("embed"), 0u);
  EXPECT_NE(a.fingerprint("embed"), a.fingerprint("embed_scale"));
  EXPECT_NE(a.fingerprint("embed"),
            SafetensorsFile(dir.file("rows.safetensors")).fingerprint("embed"));
  EXPECT_NE(a.fingerprint("embed"),
            SafetensorsFile(dir.file("shape.safetensors")).fingerprint("embed"));
  expect_error<CheckpointError>([&] { a.fingerprint("nope"); }, "no tensor named 'nope'");

  SafetensorsCheckpoint checkpoint(dir.file("a.safetensors")), same(dir.file("copy.safetensors"));
  EXPECT_EQ(checkpoint.table_fingerprint("embed", "embed_scale"),
            same.table_fingerprint("embed", "embed_scale"));
  EXPECT_NE(checkpoint.table_fingerprint("embed", "embed_scale"),
            checkpoint.table_fingerprint("embed"));
  SafetensorsCheckpoint fewer_rows(dir.file("rows.safetensors"));
  EXPECT_NE(checkpoint.table_fingerprint("embed"), fewer_rows.table_fingerprint("embed"));
}

class Outputs : public ::testing::Test {
 protected:
  void expect_refused(const std::string& path, const std::string& needle,
                      const std::vector<std::string>& inputs = {}) {
    SCOPED_TRACE(path);
    expect_error<CheckpointError>([&] { check_safetensors_output(path, inputs); },
                                  path + ": " + needle);
    expect_error<CheckpointError>(
        [&] {
          write_safetensors(path, {{"embed", TensorView(kTable, DType::f32, {4, 3})}});
        },
        path + ": " + needle);
  }
  ScratchDir dir_;
};

TEST_F(Outputs, OnlyRegularWritableFilesAreReplaced) {
  expect_refused("/dev/null", "is a character device");
  expect_refused("/dev/full", "is a character device");
  ASSERT_EQ(::mkfifo(dir_.file("fifo").c_str(), 0644), 0);
  expect_refused(dir_.file("fifo"), "is a FIFO");
  expect_refused(dir_.path(), "is a directory");
  ASSERT_EQ(::symlink(dir_.file("target").c_str(), dir_.file("link").c_str()), 0);
  expect_refused(dir_.file("link"), "is a symbolic link");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("target")));
  write_file(dir_.file("readonly"), "x");
  ASSERT_EQ(::chmod(dir_.file("readonly").c_str(), 0444), 0);
  expect_refused(dir_.file("readonly"), "is read-only (mode 0444)");
  EXPECT_EQ(read_file(dir_.file("readonly")), "x");
  expect_refused(dir_.file("no/such/dir/out"),
                 "cannot write here: directory '" + dir_.file("no/such/dir") + "' does not exist");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("no")));
  // A path under a regular file: the path itself cannot be checked (not a directory).
  write_file(dir_.file("plain"), "x");
  expect_refused(dir_.file("plain/out"), "cannot check the output: Not a directory");
}

TEST_F(Outputs, AnEmptyPathIsRefused) {
  expect_error<InvalidArgumentError>([] { check_safetensors_output("", {}); },
                                     "write_safetensors: the output path is empty");
}

TEST_F(Outputs, TheInputIsRefusedUnderAnyPath) {
  write_table(dir_.file("in.safetensors"));
  check_safetensors_output(dir_.file("other.safetensors"), {dir_.file("in.safetensors")});  // fine
  expect_error<CheckpointError>(
      [&] { check_safetensors_output(dir_.file("in.safetensors"), {dir_.file("in.safetensors")}); },
      "is the input file (same file)");
  ASSERT_EQ(::link(dir_.file("in.safetensors").c_str(), dir_.file("hard.safetensors").c_str()), 0);
  expect_error<CheckpointError>(
      [&] {
        check_safetensors_output(dir_.file("hard.safetensors"), {dir_.file("in.safetensors")});
      },
      "is the input file '" + dir_.file("in.safetensors") + "'");
  expect_error<CheckpointError>(
      [&] {
        check_safetensors_output(dir_.path() + "/./in.safetensors", {dir_.file("in.safetensors")});
      },
      "is the input file");
}

TEST_F(Outputs, AReplacedFileKeepsItsMode) {
  write_file(dir_.file("out.safetensors"), "old");
  ASSERT_EQ(::chmod(dir_.file("out.safetensors").c_str(), 0600), 0);
  write_table(dir_.file("out.safetensors"));
  struct stat status {};
  ASSERT_EQ(::stat(dir_.file("out.safetensors").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0600u);
  EXPECT_EQ(SafetensorsFile(dir_.file("out.safetensors")).rows("embed", 3, 1).as<float>()[2],
            12.0f);
}

TEST(IndexLinks, AnEntryLinkingOutOfTheDirectoryIsRefusedLikeDotDot) {
  ScratchDir outside, dir;
  write_table(outside.file("secret.safetensors"));
  ASSERT_EQ(
      ::symlink(outside.file("secret.safetensors").c_str(), dir.file("part.safetensors").c_str()),
      0);
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"embed": "part.safetensors"}})");
  expect_error<CheckpointError>(
      [&] { SafetensorsCheckpoint checkpoint(dir.path()); },
      "weight_map sends tensor 'embed' to 'part.safetensors', which is not a file inside "
      "the checkpoint's directory (through a symbolic link");
  // A directory link on the way out counts the same; a link that stays inside is fine.
  ASSERT_EQ(::symlink(outside.path().c_str(), dir.file("sub").c_str()), 0);
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"embed": "sub/secret.safetensors"}})");
  expect_error<CheckpointError>([&] { SafetensorsCheckpoint checkpoint(dir.path()); },
                                "through a symbolic link");
  write_table(dir.file("real.safetensors"));
  ASSERT_EQ(::symlink(dir.file("real.safetensors").c_str(), dir.file("inside.safetensors").c_str()),
            0);
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"embed": "inside.safetensors"}})");
  SafetensorsCheckpoint checkpoint(dir.path());
  EXPECT_EQ(checkpoint.file("embed").rows("embed", 0, 1).as<float>()[1], 2.0f);
}

TEST(IndexFiles, AnIndexThatIsAFifoIsRefusedNotWaitedOn) {
  ScratchDir dir;
  ASSERT_EQ(::mkfifo(dir.file("model.safetensors.index.json").c_str(), 0644), 0);
  expect_error<CheckpointError>([&] { SafetensorsCheckpoint checkpoint(dir.path()); },
                                "model.safetensors.index.json: is not a regular file");
  expect_error<CheckpointError>(
      [&] { SafetensorsCheckpoint checkpoint(dir.file("model.safetensors.index.json")); },
      "is not a regular file");
}

TEST(Names, ANameWithANulByteIsShownWhole) {
  ScratchDir dir;
  write_file(dir.file("nul.safetensors"),
             safetensors_bytes(R"({"a\u0000b\n":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                               std::string(4, '\0')));
  const SafetensorsFile file(dir.file("nul.safetensors"));
  EXPECT_EQ(file.names(), (std::vector<std::string>{std::string("a\0b\n", 4)}));
  expect_error<CheckpointError>([&] { file.info("a"); }, "the file holds 1 tensor: 'a\\x00b\\x0a'");
}

}  // namespace
}  // namespace tpembed::testing
