// Every bad argument of the op gets a typed error whose message says what was wrong.
#include <gtest/gtest.h>

#include <functional>

#include "expect_error.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

class EmbeddingErrors : public ::testing::Test {
 protected:
  const Problem float_problem = random_problem(DType::f32, 8, 4, std::nullopt, 0, 3);
  const Problem int8_problem = random_problem(DType::i8, 8, 4, DType::f32, 2, 3);
  const std::int64_t ids[3] = {0, 1, 2};
  TensorView id_view() const { return TensorView(ids, DType::i64, {3}); }
};

TEST_F(EmbeddingErrors, WeightMustBeTwoDimensional) {
  expect_error<ShapeError>(
      [&] { embedding(id_view(), TensorView(float_problem.table.bytes.data(), DType::f32, {32})); },
      "weight must be 2-D [rows, cols], got shape [32]");
}

TEST_F(EmbeddingErrors, OutputShapeMustFitIds) {
  std::vector<float> out(3 * 5);
  expect_error<ShapeError>(
      [&] {
        embedding(id_view(), float_problem.table.view(), TensorView(out.data(), DType::f32, {3, 5}), {});
      },
      "out has shape [3, 5] but ids [3] need [3, 4]");
}

TEST_F(EmbeddingErrors, OutputDtypeMustMatch) {
  std::vector<float> out(3 * 4);
  expect_error<InvalidArgumentError>(
      [&] {
        embedding(id_view(), float_problem.table.view(), TensorView(out.data(), DType::f16, {3, 4}), {});
      },
      "out has dtype f16 but the lookup produces f32");
}

TEST_F(EmbeddingErrors, QuantizedTableNeedsScale) {
  EmbeddingOptions options;
  options.out_dtype = DType::bf16;
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), int8_problem.table.view(), options); },
                                     "a quantized table (i8) needs per_token_scale");
}

TEST_F(EmbeddingErrors, QuantizedTableNeedsOutputDtype) {
  EmbeddingOptions options;
  options.per_token_scale = int8_problem.scale->view();
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), int8_problem.table.view(), options); },
                                     "a quantized table (i8) needs out_dtype");
}

TEST_F(EmbeddingErrors, ScaleOfWrongLength) {
  EmbeddingOptions options;
  options.out_dtype = DType::f32;
  const HostTable short_scale = random_scales(DType::f32, 7, 1);
  options.per_token_scale = short_scale.view();
  expect_error<ShapeError>([&] { embedding(id_view(), int8_problem.table.view(), options); },
                           "per_token_scale has 7 entries but the table has 8 rows");
}

// A scale shorter or longer than its table (or a padding_scale than its padding) is a ShapeError on
// every path of the op: the one-call form, its graph-capturable fast path (tp 1, strict off), the
// strict path through a ParallelEmbedding, and a ParallelEmbedding itself; quantized and float
// tables alike (a short scale must never be padded into zero rows).
TEST_F(EmbeddingErrors, ScaleLengthMustMatchOnEveryPath) {
  struct Case {
    bool of_padding;  // the padding's scale is wrong (2 padding rows), else the table's (8 rows)
    std::int64_t length;
  };
  const Problem float_scaled = random_problem(DType::f32, 8, 4, DType::f32, 2, 5);
  for (const Problem* problem : {&int8_problem, &float_scaled}) {
    for (const Case c : {Case{false, 7}, Case{false, 9}, Case{true, 1}, Case{true, 3}}) {
      const HostTable wrong = random_scales(DType::f32, c.length, 1);
      EmbeddingOptions options;
      options.out_dtype = DType::f32;
      options.per_token_scale = c.of_padding ? problem->scale->view() : wrong.view();
      options.padding = problem->padding->view();
      options.padding_scale = c.of_padding ? wrong.view() : problem->padding_scale->view();
      const std::string needle =
          c.of_padding ? detail::concat("padding_scale has ", c.length, " entries but the padding has 2 rows")
                       : detail::concat("per_token_scale has ", c.length, " entries but the table has 8 rows");
      std::vector<float> out(3 * 4);
      const TensorView out_view(out.data(), DType::f32, {3, 4});
      expect_error<ShapeError>([&] { embedding(id_view(), problem->table.view(), options); }, needle);
      expect_error<ShapeError>([&] { embedding(id_view(), problem->table.view(), out_view, options); }, needle);
      EmbeddingOptions strict = options;
      strict.strict = true;
      expect_error<ShapeError>([&] { embedding(id_view(), problem->table.view(), out_view, strict); }, needle);
      EmbeddingShard shard;
      shard.weight = problem->table.view();
      shard.scale = options.per_token_scale;
      shard.padding = options.padding;
      shard.padding_scale = options.padding_scale;
      expect_error<ShapeError>([&] { ParallelEmbedding(*make_single_communicator(), shard, options); }, needle);
    }
  }
}

