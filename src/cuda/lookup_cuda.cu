// lookup_cuda(): dispatches the dtypes once and launches the gather kernel.
#include <atomic>

#include "cuda/instantiate.cuh"
#include "cuda/lookup_kernel.cuh"
#include "cuda/lookup_testing.hpp"

namespace tpembed {

namespace cuda_kernels {
TPEMBED_FLOAT_TABLES(TPEMBED_DECLARE_GATHER)
TPEMBED_QUANTIZED_TABLES(TPEMBED_DECLARE_GATHER)

namespace {
constexpr std::int64_t kGridLimit = (std::int64_t{1} << 31) - 1;
std::atomic<std::int64_t> launch_block_limit{kGridLimit};
}  // namespace

std::int64_t max_launch_blocks() { return launch_block_limit.load(std::memory_order_relaxed); }

void set_max_launch_blocks_for_testing(std::int64_t blocks) {
  launch_block_limit.store(blocks >= 1 && blocks <= kGridLimit ? blocks : kGridLimit, std::memory_order_relaxed);
}

int multiprocessor_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> counts[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return 132;
  int count = counts[device].load(std::memory_order_relaxed);
  if (count == 0) {
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) {
      count = 132;
    }
    counts[device].store(count, std::memory_order_relaxed);
  }
  return count;
}
}  // namespace cuda_kernels

namespace {

using cuda_kernels::launch_gather_impl;

template <typename Id, DType Table>
cudaError_t dispatch_out(const LookupParams& p, cudaStream_t stream) {
  switch (p.out_dtype) {
    case DType::f32: return launch_gather_impl<Id, Table, DType::f32>(p, stream);
    case DType::f16: return launch_gather_impl<Id, Table, DType::f16>(p, stream);
    case DType::bf16: return launch_gather_impl<Id, Table, DType::bf16>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename Id>
cudaError_t dispatch_table(const LookupParams& p, cudaStream_t stream) {
  switch (p.table_dtype) {
    case DType::f32: return dispatch_out<Id, DType::f32>(p, stream);
    case DType::f16: return dispatch_out<Id, DType::f16>(p, stream);
    case DType::bf16: return dispatch_out<Id, DType::bf16>(p, stream);
    case DType::i8: return dispatch_out<Id, DType::i8>(p, stream);
    case DType::fp8_e4m3: return dispatch_out<Id, DType::fp8_e4m3>(p, stream);
    case DType::i4: return dispatch_out<Id, DType::i4>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

int lookup_cuda(const LookupParams& params, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  if (params.num_ids == 0) {  // nothing to launch; the slots still get this lookup's count, 0
    return params.bad_id_slots != nullptr ? cudaMemsetAsync(params.bad_id_slots, 0, sizeof(unsigned long long), s)
                                          : cudaSuccess;
  }
  switch (params.id_dtype) {
    case DType::i32: return dispatch_table<std::int32_t>(params, s);
    case DType::i64: return dispatch_table<std::int64_t>(params, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace tpembed
