#include "gradient_reference.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <sstream>
#include <utility>

namespace tpembed::testing {

namespace {

std::uint32_t rounded_code(DType dtype, float value) {
  return dtype == DType::f32 ? f32_bits(value) : dtype == DType::f16 ? f32_to_f16_bits(value) : f32_to_bf16_bits(value);
}

// Finite values of mixed magnitude (2^-20 .. 2^6) and sign, rounded to `dtype`; about one in 16 is
// a zero of either sign.
HostTable random_gradient_table(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostTable table(dtype, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::uint64_t bits = rng();
      float value = (bits & 16) ? -0.0f : 0.0f;
      if ((bits & 15) != 0) {
        const int exponent = static_cast<int>((bits >> 8) % 27) - 20;
        const float mantissa = 1.0f + static_cast<float>((bits >> 16) & 0x7fffff) / 8388608.0f;
        value = std::ldexp(mantissa, exponent) * ((bits & 32) ? -1.0f : 1.0f);
      }
      table.set_code(r, c, rounded_code(dtype, value));
    }
  }
  return table;
}

// Which row (table rows first, then padding rows) a position's gradient goes to, or -1; and which
// GradientCounts field it falls in (the rule of GradientParams, written out again).
std::pair<std::int64_t, int> destination(const GradientProblem& p, std::int64_t id) {
  if (p.ignored_id && id == *p.ignored_id) return {-1, 3};
  if (id < 0 || id >= p.valid_ids) return {-1, 2};
  const std::int64_t local = id - p.row_offset;
  if (local >= 0 && local < p.rows + p.padding_rows) return {local, 0};
  return {-1, 1};
}

float scale_of(const GradientProblem& p, std::int64_t key) {
  if (key < p.rows) return p.scale ? p.scale->value(key, 0) : 1.0f;
  return p.padding_scale ? p.padding_scale->value(key - p.rows, 0) : 1.0f;
}

}  // namespace

GradientOptions GradientProblem::options() const {
  GradientOptions o;
  o.row_offset = row_offset;
  o.valid_ids = valid_ids;
  o.ignored_id = ignored_id;
  o.column_offset = column_offset;
  if (scale) o.per_token_scale = scale->view();
  if (padding_scale) o.padding_scale = padding_scale->view();
  o.accumulate = accumulate;
  return o;
}

GradientProblem random_gradient_problem(std::vector<std::int64_t> ids, std::int64_t rows, std::int64_t cols,
                                        DType grad_out_dtype, DType grad_dtype, std::uint64_t seed) {
  GradientProblem p;
  p.ids = std::move(ids);
  p.rows = rows;
  p.cols = cols;
  p.valid_ids = rows;
  p.grad_dtype = grad_dtype;
  p.grad_out = random_gradient_table(grad_out_dtype, static_cast<std::int64_t>(p.ids.size()), cols, seed);
  p.initial = random_gradient_table(grad_dtype, rows, cols, seed + 1);
  p.initial_padding = HostTable(grad_dtype, 0, cols);
  return p;
}

GradientResult documented_gradient(const GradientProblem& p) {
  GradientResult result;
  result.grad = p.accumulate ? p.initial : HostTable(p.grad_dtype, p.rows, p.cols);
  result.grad_padding = p.accumulate ? p.initial_padding : HostTable(p.grad_dtype, p.padding_rows, p.cols);
  std::uint64_t* fields[4] = {&result.counts.accumulated, &result.counts.unowned, &result.counts.out_of_range,
                              &result.counts.ignored};
  // 1. The positions that select a row, stably sorted by that row (each row's in increasing order).
  std::vector<std::pair<std::int64_t, std::int64_t>> list;  // (row, position)
  for (std::size_t position = 0; position < p.ids.size(); ++position) {
    const auto [row, field] = destination(p, p.ids[position]);
    ++*fields[field];
    if (row >= 0) list.emplace_back(row, static_cast<std::int64_t>(position));
  }
  std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // 2. Each (row, chunk) sum: the row's 1st-32nd positions, 33rd-64th, ..., left to right.
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<float>> parts;  // ordered by row, then chunk
  std::map<std::int64_t, std::int64_t> seen;                                  // positions of each row so far
  for (const auto& [row, position] : list) {
    const std::int64_t chunk = seen[row]++ / 32;  // the documented chunk (gradient.hpp)
    auto [it, fresh] = parts.try_emplace({row, chunk});
    std::vector<float>& part = it->second;
    if (fresh) part.assign(static_cast<std::size_t>(p.cols), 0.0f);
    for (std::int64_t c = 0; c < p.cols; ++c) {
      const float x = p.grad_out.value(position, p.column_offset + c);
      part[c] = fresh ? x : part[c] + x;
    }
  }
  // 3-4. The chunks of a row in order, then the scale, the old value and one rounding.
  for (auto it = parts.begin(); it != parts.end();) {
    const std::int64_t row = it->first.first;
    std::vector<float> sum = it->second;
    for (++it; it != parts.end() && it->first.first == row; ++it) {
      for (std::int64_t c = 0; c < p.cols; ++c) sum[c] = sum[c] + it->second[c];
    }
    HostTable& grad = row < p.rows ? result.grad : result.grad_padding;
    const std::int64_t local = row < p.rows ? row : row - p.rows;
    const bool scaled = row < p.rows ? p.scale.has_value() : p.padding_scale.has_value();
    for (std::int64_t c = 0; c < p.cols; ++c) {
      float g = scaled ? sum[c] * scale_of(p, row) : sum[c];
      if (p.accumulate) g = grad.value(local, c) + g;
      grad.set_code(local, c, rounded_code(p.grad_dtype, g));
    }
  }
  return result;
}