TEST_F(EmbeddingErrors, ScaleOfIntegerDtype) {
  EmbeddingOptions options;
  options.out_dtype = DType::f32;
  const std::int32_t scale[8] = {};
  options.per_token_scale = TensorView(scale, DType::i32, {8});
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), int8_problem.table.view(), options); },
                                     "per_token_scale must be f32, f16 or bf16, not i32");
}

TEST_F(EmbeddingErrors, QuantizedPaddingNeedsItsScale) {
  EmbeddingOptions options;
  options.out_dtype = DType::f32;
  options.per_token_scale = int8_problem.scale->view();
  options.padding = int8_problem.padding->view();
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), int8_problem.table.view(), options); },
                                     "quantized padding (i8) needs padding_scale");
}

TEST_F(EmbeddingErrors, PaddingOfWrongWidth) {
  EmbeddingOptions options;
  const HostTable padding = random_table(DType::f32, 2, 5, 1);
  options.padding = padding.view();
  expect_error<ShapeError>([&] { embedding(id_view(), float_problem.table.view(), options); },
                           "padding shape [2, 5] does not fit a table of 4 columns");
}

TEST_F(EmbeddingErrors, TpRankMustBeBelowTpSize) {
  EmbeddingOptions options;
  options.tp_size = 2;
  options.tp_rank = 2;
  auto comm = make_single_communicator();
  expect_error<InvalidArgumentError>(
      [&] { embedding(id_view(), float_problem.table.view(), options, comm.get()); },
      "tp_rank 2 is outside [0, tp_size = 2)");
}

TEST_F(EmbeddingErrors, ShardingDimMustBeZeroOrOne) {
  EmbeddingOptions options;
  options.sharding_dim = 2;
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), float_problem.table.view(), options); },
                                     "sharding_dim must be 0 (vocab) or 1 (hidden), got 2");
}

TEST_F(EmbeddingErrors, NullDataWithNonzeroSize) {
  expect_error<InvalidArgumentError>(
      [&] { embedding(id_view(), TensorView(nullptr, DType::f32, {8, 4})); },
      "weight has null data but 32 elements");
  expect_error<InvalidArgumentError>(
      [&] { embedding(TensorView(nullptr, DType::i64, {3}), float_problem.table.view()); },
      "ids has null data but 3 elements");
  // Null data with zero size is fine: an empty lookup.
  const Tensor out = embedding(TensorView(nullptr, DType::i64, {0}), float_problem.table.view());
  EXPECT_EQ(out.shape(), (std::vector<std::int64_t>{0, 4}));
}

TEST_F(EmbeddingErrors, IdsOfFloatDtype) {
  const float float_ids[] = {0.0f, 1.0f};
  expect_error<InvalidArgumentError>(
      [&] { embedding(TensorView(float_ids, DType::f32, {2}), float_problem.table.view()); },
      "ids must be i32 or i64, not f32");
}

TEST_F(EmbeddingErrors, TensorParallelNeedsACommunicator) {
  EmbeddingOptions options;
  options.tp_size = 2;
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), float_problem.table.view(), options); },
                                     "tp_size 2 needs a communicator");
}

TEST_F(EmbeddingErrors, TpSizeMustMatchTheCommunicator) {
  EmbeddingOptions options;
  options.tp_size = 2;
  auto comm = make_single_communicator();
  expect_error<InvalidArgumentError>(
      [&] { embedding(id_view(), float_problem.table.view(), options, comm.get()); },
      "tp_size 2 but the communicator has 1 ranks");
}

TEST_F(EmbeddingErrors, TableDtypeMustBeATableDtype) {
  const std::int64_t table[4] = {};
  expect_error<InvalidArgumentError>(
      [&] { embedding(id_view(), TensorView(table, DType::i64, {2, 2})); },
      "weight dtype i64 is not a table dtype");
}

TEST_F(EmbeddingErrors, OutputDtypeMustBeFloat) {
  EmbeddingOptions options;
  options.out_dtype = DType::i8;
  expect_error<InvalidArgumentError>([&] { embedding(id_view(), float_problem.table.view(), options); },
                                     "out_dtype i8 is not f32, f16 or bf16");
}

TEST_F(EmbeddingErrors, VocabSizeMustFitTheShards) {
  EmbeddingOptions options;
  options.placement = ShardPlacement::equal;  // vocab_size is for equal vocab shards only
  options.vocab_size = 9;
  expect_error<ShapeError>([&] { embedding(id_view(), float_problem.table.view(), options); },
                           "vocab_size 9 does not fit 1 equal shards of 8 rows");
}

TEST_F(EmbeddingErrors, CopyShardToDeviceTakesHostTensorsOnly) {
  EmbeddingShard shard;
  shard.weight = TensorView(float_problem.table.bytes.data(), DType::f32, {8, 4}, Device::cuda(0));
  expect_error<InvalidArgumentError>([&] { copy_shard_to_device(shard, 0); },
                                     "copy_shard_to_device: weight is on cuda:0, not in host memory");
}

}  // namespace
}  // namespace tpembed::testing
