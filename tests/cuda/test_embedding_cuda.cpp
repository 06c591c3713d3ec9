// The CUDA backend against the reference: the whole single-rank matrix of the CPU tests, with
// aligned and misaligned buffers (vector and scalar paths), poisoned outputs, guard bytes after
// them, strict mode, and capture in a CUDA graph replayed with new ids.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>

#include "captured_graph.hpp"
#include "device_tables.hpp"
#include "embedding_cases.hpp"
#include "expect_error.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

constexpr std::uint8_t kPoison = 0xcd;
constexpr std::uint8_t kGuard = 0xa5;
constexpr std::size_t kGuardBytes = 256;

class EmbeddingCuda : public ::testing::TestWithParam<Case> {};

TEST_P(EmbeddingCuda, MatchesReference) {
  const Case& c = GetParam();
  const CaseData data = case_data(c);
  const auto& expected = data.expected;
  const auto& config = data.config;
  const auto& ids = data.ids;
  const auto expected_bad = data.expected_bad;
  const auto& problem = data.problem;
  auto single = make_single_communicator();
  const DeviceCopy device_ids = upload_bytes(encode_ids(ids, c.id), c.id, c.ids_shape);
  std::vector<std::int64_t> out_shape = c.ids_shape;
  out_shape.push_back(c.hidden);

  // Offset 0: 16-byte aligned buffers (the vector path where widths allow); offset 4: every
  // buffer off 16-byte alignment, which must take the element-wise path and give the same bits.
  for (std::size_t offset : {std::size_t{0}, std::size_t{4}}) {
    SCOPED_TRACE("byte offset " + std::to_string(offset));
    ParallelEmbedding embedding(*single, upload_shard(whole_shard(problem), offset), config);
    DeviceBuffer out(expected.size() + offset + kGuardBytes, 0);
    auto* out_start = static_cast<std::uint8_t*>(out.data()) + offset;
    cuda_fill(out.data(), kPoison, offset + expected.size());
    cuda_fill(out_start + expected.size(), kGuard, kGuardBytes);

    embedding.forward(device_ids.view, TensorView(out_start, c.out, out_shape, Device::cuda(0)));
    cuda_synchronize();
    const auto actual = download(out_start, expected.size());
    EXPECT_EQ(actual, expected) << first_difference(actual, expected, c.out, c.hidden);
    const auto guard = download(out_start + expected.size(), kGuardBytes);
    for (std::size_t g = 0; g < kGuardBytes; ++g) {
      ASSERT_EQ(guard[g], kGuard) << "write past the end of the output at guard byte " << g;
    }
    EXPECT_EQ(embedding.last_bad_id_count(), expected_bad);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmbeddingCuda, ::testing::ValuesIn(dtype_matrix()), case_name);
INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingCuda, ::testing::ValuesIn(shape_sweep()), case_name);
INSTANTIATE_TEST_SUITE_P(IdShapes, EmbeddingCuda, ::testing::ValuesIn(id_shapes()), case_name);
INSTANTIATE_TEST_SUITE_P(Widths, EmbeddingCuda, ::testing::ValuesIn(vector_widths()), case_name);

/// Lookups large enough for the streaming kernels (the pipelined persistent grid, where threads
/// walk many rows; rows narrower than a warp, so that one warp spans several rows; rows that end
/// mid-step), with bad ids and padding rows among them.
std::vector<Case> large_lookups() {
  std::vector<Case> cases;
  for (DType table : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::fp8_e4m3, DType::i4}) {
    for (DType out : {DType::bf16, DType::f32}) {
      const std::optional<DType> scale = is_quantized(table) ? std::optional<DType>(DType::f32) : std::nullopt;
      cases.push_back({table, DType::i64, out, scale, 5003, 1024, 2, {4099}});
      cases.push_back({table, DType::i32, out, scale, 5003, 2112, 2, {3, 1367}});
      cases.push_back({table, DType::i64, out, scale, 1001, 64, 2, {40003}});
    }
  }
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Large, EmbeddingCuda, ::testing::ValuesIn(large_lookups()), case_name);

TEST(EmbeddingCudaOp, StrictModeRaisesTheCpuError) {
  const Problem problem = random_problem(DType::bf16, 10, 8, std::nullopt, 0, 7);
  const std::vector<std::int64_t> ids = {1, 2, 3, 4, 10, -5};
  EmbeddingConfig config;
  config.strict = true;
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, upload_shard(whole_shard(problem)), config);
  const DeviceCopy device_ids = upload_bytes(encode_ids(ids, DType::i64), DType::i64, {2, 3});
  DeviceBuffer out(6 * 8 * 2, 0);
  expect_out_of_range([&] { embedding.forward(device_ids.view, out.view(DType::bf16, {2, 3, 8})); }, 10, 4, 2,
                      "id 10 at position 4 (index [1, 1]) is out of range [0, 10)");
}

TEST(EmbeddingCudaOp, HostMemoryLabelledAsDeviceIsRefused) {
  const Problem problem = random_problem(DType::f32, 4, 4, std::nullopt, 0, 1);
  EmbeddingShard shard;
  shard.weight = TensorView(problem.table.bytes.data(), DType::f32, {4, 4}, Device::cuda(0));
  auto single = make_single_communicator();
  try {
    ParallelEmbedding embedding(*single, shard, {});
    FAIL() << "a host pointer labelled cuda:0 was accepted";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what()).find("is not device memory of that GPU"), std::string::npos) << error.what();
  }
}

