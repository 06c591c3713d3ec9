// One rank's shard of an embedding table read from a safetensors checkpoint: the one rule that the
// CLI (`tpembed lookup`, `tpembed demo`), the Python module (ParallelEmbedding.from_checkpoint) and
// C++ callers share for where a table's row scales are, how an int4 table's columns are known and
// which rows or columns a rank reads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tpembed/dtype.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed {

/// The default name of table `tensor`'s row scales in a checkpoint: "<tensor>_scale" (as
/// `tpembed quantize` writes them, and as the compressed-tensors convention names "weight_scale").
std::string default_scale_tensor(const std::string& tensor);

/// How an interface spells the options that read_checkpoint_shard()'s messages tell the user to
/// pass, so that each interface names its own: the CLI's are "--scale-tensor", "--int4-columns"
/// and "--placement packed"; Python's "scale_tensor", "hidden" and "placement='packed'". The
/// defaults are the C++ names.
struct CheckpointOptionNames {
  std::string scale_tensor = "scale_tensor";                     ///< CheckpointShardRequest's.
  std::string int4_columns = "as_int4_columns";                  ///< CheckpointShardRequest's.
  std::string packed_placement = "placement = ShardPlacement::packed";
};

/// Which shard of which table read_checkpoint_shard() reads.
struct CheckpointShardRequest {
  std::string tensor;  ///< The 2-D table [vocab, hidden], e.g. "model.embed_tokens.weight".
  /// Its 1-D row scales, one per vocab row. nullopt: default_scale_tensor(tensor) when the
  /// checkpoint holds it, else none (a quantized table then is refused).
  std::optional<std::string> scale_tensor;
  /// The column count of a U8 (int4) table whose file does not record it (see SafetensorsFile).
  std::optional<std::int64_t> as_int4_columns;
  int tp_size = 1;
  int tp_rank = 0;
  int sharding_dim = 0;  ///< 0: the rank reads its vocab rows; 1: its hidden columns.
  ShardPlacement placement = ShardPlacement::packed;
  CheckpointOptionNames option_names;  ///< How the messages name the options above.
};

/// What read_checkpoint_shard() read.
struct CheckpointShard {
  EmbeddingShard shard;      ///< Host views; `owner` keeps the file mappings or the copies alive.
  std::string scale_tensor;  ///< The scales it holds ("" when none).
  DType dtype = DType::f32;  ///< The table's dtype (U8 read as i4).
  std::int64_t rows = 0;     ///< The whole table's rows (the vocab; pass it as vocab_size to equal
                             ///< vocab shards, whose last one may be zero-padded).
  std::int64_t cols = 0;     ///< The whole table's columns.
  std::string file_path;     ///< The file that holds the table.
  /// For EmbeddingConfig::table_fingerprint (SafetensorsCheckpoint::table_fingerprint of the
  /// table and its scales): ranks that opened different checkpoints are refused at set-up.
  std::uint64_t table_fingerprint = 0;
};

/// Reads rank `tp_rank`'s shard of `request.tensor` (and of its row scales) from `checkpoint`.
/// Vocab shards (sharding_dim 0) are zero-copy views of the mapped file where they lie inside the
/// tensor and are aligned, else copies (zero-padded where an equal shard reaches past the vocab);
/// hidden shards are copies of their columns (only those bytes are read), each holding every
/// row's scale. Throws, naming the option (request.option_names) where one would help:
/// - InvalidArgumentError: a quantized table without scales, scales named as the table itself, a
///   bad sharding_dim or tp_rank, an int4 column count missing, wrong or given for a table that is
///   not U8;
/// - ShapeError: a table that is not 2-D, scales that are not one per row ([rows]), equal hidden
///   shards of a column count that does not divide by tp_size;
/// - CheckpointError: a tensor the checkpoint lacks, a file that cannot be read.
CheckpointShard read_checkpoint_shard(SafetensorsCheckpoint& checkpoint,
                                      const CheckpointShardRequest& request);

}  // namespace tpembed
