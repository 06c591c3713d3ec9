// The CPU backward against the documented order (bit for bit), against the float64 sum (within the
// bound the order implies), run to run and thread count to thread count; and every error path of
// embedding_backward().
#include <gtest/gtest.h>

#include <cstdlib>
#include <limits>
#include <sstream>

#include "expect_error.hpp"
#include "gradient_cases.hpp"

namespace tpembed::testing {
namespace {

class GradientCpu : public ::testing::TestWithParam<GradientCase> {};

TEST_P(GradientCpu, MatchesTheDocumentedOrderAndTheExactSum) {
  const GradientProblem problem = case_problem(GetParam());
  const GradientResult expected = documented_gradient(problem);
  const GradientResult actual = run_backward(problem);
  EXPECT_EQ(bit_difference(actual, expected), "");
  EXPECT_EQ(check_against_exact(problem, actual), "");
  EXPECT_EQ(actual.counts.accumulated + actual.counts.unowned + actual.counts.out_of_range + actual.counts.ignored,
            problem.ids.size());
}

TEST_P(GradientCpu, MisalignedBuffersGiveTheSameBits) {
  const GradientProblem problem = case_problem(GetParam());
  BackwardRun run;
  run.element_offset = 1;
  EXPECT_EQ(bit_difference(run_backward(problem, run), run_backward(problem)), "");
}

INSTANTIATE_TEST_SUITE_P(Matrix, GradientCpu, ::testing::ValuesIn(gradient_cases()),
                         gradient_case_name);

// Large enough that the CPU backend splits the rows over threads: the bits must not depend on it.
TEST(GradientCpuThreads, SameBitsForEveryThreadCountAndRun) {
  std::mt19937_64 rng(3);
  std::vector<std::int64_t> ids(20000);
  for (auto& id : ids) id = (rng() % 4 == 0) ? 3 : static_cast<std::int64_t>(rng() % 5000);
  const GradientProblem problem = random_gradient_problem(ids, 5000, 96, DType::bf16, DType::f32, 5);
  const GradientResult first = run_backward(problem);
  EXPECT_EQ(bit_difference(first, documented_gradient(problem)), "");
  for (const char* threads : {"1", "2", "3", "8"}) {
    setenv("TPEMBED_CPU_THREADS", threads, 1);
    for (int repeat = 0; repeat < 3; ++repeat) {
      EXPECT_EQ(bit_difference(run_backward(problem), first), "") << threads << " threads, run " << repeat;
    }
  }
  unsetenv("TPEMBED_CPU_THREADS");
}

// ---- error paths ---------------------------------------------------------------------------------

struct Args {
  std::vector<std::int64_t> ids{1, 2, 3};
  std::vector<float> grad_out = std::vector<float>(3 * 4, 1.0f);
  std::vector<float> grad = std::vector<float>(5 * 4, 0.0f);
  TensorView ids_view() const { return TensorView(ids.data(), DType::i64, {3}); }
  TensorView out_view() const { return TensorView(grad_out.data(), DType::f32, {3, 4}); }
  TensorView grad_view() { return TensorView(grad.data(), DType::f32, {5, 4}); }
};

TEST(GradientErrors, RefusesWhatDoesNotFit) {
  Args a;
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), TensorView()); },
                                     "grad_weight is missing");
  expect_error<UnsupportedError>(
      [&] { embedding_backward(a.ids_view(), a.out_view(), TensorView(a.grad.data(), DType::i8, {5, 4})); },
      "quantized tables have no gradient");
  expect_error<InvalidArgumentError>(
      [&] { embedding_backward(a.ids_view(), a.out_view(), TensorView(a.grad.data(), DType::i32, {5, 4})); },
      "grad_weight must be f32, f16 or bf16");
  expect_error<ShapeError>(
      [&] { embedding_backward(a.ids_view(), a.out_view(), TensorView(a.grad.data(), DType::f32, {20})); },
      "grad_weight must be 2-D");
  expect_error<InvalidArgumentError>(
      [&] { embedding_backward(TensorView(a.grad_out.data(), DType::f32, {3}), a.out_view(), a.grad_view()); },
      "ids must be i32 or i64");
  expect_error<InvalidArgumentError>(
      [&] { embedding_backward(TensorView(nullptr, DType::i64, {3}), a.out_view(), a.grad_view()); },
      "ids has null data");
  expect_error<ShapeError>(
      [&] { embedding_backward(a.ids_view(), TensorView(a.grad_out.data(), DType::f32, {4, 3}), a.grad_view()); },
      "grad_out has shape [4, 3] but ids [3] and a gradient of 4 columns need [3, 4]");
  expect_error<ShapeError>(
      [&] { embedding_backward(a.ids_view(), TensorView(a.grad_out.data(), DType::f32, {3, 2}), a.grad_view()); },
      "need [3, 4]");
  expect_error<InvalidArgumentError>(
      [&] { embedding_backward(a.ids_view(), TensorView(a.grad_out.data(), DType::i32, {3, 4}), a.grad_view()); },
      "grad_out must be f32, f16 or bf16");
  expect_error<ShapeError>(
      [&] { embedding_backward(a.ids_view(), TensorView(a.grad_out.data(), DType::f32, {3, -4}), a.grad_view()); },
      "grad_out has a negative extent");
  expect_error<InvalidArgumentError>(
      [&] {
        embedding_backward(a.ids_view(), a.out_view(), TensorView(a.grad.data(), DType::f32, {5, 4}, Device::cuda(0)));
      },
      "ids is on cpu but grad_weight is on cuda:0");
  GradientOptions o;
  o.column_offset = 1;
  expect_error<ShapeError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                           "from column 1 need [3, 5] (or wider)");
  o = {};
  o.column_offset = -1;
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "column_offset must be >= 0");
  o = {};
  o.row_offset = -3;
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "row_offset must be >= 0");
  o = {};
  o.valid_ids = -1;
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "valid_ids must be >= 0");
  std::vector<float> scale(4, 1.0f);
  o = {};
  o.per_token_scale = TensorView(scale.data(), DType::f32, {4});
  expect_error<ShapeError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                           "per_token_scale has 4 entries but grad_weight has 5 rows");
  o.per_token_scale = TensorView(scale.data(), DType::i8, {5});
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "per_token_scale must be f32, f16 or bf16");
  std::vector<float> pad(2 * 4, 0.0f);
  o = {};
  o.grad_padding = TensorView(pad.data(), DType::f16, {2, 4});
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "grad_padding has dtype f16 but grad_weight has f32");
  o.grad_padding = TensorView(pad.data(), DType::f32, {2, 3});
  expect_error<ShapeError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                           "grad_padding has shape [2, 3]");
  o.grad_padding = TensorView(a.grad.data() + 4, DType::f32, {1, 4});
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "grad_padding overlaps grad_weight");
  o = {};
  o.padding_scale = TensorView(scale.data(), DType::f32, {1});
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "padding_scale is given but grad_padding is not");
  o = {};
  o.grad_padding = TensorView(pad.data(), DType::f32, {2, 4});
  o.per_token_scale = TensorView(scale.data(), DType::f32, {5});
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "its padding needs padding_scale too");
  // The gradient over its own inputs.
  expect_error<InvalidArgumentError>(
      [&] {
        embedding_backward(a.ids_view(), TensorView(a.grad.data(), DType::f32, {3, 4}), a.grad_view());
      },
      "the gradient overlaps grad_out");
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "padding needs padding_scale");
  o = {};
  o.column_offset = std::numeric_limits<std::int64_t>::max();  // no overflow in the width check
  expect_error<ShapeError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                           "from column 9223372036854775807");
  o = {};
  o.row_offset = std::int64_t{1} << 40;
  expect_error<InvalidArgumentError>([&] { embedding_backward(a.ids_view(), a.out_view(), a.grad_view(), o); },
                                     "is beyond any table");
  // Sizes past what the sort's 32-bit keys hold, and past the GPU's column slabs (checked before
  // any device work: empty tensors, so nothing is touched).
  const TensorView no_ids(nullptr, DType::i64, {0});
  expect_error<InvalidArgumentError>(
      [&] {
        embedding_backward(no_ids, TensorView(nullptr, DType::f32, {0, 0}),
                           TensorView(nullptr, DType::f32, {std::int64_t{1} << 31, 0}));
      },
      "a backward writes at most 2147483647 rows");
  const Device gpu = Device::cuda(0);
  expect_error<InvalidArgumentError>(
      [&] {
        embedding_backward(TensorView(nullptr, DType::i64, {0}, gpu), TensorView(nullptr, DType::f32, {0, 9000000}, gpu),
                           TensorView(nullptr, DType::f32, {0, 9000000}, gpu));
      },
      "a GPU backward takes at most 8388480 columns");
  expect_error<InvalidArgumentError>(
      [&] { gradient_workspace_bytes(Device::cuda(0), -1, 1, 0, 1); }, "sizes must be >= 0");
  EXPECT_EQ(gradient_workspace_bytes(Device::cpu(), 100, 10, 0, 8), 0u);
}

