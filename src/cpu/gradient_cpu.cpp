// The CPU backward: the documented order of gradient.hpp, literally. Positions are sorted by the
// row they select (then by position), rows are split over threads (whole rows per thread, so the
// bits do not depend on the thread count), and each row's sum is its chunks' sums added in order.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/gradient_rule.hpp"
#include "core/ids.hpp"
#include "cpu/elements.hpp"
#include "cpu/parallel_for.hpp"
#include "tpembed/error.hpp"
#include "tpembed/gradient.hpp"

namespace tpembed {

namespace {

using cpu::load_element;
using cpu::load_scale;
using cpu::store_element;

// One sorted entry: the row in the high half, the position in the low half, so that sorting the
// words sorts by row and then by position.
std::uint32_t key_of(std::uint64_t entry) { return static_cast<std::uint32_t>(entry >> 32); }
std::uint32_t position_of(std::uint64_t entry) { return static_cast<std::uint32_t>(entry); }

// The gradient row of `key`: the table's rows first, then the padding's.
std::uint8_t* gradient_row(const GradientParams& p, std::int64_t key) {
  const bool padding = key >= p.rows;
  auto* base = static_cast<std::uint8_t*>(padding ? p.grad_padding : p.grad_weight);
  const std::int64_t stride = padding ? p.grad_padding_row_stride : p.grad_weight_row_stride;
  return base + (padding ? key - p.rows : key) * stride * row_bytes(p.grad_dtype, 1);
}

template <DType Grad, DType Weight>
class RowSums {
 public:
  RowSums(const GradientParams& p) : p_(p), part_(static_cast<std::size_t>(p.cols)), sum_(part_.size()) {}

  // The gradient of the row of sorted entries [begin, end) (one key), into its gradient row.
  void row(const std::uint64_t* sorted, std::int64_t begin, std::int64_t end) {
    const std::int64_t cols = p_.cols;
    bool have_sum = false;
    for (std::int64_t i = begin; i < end;) {
      // The chunk of this row that starts at entry i: 32 entries, or up to the row's end.
      const std::int64_t chunk_end = std::min(end, i + kGradientChunk);
      load(position_of(sorted[i]), part_.data());
      for (std::int64_t j = i + 1; j < chunk_end; ++j) add(position_of(sorted[j]), part_.data());
      if (have_sum) {
        for (std::int64_t c = 0; c < cols; ++c) sum_[c] = sum_[c] + part_[c];
      } else {
        sum_.swap(part_);
        have_sum = true;
      }
      i = chunk_end;
    }
    const std::uint32_t key = key_of(sorted[begin]);
    const bool padding = key >= p_.rows;
    const std::int64_t local = padding ? key - p_.rows : key;
    const void* scales = padding ? p_.padding_scale : p_.scale;
    if (scales != nullptr) {
      const float factor = load_scale(scales, p_.scale_dtype, local);
      for (std::int64_t c = 0; c < cols; ++c) sum_[c] = sum_[c] * factor;
    }
    std::uint8_t* out = gradient_row(p_, key);
    if (p_.accumulate) {
      for (std::int64_t c = 0; c < cols; ++c) sum_[c] = load_element<Weight>(out, c) + sum_[c];
    }
    for (std::int64_t c = 0; c < cols; ++c) store_element<Weight>(out, c, sum_[c]);
  }

 private:
  const std::uint8_t* grad_row(std::uint32_t position) const {
    return static_cast<const std::uint8_t*>(p_.grad_out) +
           static_cast<std::int64_t>(position) * p_.grad_out_row_stride * row_bytes(Grad, 1);
  }
  void load(std::uint32_t position, float* into) const {
    const std::uint8_t* g = grad_row(position);
    for (std::int64_t c = 0; c < p_.cols; ++c) into[c] = load_element<Grad>(g, c);
  }
  void add(std::uint32_t position, float* into) const {
    const std::uint8_t* g = grad_row(position);
    for (std::int64_t c = 0; c < p_.cols; ++c) into[c] = into[c] + load_element<Grad>(g, c);
  }

