// Bit-exact tests of the host conversions in tpembed/numeric.hpp.
//
// Every expected bit pattern below is written out by hand (hex literal, value in the comment); no
// expectation is computed with a function under test. The exhaustive sweeps at the end compare
// against a tiny independent reference decoder (std::ldexp of the fields) and against the
// round-to-nearest-even rule stated on bit parity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "tpembed/numeric.hpp"

namespace {

using tpembed::bf16_bits_to_f32;
using tpembed::f16_bits_to_f32;
using tpembed::f32_to_bf16_bits;
using tpembed::f32_to_f16_bits;
using tpembed::f32_to_fp8_e4m3_bits;
using tpembed::fp8_e4m3_bits_to_f32;
using tpembed::int4_at;

// Independent of tpembed::f32_bits / f32_from_bits (which are tested separately).
std::uint32_t bits_of(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float float_of(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

constexpr float kInf = std::numeric_limits<float>::infinity();

/// An f32 input (given by its bits, so every input is exact) and the expected narrow bits.
struct ToNarrow {
  std::uint32_t f32;
  std::uint32_t expected;
  const char* note;
};

/// Narrow bits and the expected f32 bits.
struct FromNarrow {
  std::uint32_t narrow;
  std::uint32_t f32;
  const char* note;
};

bool is_f16_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
bool is_bf16_nan(std::uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0; }
bool is_fp8_nan(std::uint8_t b) { return (b & 0x7fu) == 0x7fu; }

// Independent reference decoders: value = significand * 2^k, assembled with std::ldexp.
double ref_f16(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  const double magnitude = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000u) ? -magnitude : magnitude;
}

double ref_fp8(std::uint8_t b) {
  const int e = (b >> 3) & 0xf;
  const int m = b & 0x7;
  const double magnitude = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return (b & 0x80u) ? -magnitude : magnitude;
}

// ---- f32 bit helpers -------------------------------------------------------------------------

TEST(F32Bits, KnownPatterns) {
  EXPECT_EQ(tpembed::f32_bits(1.0f), 0x3f800000u);
  EXPECT_EQ(tpembed::f32_bits(-2.0f), 0xc0000000u);
  EXPECT_EQ(tpembed::f32_bits(-0.0f), 0x80000000u);
  EXPECT_EQ(tpembed::f32_bits(65504.0f), 0x477fe000u);
  EXPECT_EQ(tpembed::f32_from_bits(0x3f800000u), 1.0f);
  EXPECT_EQ(tpembed::f32_from_bits(0x43e00000u), 448.0f);
  EXPECT_EQ(tpembed::f32_from_bits(0x33800000u), 0x1p-24f);
  EXPECT_TRUE(std::isinf(tpembed::f32_from_bits(0x7f800000u)));
  EXPECT_TRUE(std::isnan(tpembed::f32_from_bits(0x7fc00000u)));
}

// The hand-derived f32 inputs used below, checked against the compiler's own literal parsing.
TEST(F32Bits, HandDerivedInputsMatchLiterals) {
  EXPECT_EQ(bits_of(65504.0f), 0x477fe000u);
  EXPECT_EQ(bits_of(65520.0f), 0x477ff000u);
  EXPECT_EQ(bits_of(0x1.ffdffep15f), 0x477fefffu);  // largest f32 below 65520
  EXPECT_EQ(bits_of(0x1p-24f), 0x33800000u);
  EXPECT_EQ(bits_of(0x1p-25f), 0x33000000u);
  EXPECT_EQ(bits_of(0x1.8p-25f), 0x33400000u);
  EXPECT_EQ(bits_of(0x3p-25f), 0x33c00000u);
  EXPECT_EQ(bits_of(0x5p-25f), 0x34200000u);
  EXPECT_EQ(bits_of(1023.0f * 0x1p-24f), 0x387fc000u);
  EXPECT_EQ(bits_of(2047.0f * 0x1p-25f), 0x387fe000u);
  EXPECT_EQ(bits_of(2045.0f * 0x1p-25f), 0x387fa000u);
  EXPECT_EQ(bits_of(0x1p-14f), 0x38800000u);
  EXPECT_EQ(bits_of(1.0f + 0x1p-11f), 0x3f801000u);
  EXPECT_EQ(bits_of(1.0f + 0x3p-11f), 0x3f803000u);
  EXPECT_EQ(bits_of(2049.0f), 0x45001000u);
  EXPECT_EQ(bits_of(2051.0f), 0x45003000u);
  EXPECT_EQ(bits_of(0.1f), 0x3dcccccdu);
  EXPECT_EQ(bits_of(448.0f), 0x43e00000u);
  EXPECT_EQ(bits_of(464.0f), 0x43e80000u);
  EXPECT_EQ(bits_of(465.0f), 0x43e88000u);
  EXPECT_EQ(bits_of(480.0f), 0x43f00000u);
  EXPECT_EQ(bits_of(0x1p-9f), 0x3b000000u);
  EXPECT_EQ(bits_of(0x7p-9f), 0x3c600000u);
  EXPECT_EQ(bits_of(0x1p-6f), 0x3c800000u);
  EXPECT_EQ(bits_of(0x1p-10f), 0x3a800000u);
  EXPECT_EQ(bits_of(0x3p-10f), 0x3b400000u);
  EXPECT_EQ(bits_of(0x5p-10f), 0x3ba00000u);
  EXPECT_EQ(bits_of(0xfp-10f), 0x3c700000u);
  EXPECT_EQ(bits_of(0xdp-10f), 0x3c500000u);
  EXPECT_EQ(bits_of(1.0625f), 0x3f880000u);
  EXPECT_EQ(bits_of(1.1875f), 0x3f980000u);
  EXPECT_EQ(bits_of(17.0f), 0x41880000u);
  EXPECT_EQ(bits_of(19.0f), 0x41980000u);
  EXPECT_EQ(bits_of(248.0f), 0x43780000u);
  EXPECT_EQ(bits_of(-3.0f), 0xc0400000u);
  EXPECT_EQ(bits_of(std::numeric_limits<float>::max()), 0x7f7fffffu);
}

// ---- f16 -------------------------------------------------------------------------------------

TEST(F16, FromF32HandComputed) {
  const ToNarrow cases[] = {
      {0x00000000u, 0x0000u, "+0"},
      {0x80000000u, 0x8000u, "-0"},
      {0x3f800000u, 0x3c00u, "1"},
      {0xbf800000u, 0xbc00u, "-1"},
      {0xc0000000u, 0xc000u, "-2"},
      {0xc0400000u, 0xc200u, "-3"},
      {0x3dcccccdu, 0x2e66u, "0.1f -> 0.0999755859375"},
      {0x45000000u, 0x6800u, "2048"},
      {0x45001000u, 0x6800u, "2049: tie between 2048 and 2050, to even 2048"},
      {0x45003000u, 0x6802u, "2051: tie between 2050 and 2052, to even 2052"},
      {0x3f801000u, 0x3c00u, "1 + 2^-11: tie, to even 1"},
      {0x3f801001u, 0x3c01u, "1 + 2^-11 + 2^-23: just above the tie"},
      {0x3f800fffu, 0x3c00u, "1 + 2^-11 - 2^-23: just below the tie"},
      {0x3f802000u, 0x3c01u, "1 + 2^-10 (exact)"},
      {0x3f803000u, 0x3c02u, "1 + 3*2^-11: tie, to even 1 + 2^-9"},
      // Largest finite and overflow.
      {0x477fe000u, 0x7bffu, "65504, largest finite"},
      {0xc77fe000u, 0xfbffu, "-65504"},
      {0x477fefffu, 0x7bffu, "65519.996, largest f32 below 65520"},
      {0x477ff000u, 0x7c00u, "65520: tie between 65504 and 65536, to even -> Inf"},
      {0xc77ff000u, 0xfc00u, "-65520 -> -Inf"},
      {0x47800000u, 0x7c00u, "65536 -> Inf"},
      {0x7f7fffffu, 0x7c00u, "FLT_MAX -> Inf"},
      {0xff7fffffu, 0xfc00u, "-FLT_MAX -> -Inf"},
      {0x7f800000u, 0x7c00u, "+Inf"},
      {0xff800000u, 0xfc00u, "-Inf"},
      // Subnormals and underflow.
      {0x33800000u, 0x0001u, "2^-24, smallest subnormal"},
      {0xb3800000u, 0x8001u, "-2^-24"},
      {0x34000000u, 0x0002u, "2^-23"},
      {0x33000000u, 0x0000u, "2^-25: tie between 0 and 2^-24, to even 0"},
      {0xb3000000u, 0x8000u, "-2^-25 -> -0"},
      {0x33000001u, 0x0001u, "just above 2^-25"},
      {0x32ffffffu, 0x0000u, "just below 2^-25"},
      {0x33400000u, 0x0001u, "1.5*2^-25"},
      {0x33c00000u, 0x0002u, "3*2^-25 = 1.5 units: tie, to even 2"},
      {0x34200000u, 0x0002u, "5*2^-25 = 2.5 units: tie, to even 2"},
      {0x32000000u, 0x0000u, "2^-27"},
      {0x00000001u, 0x0000u, "smallest f32 subnormal"},
      {0x80000001u, 0x8000u, "-smallest f32 subnormal -> -0"},
      {0x38000000u, 0x0200u, "2^-15"},
      {0x387fc000u, 0x03ffu, "1023*2^-24, largest subnormal"},
      {0x387fa000u, 0x03feu, "1022.5 units: tie, to even 1022"},
      {0x387fe000u, 0x0400u, "1023.5 units: tie, to even 1024 = smallest normal"},
      {0x387fdfffu, 0x03ffu, "just below 1023.5 units"},
      {0x38800000u, 0x0400u, "2^-14, smallest normal"},
      {0xb8800000u, 0x8400u, "-2^-14"},
      {0x38801000u, 0x0400u, "2^-14 * (1 + 2^-11): tie, to even"},
      {0x38803000u, 0x0402u, "2^-14 * (1 + 3*2^-11): tie, to even"},
  };
  for (const ToNarrow& c : cases) {
    EXPECT_EQ(f32_to_f16_bits(float_of(c.f32)), c.expected)
        << c.note << " (f32 bits 0x" << std::hex << c.f32 << ")";
  }
}

TEST(F16, FromF32NaN) {
  // NaN stays NaN, quieted, sign and the payload's top bits kept.
  const std::uint16_t pos = f32_to_f16_bits(float_of(0x7fc00000u));
  EXPECT_TRUE(is_f16_nan(pos));
  EXPECT_EQ(pos, 0x7e00u);
  const std::uint16_t neg = f32_to_f16_bits(float_of(0xffc00000u));
  EXPECT_TRUE(is_f16_nan(neg));
  EXPECT_EQ(neg, 0xfe00u);
  // Payload only in the low 13 bits: must not become Inf.
  const std::uint16_t low = f32_to_f16_bits(float_of(0x7f800001u));
  EXPECT_TRUE(is_f16_nan(low)) << std::hex << low;
  const std::uint16_t low_neg = f32_to_f16_bits(float_of(0xff800001u));
  EXPECT_TRUE(is_f16_nan(low_neg)) << std::hex << low_neg;
  EXPECT_NE(low_neg & 0x8000u, 0u);
  EXPECT_TRUE(is_f16_nan(f32_to_f16_bits(float_of(0x7fffffffu))));
  EXPECT_EQ(f32_to_f16_bits(float_of(0x7fa02000u)), 0x7f01u);  // signalling NaN, payload 0x101
  EXPECT_TRUE(is_f16_nan(f32_to_f16_bits(std::numeric_limits<float>::quiet_NaN())));
}

TEST(F16, ToF32HandComputed) {
  const FromNarrow cases[] = {
      {0x0000u, 0x00000000u, "+0"},
      {0x8000u, 0x80000000u, "-0"},
      {0x3c00u, 0x3f800000u, "1"},
      {0xbc00u, 0xbf800000u, "-1"},
      {0xc000u, 0xc0000000u, "-2"},
      {0x3c01u, 0x3f802000u, "1 + 2^-10"},
      {0x3c02u, 0x3f804000u, "1 + 2^-9"},
      {0x2e66u, 0x3dccc000u, "0.0999755859375"},
      {0x3555u, 0x3eaaa000u, "0.333251953125"},
      {0x6800u, 0x45000000u, "2048"},
      {0x6802u, 0x45004000u, "2052"},
      {0x7bffu, 0x477fe000u, "65504"},
      {0xfbffu, 0xc77fe000u, "-65504"},
      {0x7c00u, 0x7f800000u, "+Inf"},
      {0xfc00u, 0xff800000u, "-Inf"},
      {0x0001u, 0x33800000u, "2^-24"},
      {0x8001u, 0xb3800000u, "-2^-24"},
      {0x0002u, 0x34000000u, "2^-23"},
      {0x0003u, 0x34400000u, "3*2^-24"},
      {0x0200u, 0x38000000u, "2^-15"},
      {0x03feu, 0x387f8000u, "1022*2^-24"},
      {0x03ffu, 0x387fc000u, "1023*2^-24, largest subnormal"},
      {0x83ffu, 0xb87fc000u, "-1023*2^-24"},
      {0x0400u, 0x38800000u, "2^-14, smallest normal"},
      {0x0402u, 0x38804000u, "2^-14 * (1 + 2^-9)"},
      // NaNs: exponent all ones, payload shifted into the top of the f32 mantissa.
      {0x7e00u, 0x7fc00000u, "quiet NaN"},
      {0xfe00u, 0xffc00000u, "-quiet NaN"},
      {0x7c01u, 0x7f802000u, "signalling NaN, payload 1"},
      {0x7fffu, 0x7fffe000u, "NaN, all payload bits"},
  };
  for (const FromNarrow& c : cases) {
    EXPECT_EQ(bits_of(f16_bits_to_f32(static_cast<std::uint16_t>(c.narrow))), c.f32)
        << c.note << " (f16 bits 0x" << std::hex << c.narrow << ")";
  }
  EXPECT_TRUE(std::isnan(f16_bits_to_f32(0x7c01u)));
  EXPECT_TRUE(std::signbit(f16_bits_to_f32(0xfe00u)));
}

TEST(F16, ExhaustiveDecodeMatchesReference) {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto half = static_cast<std::uint16_t>(h);
    const float value = f16_bits_to_f32(half);
    if (is_f16_nan(half)) {
      EXPECT_TRUE(std::isnan(value)) << std::hex << h;
    } else if ((h & 0x7fffu) == 0x7c00u) {
      EXPECT_EQ(value, (h & 0x8000u) ? -kInf : kInf) << std::hex << h;
    } else {
      EXPECT_EQ(static_cast<double>(value), ref_f16(half)) << std::hex << h;
    }
    EXPECT_EQ(std::signbit(value), (h & 0x8000u) != 0) << std::hex << h;
  }
}

TEST(F16, ExhaustiveRoundTrip) {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto half = static_cast<std::uint16_t>(h);
    const std::uint16_t back = f32_to_f16_bits(f16_bits_to_f32(half));
    if (is_f16_nan(half)) {
      EXPECT_TRUE(is_f16_nan(back)) << std::hex << h;
      EXPECT_EQ(back, h | 0x0200u) << std::hex << h;  // quieted, sign and payload kept
    } else {
      EXPECT_EQ(back, h) << std::hex << h;
    }
  }
}