TEST(GradientErrors, QuantizedLayerHasNoBackward) {
  std::vector<std::int8_t> table(4 * 2, 1);
  std::vector<float> scale(4, 0.5f), grad(4 * 2), grad_out(2 * 2, 1.0f);
  std::vector<std::int64_t> ids{0, 1};
  EmbeddingShard shard;
  shard.weight = TensorView(table.data(), DType::i8, {4, 2});
  shard.scale = TensorView(scale.data(), DType::f32, {4});
  EmbeddingConfig config;
  config.out_dtype = DType::f32;
  auto single = make_single_communicator();
  ParallelEmbedding layer(*single, shard, config);
  expect_error<UnsupportedError>(
      [&] {
        layer.backward(TensorView(ids.data(), DType::i64, {2}), TensorView(grad_out.data(), DType::f32, {2, 2}),
                       TensorView(grad.data(), DType::f32, {4, 2}));
      },
      "quantized tables have no gradient");
}

TEST(GradientLayer, GradPaddingNeedsPaddingRows) {
  const HostTable table = random_table(DType::f32, 6, 8, 1);
  EmbeddingShard shard;
  shard.weight = table.view();
  auto single = make_single_communicator();
  ParallelEmbedding layer(*single, shard, {});
  std::vector<std::int64_t> ids{0, 1};
  HostTable grad_out(DType::f32, 2, 8), grad(DType::f32, 6, 8), grad_padding(DType::f32, 1, 8);
  BackwardOptions options;
  options.grad_padding = grad_padding.view();
  expect_error<InvalidArgumentError>(
      [&] { layer.backward(TensorView(ids.data(), DType::i64, {2}), grad_out.view(), grad.view(), nullptr, options); },
      "grad_padding is given but the layer has no padding rows that ids select");
}

