// Small helpers for the communicator tests: typed stores into byte buffers, buffers with guard
// bytes, byte comparison, and a typed-error expectation.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "tpembed/dtype.hpp"
#include "tpembed/error.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::comm_test {

/// Fill byte for outputs before a collective, so unwritten elements show.
constexpr std::uint8_t kSentinel = 0x5a;

template <typename T>
void store(T value, std::uint8_t* at) {
  std::memcpy(at, &value, sizeof value);
}

/// Stores the raw bits of one f32, f16 or bf16 element (low 16 bits for the narrow types).
inline void store_bits(DType dtype, std::uint32_t bits, std::uint8_t* at) {
  if (dtype == DType::f32) {
    store(bits, at);
  } else {
    store(static_cast<std::uint16_t>(bits), at);
  }
}

/// Reads the raw bits of one f32, f16 or bf16 element.
inline std::uint32_t load_bits(DType dtype, const std::uint8_t* at) {
  if (dtype == DType::f32) {
    std::uint32_t bits;
    std::memcpy(&bits, at, sizeof bits);
    return bits;
  }
  std::uint16_t bits;
  std::memcpy(&bits, at, sizeof bits);
  return bits;
}

/// Value of f32/f16/bf16 bits.
inline float bits_to_float(DType dtype, std::uint32_t bits) {
  switch (dtype) {
    case DType::f16:
      return f16_bits_to_f32(static_cast<std::uint16_t>(bits));
    case DType::bf16:
      return bf16_bits_to_f32(static_cast<std::uint16_t>(bits));
    default:
      return f32_from_bits(bits);
  }
}

/// f32 rounded to f32/f16/bf16 bits.
inline std::uint32_t float_to_bits(DType dtype, float value) {
  switch (dtype) {
    case DType::f16:
      return f32_to_f16_bits(value);
    case DType::bf16:
      return f32_to_bf16_bits(value);
    default:
      return f32_bits(value);
  }
}

inline void store_float(DType dtype, float value, std::uint8_t* at) {
  store_bits(dtype, float_to_bits(dtype, value), at);
}

/// Index of the first `unit`-byte unit where `a` and `b` differ, or -1 when they are equal.
inline std::int64_t first_difference(const std::uint8_t* a, const std::uint8_t* b,
                                     std::int64_t bytes, std::int64_t unit) {
  if (bytes == 0 || std::memcmp(a, b, static_cast<std::size_t>(bytes)) == 0) return -1;
  for (std::int64_t i = 0; i < bytes; ++i) {
    if (a[i] != b[i]) return i / unit;
  }
  return -1;
}

/// A byte buffer of `bytes` filled with `fill`, followed by guard bytes no call may touch.
class GuardedBuffer {
 public:
  GuardedBuffer(std::int64_t bytes, std::uint8_t fill)
      : bytes_(bytes), storage_(static_cast<std::size_t>(bytes + kGuardBytes), fill) {
    for (std::int64_t i = 0; i < kGuardBytes; ++i) storage_[bytes + i] = guard_byte(i);
  }
  std::uint8_t* data() { return storage_.data(); }
  bool guard_intact() const {
    for (std::int64_t i = 0; i < kGuardBytes; ++i) {
      if (storage_[bytes_ + i] != guard_byte(i)) return false;
    }
    return true;
  }

 private:
  static constexpr std::int64_t kGuardBytes = 64;
  static std::uint8_t guard_byte(std::int64_t i) { return static_cast<std::uint8_t>(0xa5 ^ i); }
  std::int64_t bytes_;
  std::vector<std::uint8_t> storage_;
};

inline std::string describe(DType dtype, std::int64_t count, bool in_place) {
  std::ostringstream text;
  text << dtype_name(dtype) << " x " << count << (in_place ? " in place" : " out of place");
  return text.str();
}

/// Expects `call` to throw exactly `ErrorType` (not a subclass or a sibling) with a message that
/// contains `fragment`.
template <typename ErrorType, typename Call>
void expect_error(Call&& call, const std::string& fragment) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected " << typeid(ErrorType).name() << " with \"" << fragment
                  << "\"";
  } catch (const std::exception& error) {
    EXPECT_TRUE(typeid(error) == typeid(ErrorType))
        << "threw " << typeid(error).name() << ": " << error.what();
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos)
        << "message \"" << error.what() << "\" lacks \"" << fragment << "\"";
  }
}

}  // namespace tpembed::comm_test
