// Writing then reading safetensors files: every dtype and odd shapes come back byte for byte, the
// layout is the reference implementation's, metadata and int4 column counts survive.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::testing {
namespace {

constexpr DType kTableDTypes[] = {DType::f32,      DType::f16, DType::bf16, DType::i8,
                                  DType::fp8_e4m3, DType::i4,  DType::i32,  DType::i64};

struct OwnedBytes {
  std::vector<unsigned char> bytes;
  TensorView view;
};

OwnedBytes random_tensor(DType dtype, std::vector<std::int64_t> shape, std::uint32_t seed) {
  OwnedBytes tensor;
  TensorView view(nullptr, dtype, std::move(shape));
  tensor.bytes = random_bytes(static_cast<std::size_t>(view.nbytes()), seed);
  view.data = tensor.bytes.data();
  tensor.view = view;
  return tensor;
}

std::string as_string(const TensorView& view) {
  return std::string(static_cast<const char*>(view.data), static_cast<std::size_t>(view.nbytes()));
}

std::vector<std::vector<std::int64_t>> shapes_for(DType dtype) {
  std::vector<std::vector<std::int64_t>> shapes = {{7, 5}, {1, 1}, {0, 3}, {3, 0}, {13}, {2, 3, 7}};
  if (dtype != DType::i4) shapes.push_back({});  // a scalar; int4 needs a last dimension
  return shapes;
}

class RoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(RoundTrip, BytesShapesAndDtypesComeBack) {
  const DType dtype = GetParam();
  ScratchDir dir;
  std::vector<OwnedBytes> owned;
  std::map<std::string, TensorView> tensors;
  for (const auto& shape : shapes_for(dtype)) {
    owned.push_back(random_tensor(dtype, shape, static_cast<std::uint32_t>(owned.size() + 1)));
  }
  for (std::size_t i = 0; i < owned.size(); ++i) tensors["t" + std::to_string(i)] = owned[i].view;
  write_safetensors(dir.file("a.safetensors"), tensors);

  const SafetensorsFile file(dir.file("a.safetensors"));
  EXPECT_EQ(file.names().size(), tensors.size());
  for (const auto& [name, written] : tensors) {
    SCOPED_TRACE(name + " " + written.describe());
    const TensorView read = file.tensor(name);
    EXPECT_EQ(read.dtype, dtype);
    EXPECT_EQ(read.shape, written.shape);
    EXPECT_EQ(as_string(read), as_string(written));
    EXPECT_EQ(file.info(name).stored_dtype, safetensors_dtype_name(dtype));
    if (dtype == DType::i4) {
      EXPECT_EQ(file.info(name).stored_shape.back(), (written.shape.back() + 1) / 2);
      EXPECT_EQ(file.metadata().at(std::string(kInt4ColumnsKeyPrefix) + name),
                std::to_string(written.shape.back()));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryDtype, RoundTrip, ::testing::ValuesIn(kTableDTypes),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(SafetensorsWrite, MixedDtypesAreLaidOutAlignedLikeTheReference) {
  ScratchDir dir;
  std::vector<OwnedBytes> owned;
  std::map<std::string, TensorView> tensors;
  std::uint32_t seed = 100;
  for (DType dtype : kTableDTypes) owned.push_back(random_tensor(dtype, {3, 3}, seed++));
  for (std::size_t i = 0; i < owned.size(); ++i) {
    tensors[std::string("w.") + dtype_name(owned[i].view.dtype)] = owned[i].view;
  }
  write_safetensors(dir.file("mixed.safetensors"), tensors);
  const std::string bytes = read_file(dir.file("mixed.safetensors"));
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  EXPECT_EQ(header_length % 8, 0u) << "the header is padded to a multiple of 8 bytes";

  const SafetensorsFile file(dir.file("mixed.safetensors"));
  std::int64_t previous_element = 8;
  for (const std::string& name : file.names()) {  // file order: decreasing element size
    const TensorView view = file.tensor(name);
    const std::int64_t element = std::max<std::int64_t>(1, element_size(view.dtype));
    EXPECT_LE(element, previous_element) << name;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.data) % element, 0u) << name;
    EXPECT_EQ(as_string(view), as_string(tensors.at(name))) << name;
    previous_element = element;
  }
}

TEST(SafetensorsWrite, ProducesTheReferenceBytes) {
  // The reference implementation's test tensor: {"test": I32 [2, 2]}; its header is padded with
  // spaces so that the data starts at a multiple of 8.
  ScratchDir dir;
  const std::int32_t values[4] = {1, 2, 3, 4};
  write_safetensors(dir.file("ref.safetensors"),
                    {{"test", TensorView(values, DType::i32, {2, 2})}});
  const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string data(reinterpret_cast<const char*>(values), sizeof values);
  EXPECT_EQ(read_file(dir.file("ref.safetensors")), safetensors_bytes(header + "    ", data));
}

TEST(SafetensorsRead, ReadsTheReferenceTestVectors) {
  ScratchDir dir;
  // From the reference implementation's Python tests: an unpadded 60-byte header ...
  const std::string zeros(16, '\0');
  write_file(
      dir.file("plain.safetensors"),
      safetensors_bytes(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})", zeros));
  const SafetensorsFile plain(dir.file("plain.safetensors"));
  EXPECT_EQ(plain.tensor("test").shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(as_string(plain.tensor("test")), zeros);
  // ... and a header with metadata whose data starts at byte 110: I32 data there is not 4-byte
  // aligned, so it cannot be viewed in place, but it can be copied.
  write_file(
      dir.file("meta.safetensors"),
      safetensors_bytes(
          R"({"__metadata__":{"framework":"pt"},"test1":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}       )",
          zeros));
  const SafetensorsFile meta(dir.file("meta.safetensors"));
  EXPECT_EQ(meta.metadata(), (std::map<std::string, std::string>{{"framework", "pt"}}));
  EXPECT_THROW(meta.tensor("test1"), CheckpointError);
  const Tensor copy = meta.copy_rows("test1", 0, 2);
  EXPECT_EQ(as_string(copy.view()), zeros);
}

TEST(SafetensorsWrite, MetadataComesBack) {
  ScratchDir dir;
  const float value = 1.5f;
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "\xc3\xbcnicode \"quoted\" \\ text"}, {"empty", ""}};
  write_safetensors(dir.file("m.safetensors"), {{"x", TensorView(&value, DType::f32, {1})}},
                    metadata);
  EXPECT_EQ(SafetensorsFile(dir.file("m.safetensors")).metadata(), metadata);
  write_safetensors(dir.file("none.safetensors"), {{"x", TensorView(&value, DType::f32, {1})}});
  EXPECT_TRUE(SafetensorsFile(dir.file("none.safetensors")).metadata().empty());
  write_safetensors(dir.file("empty.safetensors"), {});
  EXPECT_TRUE(SafetensorsFile(dir.file("empty.safetensors")).names().empty());
}

TEST(SafetensorsWrite, ReplacesFilesAtomically) {
  ScratchDir dir;
  const std::string path = dir.file("w.safetensors");
  const std::int64_t first[2] = {1, 2}, second[3] = {7, 8, 9};
  write_safetensors(path, {{"v", TensorView(first, DType::i64, {2})}});
  const SafetensorsFile old_file(path);
  const TensorView old_view = old_file.tensor("v");
  write_safetensors(path, {{"v", TensorView(second, DType::i64, {3})}});
  // The old mapping still sees the old bytes (the new file is a new inode); a new open the new
  // ones.
  EXPECT_EQ(old_view.as<std::int64_t>()[1], 2);
  EXPECT_EQ(SafetensorsFile(path).tensor("v").as<std::int64_t>()[2], 9);
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path()))
    ++entries;
  EXPECT_EQ(entries, 1u) << "no temporary file is left behind";
  EXPECT_THROW(write_safetensors(dir.file("missing/dir/x.safetensors"), {}), CheckpointError);
}

