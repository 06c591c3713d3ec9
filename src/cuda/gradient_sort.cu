#include "cuda/gradient_sort.hpp"

#include <cub/device/device_radix_sort.cuh>

namespace tpembed::cuda_kernels::gradient {

cudaError_t sort_pairs(void* temp, std::size_t& temp_bytes, const std::uint32_t* keys_in, std::uint32_t* keys_out,
                       const std::uint32_t* values_in, std::uint32_t* values_out, int n, int end_bit,
                       cudaStream_t stream) {
  return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in, values_out, n, 0, end_bit,
                                         stream);
}

}  // namespace tpembed::cuda_kernels::gradient