// Every rounding edge: for each pair of adjacent positive finite f16 values (plus the virtual
// neighbour 65536 above 65504), the exact midpoint rounds to the one with an even last bit, and
// the neighbouring f32 values on either side round down / up.
TEST(F16, ExhaustiveMidpointsRoundToEven) {
  for (std::uint32_t h = 0; h <= 0x7bffu; ++h) {
    const double lo = ref_f16(static_cast<std::uint16_t>(h));
    const double hi = h == 0x7bffu ? 65536.0 : ref_f16(static_cast<std::uint16_t>(h + 1));
    const auto mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2) << "midpoint not exact in f32";
    const std::uint32_t even = (h & 1u) ? h + 1 : h;
    for (const std::uint32_t sign : {0u, 0x8000u}) {
      const float s = sign ? -1.0f : 1.0f;
      EXPECT_EQ(f32_to_f16_bits(s * mid), sign | even) << std::hex << h;
      EXPECT_EQ(f32_to_f16_bits(s * std::nextafter(mid, 0.0f)), sign | h) << std::hex << h;
      EXPECT_EQ(f32_to_f16_bits(s * std::nextafter(mid, kInf)), sign | (h + 1)) << std::hex << h;
    }
  }
}

// ---- bf16 ------------------------------------------------------------------------------------

