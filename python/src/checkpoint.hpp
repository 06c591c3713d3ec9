// ParallelEmbedding.from_checkpoint's reading half: this rank's shard of a safetensors checkpoint.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tpembed/embedding.hpp"

namespace tpembed::python {

/// A shard read from a checkpoint, and the vocab it was cut from.
struct CheckpointShard {
  EmbeddingShard shard;  ///< Host views; `owner` keeps the file mapping or the copies alive.
  std::int64_t vocab_rows = 0;
  /// Which table (and scales) of which file it was cut from, for
  /// EmbeddingConfig::table_fingerprint: ranks that opened different checkpoints are refused at
  /// set-up.
  std::uint64_t table_fingerprint = 0;
};

/// Reads tp_rank's shard of the 2-D tensor `tensor` (and of the 1-D `scale_tensor`, when named)
/// of the checkpoint at `path` (a .safetensors file, an index, or a directory). Vocab shards
/// (sharding_dim 0) are zero-copy views of the mapped file where they lie inside the tensor, and
/// zero-padded copies where an equal shard reaches past the vocab; hidden shards are copies of
/// their columns, each holding every row's scale. `int4_columns`: the column count of a U8 (int4)
/// tensor whose file does not record it.
CheckpointShard read_checkpoint_shard(const std::string& path, const std::string& tensor,
                                      const std::optional<std::string>& scale_tensor,
                                      std::optional<std::int64_t> int4_columns, int tp_size,
                                      int tp_rank, int sharding_dim, ShardPlacement placement);

}  // namespace tpembed::python
