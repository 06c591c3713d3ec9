// What embedding() and ParallelEmbedding share: building a shard from arrays, and a forward into an
// output that is passed or allocated.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <optional>
#include <string>

#include "arrays.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed::python {

/// Views of the table, its scales and padding (borrowed: the caller keeps the arrays alive).
/// `weight_dtype` declares what uint8/uint16 tables (and their padding) hold, `scale_dtype` what
/// uint16 scales hold, `hidden` the columns of an i4 table.
EmbeddingShard make_shard(const InputArray& weight,
                          const std::optional<InputArray>& per_token_scale,
                          const std::optional<InputArray>& padding,
                          const std::optional<InputArray>& padding_scale,
                          const std::optional<std::string>& weight_dtype,
                          const std::optional<std::string>& scale_dtype,
                          std::optional<std::int64_t> hidden);

/// Runs `layer` on `ids` into `out` (an array or DLPack capsule), or, when `out` is None, into
/// allocate(shape, dtype_name) -> (result, array): `result` is returned and `array` (a view or
/// capsule of it) is written. Returns None when `out` was given. `stream` is a cudaStream_t.
/// `release_gil`: run the lookup without the GIL (only for a layer no other thread can reach).
nanobind::object forward_into(ParallelEmbedding& layer, const TensorView& ids,
                              const nanobind::object& out, const nanobind::callable& allocate,
                              std::uintptr_t stream, bool release_gil);

}  // namespace tpembed::python
