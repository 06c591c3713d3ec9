// FNV-1a, 64 bits: the fingerprints of tensors and tables (SafetensorsFile::fingerprint). Not
// cryptographic: it tells apart checkpoints that ranks opened by mistake, not hostile ones.
#pragma once

#include <cstdint>
#include <string>

namespace tpembed::io {

class Fnv1a {
 public:
  void add_bytes(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) state_ = (state_ ^ bytes[i]) * 0x100000001b3ull;
  }
  /// An integer as 8 little-endian bytes (the same value on every host).
  void add(std::uint64_t value) {
    for (int i = 0; i < 8; ++i) {
      const auto byte = static_cast<unsigned char>(value >> (8 * i));
      add_bytes(&byte, 1);
    }
  }
  void add(std::int64_t value) { add(static_cast<std::uint64_t>(value)); }
  /// A string with its length first, so that ("ab", "c") and ("a", "bc") differ.
  void add_text(const std::string& text) {
    add(static_cast<std::uint64_t>(text.size()));
    add_bytes(text.data(), text.size());
  }
  /// The hash, never 0 (0 means "no fingerprint" to EmbeddingConfig).
  std::uint64_t nonzero() const { return state_ == 0 ? 1 : state_; }

 private:
  std::uint64_t state_ = 0xcbf29ce484222325ull;
};

}  // namespace tpembed::io
