// read_checkpoint_shard(): the rule the CLI, Python and C++ share for reading a rank's shard of a
// table from a checkpoint — default row scales, int4 columns, shard ranges — and messages that name
// the caller's own options.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <vector>

#include "expect_error.hpp"
#include "safetensors_files.hpp"
#include "tpembed/checkpoint_shard.hpp"

namespace tpembed::testing {
namespace {

constexpr std::int64_t kRows = 5;

std::string float_bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<float> floats_of(const TensorView& view) {
  std::vector<float> values(static_cast<std::size_t>(view.numel()));
  std::memcpy(values.data(), view.data, values.size() * 4);
  return values;
}

std::vector<std::int8_t> codes_of(const TensorView& view) {
  std::vector<std::int8_t> values(static_cast<std::size_t>(view.numel()));
  std::memcpy(values.data(), view.data, values.size());
  return values;
}

// Row r, column c of the i8 table "t" holds 4r + c - 8; of the f32 table "f", 10r + c.
class CheckpointShards : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string codes;
    for (int i = 0; i < kRows * 4; ++i) codes.push_back(static_cast<char>(i - 8));
    std::vector<float> wide;
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < 3; ++c) wide.push_back(static_cast<float>(10 * r + c));
    const std::string data = codes + float_bytes({1, 2, 3, 4, 5}) + float_bytes(wide) +
                             float_bytes({1, 1, 1, 1}) + std::string("\x21\x03\x54\x06\x87\x09\xba\x0c\xed\x0f", 10);
    write_file(path_, safetensors_bytes(
                          R"({"t":{"dtype":"I8","shape":[5,4],"data_offsets":[0,20]},)"
                          R"("t_scale":{"dtype":"F32","shape":[5],"data_offsets":[20,40]},)"
                          R"("f":{"dtype":"F32","shape":[5,3],"data_offsets":[40,100]},)"
                          R"("short_scale":{"dtype":"F32","shape":[4],"data_offsets":[100,116]},)"
                          R"("plain":{"dtype":"U8","shape":[5,2],"data_offsets":[116,126]}})",
                          data));
    write_file(unscaled_path_,
               safetensors_bytes(R"({"t":{"dtype":"I8","shape":[5,4],"data_offsets":[0,20]}})",
                                 codes));
  }

  CheckpointShard read(const CheckpointShardRequest& request, const std::string& path = "") {
    SafetensorsCheckpoint checkpoint(path.empty() ? path_ : path);
    return read_checkpoint_shard(checkpoint, request);
  }

  static CheckpointShardRequest request_for(const std::string& tensor, int tp_size = 1,
                                            int tp_rank = 0, int sharding_dim = 0,
                                            ShardPlacement placement = ShardPlacement::packed) {
    CheckpointShardRequest request;
    request.tensor = tensor;
    request.tp_size = tp_size;
    request.tp_rank = tp_rank;
    request.sharding_dim = sharding_dim;
    request.placement = placement;
    return request;
  }

  ScratchDir dir_;
  const std::string path_ = dir_.file("model.safetensors");
  const std::string unscaled_path_ = dir_.file("unscaled.safetensors");
};