TEST(BF16, FromF32HandComputed) {
  const ToNarrow cases[] = {
      {0x00000000u, 0x0000u, "+0"},
      {0x80000000u, 0x8000u, "-0"},
      {0x3f800000u, 0x3f80u, "1"},
      {0xbf800000u, 0xbf80u, "-1"},
      {0x3dcccccdu, 0x3dcdu, "0.1f: low half 0xcccd > 0x8000, rounds up"},
      {0x40490fdbu, 0x4049u, "pi: low half 0x0fdb, rounds down"},
      // Ties and their neighbours.
      {0x3f808000u, 0x3f80u, "1 + 2^-8: tie, to even 0x3f80"},
      {0x3f818000u, 0x3f82u, "1 + 3*2^-8: tie, to even 0x3f82"},
      {0x3f808001u, 0x3f81u, "just above the tie"},
      {0x3f807fffu, 0x3f80u, "just below the tie"},
      {0xbf818000u, 0xbf82u, "-(1 + 3*2^-8)"},
      // Largest finite and overflow.
      {0x7f7f0000u, 0x7f7fu, "3.3895314e38, largest finite bf16"},
      {0xff7f0000u, 0xff7fu, "-largest finite"},
      {0x7f7f7fffu, 0x7f7fu, "just below the tie above the largest finite"},
      {0x7f7e8000u, 0x7f7eu, "tie below the largest finite, to even 0x7f7e"},
      {0x7f7f8000u, 0x7f80u, "tie above the largest finite: to even -> Inf"},
      {0xff7f8000u, 0xff80u, "negative of the above -> -Inf"},
      {0x7f7fffffu, 0x7f80u, "FLT_MAX -> Inf"},
      {0xff7fffffu, 0xff80u, "-FLT_MAX -> -Inf"},
      {0x7f800000u, 0x7f80u, "+Inf"},
      {0xff800000u, 0xff80u, "-Inf"},
      // Subnormals.
      {0x00010000u, 0x0001u, "2^-133, smallest bf16 subnormal"},
      {0x80010000u, 0x8001u, "-2^-133"},
      {0x00008000u, 0x0000u, "2^-134: tie, to even 0"},
      {0x80008000u, 0x8000u, "-2^-134 -> -0"},
      {0x00008001u, 0x0001u, "just above 2^-134"},
      {0x00000001u, 0x0000u, "smallest f32 subnormal"},
      {0x00018000u, 0x0002u, "1.5 units: tie, to even 2"},
      {0x00028000u, 0x0002u, "2.5 units: tie, to even 2"},
      {0x007f0000u, 0x007fu, "largest bf16 subnormal"},
      {0x007f8000u, 0x0080u, "tie above it: to even = smallest normal 2^-126"},
      {0x00800000u, 0x0080u, "2^-126, smallest normal"},
  };
  for (const ToNarrow& c : cases) {
    EXPECT_EQ(f32_to_bf16_bits(float_of(c.f32)), c.expected)
        << c.note << " (f32 bits 0x" << std::hex << c.f32 << ")";
  }
}

