// What embedding() and ParallelEmbedding share: the one place where their Python arguments become
// tensors (checked: dtype, device, layout, aliasing), and a forward into an output that is passed
// or allocated. A forward whose arguments this rank refuses still joins the group's check, so the
// refusal reaches every rank instead of leaving the others waiting.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed::python {

/// A shard's views and the arrays they borrow from (kept by whoever keeps the views).
struct ShardArrays {
  EmbeddingShard shard;
  std::vector<InputArray> arrays;
};

/// Views of the table, its scales and padding (array objects or DLPack capsules; None where
/// optional). `weight_dtype` declares what uint8/uint16 tables (and their padding) hold,
/// `scale_dtype` what uint16 scales hold, `hidden` the columns of an i4 table.
ShardArrays make_shard(const nanobind::handle& weight, const nanobind::handle& per_token_scale,
                       const nanobind::handle& padding, const nanobind::handle& padding_scale,
                       const std::optional<std::string>& weight_dtype,
                       const std::optional<std::string>& scale_dtype,
                       std::optional<std::int64_t> hidden);

/// The inputs of `shard` that an output must not overlap.
std::vector<NamedView> shard_inputs(const EmbeddingShard& shard);

/// A Python exception caught in C++ (nanobind::python_error) as a tpembed::Error that can cross
/// ranks: TypeError and ValueError become InvalidArgumentError, anything else BackendError; other
/// exceptions pass unchanged. Needs the GIL.
std::exception_ptr as_tpembed_error(std::exception_ptr error);

/// Runs `layer` on `ids` into `out` (an array or DLPack capsule), or, when `out` is None, into
/// allocate(shape, dtype_name) -> (result, array): `result` is returned and `array` (a view or
/// capsule of it) is written. Returns None when `out` was given. `stream` is a cudaStream_t.
/// `inputs`: the layer's table, scales and padding, which `out` must not overlap.
/// `release_gil`: run the lookup without the GIL (only for a layer no other thread can reach).
/// Arguments this rank refuses go to layer.fail_forward(): the same error on every rank.
nanobind::object forward_into(ParallelEmbedding& layer, const std::vector<NamedView>& inputs,
                              const nanobind::handle& ids, const nanobind::handle& out,
                              const nanobind::callable& allocate, std::uintptr_t stream,
                              bool release_gil);

/// The one-table lookup that keeps nothing (options.tp_size 1, strict off): the library's
/// embedding(ids, weight, out, options) into `out`, or into allocate(ids.shape + [H], out dtype)
/// as forward_into does. It checks everything, allocates nothing of its own and never waits, so a
/// CUDA graph (torch.compile's mode="reduce-overhead" too) can capture it even for a table it has
/// not seen before. Bad ids read as zero rows and are not counted. Returns as forward_into.
nanobind::object lookup_into(const EmbeddingOptions& options, const TensorView& weight,
                             const std::vector<NamedView>& inputs, const nanobind::handle& ids,
                             const nanobind::handle& out, const nanobind::callable& allocate,
                             std::uintptr_t stream);

}  // namespace tpembed::python
