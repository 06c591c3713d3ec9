// Test support for GPU tests: CUDA_OK, and work captured once as a CUDA graph on a stream of its
// own, then replayed (header-only: only binaries built with the CUDA backend include it).
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <stdexcept>
#include <string>

/// Inside a gtest body: fails the test (and returns) when a CUDA runtime call does not succeed.
#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

namespace tpembed::testing {

class CapturedGraph {
 public:
  /// Creates a non-blocking stream on the current device; runs `queue_work(stream)` once eagerly
  /// when `warm_up` (as a caller warms up before capturing), then captures it into a graph.
  explicit CapturedGraph(const std::function<void(cudaStream_t)>& queue_work, bool warm_up = false) {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    if (warm_up) {
      queue_work(stream_);
      check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    queue_work(stream_);
    check(cudaStreamEndCapture(stream_, &graph_), "cudaStreamEndCapture");
    check(cudaGraphInstantiate(&exec_, graph_, 0), "cudaGraphInstantiate");
  }
  ~CapturedGraph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  cudaStream_t stream() const { return stream_; }
  /// Launches the graph on its stream and waits for it.
  void replay() {
    check(cudaGraphLaunch(exec_, stream_), "cudaGraphLaunch");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  static void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace tpembed::testing
