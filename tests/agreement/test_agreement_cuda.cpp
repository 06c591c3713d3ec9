// The agreement's GPU parts on one GPU: the device fingerprint equals the host's for every size and
// id dtype (one block, several, the largest grid, repeated launches), a scale of the wrong length
// is refused for device tables as for host ones, and the fingerprint's cost on a 1-token forward
// (printed: the README quotes it).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "expect_error.hpp"
#include "op/agreement.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

template <typename Id>
std::vector<Id> random_ids(std::int64_t count, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<Id> ids(static_cast<std::size_t>(count));
  for (Id& id : ids) id = static_cast<Id>(static_cast<std::int64_t>(random() % 200000) - 100);
  return ids;
}

TEST(DeviceFingerprint, EqualsTheHostsForEverySize) {
  op::Workspace workspace;
  op::Place gpu(Device::cuda(0), nullptr);
  fingerprint::DeviceScratch* scratch = workspace.fingerprint_scratch(gpu);
  DeviceBuffer result(sizeof(std::uint64_t), 0);
  for (const std::int64_t count :
       std::vector<std::int64_t>{1, 5, 1024, 1025, 8192, 8193, 3 * 8192 + 7, 1 << 20}) {
    const auto narrow = random_ids<std::int32_t>(count, static_cast<std::uint64_t>(count));
    std::vector<std::int64_t> wide(narrow.begin(), narrow.end());
    const std::uint64_t expected = op::host_ids_fingerprint(wide.data(), DType::i64, count);
    ASSERT_EQ(expected, op::host_ids_fingerprint(narrow.data(), DType::i32, count));
    for (DType dtype : {DType::i32, DType::i64}) {
      const std::size_t bytes = static_cast<std::size_t>(count) * element_size(dtype);
      DeviceBuffer ids(bytes, 0);
      ids.copy_from_host(
          dtype == DType::i32 ? static_cast<const void*>(narrow.data()) : wide.data(), bytes);
      const TensorView view = ids.view(dtype, {count});
      // Through ids_fingerprint (host hash up to 1024 ids, the kernel above), and the kernel alone
      // (the NCCL path's), twice: the finished-block count must be back at zero after a launch.
      EXPECT_EQ(op::ids_fingerprint(view, gpu, workspace), expected)
          << count << " " << dtype_name(dtype);
      for (int launch = 0; launch < 2; ++launch) {
        ASSERT_EQ(
            0, fingerprint::fingerprint_cuda(ids.data(), dtype == DType::i64, count, scratch,
                                             static_cast<std::uint64_t*>(result.data()), nullptr));
        std::uint64_t got = 0;
        result.copy_to_host(&got, sizeof got);
        EXPECT_EQ(got, expected) << count << " " << dtype_name(dtype) << " launch " << launch;
      }
    }
  }
}

TEST(DeviceTables, AScaleOfTheWrongLengthIsAShapeError) {
  const Problem problem = random_problem(DType::i8, 8, 4, DType::f32, 0, 3);
  const HostTable short_scale = random_scales(DType::f32, 7, 1);
  EmbeddingShard host;
  host.weight = problem.table.view();
  host.scale = short_scale.view();
  const EmbeddingShard shard = copy_shard_to_device(host, 0);
  EmbeddingOptions options;
  options.out_dtype = DType::f32;
  options.per_token_scale = shard.scale;
  DeviceBuffer ids(3 * sizeof(std::int64_t), 0), out(3 * 4 * sizeof(float), 0);
  const std::string needle = "per_token_scale has 7 entries but the table has 8 rows";
  expect_error<ShapeError>(
      [&] {
        embedding(ids.view(DType::i64, {3}), shard.weight, out.view(DType::f32, {3, 4}), options);
      },
      needle);
  EmbeddingConfig config;
  config.out_dtype = DType::f32;
  expect_error<ShapeError>([&] { ParallelEmbedding(*make_single_communicator(), shard, config); },
                           needle);
}

// Median wall time of `step`, in microseconds.
template <typename Step>
double median_us(int repeats, const Step& step) {
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    times.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::nth_element(times.begin(), times.begin() + repeats / 2, times.end());
  return times[static_cast<std::size_t>(repeats / 2)];
}

// What the check adds to a 1-token forward: over NCCL, the kernel queued before the gather of the
// records (measured as launch + wait against the wait alone); over MPI, the 8-byte copy back.
TEST(DeviceFingerprint, CostOfOneToken) {
  op::Workspace workspace;
  op::Place gpu(Device::cuda(0), nullptr);
  fingerprint::DeviceScratch* scratch = workspace.fingerprint_scratch(gpu);
  DeviceBuffer ids(sizeof(std::int64_t), 0), result(sizeof(std::uint64_t), 0);
  const std::int64_t id = 42;
  ids.copy_from_host(&id, sizeof id);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const int repeats = 5000;
  const auto kernel_and_wait = [&] {
    fingerprint::fingerprint_cuda(ids.data(), true, 1, scratch,
                                  static_cast<std::uint64_t*>(result.data()), stream);
    cudaStreamSynchronize(stream);
  };
  const auto wait_only = [&] { cudaStreamSynchronize(stream); };
  op::Place on_stream(Device::cuda(0), stream);
  const TensorView view = ids.view(DType::i64, {1});
  const auto copy_back = [&] { op::ids_fingerprint(view, on_stream, workspace); };
  for (int warm = 0; warm < 100; ++warm) kernel_and_wait(), copy_back();
  const double with_kernel = median_us(repeats, kernel_and_wait),
               without = median_us(repeats, wait_only);
  const double copied = median_us(repeats, copy_back);
  std::printf(
      "ids fingerprint of 1 GPU id: the kernel adds %.2f us to a synchronised chain (%.2f us with "
      "it, "
      "%.2f us without; the NCCL path); copied back and hashed on the host: %.2f us (the MPI "
      "path)\n",
      with_kernel - without, with_kernel, without, copied);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace tpembed::testing
