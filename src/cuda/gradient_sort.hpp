// The backward's one sort: (row, position) pairs by row, stably (CUB's LSD radix sort keeps the
// positions of a row in increasing order). Its own file, since CUB's sort is slow to compile.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace tpembed::cuda_kernels::gradient {

/// CUB's DeviceRadixSort::SortPairs over bits [0, end_bit) of the keys. With temp == null it only
/// sets temp_bytes, the scratch this sort needs.
cudaError_t sort_pairs(void* temp, std::size_t& temp_bytes, const std::uint32_t* keys_in, std::uint32_t* keys_out,
                       const std::uint32_t* values_in, std::uint32_t* values_out, int n, int end_bit,
                       cudaStream_t stream);

}  // namespace tpembed::cuda_kernels::gradient