TEST(EmbeddingCudaOp, IdsOnTheWrongDeviceAreRefused) {
  const Problem problem = random_problem(DType::f32, 4, 4, std::nullopt, 0, 1);
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, upload_shard(whole_shard(problem)), {});
  const std::int64_t host_ids[2] = {0, 1};
  DeviceBuffer out(2 * 4 * 4, 0);
  try {
    embedding.forward(TensorView(host_ids, DType::i64, {2}), out.view(DType::f32, {2, 4}));
    FAIL() << "host ids accepted for a GPU table";
  } catch (const InvalidArgumentError& error) {
    EXPECT_NE(std::string(error.what()).find("ids are on cpu but the table is on cuda:0"), std::string::npos)
        << error.what();
  }
}

// The memory helpers work on the device that holds the memory, whichever device is current (a rank
// that never called cudaSetDevice still has cuda:0 current), and leave the current device alone.
TEST(CudaHelpers, WorkOnTheMemorysDeviceNotTheCurrentOne) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "SKIPPED: needs 2 GPUs (" << cuda_device_count() << " visible)";
  cuda_set_device(0);
  std::vector<std::uint8_t> bytes(1 << 20);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7 + 3);
  DeviceBuffer first(bytes.size(), 1), second(bytes.size(), 1);
  first.copy_from_host(bytes.data(), bytes.size());
  cuda_fill(second.data(), 0x5a, second.size());
  std::vector<std::uint8_t> back(bytes.size());
  second.copy_to_host(back.data(), back.size());
  EXPECT_EQ(back, std::vector<std::uint8_t>(bytes.size(), 0x5a));
  cuda_copy(second.data(), first.data(), bytes.size());
  second.copy_to_host(back.data(), back.size());
  EXPECT_EQ(back, bytes);
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0);
  EXPECT_THROW(cuda_set_device(cuda_device_count()), InvalidArgumentError);
}

TEST(EmbeddingCudaGraph, CaptureOnceReplayWithNewIds) {
  const Problem problem = random_problem(DType::i8, 733, 256, DType::bf16, 2, 21);
  EmbeddingConfig config;
  config.out_dtype = DType::bf16;
  auto single = make_single_communicator();
  ParallelEmbedding embedding(*single, upload_shard(whole_shard(problem)), config);
  constexpr std::int64_t kTokens = 37;
  DeviceBuffer ids(kTokens * sizeof(std::int32_t), 0);
  DeviceBuffer out(kTokens * 256 * 2, 0);
  CapturedGraph graph([&](cudaStream_t stream) {
    embedding.forward(ids.view(DType::i32, {kTokens}), out.view(DType::bf16, {kTokens, 256}), stream);
  });

  for (int round = 0; round < 4; ++round) {
    auto id_list = interesting_ids(733, 2, {}, kTokens, 300 + round);
    id_list.resize(kTokens);
    const auto id_bytes = encode_ids(id_list, DType::i32);
    CUDA_OK(cudaMemcpyAsync(ids.data(), id_bytes.data(), id_bytes.size(), cudaMemcpyHostToDevice, graph.stream()));
    CUDA_OK(cudaMemsetAsync(out.data(), kPoison, out.size(), graph.stream()));
    graph.replay();
    const auto expected = reference_lookup(problem, id_list, DType::bf16);
    const auto actual = download(out.data(), expected.size());
    EXPECT_EQ(actual, expected) << "replay " << round << ": " << first_difference(actual, expected, DType::bf16, 256);
    unsigned long long bad = 0;
    cuda_copy(&bad, embedding.bad_id_counter(), sizeof bad);
    std::uint64_t expected_bad = 0;
    for (auto id : id_list) expected_bad += (id < 0 || id >= 735) ? 1 : 0;
    EXPECT_EQ(bad, expected_bad) << "replay " << round;
  }
}

TEST(EmbeddingCudaGraph, OneCallEmbeddingIsCapturable) {
  // The seed's one-call op with tp 1: one gather on the caller's stream, nothing allocated.
  const Problem problem = random_problem(DType::fp8_e4m3, 301, 128, DType::f16, 0, 33);
  const DeviceCopy table = upload(problem.table), scale = upload(*problem.scale);
  EmbeddingOptions options;
  options.per_token_scale = scale.view;
  options.out_dtype = DType::bf16;
  constexpr std::int64_t kTokens = 19;
  DeviceBuffer ids(kTokens * sizeof(std::int64_t), 0);
  DeviceBuffer out(kTokens * 128 * 2, 0);
  CapturedGraph graph([&](cudaStream_t stream) {
    embedding(ids.view(DType::i64, {kTokens}), table.view, out.view(DType::bf16, {kTokens, 128}), options, nullptr,
              stream);
  });
  for (int round = 0; round < 3; ++round) {
    auto id_list = interesting_ids(301, 0, {}, kTokens, 500 + round);
    id_list.resize(kTokens);
    CUDA_OK(cudaMemcpyAsync(ids.data(), id_list.data(), kTokens * sizeof(std::int64_t), cudaMemcpyHostToDevice,
                            graph.stream()));
    CUDA_OK(cudaMemsetAsync(out.data(), kPoison, out.size(), graph.stream()));
    graph.replay();
    const auto expected = reference_lookup(problem, id_list, DType::bf16);
    const auto actual = download(out.data(), expected.size());
    EXPECT_EQ(actual, expected) << "replay " << round << ": " << first_difference(actual, expected, DType::bf16, 128);
  }
}

}  // namespace
}  // namespace tpembed::testing
