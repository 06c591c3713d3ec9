// Cutting a whole table into the shard a rank holds.
#pragma once

#include <cstdint>
#include <utility>

#include "tpembed/embedding.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed {

/// The [offset, offset + size) range of `total` rows (or columns) that `tp_rank` of `tp_size` holds.
/// Equal placement: ceil(total / tp) each, the last ones cut short past `total` (the caller pads
/// with zeros, as the seed's checkpoints do). Packed placement: the first total % tp ranks hold one
/// more than the rest.
std::pair<std::int64_t, std::int64_t> shard_range(std::int64_t total, int tp_size, int tp_rank,
                                                  ShardPlacement placement);

/// Copies rows [first, first + count) of a host [rows, cols] tensor; rows past the end are zeros
/// (the zero padding of equal vocab shards).
Tensor slice_rows(const TensorView& table, std::int64_t first, std::int64_t count);

/// Copies columns [first, first + count) of a host [rows, cols] tensor (i4 nibbles are repacked)
/// or, for a 1-D tensor, returns a copy of it (scales are shared by hidden shards).
Tensor slice_cols(const TensorView& table, std::int64_t first, std::int64_t count);

}  // namespace tpembed
