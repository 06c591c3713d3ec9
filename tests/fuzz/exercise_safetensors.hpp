// What the fuzzer and the corpus regression test do with one input: parse it as a whole safetensors
// file and, when the header is accepted, read every tensor through SafetensorsFile.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tpembed::fuzz {

/// Parses `bytes` as a safetensors file. When the parser accepts it, checks the invariants the
/// readers rely on (every tensor's bytes inside the file and matching its shape; aborts if not),
/// then reads each tensor whole, by rows and by columns from a memfd copy of the input. Every
/// tpembed::Error is caught; any other exception escapes. Returns whether the header was accepted.
bool exercise_safetensors(const std::uint8_t* bytes, std::size_t size);

}  // namespace tpembed::fuzz