TEST(BF16, FromF32NaN) {
  EXPECT_EQ(f32_to_bf16_bits(float_of(0x7fc00000u)), 0x7fc0u);
  EXPECT_EQ(f32_to_bf16_bits(float_of(0xffc00000u)), 0xffc0u);
  // Payload only in the low 16 bits: truncating would give Inf (0x7f80); it must stay NaN.
  const std::uint16_t low = f32_to_bf16_bits(float_of(0x7f800001u));
  EXPECT_TRUE(is_bf16_nan(low)) << std::hex << low;
  EXPECT_NE(low, 0x7f80u);
  const std::uint16_t low_neg = f32_to_bf16_bits(float_of(0xff800001u));
  EXPECT_TRUE(is_bf16_nan(low_neg)) << std::hex << low_neg;
  EXPECT_NE(low_neg & 0x8000u, 0u);
  const std::uint16_t low_ffff = f32_to_bf16_bits(float_of(0x7f80ffffu));
  EXPECT_TRUE(is_bf16_nan(low_ffff)) << std::hex << low_ffff;
  // All-ones: rounding up would carry out of the word; must stay NaN.
  EXPECT_TRUE(is_bf16_nan(f32_to_bf16_bits(float_of(0x7fffffffu))));
  EXPECT_TRUE(is_bf16_nan(f32_to_bf16_bits(float_of(0xffffffffu))));
  EXPECT_TRUE(is_bf16_nan(f32_to_bf16_bits(float_of(0x7fbfffffu))));
}

