// quantize_rows: hand-computed codes and scales, error bounds on random tables, bad arguments and
// non-finite values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "expect_error.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

TEST(Quantize, Int8HandComputed) {
  // Row absmax 2 -> scale 2/127; 1/(2/127) = 63.5 rounds to even 64; 0.5 -> 31.75 -> 32.
  const float table[] = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f};
  const QuantizedTable q = quantize_rows(TensorView(table, DType::f32, {2, 3}), DType::i8);
  const auto* codes = q.weight.data_as<std::int8_t>();
  EXPECT_EQ(codes[0], 64);
  EXPECT_EQ(codes[1], -127);
  EXPECT_EQ(codes[2], 32);
  EXPECT_EQ(q.scale.data_as<float>()[0], 2.0f / 127.0f);
  // A zero row: scale 1, codes 0.
  EXPECT_EQ(q.scale.data_as<float>()[1], 1.0f);
  EXPECT_EQ(codes[3], 0);
}

TEST(Quantize, Int4PacksLowNibbleFirst) {
  // absmax 7 -> scale 1: codes equal the values; -7 is 0x9, 3 is 0x3, 7 is 0x7.
  const float table[] = {-7.0f, 3.0f, 7.0f};
  const QuantizedTable q = quantize_rows(TensorView(table, DType::f32, {1, 3}), DType::i4);
  const auto* bytes = q.weight.data_as<std::uint8_t>();
  EXPECT_EQ(bytes[0], 0x39);
  EXPECT_EQ(bytes[1], 0x07);
}

TEST(Quantize, DequantisedRowsAreCloseToTheOriginal) {
  const HostTable table = random_table(DType::bf16, 64, 129, 5);
  for (DType target : {DType::i8, DType::fp8_e4m3, DType::i4}) {
    for (DType scale_dtype : {DType::f32, DType::bf16}) {
      const QuantizedTable q = quantize_rows(table.view(), target, scale_dtype);
      HostTable codes(target, 64, 129), scales = HostTable::vector_of(scale_dtype, 64);
      std::memcpy(codes.bytes.data(), q.weight.data(), codes.bytes.size());
      std::memcpy(scales.bytes.data(), q.scale.data(), scales.bytes.size());
      // Relative bound of one rounding step of the target: half a code of the row's absmax
      // (integers) or 2^-4 of the value (fp8, 3 mantissa bits), plus the fp8 subnormal step.
      for (std::int64_t r = 0; r < 64; ++r) {
        float absmax = 0;
        for (std::int64_t c = 0; c < 129; ++c) absmax = std::max(absmax, std::fabs(table.value(r, c)));
        const float scale = scales.value(r, 0);
        for (std::int64_t c = 0; c < 129; ++c) {
          const float x = table.value(r, c), y = codes.value(r, c) * scale;
          const float bound = target == DType::fp8_e4m3 ? std::fabs(x) / 16 + scale / 1024
                                                        : scale * 0.5f + absmax * 1e-6f;
          ASSERT_LE(std::fabs(x - y), bound * 1.01f)
              << dtype_name(target) << " scale " << dtype_name(scale_dtype) << " row " << r << " col " << c;
        }
      }
    }
  }
}

TEST(Quantize, BadArgumentsAreRefused) {
  const float table[] = {1, 2, 3, 4};
  auto expect = [](const std::function<void()>& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  };
  expect([&] { quantize_rows(TensorView(table, DType::f32, {2, 2}), DType::bf16); },
         "target must be i8, fp8_e4m3 or i4, not bf16");
  expect([&] { quantize_rows(TensorView(table, DType::i32, {2, 2}), DType::i8); },
         "the table must be f32, f16 or bf16, not i32");
  expect([&] { quantize_rows(TensorView(table, DType::f32, {4}), DType::i8); }, "the table must be 2-D");
  expect([&] { quantize_rows(TensorView(table, DType::f32, {2, 2}), DType::i8, DType::i8); },
         "scale dtype must be f32, f16 or bf16, not i8");
  expect([&] { quantize_rows(TensorView(nullptr, DType::f32, {2, 2}), DType::i8); }, "null table data");
}

TEST(Quantize, NonFiniteValuesAreRefusedNamingTheFirstRowAndColumn) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float with_inf[] = {1, 2, 3, 4, 5, -inf};
  const float with_nan[] = {1, 2, nan, 4, inf, 6};
  for (DType target : {DType::i8, DType::fp8_e4m3, DType::i4}) {
    SCOPED_TRACE(dtype_name(target));
    expect_error<InvalidArgumentError>(
        [&] { quantize_rows(TensorView(with_inf, DType::f32, {3, 2}), target); },
        "quantize_rows: row 2, column 1 holds -inf; only finite values can be quantised");
    expect_error<InvalidArgumentError>(
        [&] { quantize_rows(TensorView(with_nan, DType::f32, {3, 2}), target); }, "row 1, column 0 holds nan");
  }
  // bf16 Inf (0x7f80) in row 0.
  const std::uint16_t bf16[] = {0x3f80, 0x7f80};
  expect_error<InvalidArgumentError>([&] { quantize_rows(TensorView(bf16, DType::bf16, {1, 2}), DType::i8); },
                                     "row 0, column 1 holds inf");
}

}  // namespace
}  // namespace tpembed::testing
