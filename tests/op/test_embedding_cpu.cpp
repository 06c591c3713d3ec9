// The op on one rank, CPU backend, against the reference built from the unsharded table: every
// (table dtype x id dtype x output dtype x scale dtype), odd shapes, padding, bad ids, strict mode.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "embedding_cases.hpp"
#include "expect_error.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

constexpr std::uint8_t kPoison = 0xcd;  // unwritten output shows up as this pattern
constexpr std::uint8_t kGuard = 0xa5;   // bytes after the output must keep this
constexpr std::size_t kGuardBytes = 64;

class EmbeddingCpu : public ::testing::TestWithParam<Case> {};

TEST_P(EmbeddingCpu, MatchesReference) {
  const Case& c = GetParam();
  const CaseData data = case_data(c);
  const auto id_bytes = encode_ids(data.ids, c.id);
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, data.shard(), data.config);

  std::vector<std::int64_t> out_shape = c.ids_shape;
  out_shape.push_back(c.hidden);
  const std::size_t out_bytes = data.expected.size();
  std::vector<std::uint8_t> out(out_bytes + kGuardBytes, kPoison);
  std::memset(out.data() + out_bytes, kGuard, kGuardBytes);

  embedding.forward(TensorView(id_bytes.data(), c.id, c.ids_shape), TensorView(out.data(), c.out, out_shape));

  const auto& expected = data.expected;
  std::vector<std::uint8_t> actual(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(out_bytes));
  EXPECT_EQ(actual, expected) << first_difference(actual, expected, c.out, c.hidden);
  for (std::size_t g = 0; g < kGuardBytes; ++g) {
    ASSERT_EQ(out[out_bytes + g], kGuard) << "write past the end of the output at guard byte " << g;
  }
  EXPECT_EQ(embedding.last_bad_id_count(), data.expected_bad);

  // The returning overload computes the same.
  const Tensor returned = embedding.forward(TensorView(id_bytes.data(), c.id, c.ids_shape));
  EXPECT_EQ(returned.shape(), out_shape);
  EXPECT_TRUE(expected.empty() || 0 == std::memcmp(returned.data(), expected.data(), expected.size()));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmbeddingCpu, ::testing::ValuesIn(dtype_matrix()), case_name);
INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingCpu, ::testing::ValuesIn(shape_sweep()), case_name);
INSTANTIATE_TEST_SUITE_P(IdShapes, EmbeddingCpu, ::testing::ValuesIn(id_shapes()), case_name);
INSTANTIATE_TEST_SUITE_P(Widths, EmbeddingCpu, ::testing::ValuesIn(vector_widths()), case_name);

TEST(EmbeddingCpuOp, FunctionFormMatchesHandComputedValues) {
  // A 3 x 2 i8 table with scales: out = w * s, computed by hand.
  const std::int8_t weight[] = {1, -2, 3, 4, -128, 127};
  const float scale[] = {0.5f, 2.0f, 0.25f};
  const std::int64_t ids[] = {2, 0, 1, 5, -1};
  EmbeddingOptions options;
  options.per_token_scale = TensorView(scale, DType::f32, {3});
  options.out_dtype = DType::f32;
  const Tensor out = embedding(TensorView(ids, DType::i64, {5}),
                               TensorView(weight, DType::i8, {3, 2}), options);
  const float expected[] = {-32.0f, 31.75f, 0.5f, -1.0f, 6.0f, 8.0f, 0, 0, 0, 0};
  ASSERT_EQ(out.shape(), (std::vector<std::int64_t>{5, 2}));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out.data_as<float>()[i], expected[i]) << "element " << i;
}

TEST(EmbeddingCpuOp, PaddingRowsAreAddressedAfterTheTable) {
  const float weight[] = {1, 2, 3, 4};   // 2 x 2
  const float padding[] = {9, 8};        // 1 x 2: id 2
  const std::int32_t ids[] = {2, 1, 3};  // 3 is past V + P
  EmbeddingOptions options;
  options.padding = TensorView(padding, DType::f32, {1, 2});
  const Tensor out = embedding(TensorView(ids, DType::i32, {3}), TensorView(weight, DType::f32, {2, 2}),
                               options);
  const float expected[] = {9, 8, 3, 4, 0, 0};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out.data_as<float>()[i], expected[i]) << "element " << i;
}

