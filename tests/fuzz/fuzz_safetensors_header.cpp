// libFuzzer entry point: every input is a whole safetensors file (see exercise_safetensors.hpp).
#include <cstddef>
#include <cstdint>

#include "exercise_safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tpembed::fuzz::exercise_safetensors(data, size);
  return 0;
}
