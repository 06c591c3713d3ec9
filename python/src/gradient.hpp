// What tpembed.embedding_backward() and ParallelEmbedding.backward() share: the gradient arrays
// (grad_out read, grad_weight and grad_padding written, or grad_weight allocated) as checked views.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "tpembed/gradient.hpp"

namespace tpembed::python {

/// grad_out as a view: f32, f16 or bf16 (uint16 bits with `declared` bf16).
TensorView grad_out_view(const InputArray& array, std::optional<DType> declared);

/// A gradient tpembed writes: the caller's array, or one allocated, and the view of it.
struct GradientOutput {
  std::optional<OutputArray> array;
  TensorView view;                             ///< Absent when the caller passed none.
  nanobind::object result = nanobind::none();  ///< The allocated array, when one was.
};

/// `object` (named `name` in messages) as a gradient of dtype `declared` (what `declared_by` says,
/// for messages; its own dtype when unset; uint16 arrays hold bf16 bits and need `declared` bf16).
/// None: absent, or, with `allocate`, allocate(shape, dtype name) -> (result, array) of `declared`
/// (default f32).
GradientOutput gradient_output(const nanobind::handle& object, const char* name,
                               std::optional<DType> declared, const char* declared_by,
                               const std::vector<std::int64_t>& shape,
                               const nanobind::callable* allocate);

/// Throws InvalidArgumentError when `written` (named `name`) shares bytes with any of `read` or
/// of `others_written`: the backward would read or write the same memory twice.
void check_gradient_overlap(const char* name, const TensorView& written,
                            const std::vector<NamedView>& others);

/// The counts as Python sees them: {"accumulated", "unowned", "out_of_range", "ignored"}.
nanobind::dict counts_dict(const GradientCounts& counts);

}  // namespace tpembed::python