  const GradientParams& p_;
  std::vector<float> part_, sum_;
};

// Overwriting: +0 into every row (table, then padding) that no entry selects; the selected rows
// are written by their sums.
void zero_unselected(const GradientParams& p, const std::vector<std::uint64_t>& sorted) {
  const std::size_t bytes = static_cast<std::size_t>(row_bytes(p.grad_dtype, p.cols));
  if (bytes == 0) return;
  std::int64_t next = 0;  // the first row not yet zeroed nor selected
  auto zero_until = [&](std::int64_t end) {
    for (; next < end; ++next) std::memset(gradient_row(p, next), 0, bytes);
  };
  for (const std::uint64_t entry : sorted) {
    zero_until(key_of(entry));
    next = std::max<std::int64_t>(next, key_of(entry) + 1);
  }
  zero_until(p.rows + p.padding_rows);
}

template <DType Grad, DType Weight>
void sum_rows(const GradientParams& p, const std::vector<std::uint64_t>& sorted) {
  // Row boundaries, then rows split over threads with whole rows per thread.
  std::vector<std::int64_t> starts;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(sorted.size()); ++i) {
    if (i == 0 || key_of(sorted[i]) != key_of(sorted[i - 1])) starts.push_back(i);
  }
  starts.push_back(static_cast<std::int64_t>(sorted.size()));
  const std::int64_t rows = static_cast<std::int64_t>(starts.size()) - 1;
  const std::int64_t per_row = std::max<std::int64_t>(1, static_cast<std::int64_t>(sorted.size()) / std::max<std::int64_t>(rows, 1)) * p.cols;
  cpu::parallel_for(rows, per_row, [&](std::int64_t begin, std::int64_t end, std::int64_t) {
    RowSums<Grad, Weight> sums(p);
    for (std::int64_t r = begin; r < end; ++r) sums.row(sorted.data(), starts[r], starts[r + 1]);
  });
}

template <DType Grad>
void dispatch_weight(const GradientParams& p, const std::vector<std::uint64_t>& sorted) {
  switch (p.grad_dtype) {
    case DType::f32: return sum_rows<Grad, DType::f32>(p, sorted);
    case DType::f16: return sum_rows<Grad, DType::f16>(p, sorted);
    case DType::bf16: return sum_rows<Grad, DType::bf16>(p, sorted);
    default: throw InvalidArgumentError(detail::concat("gradient dtype ", dtype_name(p.grad_dtype), " is not f32, f16 or bf16"));
  }
}

}  // namespace

void embedding_backward_cpu(const GradientParams& p) {
  TPEMBED_EXPECTS(p.num_ids >= 0 && p.num_ids <= gradient::kMaxIds, InvalidArgumentError, "a backward takes at most ",
                  gradient::kMaxIds, " ids, got ", p.num_ids);
  const gradient::IdRule rule = gradient::IdRule::of(p);
  std::uint64_t counts[4] = {0, 0, 0, 0};
  std::vector<std::uint64_t> sorted;
  sorted.reserve(static_cast<std::size_t>(p.num_ids));
  for (std::int64_t i = 0; i < p.num_ids; ++i) {
    std::uint32_t key = 0;
    const gradient::Verdict verdict = rule.classify(id_at(p.ids, p.id_dtype, i), &key);
    ++counts[verdict];
    if (verdict == gradient::accumulated) sorted.push_back(std::uint64_t{key} << 32 | static_cast<std::uint32_t>(i));
  }
  std::sort(sorted.begin(), sorted.end());

  if (!p.accumulate) zero_unselected(p, sorted);
  if (p.cols > 0 && !sorted.empty()) {
    switch (p.grad_out_dtype) {
      case DType::f32: dispatch_weight<DType::f32>(p, sorted); break;
      case DType::f16: dispatch_weight<DType::f16>(p, sorted); break;
      case DType::bf16: dispatch_weight<DType::bf16>(p, sorted); break;
      default:
        throw InvalidArgumentError(
            detail::concat("grad_out dtype ", dtype_name(p.grad_out_dtype), " is not f32, f16 or bf16"));
    }
  }
  if (p.counts != nullptr) {
    for (int k = 0; k < 4; ++k) p.counts[k] = counts[k];
  }
}

}  // namespace tpembed