TEST(EmbeddingCpuOp, StrictModeNamesTheFirstBadIdAndItsPosition) {
  const Problem problem = random_problem(DType::f32, 10, 4, std::nullopt, 0, 7);
  const std::int64_t ids[] = {1, 2, 3, 4, 10, -5};  // shape [2, 3]: bad at positions 4 and 5
  EmbeddingOptions options;
  options.strict = true;
  expect_out_of_range([&] { embedding(TensorView(ids, DType::i64, {2, 3}), problem.table.view(), options); }, 10, 4,
                      2, "id 10 at position 4 (index [1, 1]) is out of range [0, 10)");
  // Without strict mode the same ids give zero rows and no error.
  options.strict = false;
  const Tensor out = embedding(TensorView(ids, DType::i64, {2, 3}), problem.table.view(), options);
  for (int c = 0; c < 8; ++c) EXPECT_EQ(out.data_as<float>()[4 * 4 + c], 0.0f);
}

TEST(EmbeddingCpuOp, StrictModePassesInRangeIds) {
  const Problem problem = random_problem(DType::bf16, 10, 4, std::nullopt, 2, 7);
  const std::int32_t ids[] = {0, 9, 10, 11};  // 10 and 11 are padding rows
  EmbeddingOptions options;
  options.strict = true;
  options.padding = problem.padding->view();
  const Tensor out = embedding(TensorView(ids, DType::i32, {4}), problem.table.view(), options);
  const auto expected = reference_lookup(problem, {0, 9, 10, 11}, DType::bf16);
  EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), expected.size()));
}

TEST(EmbeddingCpuOp, LargeLookupUsesAllCoresAndStaysExact) {
  // Big enough to be split over threads; bad ids spread over every chunk.
  const Problem problem = random_problem(DType::fp8_e4m3, 1000, 512, DType::bf16, 0, 11);
  std::vector<std::int64_t> ids(4099);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i * 7919 % 1013) - 5;
  EmbeddingConfig config;
  config.out_dtype = DType::bf16;
  EmbeddingShard shard;
  shard.weight = problem.table.view();
  shard.scale = problem.scale->view();
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, shard, config);
  const Tensor out = embedding.forward(TensorView(ids.data(), DType::i64, {4099}));
  const auto expected = reference_lookup(problem, ids, DType::bf16);
  std::vector<std::uint8_t> actual(static_cast<const std::uint8_t*>(out.data()),
                                   static_cast<const std::uint8_t*>(out.data()) + expected.size());
  EXPECT_EQ(actual, expected) << first_difference(actual, expected, DType::bf16, 512);
  std::uint64_t bad = 0;
  for (auto id : ids) bad += (id < 0 || id >= 1000) ? 1 : 0;
  EXPECT_EQ(embedding.last_bad_id_count(), bad);
}

}  // namespace
}  // namespace tpembed::testing

namespace tpembed::testing {
namespace {

TEST(EmbeddingCpuOp, LargeOutputsTakeTheStreamingCopyAndStayExact) {
  // > 32 MiB of output switches the row copy to non-temporal stores; an output 4 bytes off
  // 16-byte alignment exercises the unaligned head and tail of each row.
  const Problem problem = random_problem(DType::f32, 300, 4099, std::nullopt, 0, 77);
  std::vector<std::int64_t> ids(2100);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i * 37 % 311) - 3;
  const auto expected = reference_lookup(problem, ids, DType::f32);
  ASSERT_GT(expected.size(), std::size_t{32} << 20);
  std::vector<std::uint8_t> out(expected.size() + 4 + 64, 0xcd);
  EmbeddingShard shard;
  shard.weight = problem.table.view();
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, shard, {});
  embedding.forward(TensorView(ids.data(), DType::i64, {2100}),
                    TensorView(out.data() + 4, DType::f32, {2100, 4099}));
  const std::vector<std::uint8_t> actual(out.begin() + 4, out.begin() + 4 + static_cast<std::ptrdiff_t>(expected.size()));
  EXPECT_EQ(actual, expected) << first_difference(actual, expected, DType::f32, 4099);
  for (std::size_t g = 4 + expected.size(); g < out.size(); ++g) ASSERT_EQ(out[g], 0xcd) << "guard byte " << g;
}

}  // namespace
}  // namespace tpembed::testing
