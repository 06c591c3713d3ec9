// main() for GPU test binaries: runs the tests when a CUDA device is visible; otherwise says so
// loudly and exits with 77, which CTest reports as "Skipped" (not as passed).
#include <gtest/gtest.h>

#include <cstdio>

#include "tpembed/cuda.hpp"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (tpembed::cuda_device_count() == 0) {
    std::printf("SKIPPED: no CUDA device visible; %s did not run its GPU tests.\n", argv[0]);
    return 77;
  }
  return RUN_ALL_TESTS();
}