TEST(SafetensorsWrite, RejectsBadTensorsAndReservedMetadata) {
  ScratchDir dir;
  const std::string path = dir.file("bad.safetensors");
  const float values[4] = {};
  const auto expect_rejected = [&](const std::map<std::string, TensorView>& tensors,
                                   const std::map<std::string, std::string>& metadata,
                                   const std::string& needle) {
    try {
      write_safetensors(path, tensors, metadata);
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const InvalidArgumentError& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  };
  expect_rejected({{"__metadata__", TensorView(values, DType::f32, {4})}}, {}, "reserved name");
  expect_rejected({{"x", TensorView(values, DType::f32, {4}, Device::cuda(0))}}, {}, "host memory");
  expect_rejected({{"x", TensorView(nullptr, DType::f32, {4})}}, {}, "null data");
  expect_rejected({{"x", TensorView(values, DType::f32, {-1, 4})}}, {}, "negative extent");
  expect_rejected({{"x", TensorView(values, DType::i4, {})}}, {}, "at least one dimension");
  expect_rejected({{"x", TensorView(values, DType::f32, {4})}}, {{"tpembed.int4_columns.x", "8"}},
                  "reserved for int4 tensors");
  expect_rejected({{"x", TensorView(values, DType::i4, {2, 7})}}, {{"tpembed.int4_columns.x", "8"}},
                  "contradicts");
  expect_rejected({{"\xff", TensorView(values, DType::f32, {4})}}, {}, "UTF-8");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SafetensorsRead, ViewsOutliveTheFileObjectThroughKeepAlive) {
  ScratchDir dir;
  const std::int32_t values[3] = {5, 6, 7};
  write_safetensors(dir.file("k.safetensors"), {{"v", TensorView(values, DType::i32, {3})}});
  std::shared_ptr<const void> owner;
  TensorView view;
  {
    const SafetensorsFile file(dir.file("k.safetensors"));
    view = file.tensor("v");
    owner = file.keep_alive();
  }
  EXPECT_EQ(view.as<std::int32_t>()[2], 7);
}

}  // namespace
}  // namespace tpembed::testing
