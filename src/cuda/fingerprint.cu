// The ids fingerprint on the device (definition in fingerprint.hpp): a few blocks, each writing one
// partial sum; the host adds them. Partials instead of atomics: nothing to reset before a launch.
#include <cuda_runtime.h>

#include "cuda/fingerprint.hpp"

namespace tpembed::fingerprint {

namespace {

constexpr int kThreads = 256;

template <typename Id>
__global__ void __launch_bounds__(kThreads)
    partial_sums_kernel(const Id* __restrict__ ids, std::int64_t count, std::uint64_t* partials) {
  std::uint64_t sum = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    sum += term(static_cast<std::int64_t>(ids[i]), i);
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  __shared__ std::uint64_t warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    std::uint64_t total = 0;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    partials[blockIdx.x] = total;
  }
}

}  // namespace

int partial_sums_cuda(const void* ids, bool wide, std::int64_t count, std::uint64_t* partials,
                      void* stream) {
  const int blocks = partial_count(count);
  auto* on = static_cast<cudaStream_t>(stream);
  if (wide) {
    partial_sums_kernel<<<blocks, kThreads, 0, on>>>(static_cast<const std::int64_t*>(ids), count,
                                                     partials);
  } else {
    partial_sums_kernel<<<blocks, kThreads, 0, on>>>(static_cast<const std::int32_t*>(ids), count,
                                                     partials);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpembed::fingerprint