std::string check_against_exact(const GradientProblem& p, const GradientResult& actual) {
  const std::int64_t keys = p.rows + p.padding_rows;
  std::vector<double> exact(static_cast<std::size_t>(keys * p.cols), 0.0), magnitude(exact.size(), 0.0);
  std::vector<std::int64_t> count(static_cast<std::size_t>(keys), 0);
  for (std::size_t position = 0; position < p.ids.size(); ++position) {
    const std::int64_t row = destination(p, p.ids[position]).first;
    if (row < 0) continue;
    ++count[row];
    for (std::int64_t c = 0; c < p.cols; ++c) {
      const double x = p.grad_out.value(static_cast<std::int64_t>(position), p.column_offset + c);
      exact[row * p.cols + c] += x;
      magnitude[row * p.cols + c] += std::fabs(x);
    }
  }
  const double unit = p.grad_dtype == DType::f32 ? 0x1p-24 : p.grad_dtype == DType::f16 ? 0x1p-11 : 0x1p-8;
  // Half the spacing of the dtype's subnormals: the rounding error near zero.
  const double tiny = p.grad_dtype == DType::f16 ? 0x1p-25 : 0x1p-150;
  for (std::int64_t row = 0; row < keys; ++row) {
    const std::int64_t m = count[row];
    const double k = std::min<double>(std::max<std::int64_t>(m - 1, 0), 30.0 + std::ceil(m / 32.0));
    const HostTable& grad = row < p.rows ? actual.grad : actual.grad_padding;
    const HostTable& initial = row < p.rows ? p.initial : p.initial_padding;
    const std::int64_t local = row < p.rows ? row : row - p.rows;
    const bool scaled = row < p.rows ? p.scale.has_value() : p.padding_scale.has_value();
    const double factor = scaled ? scale_of(p, row) : 1.0;
    for (std::int64_t c = 0; c < p.cols; ++c) {
      const double old = p.accumulate ? initial.value(local, c) : 0.0;
      const double want = old + exact[row * p.cols + c] * factor;
      const double sum_error = k * 0x1p-24 * magnitude[row * p.cols + c] * std::fabs(factor);
      // The scale's product and the old value's addition round in fp32, the result once more.
      const double round_error = (std::fabs(want) + sum_error) * (2 * 0x1p-24 + unit) + tiny + 0x1p-150;
      const double got = grad.value(local, c);
      if (!(std::fabs(got - want) <= sum_error + round_error)) {
        std::ostringstream text;
        text << "row " << row << " col " << c << ": got " << got << ", exact " << want << " (bound "
             << sum_error + round_error << ", " << m << " entries)";
        return text.str();
      }
    }
  }
  return "";
}

std::string bit_difference(const GradientResult& actual, const GradientResult& expected) {
  std::ostringstream text;
  auto compare = [&](const HostTable& a, const HostTable& e, const char* name) {
    if (a.bytes == e.bytes) return true;
    for (std::int64_t r = 0; r < e.rows; ++r) {
      for (std::int64_t c = 0; c < e.cols; ++c) {
        if (a.code(r, c) != e.code(r, c)) {
          text << name << " row " << r << " col " << c << ": got " << a.value(r, c) << " (0x" << std::hex
               << a.code(r, c) << "), expected " << e.value(r, c) << " (0x" << e.code(r, c) << std::dec << ")";
          return false;
        }
      }
    }
    text << name << " differs in bytes past its elements";
    return false;
  };
  if (!compare(actual.grad, expected.grad, "grad_weight")) return text.str();
  if (!compare(actual.grad_padding, expected.grad_padding, "grad_padding")) return text.str();
  const GradientCounts& a = actual.counts;
  const GradientCounts& e = expected.counts;
  if (a.accumulated != e.accumulated || a.unowned != e.unowned || a.out_of_range != e.out_of_range ||
      a.ignored != e.ignored) {
    text << "counts (accumulated, unowned, out of range, ignored) are (" << a.accumulated << ", " << a.unowned << ", "
         << a.out_of_range << ", " << a.ignored << "), expected (" << e.accumulated << ", " << e.unowned << ", "
         << e.out_of_range << ", " << e.ignored << ")";
    return text.str();
  }
  return "";
}

}  // namespace tpembed::testing
