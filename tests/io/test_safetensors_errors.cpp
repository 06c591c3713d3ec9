// Malformed and hostile files: each gives a CheckpointError that names the file and the problem,
// never a crash or a read out of bounds (the sanitizer build runs these too).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>

#include "expect_error.hpp"
#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::testing {
namespace {

struct BadFile {
  const char* name;
  std::string bytes;
  const char* needle;  // what the message must say
};

std::string header_only(const std::string& header, std::size_t data_bytes = 0) {
  return safetensors_bytes(header, std::string(data_bytes, '\0'));
}

std::string length_field(std::uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes;
}

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

const BadFile kBadFiles[] = {
    {"Empty", "", "file is 0 bytes, too short for the 8-byte header length"},
    {"ShorterThanTheLengthField", std::string("\x05\x00\x00", 3), "file is 3 bytes, too short"},
    {"HeaderPastTheEnd", length_field(100) + "{}",
     "header length 100 runs past the end of the file (2 bytes"},
    {"HeaderLengthHuge", length_field(~std::uint64_t{0}) + "{}",
     "header length 18446744073709551615 runs past the end"},
    {"EmptyHeader", header_only(""), "header is not valid JSON"},
    {"InvalidJson", header_only("{\"a\": "), "header is not valid JSON"},
    {"TrailingGarbage", header_only("{} x"), "header is not valid JSON"},
    {"NotUtf8", header_only("{\"\xff\": 1}"), "header is not valid JSON"},
    {"HeaderIsAnArray", header_only("[1, 2]"), "header is a JSON array, not an object"},
    {"HeaderIsANumber", header_only("42"), "header is a JSON number, not an object"},
    {"DeeplyNested",
     header_only("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}"),
     "nested deeper than 3 levels"},
    {"EntryNotAnObject", header_only(R"({"w": [1, 2]})"),
     "tensor 'w': entry is array [1,2], not an object"},
    {"MissingDtype", header_only(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4),
     "tensor 'w': missing field \"dtype\""},
    {"MissingShape", header_only(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
     "missing field \"shape\""},
    {"MissingOffsets", header_only(R"({"w": {"dtype": "F32", "shape": [1]}})", 4),
     "missing field \"data_offsets\""},
    {"DtypeNotAString",
     header_only(R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", 4),
     "field \"dtype\" is number 7, not string"},
    {"ShapeNotAnArray", header_only(R"({"w": )" + entry("F32", "\"1\"", "[0, 4]") + "}", 4),
     "field \"shape\" is string \"1\", not array"},
    {"OffsetsNotAnArray", header_only(R"({"w": )" + entry("F32", "[1]", "{}") + "}", 4),
     "field \"data_offsets\" is object {}, not array"},
    {"ShapeExtentFraction", header_only(R"({"w": )" + entry("F32", "[1.5]", "[0, 4]") + "}", 4),
     "shape extent 1.5 is not a non-negative integer"},
    {"ShapeExtentString", header_only(R"({"w": )" + entry("F32", "[\"2\"]", "[0, 8]") + "}", 8),
     "shape extent \"2\" is not"},
    {"NegativeShape", header_only(R"({"w": )" + entry("F32", "[-1, 2]", "[0, 8]") + "}", 8),
     "shape extent -1 is not a non-negative integer"},
    {"ShapeExtentPastInt64",
     header_only(R"({"w": )" + entry("U8", "[9223372036854775808]", "[0, 0]") + "}"),
     "shape extent 9223372036854775808 is not"},
    {"ShapeExtentPastUint64",
     header_only(R"({"w": )" + entry("U8", "[18446744073709551616]", "[0, 0]") + "}"),
     "is not a non-negative integer"},
    {"OverflowingShape",
     header_only(R"({"w": )" + entry("F32", "[4294967296, 4294967296]", "[0, 0]") + "}"),
     "shape [4294967296,4294967296] of F32 overflows a 64-bit byte count"},
    {"OverflowingShapeWithZero",
     header_only(R"({"w": )" + entry("F32", "[0, 4611686018427387904]", "[0, 0]") + "}"),
     "overflows a 64-bit byte count"},
    {"UnknownDtype", header_only(R"({"w": )" + entry("F7", "[1]", "[0, 1]") + "}", 1),
     "tensor 'w': unknown dtype 'F7'"},
    {"OneOffset", header_only(R"({"w": )" + entry("F32", "[1]", "[4]") + "}", 4),
     "data_offsets [4] are not two non-negative integers"},
    {"NegativeOffset", header_only(R"({"w": )" + entry("F32", "[1]", "[-4, 0]") + "}", 4),
     "are not two non-negative integers"},
    {"FractionalOffset", header_only(R"({"w": )" + entry("F32", "[1]", "[0, 4.0]") + "}", 4),
     "are not two non-negative integers"},
    {"OffsetsPastTheData", header_only(R"({"w": )" + entry("F32", "[4]", "[0, 16]") + "}", 8),
     "tensor 'w': data_offsets [0, 16] run past the end of the data buffer (8 bytes)"},
    {"BeginAfterEnd", header_only(R"({"w": )" + entry("F32", "[1]", "[8, 4]") + "}", 8),
     "data_offsets [8, 4] have begin > end"},
    {"SizeMismatch", header_only(R"({"w": )" + entry("F32", "[2, 2]", "[0, 12]") + "}", 16),
     "data_offsets [0, 12] hold 12 bytes but shape [2, 2] of F32 needs 16"},
    {"Overlapping",
     header_only(R"({"a": )" + entry("F32", "[2]", "[0, 8]") + R"(, "b": )" +
                     entry("F32", "[2]", "[4, 12]") + "}",
                 12),
     "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
    {"Nested",
     header_only(R"({"a": )" + entry("F32", "[4]", "[0, 16]") + R"(, "b": )" +
                     entry("F32", "[1]", "[4, 8]") + "}",
                 16),
     "tensors 'a' [0, 16) and 'b' [4, 8) overlap"},
    {"DuplicateName",
     header_only(R"({"w": )" + entry("F32", "[1]", "[0, 4]") + R"(, "w": )" +
                     entry("F32", "[1]", "[4, 8]") + "}",
                 8),
     "header: duplicate tensor name 'w'"},
    {"DuplicateField",
     header_only(R"({"w": {"dtype": "F32", "dtype": "I32", "shape": [1], "data_offsets": [0, 4]}})",
                 4),
     "header: duplicate key 'dtype'"},
    {"MetadataNotAnObject", header_only(R"({"__metadata__": ["pt"]})"),
     "__metadata__ is array [\"pt\"], not an object"},
    {"MetadataValueNotAString", header_only(R"({"__metadata__": {"step": 3}})"),
     "__metadata__ entry 'step' is number 3, not a string"},
    {"Int4MetadataForNoTensor", header_only(R"({"__metadata__": {"tpembed.int4_columns.q": "4"}})"),
     "__metadata__ entry 'tpembed.int4_columns.q' names no U8 tensor"},
    {"Int4MetadataNotANumber",
     header_only(R"({"__metadata__": {"tpembed.int4_columns.q": "-4"}, "q": )" +
                     entry("U8", "[1, 2]", "[0, 2]") + "}",
                 2),
     "'tpembed.int4_columns.q' = '-4' is not an int4 column count for rows of 2 bytes (expected 3 "
     "or 4)"},
    {"Int4MetadataTooWide",
     header_only(R"({"__metadata__": {"tpembed.int4_columns.q": "5"}, "q": )" +
                     entry("U8", "[1, 2]", "[0, 2]") + "}",
                 2),
     "is not an int4 column count"},
};

class BadFiles : public ::testing::TestWithParam<BadFile> {};

TEST_P(BadFiles, OpeningGivesACheckpointErrorNamingFileAndProblem) {
  ScratchDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_file(path, GetParam().bytes);
  try {
    SafetensorsFile file(path);
    ADD_FAILURE() << "opened without error; expected '" << GetParam().needle << "'";
  } catch (const CheckpointError& error) {
    const std::string message = error.what();
    EXPECT_EQ(error.code(), ErrorCode::checkpoint);
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u)
        << "message does not start with the path: " << message;
    EXPECT_NE(message.find(GetParam().needle), std::string::npos)
        << "message '" << message << "' does not say '" << GetParam().needle << "'";
  }
}

INSTANTIATE_TEST_SUITE_P(Malformed, BadFiles, ::testing::ValuesIn(kBadFiles),
                         [](const auto& info) { return std::string(info.param.name); });

// The errors of files on disk are CheckpointErrors.
void expect_checkpoint_error(const std::function<void()>& call, const std::string& needle) {
  expect_error<CheckpointError>(call, needle);
}

TEST(BadFileSystemEntries, MissingDirectoryAndFifoAreCheckpointErrors) {
  ScratchDir dir;
  expect_checkpoint_error([&] { SafetensorsFile file(dir.file("absent.safetensors")); },
               "absent.safetensors: cannot open: No such file or directory");
  expect_checkpoint_error([&] { SafetensorsFile file(dir.path()); }, "is a directory");
  ASSERT_EQ(::mkfifo(dir.file("pipe").c_str(), 0600), 0);
  expect_checkpoint_error([&] { SafetensorsFile file(dir.file("pipe")); }, "is not a regular file");
}

TEST(BadHeaderLength, LargerThanTheLimitEvenWhenTheFileIsThatLong) {
  // A sparse file long enough to hold a 100,000,001-byte header: the limit still refuses it.
  ScratchDir dir;
  const std::string path = dir.file("huge.safetensors");
  write_file(path, length_field(100'000'001));
  ASSERT_EQ(::truncate(path.c_str(), 100'000'016), 0);
  expect_checkpoint_error([&] { SafetensorsFile file(path); },
               "header length 100000001 is larger than the 100000000-byte limit");
}

TEST(MissingTensor, TheErrorListsTheTensorsThatExist) {
  ScratchDir dir;
  const float value = 0;
  std::map<std::string, TensorView> few, many;
  for (const char* name : {"a", "b", "c"}) few[name] = TensorView(&value, DType::f32, {1});
  for (int i = 0; i < 30; ++i)
    many["t" + std::to_string(100 + i)] = TensorView(&value, DType::f32, {1});
  write_safetensors(dir.file("few.safetensors"), few);
  write_safetensors(dir.file("many.safetensors"), many);
  const SafetensorsFile few_file(dir.file("few.safetensors"));
  expect_checkpoint_error([&] { few_file.info("nope"); },
               "few.safetensors: no tensor named 'nope'; the file holds 3 tensors: 'a', 'b', 'c'");
  expect_checkpoint_error([&] { few_file.tensor("nope"); }, "no tensor named 'nope'");
  expect_checkpoint_error([&] { few_file.columns("nope", 0, 1); }, "no tensor named 'nope'");
  const SafetensorsFile many_file(dir.file("many.safetensors"));
  expect_checkpoint_error([&] { many_file.rows("nope", 0, 1); }, "holds 30 tensors: 't100', 't101'");
  expect_checkpoint_error([&] { many_file.rows("nope", 0, 1); }, "'t119', ... and 10 more");
}

TEST(HostileNames, HugeNamesAreCutInMessages) {
  ScratchDir dir;
  const std::string name(100000, 'n');
  write_file(dir.file("n.safetensors"),
             header_only("{\"" + name + "\": " + entry("F32", "[1]", "[8, 4]") + "}", 8));
  try {
    SafetensorsFile file(dir.file("n.safetensors"));
    ADD_FAILURE() << "no error";
  } catch (const CheckpointError& error) {
    EXPECT_LT(std::string(error.what()).size(), 400u);
    EXPECT_NE(std::string(error.what()).find("...' (100000 bytes)"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace tpembed::testing
