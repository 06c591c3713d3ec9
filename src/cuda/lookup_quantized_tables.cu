// Kernels for int8, fp8 e4m3 and int4 tables.
#include "cuda/instantiate.cuh"
#include "cuda/lookup_kernel.cuh"

namespace tpembed::cuda_kernels {
TPEMBED_QUANTIZED_TABLES(TPEMBED_INSTANTIATE_GATHER)
}  // namespace tpembed::cuda_kernels