TEST(GradientLayer, OneRankLayerMatchesTheOpAndCounts) {
  // A bf16 table of 6 rows and 2 padding rows, scaled: the layer's backward is the op's.
  const HostTable table = random_table(DType::bf16, 6, 8, 1), padding = random_table(DType::bf16, 2, 8, 2);
  const HostTable scale = random_scales(DType::f32, 6, 3), padding_scale = random_scales(DType::f32, 2, 4);
  EmbeddingShard shard;
  shard.weight = table.view();
  shard.scale = scale.view();
  shard.padding = padding.view();
  shard.padding_scale = padding_scale.view();
  auto single = make_single_communicator();
  ParallelEmbedding layer(*single, shard, {});
  GradientProblem p = random_gradient_problem({0, 7, 5, 6, 9, -1, 3, 3, 7}, 6, 8, DType::f32, DType::f32, 9);
  p.padding_rows = 2;
  p.valid_ids = 8;
  p.ignored_id = 3;
  p.scale = scale;
  p.padding_scale = padding_scale;
  p.initial_padding = HostTable(DType::f32, 2, 8);
  const GradientResult expected = documented_gradient(p);
  std::vector<std::uint8_t> id_bytes;
  HostTable grad(DType::f32, 6, 8), grad_padding(DType::f32, 2, 8);
  BackwardOptions options;
  options.ignored_id = 3;
  options.grad_padding = grad_padding.view();
  layer.backward(ids_view(p, id_bytes), TensorView(p.grad_out.bytes.data(), DType::f32, {9, 8}), grad.view(), nullptr,
                 options);
  GradientResult actual{grad, grad_padding, layer.last_gradient_counts()};
  EXPECT_EQ(bit_difference(actual, expected), "");
  EXPECT_EQ(actual.counts.accumulated, 5u);  // 0, 7, 5, 6, 7
  EXPECT_EQ(actual.counts.out_of_range, 2u);  // 9, -1
  EXPECT_EQ(actual.counts.ignored, 2u);
  expect_error<ShapeError>(
      [&] {
        layer.backward(ids_view(p, id_bytes), TensorView(p.grad_out.bytes.data(), DType::f32, {9, 8}),
                       TensorView(grad.bytes.data(), DType::f32, {5, 8}));
      },
      "grad_weight has shape [5, 8] but this rank's shard is [6, 8]");
  options.grad_padding = TensorView(grad_padding.bytes.data(), DType::f32, {1, 8});
  expect_error<ShapeError>(
      [&] {
        layer.backward(ids_view(p, id_bytes), TensorView(p.grad_out.bytes.data(), DType::f32, {9, 8}), grad.view(),
                       nullptr, options);
      },
      "the layer has 2 padding rows");
}

}  // namespace
}  // namespace tpembed::testing
