// Every code of every narrow table dtype, times a set of scales chosen to hit each rounding case,
// through the CUDA kernel's fast conversions (vector path) and its element-wise path, against the
// independent reference: all 256 int8 and fp8 e4m3 codes, all 16 int4 codes, all 65536 f16 and
// bf16 codes, and f32 values at every rounding boundary of the 16-bit outputs.
//
// Outputs must be equal bit for bit, with one allowance written in the CUDA backend's contract: where
// both are NaN, the NaN's payload may differ (the GPU's arithmetic makes canonical NaNs).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>

#include "device_tables.hpp"
#include "reference.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::testing {
namespace {

/// Scales that exercise every path: 1 (no rounding), powers of two, values that round, tiny ones
/// (subnormal results, and int4's shifted forms at their limit), huge ones (overflow to Inf in f16
/// and bf16), negative ones, zero, and f32 subnormal scales.
std::vector<float> interesting_scales() {
  std::vector<float> scales = {1.0f,        0.5f,         -1.0f,         3.0f,         0.1f,        -0.0078125f,
                               1.0f / 3.0f, 1e-3f,        7.77e-5f,      1e-8f,        5.96e-8f,    2.9802322e-8f,
                               1e-30f,      0x1p-110f,    0x1p-120f,     0x1p-126f,    0x1p-130f,   1e-45f,
                               255.0f,      65504.0f / 127.0f, 600.0f,   1e4f,         3e38f,       -3e38f,
                               0.0f,        -0.0f,        1.00000012f,   0.99999994f,  123.456f,    -2.5e-6f};
  std::mt19937 random(7);
  std::uniform_real_distribution<float> exponent(-40.0f, 40.0f);
  for (int i = 0; i < 34; ++i) scales.push_back(std::ldexp(1.0f + static_cast<float>(random() % 4096) / 4096.0f, static_cast<int>(exponent(random))));
  return scales;
}

bool is_nan(std::uint32_t bits, DType dtype) {
  switch (dtype) {
    case DType::f32: return (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0;
    case DType::f16: return (bits & 0x7c00u) == 0x7c00u && (bits & 0x03ffu) != 0;
    default: return (bits & 0x7f80u) == 0x7f80u && (bits & 0x007fu) != 0;
  }
}

/// The first element that differs (both NaN counts as equal), described, or "".
std::string first_mismatch(const std::vector<std::uint8_t>& actual, const std::vector<std::uint8_t>& expected,
                           DType dtype, std::int64_t cols, const Problem& problem) {
  const std::size_t size = dtype == DType::f32 ? 4 : 2;
  if (actual.size() != expected.size()) return "sizes differ";
  for (std::size_t i = 0; i * size < actual.size(); ++i) {
    std::uint32_t a = 0, e = 0;
    std::memcpy(&a, actual.data() + i * size, size);
    std::memcpy(&e, expected.data() + i * size, size);
    if (a == e || (is_nan(a, dtype) && is_nan(e, dtype))) continue;
    const auto row = static_cast<std::int64_t>(i) / cols, col = static_cast<std::int64_t>(i) % cols;
    std::ostringstream message;
    message << "row " << row << " col " << col << ": code 0x" << std::hex << problem.table.code(row, col)
            << " scale bits 0x" << (problem.scale ? problem.scale->code(row, 0) : 0) << " -> got 0x" << a
            << ", expected 0x" << e;
    return message.str();
  }
  return "";
}

struct CodesCase {
  DType table;
  DType out;
  DType scale;  ///< DType::i32 for no scale
};

std::string codes_name(const ::testing::TestParamInfo<CodesCase>& info) {
  std::string name = std::string(dtype_name(info.param.table)) + "_to_" + dtype_name(info.param.out) + "_scale_" +
                     (info.param.scale == DType::i32 ? "none" : dtype_name(info.param.scale));
  return name;
}

/// A table whose rows each hold every code of the dtype (for 16-bit dtypes: 256 rows of 256 codes
/// cover all 65536; for f32: boundary values of the narrow outputs), one scale per row.
Problem every_code_problem(const CodesCase& c) {
  const std::vector<float> scales = interesting_scales();
  Problem problem;
  if (c.table == DType::i8 || c.table == DType::fp8_e4m3 || c.table == DType::i4) {
    const std::int64_t codes = c.table == DType::i4 ? 16 : 256;
    problem.table = HostTable(c.table, static_cast<std::int64_t>(scales.size()), codes);
    for (std::int64_t r = 0; r < problem.table.rows; ++r) {
      for (std::int64_t k = 0; k < codes; ++k) problem.table.set_code(r, k, static_cast<std::uint32_t>((k + r) % codes));
    }
  } else if (c.table == DType::f16 || c.table == DType::bf16) {
    problem.table = HostTable(c.table, 256, 256);
    for (std::int64_t r = 0; r < 256; ++r) {
      for (std::int64_t k = 0; k < 256; ++k) problem.table.set_code(r, k, static_cast<std::uint32_t>(r * 256 + k));
    }
  } else {
    // f32: around every bf16 and f16 rounding boundary (ties, just above and below), subnormals,
    // the overflow thresholds, and random bits.
    std::vector<std::uint32_t> values;
    for (std::uint32_t base : {0x3f800000u, 0x00800000u, 0x00000001u, 0x477fe000u, 0x477ff000u, 0x7f7f8000u,
                               0x7f7fffffu, 0x33800000u, 0x33000000u, 0x38800000u, 0x387fc000u, 0x7f800000u}) {
      for (std::uint32_t delta : {0u, 1u, 0x7fffu, 0x8000u, 0x8001u, 0x17ffu, 0x1000u, 0x1001u, 0x0fffu}) {
        values.push_back(base + delta);
        values.push_back((base + delta) | 0x80000000u);
        values.push_back(base - (delta < base ? delta : 0u));
      }
    }
    std::mt19937 random(11);
    while (values.size() % 256 != 0 || values.size() < 4096) {
      std::uint32_t bits = static_cast<std::uint32_t>(random());
      if ((bits & 0x7f800000u) == 0x7f800000u) bits &= 0xbfffffffu;  // keep NaN out of the random part
      values.push_back(bits);
    }
    problem.table = HostTable(c.table, static_cast<std::int64_t>(values.size() / 256), 256);
    for (std::size_t i = 0; i < values.size(); ++i) {
      problem.table.set_code(static_cast<std::int64_t>(i / 256), static_cast<std::int64_t>(i % 256), values[i]);
    }
  }
  if (c.scale != DType::i32) {
    HostTable scale = HostTable::vector_of(c.scale, problem.table.rows);
    for (std::int64_t r = 0; r < problem.table.rows; ++r) {
      const float value = scales[static_cast<std::size_t>(r) % scales.size()];
      std::uint32_t bits = f32_bits(value);
      if (c.scale == DType::bf16) bits = f32_to_bf16_bits(value);
      if (c.scale == DType::f16) bits = f32_to_f16_bits(value);
      scale.set_code(r, 0, bits);
    }
    problem.scale = scale;
  }
  return problem;
}

class EveryCode : public ::testing::TestWithParam<CodesCase> {};

TEST_P(EveryCode, MatchesReference) {
  const CodesCase& c = GetParam();
  const Problem problem = every_code_problem(c);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(problem.table.rows));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(ids.size() - 1 - i);
  const auto expected = reference_lookup(problem, ids, c.out);
  const DeviceCopy device_ids = upload_bytes(encode_ids(ids, DType::i64), DType::i64, {static_cast<std::int64_t>(ids.size())});
  const std::optional<DeviceCopy> scale = problem.scale ? std::optional<DeviceCopy>(upload(*problem.scale)) : std::nullopt;
  // Aligned buffers: the vector path. Then the table off its vector alignment (by one element) and
  // the output off 16 bytes: the element-wise path, which must give the same bits.
  const std::size_t element_offset = c.table == DType::f32 ? 4 : (c.table == DType::f16 || c.table == DType::bf16) ? 2 : 1;
  for (const bool vector_path : {true, false}) {
    SCOPED_TRACE(vector_path ? "vector path" : "element-wise path");
    const DeviceCopy table = upload(problem.table, vector_path ? 0 : element_offset);
    const std::size_t out_offset = vector_path ? 0 : 4;
    DeviceBuffer out(expected.size() + out_offset, 0);
    auto* out_start = static_cast<std::uint8_t*>(out.data()) + out_offset;
    EmbeddingOptions options;
    if (scale) options.per_token_scale = scale->view;
    options.out_dtype = c.out;
    embedding(device_ids.view, table.view,
              TensorView(out_start, c.out, {static_cast<std::int64_t>(ids.size()), problem.table.cols}, Device::cuda(0)),
              options);
    cuda_synchronize();
    const auto actual = download(out_start, expected.size());
    EXPECT_EQ(first_mismatch(actual, expected, c.out, problem.table.cols, problem), "");
  }
}

std::vector<CodesCase> codes_cases() {
  std::vector<CodesCase> cases;
  for (DType out : {DType::f32, DType::f16, DType::bf16}) {
    for (DType table : {DType::i8, DType::fp8_e4m3, DType::i4}) {
      for (DType scale : {DType::f32, DType::bf16, DType::f16}) cases.push_back({table, out, scale});
    }
    for (DType table : {DType::f32, DType::f16, DType::bf16}) {
      cases.push_back({table, out, DType::i32});
      cases.push_back({table, out, DType::f32});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Codes, EveryCode, ::testing::ValuesIn(codes_cases()), codes_name);

}  // namespace
}  // namespace tpembed::testing