TEST(BF16, ToF32HandComputed) {
  const FromNarrow cases[] = {
      {0x0000u, 0x00000000u, "+0"},
      {0x8000u, 0x80000000u, "-0"},
      {0x3f80u, 0x3f800000u, "1"},
      {0xbf80u, 0xbf800000u, "-1"},
      {0xc049u, 0xc0490000u, "-3.140625"},
      {0x7f7fu, 0x7f7f0000u, "largest finite"},
      {0x0001u, 0x00010000u, "smallest subnormal"},
      {0x007fu, 0x007f0000u, "largest subnormal"},
      {0x0080u, 0x00800000u, "smallest normal"},
      {0x7f80u, 0x7f800000u, "+Inf"},
      {0xff80u, 0xff800000u, "-Inf"},
      {0x7fc0u, 0x7fc00000u, "quiet NaN"},
      {0x7f81u, 0x7f810000u, "signalling NaN"},
  };
  for (const FromNarrow& c : cases) {
    EXPECT_EQ(bits_of(bf16_bits_to_f32(static_cast<std::uint16_t>(c.narrow))), c.f32)
        << c.note << " (bf16 bits 0x" << std::hex << c.narrow << ")";
  }
}

TEST(BF16, ExhaustiveRoundTrip) {
  for (std::uint32_t b = 0; b <= 0xffffu; ++b) {
    const auto bf = static_cast<std::uint16_t>(b);
    const float value = bf16_bits_to_f32(bf);
    EXPECT_EQ(bits_of(value), b << 16) << std::hex << b;  // decode is a shift
    const std::uint16_t back = f32_to_bf16_bits(value);
    if (is_bf16_nan(bf)) {
      EXPECT_TRUE(is_bf16_nan(back)) << std::hex << b;
      EXPECT_EQ(back, b | 0x0040u) << std::hex << b;  // quieted, sign and payload kept
    } else {
      EXPECT_EQ(back, b) << std::hex << b;
    }
  }
}