TEST_F(CheckpointShards, TheTableScaleSuffixIsFoundWithoutBeingNamed) {
  const CheckpointShard whole = read(request_for("t"));
  EXPECT_EQ(whole.scale_tensor, "t_scale");
  EXPECT_EQ(whole.dtype, DType::i8);
  EXPECT_EQ(whole.rows, kRows);
  EXPECT_EQ(whole.cols, 4);
  EXPECT_EQ(floats_of(whole.shard.scale), (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_NE(whole.table_fingerprint, 0u);
  // Packed rows of rank 1 of 2: [3, 5).
  const CheckpointShard packed = read(request_for("t", 2, 1));
  EXPECT_EQ(codes_of(packed.shard.weight),
            (std::vector<std::int8_t>{4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(floats_of(packed.shard.scale), (std::vector<float>{4, 5}));
  // Equal rows of rank 1 of 2: [3, 6), the row past the vocab zero-padded, its scale too.
  const CheckpointShard equal = read(request_for("t", 2, 1, 0, ShardPlacement::equal));
  EXPECT_EQ(codes_of(equal.shard.weight),
            (std::vector<std::int8_t>{4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0}));
  EXPECT_EQ(floats_of(equal.shard.scale), (std::vector<float>{4, 5, 0}));
  EXPECT_EQ(equal.rows, kRows);
  // A float table uses its scales too when the checkpoint has them; none when it has none.
  EXPECT_EQ(read(request_for("f")).scale_tensor, "");
  EXPECT_TRUE(read(request_for("f")).shard.scale.absent());
  EXPECT_EQ(default_scale_tensor("model.embed_tokens.weight"), "model.embed_tokens.weight_scale");
}

TEST_F(CheckpointShards, NamedScalesWinAndMustFit) {
  CheckpointShardRequest request = request_for("t");
  request.scale_tensor = "short_scale";
  expect_error<ShapeError>([&] { read(request); },
                           "scale tensor 'short_scale' has shape [4] but table 't' has 5 rows: it "
                           "needs one scale per row, shape [5]");
  request.scale_tensor = "absent";
  expect_error<CheckpointError>([&] { read(request); }, "no tensor named 'absent'");
  request.scale_tensor = "t";
  expect_error<InvalidArgumentError>([&] { read(request); }, "scale_tensor 't' names the table itself");
  request.option_names.scale_tensor = "--scale-tensor";
  expect_error<InvalidArgumentError>([&] { read(request); }, "--scale-tensor 't' names the table itself");
}

TEST_F(CheckpointShards, AQuantizedTableWithoutScalesNamesTheCallersOption) {
  CheckpointShardRequest request = request_for("t");
  expect_error<InvalidArgumentError>(
      [&] { read(request, unscaled_path_); },
      "unscaled.safetensors: tensor 't' is i8 and needs its row scales: pass scale_tensor (the "
      "checkpoint has no 't_scale')");
  request.option_names.scale_tensor = "--scale-tensor";
  expect_error<InvalidArgumentError>([&] { read(request, unscaled_path_); },
                                     "pass --scale-tensor (the checkpoint has no 't_scale')");
}

TEST_F(CheckpointShards, Int4ColumnsNameTheCallersOption) {
  CheckpointShardRequest request = request_for("plain");
  request.scale_tensor = "t_scale";
  expect_error<InvalidArgumentError>([&] { read(request); },
                                     "which tpembed reads as packed int4: pass as_int4_columns");
  request.option_names.int4_columns = "hidden";
  try {
    read(request);
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgumentError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("pass hidden (the logical column count)"), std::string::npos) << message;
    EXPECT_EQ(message.find("as_int4_columns"), std::string::npos) << message;
  }
  request.as_int4_columns = 5;
  expect_error<InvalidArgumentError>([&] { read(request); },
                                     "hidden = 5 does not fit rows of 2 bytes (expected 3 or 4)");
  request.as_int4_columns = 3;
  const CheckpointShard read_back = read(request);
  EXPECT_EQ(read_back.dtype, DType::i4);
  EXPECT_EQ(read_back.cols, 3);
  EXPECT_EQ(read_back.shard.weight.shape, (std::vector<std::int64_t>{5, 3}));
  EXPECT_EQ(static_cast<const std::uint8_t*>(read_back.shard.weight.data)[2], 0x54);
  CheckpointShardRequest not_int4 = request_for("f");
  not_int4.as_int4_columns = 3;
  not_int4.option_names.int4_columns = "--int4-columns";
  expect_error<InvalidArgumentError>([&] { read(not_int4); },
                                     "has dtype F32; --int4-columns applies only to U8 tensors");
}

TEST_F(CheckpointShards, EqualHiddenShardsThatDoNotDivideAreRefusedOnEveryRank) {
  for (int rank = 0; rank < 2; ++rank) {
    CheckpointShardRequest request = request_for("f", 2, rank, 1, ShardPlacement::equal);
    expect_error<ShapeError>([&] { read(request); },
                             "tensor 'f' has 3 columns, which do not divide by tp_size 2: equal "
                             "hidden shards need a column count that does; use placement = "
                             "ShardPlacement::packed for uneven shards");
    request.option_names.packed_placement = "--placement packed";
    expect_error<ShapeError>([&] { read(request); }, "use --placement packed for uneven shards");
  }
  // Packed: columns [0, 2) and [2, 3) of every row.
  EXPECT_EQ(floats_of(read(request_for("f", 2, 1, 1)).shard.weight),
            (std::vector<float>{2, 12, 22, 32, 42}));
  EXPECT_EQ(floats_of(read(request_for("f", 3, 0, 1, ShardPlacement::equal)).shard.weight),
            (std::vector<float>{0, 10, 20, 30, 40}));
  // Hidden shards hold every row's scale.
  EXPECT_EQ(floats_of(read(request_for("t", 2, 1, 1, ShardPlacement::equal)).shard.scale),
            (std::vector<float>{1, 2, 3, 4, 5}));
}

TEST(CheckpointShardDefaults, PackedIsTheDefaultPlacementEverywhere) {
  EXPECT_EQ(EmbeddingConfig{}.placement, ShardPlacement::packed);
  EXPECT_EQ(CheckpointShardRequest{}.placement, ShardPlacement::packed);
}

TEST_F(CheckpointShards, BadRequestsAndTablesThatAreNot2D) {
  expect_error<ShapeError>([&] { read(request_for("t_scale")); },
                           "tensor 't_scale' has shape [5] (1-D); an embedding table is 2-D");
  expect_error<InvalidArgumentError>([&] { read(request_for("t", 2, 2)); },
                                     "tp_rank 2 is outside [0, tp_size = 2)");
  expect_error<InvalidArgumentError>([&] { read(request_for("t", 1, 0, 2)); },
                                     "sharding_dim must be 0 (vocab) or 1 (hidden), got 2");
  expect_error<CheckpointError>([&] { read(request_for("nope")); }, "no tensor named 'nope'");
}

}  // namespace
}  // namespace tpembed::testing
