// A test hook of the CUDA lookup launcher (not installed): lookups of more rows than one launch's
// grid holds (2^31 - 1 blocks) take several launches; tests lower that limit to run the split on
// small lookups (tests/op/test_lookup_params.cpp as test_lookup_split_cuda).
#pragma once

#include <cstdint>

namespace tpembed::cuda_kernels {

/// Launches of at most `blocks` blocks along x from now on (process-wide); 0 restores the limit.
void set_max_launch_blocks_for_testing(std::int64_t blocks);

}  // namespace tpembed::cuda_kernels