// Every rounding edge: the f32 halfway between bf16 patterns b and b+1 has bits (b << 16) | 0x8000.
TEST(BF16, ExhaustiveMidpointsRoundToEven) {
  for (std::uint32_t b = 0; b <= 0x7f7fu; ++b) {
    const std::uint32_t even = (b & 1u) ? b + 1 : b;
    for (const std::uint32_t sign : {0u, 0x8000u}) {
      const std::uint32_t mid = ((sign | b) << 16) | 0x8000u;
      EXPECT_EQ(f32_to_bf16_bits(float_of(mid)), sign | even) << std::hex << b;
      EXPECT_EQ(f32_to_bf16_bits(float_of(mid - 1)), sign | b) << std::hex << b;
      EXPECT_EQ(f32_to_bf16_bits(float_of(mid + 1)), sign | (b + 1)) << std::hex << b;
    }
  }
}

// ---- fp8 e4m3fn ------------------------------------------------------------------------------

TEST(FP8E4M3, FromF32HandComputed) {
  const ToNarrow cases[] = {
      {0x00000000u, 0x00u, "+0"},
      {0x80000000u, 0x80u, "-0"},
      {0x3f800000u, 0x38u, "1"},
      {0xbf800000u, 0xb8u, "-1"},
      {0xc0400000u, 0xc4u, "-3"},
      {0x3dcccccdu, 0x1du, "0.1f -> 0.1015625 (1.625 * 2^-4)"},
      // Mid-range ties (ulp 2^-3 at 1, 2 at 16, 16 at 128).
      {0x3f880000u, 0x38u, "1.0625: tie between 1 and 1.125, to even 1"},
      {0x3f880001u, 0x39u, "just above 1.0625 -> 1.125"},
      {0x3f87ffffu, 0x38u, "just below 1.0625 -> 1"},
      {0x3f980000u, 0x3au, "1.1875: tie between 1.125 and 1.25, to even 1.25"},
      {0x41880000u, 0x58u, "17: tie between 16 and 18, to even 16"},
      {0x41980000u, 0x5au, "19: tie between 18 and 20, to even 20"},
      {0xc1980000u, 0xdau, "-19 -> -20"},
      {0x43780000u, 0x78u, "248: tie between 240 and 256, to even 256"},
      {0x43700000u, 0x77u, "240"},
      // Largest finite and overflow: no Inf, overflow is NaN (0x7f / 0xff), as in PyTorch.
      {0x43e00000u, 0x7eu, "448, largest finite"},
      {0xc3e00000u, 0xfeu, "-448"},
      {0x43d00000u, 0x7du, "416"},
      {0x43e80000u, 0x7eu, "464: tie between 448 and (480), to even 448"},
      {0xc3e80000u, 0xfeu, "-464 -> -448"},
      {0x43e7ffffu, 0x7eu, "just below 464"},
      {0x43e80001u, 0x7fu, "just above 464 -> NaN"},
      {0x43e88000u, 0x7fu, "465 -> NaN"},
      {0xc3e88000u, 0xffu, "-465 -> -NaN"},
      {0x43f00000u, 0x7fu, "480 -> NaN"},
      {0xc3f00000u, 0xffu, "-480 -> -NaN"},
      {0x43fa0000u, 0x7fu, "500 -> NaN"},
      {0x7f7fffffu, 0x7fu, "FLT_MAX -> NaN"},
      {0x7f800000u, 0x7fu, "+Inf -> NaN"},
      {0xff800000u, 0xffu, "-Inf -> -NaN"},
      {0x7fc00000u, 0x7fu, "NaN"},
      {0xffc00000u, 0xffu, "-NaN"},
      {0x7f800001u, 0x7fu, "NaN with low payload"},
      {0x7fffffffu, 0x7fu, "NaN all ones"},
      // Subnormals (multiples of 2^-9) and underflow.
      {0x3b000000u, 0x01u, "2^-9, smallest subnormal"},
      {0xbb000000u, 0x81u, "-2^-9"},
      {0x3b800000u, 0x02u, "2^-8"},
      {0x3c600000u, 0x07u, "7*2^-9, largest subnormal"},
      {0x3c800000u, 0x08u, "2^-6, smallest normal"},
      {0xbc800000u, 0x88u, "-2^-6"},
      {0x3a800000u, 0x00u, "2^-10: tie between 0 and 2^-9, to even 0"},
      {0xba800000u, 0x80u, "-2^-10 -> -0"},
      {0x3a800001u, 0x01u, "just above 2^-10"},
      {0x3a7fffffu, 0x00u, "just below 2^-10"},
      {0x3a000000u, 0x00u, "2^-11"},
      {0x00000001u, 0x00u, "smallest f32 subnormal"},
      {0x3b400000u, 0x02u, "3*2^-10 = 1.5 units: tie, to even 2"},
      {0x3ba00000u, 0x02u, "5*2^-10 = 2.5 units: tie, to even 2"},
      {0x3c500000u, 0x06u, "13*2^-10 = 6.5 units: tie, to even 6"},
      {0x3c700000u, 0x08u, "15*2^-10 = 7.5 units: tie, to even 8 = smallest normal"},
      {0x3c6fffffu, 0x07u, "just below 7.5 units"},
      {0x3c880000u, 0x08u, "2^-6 * 1.0625: tie, to even 0x08"},
      {0x3c980000u, 0x0au, "2^-6 * 1.1875: tie, to even 0x0a"},
  };
  for (const ToNarrow& c : cases) {
    EXPECT_EQ(f32_to_fp8_e4m3_bits(float_of(c.f32)), c.expected)
        << c.note << " (f32 bits 0x" << std::hex << c.f32 << ")";
  }
}

