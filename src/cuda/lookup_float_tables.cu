// Kernels for f32, f16 and bf16 tables.
#include "cuda/instantiate.cuh"
#include "cuda/lookup_kernel.cuh"

namespace tpembed::cuda_kernels {
TPEMBED_FLOAT_TABLES(TPEMBED_INSTANTIATE_GATHER)
}  // namespace tpembed::cuda_kernels
