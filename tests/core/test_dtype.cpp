// Tests of the dtype helpers in tpembed/dtype.hpp.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tpembed/dtype.hpp"
#include "tpembed/error.hpp"

namespace {

using tpembed::DType;

struct Named {
  DType dtype;
  const char* name;
};

constexpr Named kAll[] = {
    {DType::f32, "f32"}, {DType::f16, "f16"},           {DType::bf16, "bf16"}, {DType::i8, "i8"},
    {DType::fp8_e4m3, "fp8_e4m3"}, {DType::i4, "i4"}, {DType::i32, "i32"}, {DType::i64, "i64"},
};

TEST(DType, NamesAreTheDocumentedOnes) {
  for (const Named& n : kAll) EXPECT_STREQ(tpembed::dtype_name(n.dtype), n.name);
}

TEST(DType, NameRoundTrip) {
  for (const Named& n : kAll) {
    EXPECT_EQ(tpembed::dtype_from_name(n.name), n.dtype) << n.name;
    EXPECT_EQ(tpembed::dtype_from_name(tpembed::dtype_name(n.dtype)), n.dtype) << n.name;
  }
}

TEST(DType, UnknownNameThrowsWithTheName) {
  for (const std::string bad : {"f64", "F32", "float32", "fp8", "int4", "", "bf16 "}) {
    try {
      tpembed::dtype_from_name(bad);
      ADD_FAILURE() << "no exception for '" << bad << "'";
    } catch (const tpembed::InvalidArgumentError& error) {
      EXPECT_NE(std::string(error.what()).find("'" + bad + "'"), std::string::npos)
          << error.what();
      EXPECT_EQ(error.code(), tpembed::ErrorCode::invalid_argument);
    }
  }
  EXPECT_THROW(tpembed::dtype_from_name("f64"), tpembed::InvalidArgumentError);
  EXPECT_THROW(tpembed::dtype_from_name("f64"), tpembed::Error);
}

TEST(DType, RowBytes) {
  // i4: two values per byte, rows rounded up to whole bytes.
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 0), 0);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 1), 1);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 2), 1);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 3), 2);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 5), 3);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 7), 4);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 8), 4);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 127), 64);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, 4097), 2049);
  EXPECT_EQ(tpembed::row_bytes(DType::i4, std::int64_t{1} << 33), std::int64_t{1} << 32);
  EXPECT_EQ(tpembed::row_bytes(DType::f32, 3), 12);
  EXPECT_EQ(tpembed::row_bytes(DType::i32, 3), 12);
  EXPECT_EQ(tpembed::row_bytes(DType::f16, 3), 6);
  EXPECT_EQ(tpembed::row_bytes(DType::bf16, 3), 6);
  EXPECT_EQ(tpembed::row_bytes(DType::i8, 3), 3);
  EXPECT_EQ(tpembed::row_bytes(DType::fp8_e4m3, 3), 3);
  EXPECT_EQ(tpembed::row_bytes(DType::i64, 3), 24);
  static_assert(tpembed::row_bytes(DType::i4, 9) == 5, "row_bytes is constexpr");
}

TEST(DType, ElementSize) {
  EXPECT_EQ(tpembed::element_size(DType::f32), 4u);
  EXPECT_EQ(tpembed::element_size(DType::f16), 2u);
  EXPECT_EQ(tpembed::element_size(DType::bf16), 2u);
  EXPECT_EQ(tpembed::element_size(DType::i8), 1u);
  EXPECT_EQ(tpembed::element_size(DType::fp8_e4m3), 1u);
  EXPECT_EQ(tpembed::element_size(DType::i4), 0u);
  EXPECT_EQ(tpembed::element_size(DType::i32), 4u);
  EXPECT_EQ(tpembed::element_size(DType::i64), 8u);
}

TEST(DType, Categories) {
  for (const Named& n : kAll) {
    const DType d = n.dtype;
    const bool quantized = d == DType::i8 || d == DType::fp8_e4m3 || d == DType::i4;
    const bool floating = d == DType::f32 || d == DType::f16 || d == DType::bf16;
    const bool index = d == DType::i32 || d == DType::i64;
    EXPECT_EQ(tpembed::is_quantized(d), quantized) << n.name;
    EXPECT_EQ(tpembed::is_float(d), floating) << n.name;
    EXPECT_EQ(tpembed::is_index(d), index) << n.name;
    EXPECT_EQ(tpembed::is_table_dtype(d), floating || quantized) << n.name;
  }
}

}  // namespace
