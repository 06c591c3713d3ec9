// The op layer's half of the backward: argument checks and the launcher's parameters, shared by
// embedding_backward() and ParallelEmbedding::backward().
#pragma once

#include "tpembed/gradient.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed::op {

/// Checks a backward's arguments (every tensor on grad_weight's device, shapes, dtypes, no overlap
/// of the gradient with its inputs) and returns the launcher's parameters; workspace not set.
/// Throws InvalidArgumentError, ShapeError or UnsupportedError (a quantized gradient) naming the
/// argument.
GradientParams gradient_params(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                               const GradientOptions& options);

}  // namespace tpembed::op
