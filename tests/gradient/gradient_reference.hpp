// Test support for the backward: a problem (ids, grad_out, an initial gradient, scales), and two
// references computed from the documentation of gradient.hpp, not from the library's code: the
// documented order in fp32 (which the backends must match bit for bit) and the exact sum in
// float64 with the error bound the order implies.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "reference.hpp"

namespace tpembed::testing {

struct GradientProblem {
  std::vector<std::int64_t> ids;
  DType id_dtype = DType::i64;
  HostTable grad_out;               ///< [ids, width]
  std::int64_t column_offset = 0;   ///< First column of grad_out taken.
  std::int64_t rows = 0, cols = 0, padding_rows = 0;
  std::int64_t row_offset = 0;
  std::int64_t valid_ids = 0;
  std::optional<std::int64_t> ignored_id;
  std::optional<HostTable> scale;          ///< [rows]
  std::optional<HostTable> padding_scale;  ///< [padding_rows]
  DType grad_dtype = DType::f32;
  bool accumulate = false;
  HostTable initial;          ///< [rows, cols] of grad_dtype: the gradient before the call.
  HostTable initial_padding;  ///< [padding_rows, cols]

  /// The options of embedding_backward() for this problem (views of the problem's host tensors).
  GradientOptions options() const;
};

/// A random problem. `ids` as given; grad_out of `grad_out_dtype` with finite values of mixed
/// magnitude and sign; an initial gradient of random values when accumulating.
GradientProblem random_gradient_problem(std::vector<std::int64_t> ids, std::int64_t rows, std::int64_t cols,
                                        DType grad_out_dtype, DType grad_dtype, std::uint64_t seed);

struct GradientResult {
  HostTable grad;          ///< [rows, cols]
  HostTable grad_padding;  ///< [padding_rows, cols]
  GradientCounts counts;
};

/// The documented order, computed plainly: per (row, chunk) sums, then the chunks in order.
GradientResult documented_gradient(const GradientProblem& problem);

/// Checks `actual` against the float64 sums: each element within k * 2^-24 * sum|x| (k from
/// gradient.hpp) times the scale, plus half an ulp of the gradient dtype (and of the old value's
/// addition). Returns "" or a description of the first element out of bounds.
std::string check_against_exact(const GradientProblem& problem, const GradientResult& actual);

/// "" when both gradients have the same bits, else the first difference.
std::string bit_difference(const GradientResult& actual, const GradientResult& expected);

}  // namespace tpembed::testing

namespace tpembed::testing {

/// How run_backward() calls the op.
struct BackwardRun {
  bool on_gpu = false;
  std::size_t element_offset = 0;  ///< Every tensor starts this many of its elements into its buffer.
  bool give_workspace = true;   ///< GPU: pass a workspace of gradient_workspace_bytes() (else the op takes one).
};

/// Runs embedding_backward() on the problem (the outputs start as the initial gradient when
/// accumulating, as a poison pattern otherwise) and returns the gradients and counts.
GradientResult run_backward(const GradientProblem& problem, const BackwardRun& run = {});

/// The ids `problem.ids` as a host view of problem.id_dtype, backed by `storage`.
TensorView ids_view(const GradientProblem& problem, std::vector<std::uint8_t>& storage);

}  // namespace tpembed::testing
