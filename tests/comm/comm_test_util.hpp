// Small helpers for the communicator tests: typed stores into byte buffers, buffers with guard
// bytes, byte comparison, and a typed-error expectation.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
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

// ---- exact sums: contributions whose sum over ranks is exact in every summable dtype

// Multiples of 0.5 in [-4, 4]: a sum over up to 16 ranks is exact in f32, f16 and bf16, in any
// order.
inline float exact_float(int rank, std::int64_t i) {
  return static_cast<float>(((i * 5 + rank * 3) % 17) - 8) * 0.5f;
}
inline std::int32_t exact_i32(int rank, std::int64_t i) {
  return static_cast<std::int32_t>(rank * 100003 + i * 7 - 5000);
}
inline std::int64_t exact_i64(int rank, std::int64_t i) {
  return (std::int64_t{rank + 1} << 40) + i * 3 - 11;
}

// Rank `rank`'s contribution to element i of a sum, stored as `dtype` at `at`.
inline void put_contribution(DType dtype, int rank, std::int64_t i, std::uint8_t* at) {
  switch (dtype) {
    case DType::i32:
      store(exact_i32(rank, i), at);
      return;
    case DType::i64:
      store(exact_i64(rank, i), at);
      return;
    default:
      store_float(dtype, exact_float(rank, i), at);
      return;
  }
}

// The sum over ranks 0..size-1 of element i, stored as `dtype` at `at`.
inline void put_sum(DType dtype, int size, std::int64_t i, std::uint8_t* at) {
  std::int64_t integer = 0;
  float real = 0.0f;
  for (int rank = 0; rank < size; ++rank) {
    if (dtype == DType::i32) integer += exact_i32(rank, i);
    if (dtype == DType::i64) integer += exact_i64(rank, i);
    real += exact_float(rank, i);
  }
  switch (dtype) {
    case DType::i32:
      store(static_cast<std::int32_t>(integer), at);
      return;
    case DType::i64:
      store(integer, at);
      return;
    default:
      store_float(dtype, real, at);
      return;
  }
}

/// The dtypes a sum takes.
inline constexpr DType kSummable[] = {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64};

/// Pairs of finite f16/bf16 values from a fixed generator and the f32 sum of each pair rounded once
/// to the dtype: what a sum with two nonzero contributions (ranks 0 and 1) gives in any order.
struct NarrowPairs {
  std::vector<std::uint16_t> first, second, sum;
  /// Rank r's contribution: ranks 0 and 1 hold the pair, the others zeros.
  std::vector<std::uint16_t> contribution(int rank) const {
    if (rank == 0) return first;
    if (rank == 1) return second;
    return std::vector<std::uint16_t>(first.size(), 0);
  }
};

inline NarrowPairs narrow_pairs(DType dtype, std::int64_t count) {
  NarrowPairs pairs;
  std::uint32_t state = 12345;
  auto next_finite = [&] {
    for (;;) {
      state = state * 1664525u + 1013904223u;
      const auto bits = static_cast<std::uint16_t>(state >> 16);
      // No NaN (payloads may differ) and no -0 (-0 + +0 is +0, so the sum would depend on how
      // many ranks contribute zeros).
      if (!std::isnan(bits_to_float(dtype, bits)) && bits != 0x8000u) return bits;
    }
  };
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint16_t a = next_finite(), b = next_finite();
    pairs.first.push_back(a);
    pairs.second.push_back(b);
    const float sum = bits_to_float(dtype, a) + bits_to_float(dtype, b);
    pairs.sum.push_back(static_cast<std::uint16_t>(float_to_bits(dtype, sum)));
  }
  return pairs;
}

/// How many of `count` narrow sums differ from `expected` (NaN matching any NaN); the first few
/// are reported as failures.
inline std::int64_t count_wrong_sums(DType dtype, const std::uint16_t* got,
                                     const std::uint16_t* expected, std::int64_t count) {
  std::int64_t wrong = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    const bool ok = std::isnan(bits_to_float(dtype, expected[i]))
                        ? std::isnan(bits_to_float(dtype, got[i]))
                        : got[i] == expected[i];
    if (!ok && wrong++ < 5) {
      ADD_FAILURE() << "element " << i << ": got 0x" << std::hex << got[i] << ", want 0x"
                    << expected[i] << std::dec;
    }
  }
  return wrong;
}

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
