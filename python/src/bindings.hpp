// The pieces of the _tpembed extension module, one file per concept.
#pragma once

#include <nanobind/nanobind.h>

namespace tpembed::python {

/// Error translation (tpembed::Error -> ValueError / IndexError / RuntimeError) and the
/// OutOfRangeError type.
void bind_errors(nanobind::module_& m);
/// The one-call op, embedding().
void bind_embedding(nanobind::module_& m);
/// ParallelEmbedding and its layout.
void bind_parallel_embedding(nanobind::module_& m);
/// The gradient, embedding_backward() (gradient.cpp).
void bind_gradient(nanobind::module_& m);

}  // namespace tpembed::python
