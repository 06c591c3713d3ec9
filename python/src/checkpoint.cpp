#include "checkpoint.hpp"

#include "tpembed/safetensors.hpp"

namespace tpembed::python {

CheckpointShard read_checkpoint_shard(const std::string& path, const std::string& tensor,
                                      const std::optional<std::string>& scale_tensor,
                                      std::optional<std::int64_t> hidden, int tp_size,
                                      int tp_rank, int sharding_dim, ShardPlacement placement) {
  CheckpointShardRequest request;
  request.tensor = tensor;
  request.scale_tensor = scale_tensor;
  request.as_int4_columns = hidden;
  request.tp_size = tp_size;
  request.tp_rank = tp_rank;
  request.sharding_dim = sharding_dim;
  request.placement = placement;
  request.option_names.scale_tensor = "scale_tensor";
  request.option_names.int4_columns = "hidden";
  request.option_names.packed_placement = "placement='packed'";
  SafetensorsCheckpoint checkpoint(path);
  return tpembed::read_checkpoint_shard(checkpoint, request);
}

}  // namespace tpembed::python