TEST(FP8E4M3, ToF32HandComputed) {
  const FromNarrow cases[] = {
      {0x00u, 0x00000000u, "+0"},
      {0x80u, 0x80000000u, "-0"},
      {0x38u, 0x3f800000u, "1"},
      {0xb8u, 0xbf800000u, "-1"},
      {0x39u, 0x3f900000u, "1.125"},
      {0xc4u, 0xc0400000u, "-3"},
      {0x1du, 0x3dd00000u, "0.1015625"},
      {0x77u, 0x43700000u, "240"},
      {0x78u, 0x43800000u, "256"},
      {0x7du, 0x43d00000u, "416"},
      {0x7eu, 0x43e00000u, "448, largest finite"},
      {0xfeu, 0xc3e00000u, "-448"},
      {0x01u, 0x3b000000u, "2^-9, smallest subnormal"},
      {0x81u, 0xbb000000u, "-2^-9"},
      {0x02u, 0x3b800000u, "2^-8"},
      {0x03u, 0x3bc00000u, "3*2^-9"},
      {0x07u, 0x3c600000u, "7*2^-9, largest subnormal"},
      {0x87u, 0xbc600000u, "-7*2^-9"},
      {0x08u, 0x3c800000u, "2^-6, smallest normal"},
      {0x0fu, 0x3cf00000u, "1.875 * 2^-6"},
  };
  for (const FromNarrow& c : cases) {
    EXPECT_EQ(bits_of(fp8_e4m3_bits_to_f32(static_cast<std::uint8_t>(c.narrow))), c.f32)
        << c.note << " (fp8 bits 0x" << std::hex << c.narrow << ")";
  }
  EXPECT_TRUE(std::isnan(fp8_e4m3_bits_to_f32(0x7fu)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_bits_to_f32(0xffu)));
}

TEST(FP8E4M3, ExhaustiveDecodeAndRoundTrip) {
  for (std::uint32_t b = 0; b <= 0xffu; ++b) {
    const auto fp8 = static_cast<std::uint8_t>(b);
    const float value = fp8_e4m3_bits_to_f32(fp8);
    EXPECT_EQ(std::signbit(value), (b & 0x80u) != 0) << std::hex << b;
    if (is_fp8_nan(fp8)) {
      EXPECT_TRUE(std::isnan(value)) << std::hex << b;
    } else {
      EXPECT_FALSE(std::isinf(value)) << std::hex << b;
      EXPECT_EQ(static_cast<double>(value), ref_fp8(fp8)) << std::hex << b;
    }
    EXPECT_EQ(f32_to_fp8_e4m3_bits(value), b) << std::hex << b;  // NaN -> 0x7f / 0xff too
  }
}

