// main() for GPU test binaries: runs the tests when a CUDA device is visible; otherwise says so
// loudly and exits with 77, which CTest reports as "Skipped" (not as passed).
#include <gtest/gtest.h>

#include <cstdio>

#include "tpembed/cuda.hpp"

// Binaries of several GPUs set this higher; with fewer visible they skip the same way.
#ifndef TPEMBED_TEST_MIN_GPUS
#define TPEMBED_TEST_MIN_GPUS 1
#endif

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int devices = tpembed::cuda_device_count();
  if (devices < TPEMBED_TEST_MIN_GPUS) {
    std::printf("SKIPPED: %s needs %d CUDA device%s and %d %s visible; its GPU tests did not run.\n", argv[0],
                TPEMBED_TEST_MIN_GPUS, TPEMBED_TEST_MIN_GPUS == 1 ? "" : "s", devices, devices == 1 ? "is" : "are");
    return 77;
  }
  return RUN_ALL_TESTS();
}
