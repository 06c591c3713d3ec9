// The CUDA backward: the same bits as the CPU one (and the documented order) over the whole matrix,
// aligned and misaligned, with and without a caller's workspace, run after run; rows hot enough to
// span hundreds of tiles; a ParallelEmbedding on the GPU; and the backward captured in a CUDA graph
// and replayed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "captured_graph.hpp"
#include "device_tables.hpp"
#include "expect_error.hpp"
#include "gradient_cases.hpp"

namespace tpembed::testing {
namespace {

class GradientCuda : public ::testing::TestWithParam<GradientCase> {};

TEST_P(GradientCuda, SameBitsAsTheCpu) {
  const GradientProblem problem = case_problem(GetParam());
  const GradientResult cpu = run_backward(problem);
  ASSERT_EQ(bit_difference(cpu, documented_gradient(problem)), "");
  BackwardRun gpu;
  gpu.on_gpu = true;
  EXPECT_EQ(bit_difference(run_backward(problem, gpu), cpu), "") << "aligned, with a workspace";
  gpu.element_offset = 1;  // every tensor one element into its buffer: the one-column path
  EXPECT_EQ(bit_difference(run_backward(problem, gpu), cpu), "") << "misaligned";
  gpu.element_offset = 0;
  gpu.give_workspace = false;
  EXPECT_EQ(bit_difference(run_backward(problem, gpu), cpu), "") << "stream-ordered workspace";
}

INSTANTIATE_TEST_SUITE_P(Matrix, GradientCuda, ::testing::ValuesIn(gradient_cases()),
                         gradient_case_name);

// Zipf-like ids (exponent 1.1 over 5000 rows): the hottest rows cross hundreds of tiles.
std::vector<std::int64_t> skewed_ids(std::int64_t count, std::int64_t rows, std::uint64_t seed) {
  std::vector<double> cumulative(static_cast<std::size_t>(rows));
  double total = 0;
  for (std::int64_t r = 0; r < rows; ++r) cumulative[r] = total += 1.0 / std::pow(r + 1.0, 1.1);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0, total);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (auto& id : ids) {
    id = std::lower_bound(cumulative.begin(), cumulative.end(), uniform(rng)) - cumulative.begin();
  }
  return ids;
}

TEST(GradientCudaLarge, HotRowsRepeatedRunsSameBitsAsTheCpu) {
  for (DType grad : {DType::f32, DType::bf16}) {
    GradientProblem problem = random_gradient_problem(skewed_ids(40000, 5000, 1), 5000, 256, DType::bf16, grad, 2);
    for (bool accumulate : {false, true}) {
      problem.accumulate = accumulate;
      const GradientResult cpu = run_backward(problem);
      EXPECT_EQ(check_against_exact(problem, cpu), "");
      BackwardRun gpu;
      gpu.on_gpu = true;
      for (int repeat = 0; repeat < 10; ++repeat) {
        ASSERT_EQ(bit_difference(run_backward(problem, gpu), cpu), "")
            << dtype_name(grad) << (accumulate ? " accumulate" : " overwrite") << ", run " << repeat;
      }
    }
  }
}

TEST(GradientCudaLayer, OneRankLayerOnTheGpuMatchesTheCpuLayer) {
  const HostTable table = random_table(DType::bf16, 300, 64, 1);
  const std::vector<std::int64_t> ids = skewed_ids(3000, 300, 4);
  const GradientProblem p = random_gradient_problem(ids, 300, 64, DType::bf16, DType::f32, 8);
  EmbeddingShard host;
  host.weight = table.view();
  auto single = make_single_communicator();
  ParallelEmbedding cpu_layer(*single, host, {});
  ParallelEmbedding gpu_layer(*single, upload_shard(host), {});
  std::vector<std::uint8_t> id_bytes;
  const TensorView host_ids = ids_view(p, id_bytes);
  const TensorView host_grad_out(p.grad_out.bytes.data(), DType::bf16, {3000, 64});
  HostTable cpu_grad(DType::f32, 300, 64);
  cpu_layer.backward(host_ids, host_grad_out, cpu_grad.view());
  const DeviceCopy gpu_ids = upload_bytes(id_bytes, p.id_dtype, {3000}), gpu_out = upload(p.grad_out),
                   gpu_grad = upload_bytes(std::vector<std::uint8_t>(cpu_grad.bytes.size(), 0xcd), DType::f32, {300, 64});
  gpu_layer.backward(gpu_ids.view, gpu_out.view, gpu_grad.view);
  EXPECT_EQ(download(gpu_grad.view.data, cpu_grad.bytes.size()), cpu_grad.bytes);
  const GradientCounts counts = gpu_layer.last_gradient_counts();
  EXPECT_EQ(counts.accumulated, 3000u);
  EXPECT_EQ(counts.out_of_range + counts.unowned + counts.ignored, 0u);
}

TEST(GradientCudaGraph, CapturedBackwardReplaysToTheSameBits) {
  GradientProblem p = random_gradient_problem(skewed_ids(5000, 700, 6), 700, 96, DType::bf16, DType::f32, 3);
  p.accumulate = true;
  const std::vector<std::uint8_t> id_bytes = encode_ids(p.ids, p.id_dtype);
  const DeviceCopy ids = upload_bytes(id_bytes, p.id_dtype, {5000}), grad_out = upload(p.grad_out),
                   grad = upload(p.initial);
  const std::size_t bytes = gradient_workspace_bytes(Device::cuda(test_device()), 5000, 700, 0, 96);
  DeviceBuffer workspace(bytes, test_device()), counts(32, test_device());
  GradientOptions options = p.options();
  options.workspace = workspace.data();
  options.workspace_bytes = bytes;
  options.counts = static_cast<unsigned long long*>(counts.data());
  CapturedGraph graph([&](cudaStream_t stream) { embedding_backward(ids.view, grad_out.view, grad.view, options, stream); });
  // Each replay accumulates once more: after two, the gradient is the reference applied twice.
  graph.replay();
  graph.replay();
  GradientProblem twice = p;
  twice.initial = documented_gradient(p).grad;
  EXPECT_EQ(download(grad.view.data, p.initial.bytes.size()), documented_gradient(twice).grad.bytes);
  const std::vector<std::uint8_t> words = download(counts.data(), 32);
  unsigned long long accumulated = 0;
  std::memcpy(&accumulated, words.data(), 8);
  EXPECT_EQ(accumulated, 5000u);
}

// Overwriting forks the zeroing of unselected rows onto a side stream: eagerly and captured, the
// result is the CPU's, and the replay leaves nothing behind on the side stream.
TEST(GradientCudaGraph, CapturedOverwriteForksAndJoins) {
  const GradientProblem p = random_gradient_problem(skewed_ids(3000, 900, 7), 900, 64, DType::bf16, DType::f32, 5);
  const GradientResult cpu = run_backward(p);
  BackwardRun eager;
  eager.on_gpu = true;
  ASSERT_EQ(bit_difference(run_backward(p, eager), cpu), "");  // makes the side stream, outside a capture
  const std::vector<std::uint8_t> id_bytes = encode_ids(p.ids, p.id_dtype);
  const DeviceCopy ids = upload_bytes(id_bytes, p.id_dtype, {3000}), grad_out = upload(p.grad_out);
  const DeviceCopy grad = upload_bytes(std::vector<std::uint8_t>(p.initial.bytes.size(), 0xcd), DType::f32, {900, 64});
  const std::size_t bytes = gradient_workspace_bytes(Device::cuda(test_device()), 3000, 900, 0, 64);
  DeviceBuffer workspace(bytes, test_device());
  GradientOptions options = p.options();
  options.workspace = workspace.data();
  options.workspace_bytes = bytes;
  CapturedGraph graph([&](cudaStream_t stream) { embedding_backward(ids.view, grad_out.view, grad.view, options, stream); });
  graph.replay();
  EXPECT_EQ(download(grad.view.data, cpu.grad.bytes.size()), cpu.grad.bytes);
}

TEST(GradientCudaErrors, WorkspaceTooSmallOrMisalignedAndTensorsOffTheirElements) {
  const GradientProblem p = random_gradient_problem({1, 2, 3}, 10, 8, DType::f32, DType::f32, 1);
  const std::vector<std::uint8_t> id_bytes = encode_ids(p.ids, p.id_dtype);
  const DeviceCopy ids = upload_bytes(id_bytes, p.id_dtype, {3}), grad_out = upload(p.grad_out), grad = upload(p.initial);
  const std::size_t bytes = gradient_workspace_bytes(Device::cuda(test_device()), 3, 10, 0, 8);
  DeviceBuffer workspace(bytes + 256, test_device());
  GradientOptions options;
  options.workspace = workspace.data();
  options.workspace_bytes = bytes - 1;
  expect_error<InvalidArgumentError>([&] { embedding_backward(ids.view, grad_out.view, grad.view, options); },
                                     "but this backward needs");
  DeviceCopy odd = upload(p.initial, 2);  // f32 elements 2 bytes off their alignment
  options.workspace_bytes = bytes;
  for (const char* needle : {"grad_weight is at", "not a multiple of its 4-byte elements"}) {
    expect_error<InvalidArgumentError>([&] { embedding_backward(ids.view, grad_out.view, odd.view, options); }, needle);
  }
  options.workspace = static_cast<std::uint8_t*>(workspace.data()) + 8;
  expect_error<InvalidArgumentError>([&] { embedding_backward(ids.view, grad_out.view, grad.view, options); },
                                     "256-byte aligned");
}

}  // namespace
}  // namespace tpembed::testing
