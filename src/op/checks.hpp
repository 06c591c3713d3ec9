// Argument checks of the op layer: one rank's own arguments, and the shards of a group against
// each other. Each throws a typed Error whose message says what was wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tpembed/embedding.hpp"
#include "tpembed/lookup.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed::op {

/// What one rank holds, exchanged across the group at set-up (plain bytes, fixed size).
struct ShardDescription {
  std::int32_t tp_rank;
  std::int32_t sharding_dim;
  std::int32_t placement;
  std::int32_t table_dtype;
  std::int32_t scale_dtype;  ///< -1 when the shard has no scale.
  std::int32_t out_dtype;
  std::int64_t rows;
  std::int64_t cols;
  std::int64_t padding_rows;
  std::int64_t vocab_size;  ///< -1 when not given.
  std::int32_t vocab_exchange;
  std::int32_t collective_checks;
  std::int32_t strict;
  std::int32_t output_layout;       ///< TokenLayout
  std::uint64_t table_fingerprint;  ///< EmbeddingConfig::table_fingerprint (0: not given)
  std::int32_t input_layout;        ///< TokenLayout
  std::int32_t scatter_dim;
};

/// "0x" and the value in hexadecimal (fingerprints in messages).
std::string hex(std::uint64_t value);

/// Ranks as "0,2,5" (messages).
std::string rank_list(const std::vector<int>& ranks);

/// Checks that a tensor's extents are >= 0 and that it has data unless it is empty (`name` in the
/// message).
void check_data(const TensorView& view, const char* name);

/// Checks a scale vector: f32/f16/bf16, 1-D with `rows` entries (the rows of `rows_of`), on `device`
/// (where `device_of` is).
void check_scale(const TensorView& scale, const char* name, std::int64_t rows, const char* rows_of,
                 const Device& device, const char* device_of);

/// Checks one rank's shard and config on their own; returns the output dtype.
DType check_local_shard(const EmbeddingShard& shard, const EmbeddingConfig& config);

/// Describes this rank's (already checked) shard for the cross-rank check.
ShardDescription describe_shard(const EmbeddingShard& shard, const EmbeddingConfig& config,
                                int tp_rank, DType out_dtype);

/// Checks the shards of a group (indexed by group rank) against each other and lays them out.
/// Deterministic: every rank given the same descriptions returns or throws the same.
ShardLayout plan_layout(const std::vector<ShardDescription>& shards, int my_group_rank);

/// The gather of `ids` in `shard` laid out as `layout` says, writing rows `out_row_stride`
/// elements apart into `out` (no bad-id counter; callers that count set it).
LookupParams lookup_params(const EmbeddingShard& shard, const ShardLayout& layout, const TensorView& ids, void* out,
                           std::int64_t out_row_stride);

/// Checks ids (index dtype, data present, device) for a lookup.
void check_ids(const TensorView& ids, const Device& table_device);

/// Checks that `out` has shape ids.shape + [cols], dtype `out_dtype` and data.
void check_out(const TensorView& out, const TensorView& ids, std::int64_t cols, DType out_dtype,
               const Device& table_device);

/// Checks that `out` has shape `expected` (a scattered layout's chunk + [H]), dtype `out_dtype` and data.
void check_out(const TensorView& out, const std::vector<std::int64_t>& expected, DType out_dtype,
               const Device& table_device);

/// The strict-mode error for ids with a bad id at flat `position`.
OutOfRangeError out_of_range_error(const TensorView& ids, std::int64_t position,
                                   std::int64_t bad_count, std::int64_t valid_ids);

}  // namespace tpembed::op
