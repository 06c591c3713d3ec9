// Reading U8 tensors as packed int4: the column count comes from the caller or the metadata, and
// must fit; dtypes tpembed has no equivalent for are listed but not read.
#include <gtest/gtest.h>

#include <functional>

#include "expect_error.hpp"
#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::testing {
namespace {

class Int4Reads : public ::testing::Test {
 protected:
  void SetUp() override {
    // A U8 [3, 2] tensor as another tool might write it: no tpembed metadata.
    write_file(path_,
               safetensors_bytes(
                   R"({"packed":{"dtype":"U8","shape":[3,2],"data_offsets":[0,6]},)"
                   R"("wide":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
                   R"("half":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]}})",
                   std::string("\x21\x43\x65\x87\xa9\xcb\x00\x00", 8) + std::string(8, '\0')));
  }
  ScratchDir dir_;
  const std::string path_ = dir_.file("u8.safetensors");
};

TEST_F(Int4Reads, U8WithoutMetadataNeedsTheColumnCount) {
  const SafetensorsFile file(path_);
  expect_error<InvalidArgumentError>([&] { file.tensor("packed"); }, "pass as_int4_columns");
  EXPECT_FALSE(file.info("packed").int4_columns.has_value());
  for (std::int64_t columns : {3, 4}) {
    const TensorView view = file.tensor("packed", columns);
    EXPECT_EQ(view.dtype, DType::i4);
    EXPECT_EQ(view.shape, (std::vector<std::int64_t>{3, columns}));
    EXPECT_EQ(view.nbytes(), 6);
  }
  expect_error<InvalidArgumentError>([&] { file.tensor("packed", 5); }, "expected 3 or 4");
  expect_error<InvalidArgumentError>([&] { file.tensor("packed", -1); }, "does not fit");
  expect_error<InvalidArgumentError>([&] { file.tensor("half", 4); }, "only to U8 tensors");
  // Columns 1..2 of rows 0x21 0x43 (nibbles 1 2 3 4): 2 3 -> 0x32.
  const Tensor middle = file.columns("packed", 1, 2, 4);
  EXPECT_EQ(middle.data_as<std::uint8_t>()[0], 0x32);
  EXPECT_EQ(file.rows("packed", 1, 2, 4).shape, (std::vector<std::int64_t>{2, 4}));
}

TEST_F(Int4Reads, DtypesWithoutATpembedEquivalentAreListedNotRead) {
  const SafetensorsFile file(path_);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"packed", "half", "wide"}));
  EXPECT_EQ(file.info("wide").stored_dtype, "F64");
  expect_error<CheckpointError>([&] { file.tensor("wide"); },
                                "dtype F64, which tpembed cannot read");
  EXPECT_EQ(dtype_from_safetensors("F64"), std::nullopt);
  EXPECT_EQ(dtype_from_safetensors("U8"), DType::i4);
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::bf16);
  EXPECT_EQ(std::string(safetensors_dtype_name(DType::fp8_e4m3)), "F8_E4M3");
}

TEST(Int4Metadata, WrittenColumnCountIsUsedAndChecked) {
  ScratchDir dir;
  const std::uint8_t packed[6] = {0x21, 0x03, 0x54, 0x06, 0x87, 0x09};
  write_safetensors(dir.file("i4.safetensors"), {{"q", TensorView(packed, DType::i4, {3, 3})}});
  const SafetensorsFile file(dir.file("i4.safetensors"));
  EXPECT_EQ(file.info("q").int4_columns, 3);
  EXPECT_EQ(file.tensor("q").shape, (std::vector<std::int64_t>{3, 3}));
  EXPECT_EQ(file.tensor("q", 3).shape, (std::vector<std::int64_t>{3, 3}));
  expect_error<InvalidArgumentError>([&] { file.tensor("q", 4); }, "the metadata records 3");
}

}  // namespace
}  // namespace tpembed::testing
