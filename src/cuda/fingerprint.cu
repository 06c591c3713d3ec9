// The ids fingerprint on the device (definition in fingerprint.hpp) in one launch: a few blocks
// each store a partial sum, and the last block to finish adds them in block order and stores the
// fingerprint. No atomics on the sum and no reset before a launch (the finished count wraps).
#include <cuda_runtime.h>

#include "cuda/fingerprint.hpp"

namespace tpembed::fingerprint {

namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kIdsPerBlock = 8192;

template <typename Id>
__global__ void __launch_bounds__(kThreads)
    fingerprint_kernel(const Id* __restrict__ ids, std::int64_t count, DeviceScratch* scratch,
                       std::uint64_t* fingerprint) {
  std::uint64_t sum = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    sum += term(static_cast<std::int64_t>(ids[i]), i);
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  __shared__ std::uint64_t warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x != 0) return;
  std::uint64_t block_sum = 0;
  for (int w = 0; w < kThreads / 32; ++w) block_sum += warp_sums[w];
  if (gridDim.x == 1) {
    *fingerprint = finish(block_sum, count);
    return;
  }
  volatile std::uint64_t* partials = scratch->partials;
  partials[blockIdx.x] = block_sum;
  __threadfence();  // this block's partial lands before it counts itself finished
  // atomicInc counts 0, 1, ..., gridDim.x - 1 and then wraps to 0: the last block leaves it zero.
  if (atomicInc(&scratch->finished_blocks, gridDim.x - 1) != gridDim.x - 1) return;
  __threadfence();
  std::uint64_t total = 0;
  for (unsigned int b = 0; b < gridDim.x; ++b) total += partials[b];
  *fingerprint = finish(total, count);
}

}  // namespace

int fingerprint_cuda(const void* ids, bool wide, std::int64_t count, DeviceScratch* scratch,
                     std::uint64_t* fingerprint, void* stream) {
  std::int64_t blocks = (count + kIdsPerBlock - 1) / kIdsPerBlock;
  blocks = blocks < 1 ? 1 : blocks > kMaxPartials ? kMaxPartials : blocks;
  auto* on = static_cast<cudaStream_t>(stream);
  const auto grid = static_cast<unsigned int>(blocks);
  if (wide) {
    fingerprint_kernel<<<grid, kThreads, 0, on>>>(static_cast<const std::int64_t*>(ids), count,
                                                  scratch, fingerprint);
  } else {
    fingerprint_kernel<<<grid, kThreads, 0, on>>>(static_cast<const std::int32_t*>(ids), count,
                                                  scratch, fingerprint);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tpembed::fingerprint
