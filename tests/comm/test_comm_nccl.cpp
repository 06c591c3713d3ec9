// The NCCL engine on one GPU: the conformance suite (one rank; host buffers are staged), device
// buffers on a stream and inside a captured CUDA graph, and set-up that cannot complete (a second
// rank that never joins) failing within the timeout instead of hanging.
#include <cuda_runtime.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "conformance.hpp"
#include "expect_error.hpp"
#include "tpembed/cuda.hpp"

namespace {
std::unique_ptr<tpembed::Communicator> one_rank_nccl() {
  return tpembed::make_nccl_communicator(tpembed::make_nccl_unique_id(), 0, 1, 0, {});
}
}  // namespace

TPEMBED_COMM_CONFORMANCE(Nccl, "nccl", one_rank_nccl);

namespace tpembed::testing {
namespace {

TEST(NcclCommunicator, DeviceBuffersOnAStreamAndInAGraph) {
  auto comm = one_rank_nccl();
  EXPECT_EQ(comm->engine(), "nccl");
  EXPECT_TRUE(comm->accepts_device_buffers());
  const std::vector<float> values = {1.5f, -0.0f, 3.25f, -7.0f, 0.5f};
  DeviceBuffer send(values.size() * 4, 0), recv(values.size() * 4, 0), gathered(values.size() * 4, 0);
  send.copy_from_host(values.data(), values.size() * 4);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  comm->all_reduce_sum(send.data(), recv.data(), 5, DType::f32, stream);
  comm->all_gather(send.data(), gathered.data(), 5, DType::f32, stream);
  std::vector<float> reduced(5), all(5);
  recv.copy_to_host(reduced.data(), 20);
  gathered.copy_to_host(all.data(), 20);
  EXPECT_EQ(0, std::memcmp(all.data(), values.data(), 20));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(reduced[i], values[i]) << i;

  // Captured: enqueued into the graph, run at replay.
  cuda_fill(recv.data(), 0, 20);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  comm->all_reduce_sum(send.data(), recv.data(), 5, DType::f32, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  recv.copy_to_host(reduced.data(), 20);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(reduced[i], values[i]) << i;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// reduce_scatter_sum and all_to_all_v on device buffers: out of place, in place, the reduce-scatter
// inside a captured graph, and the all-to-all refusing capture (its counts are planned on the
// host).
TEST(NcclCommunicator, ScatteredLayoutCollectivesOnDeviceBuffers) {
  auto comm = one_rank_nccl();
  const std::vector<float> values = {1.5f, -2.0f, 3.25f};
  DeviceBuffer send(12, 0), recv(12, 0);
  send.copy_from_host(values.data(), 12);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::vector<float> got(3);
  comm->reduce_scatter_sum(send.data(), recv.data(), {3}, DType::f32, stream);
  recv.copy_to_host(got.data(), 12);
  EXPECT_EQ(got, values);
  comm->reduce_scatter_sum(send.data(), send.data(), {3}, DType::f32, stream);
  send.copy_to_host(got.data(), 12);
  EXPECT_EQ(got, values) << "in place";
  cuda_fill(recv.data(), 0, 12);
  comm->all_to_all_v(send.data(), {12}, recv.data(), {12}, stream);
  recv.copy_to_host(got.data(), 12);
  EXPECT_EQ(got, values) << "all_to_all_v";

  cuda_fill(recv.data(), 0, 12);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  comm->reduce_scatter_sum(send.data(), recv.data(), {3}, DType::f32, stream);
  expect_error<UnsupportedError>(
      [&] { comm->all_to_all_v(send.data(), {12}, recv.data(), {12}, stream); },
      "all_to_all_v cannot be captured in a CUDA graph");
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  recv.copy_to_host(got.data(), 12);
  EXPECT_EQ(got, values) << "replayed";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(NcclCommunicator, ASecondRankThatNeverJoinsFailsWithinTheTimeout) {
  NcclOptions options;
  options.timeout_seconds = 3.0;
  const auto start = std::chrono::steady_clock::now();
  expect_error<CommunicatorError>([&] { make_nccl_communicator(make_nccl_unique_id(), 0, 2, 0, options); },
                                  "did not finish within 3 s");
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(waited, 30.0) << "the timeout did not bound the wait";
  EXPECT_GE(waited, 2.5);
}

TEST(NcclCommunicator, BadArgumentsAreRefused) {
  expect_error<InvalidArgumentError>([] { make_nccl_communicator(std::vector<std::uint8_t>(5), 0, 1, 0); },
                                     "the unique id has 5 bytes");
  expect_error<InvalidArgumentError>([] { make_nccl_communicator(make_nccl_unique_id(), 2, 2, 0); },
                                     "rank 2 is outside [0, 2)");
  expect_error<InvalidArgumentError>([] { make_nccl_communicator(make_nccl_unique_id(), 0, 1, 999); },
                                     "CUDA device 999 is not visible");
}

}  // namespace
}  // namespace tpembed::testing
