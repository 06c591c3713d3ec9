// Test helpers: a scratch directory, and safetensors files built byte by byte (independently of the
// writer under test), including malformed ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tpembed::testing {

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// The bytes of a safetensors file: 8-byte little-endian length of `header`, `header`, `data`.
std::string safetensors_bytes(const std::string& header, const std::string& data);

/// Writes `bytes` to `path` (replacing it).
void write_file(const std::string& path, const std::string& bytes);

/// Reads the whole file at `path`.
std::string read_file(const std::string& path);

/// `count` bytes from a fixed pseudo-random sequence seeded with `seed`.
std::vector<unsigned char> random_bytes(std::size_t count, std::uint32_t seed);

}  // namespace tpembed::testing
