// For test sources built twice, once with host tables and once with them on the GPU
// (TPEMBED_TEST_ON_GPU=1 on the GPU target): which of the two this binary is.
#pragma once

#ifndef TPEMBED_TEST_ON_GPU
#define TPEMBED_TEST_ON_GPU 0
#endif

namespace tpembed::testing {

/// True in the GPU build of a test source.
inline constexpr bool kOnGpu = TPEMBED_TEST_ON_GPU != 0;

}  // namespace tpembed::testing