// Every rounding edge: for each pair of adjacent positive finite fp8 values (plus the virtual
// neighbour 480 above 448, encoded 0x7f = NaN), the midpoint rounds to the even pattern and the
// neighbouring f32 values round down / up.
TEST(FP8E4M3, ExhaustiveMidpointsRoundToEven) {
  for (std::uint32_t b = 0; b <= 0x7eu; ++b) {
    const double lo = ref_fp8(static_cast<std::uint8_t>(b));
    const double hi = b == 0x7eu ? 480.0 : ref_fp8(static_cast<std::uint8_t>(b + 1));
    const auto mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const std::uint32_t even = (b & 1u) ? b + 1 : b;
    for (const std::uint32_t sign : {0u, 0x80u}) {
      const float s = sign ? -1.0f : 1.0f;
      EXPECT_EQ(f32_to_fp8_e4m3_bits(s * mid), sign | even) << std::hex << b;
      EXPECT_EQ(f32_to_fp8_e4m3_bits(s * std::nextafter(mid, 0.0f)), sign | b) << std::hex << b;
      EXPECT_EQ(f32_to_fp8_e4m3_bits(s * std::nextafter(mid, kInf)), sign | (b + 1))
          << std::hex << b;
    }
  }
}

// ---- int4 ------------------------------------------------------------------------------------

// Nibble -> signed value (two's complement in 4 bits), written out by hand.
constexpr int kNibbleValue[16] = {0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1};

TEST(Int4, EveryNibbleInLowAndHighPosition) {
  for (std::uint32_t byte = 0; byte <= 0xffu; ++byte) {
    const std::uint8_t row[1] = {static_cast<std::uint8_t>(byte)};
    EXPECT_EQ(int4_at(row, 0), kNibbleValue[byte & 0xfu]) << std::hex << byte;
    EXPECT_EQ(int4_at(row, 1), kNibbleValue[byte >> 4]) << std::hex << byte;
  }
}

TEST(Int4, HandPackedBytes) {
  // Low nibble is column 0, high nibble column 1.
  const std::uint8_t row[] = {
      0x78,  // col 0: 0x8 = -8, col 1: 0x7 = 7
      0x0f,  // col 2: 0xf = -1, col 3: 0x0 = 0
      0x93,  // col 4: 0x3 = 3,  col 5: 0x9 = -7
      0xe1,  // col 6: 0x1 = 1,  col 7: 0xe = -2
  };
  const int expected[] = {-8, 7, -1, 0, 3, -7, 1, -2};
  for (std::int64_t col = 0; col < 8; ++col) {
    EXPECT_EQ(int4_at(row, col), expected[col]) << "col " << col;
  }
}

TEST(Int4, OddRowLengths) {
  // Rows of 5 columns take 3 bytes each; the high nibble of every third byte is padding (set to
  // garbage here) and each row starts on a fresh byte.
  const std::uint8_t table[] = {
      // row 0: -8, 7, -1, 0, 3
      0x78, 0x0f, 0xa3,
      // row 1: 1, -2, -3, 4, -8
      0xe1, 0x4d, 0x58,
      // row 2: 7, 7, -8, -8, -1
      0x77, 0x88, 0xff,
  };
  const int expected[3][5] = {{-8, 7, -1, 0, 3}, {1, -2, -3, 4, -8}, {7, 7, -8, -8, -1}};
  constexpr std::int64_t kRowBytes = 3;  // ceil(5 / 2)
  for (int r = 0; r < 3; ++r) {
    for (std::int64_t c = 0; c < 5; ++c) {
      EXPECT_EQ(int4_at(table + r * kRowBytes, c), expected[r][c]) << "row " << r << " col " << c;
    }
  }

  // A single column (1 byte per row) and 3 columns (2 bytes per row).
  const std::uint8_t one_col[] = {0xf8, 0x07, 0x5f};  // -8, 7, -1 (high nibbles are padding)
  EXPECT_EQ(int4_at(one_col + 0, 0), -8);
  EXPECT_EQ(int4_at(one_col + 1, 0), 7);
  EXPECT_EQ(int4_at(one_col + 2, 0), -1);
  const std::uint8_t three_cols[] = {0x21, 0xc3, 0x9f, 0x08};  // row 0: 1, 2, 3; row 1: -1, -7, -8
  EXPECT_EQ(int4_at(three_cols, 0), 1);
  EXPECT_EQ(int4_at(three_cols, 1), 2);
  EXPECT_EQ(int4_at(three_cols, 2), 3);
  EXPECT_EQ(int4_at(three_cols + 2, 0), -1);
  EXPECT_EQ(int4_at(three_cols + 2, 1), -7);
  EXPECT_EQ(int4_at(three_cols + 2, 2), -8);
}

}  // namespace
