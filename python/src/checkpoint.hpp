// ParallelEmbedding.from_checkpoint's reading half: this rank's shard of a safetensors checkpoint.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tpembed/checkpoint_shard.hpp"

namespace tpembed::python {

/// Reads tp_rank's shard of the checkpoint at `path` (a .safetensors file, an index, or a
/// directory) as tpembed::read_checkpoint_shard() does, with its messages naming
/// from_checkpoint's keywords: `scale_tensor` (nullopt: "<tensor>_scale" when the checkpoint has
/// it), `hidden` (the column count of a U8 (int4) table whose file does not record it) and
/// placement='packed'.
CheckpointShard read_checkpoint_shard(const std::string& path, const std::string& tensor,
                                      const std::optional<std::string>& scale_tensor,
                                      std::optional<std::int64_t> hidden, int tp_size,
                                      int tp_rank, int sharding_dim, ShardPlacement placement);

}  // namespace tpembed::python
