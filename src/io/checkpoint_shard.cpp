// read_checkpoint_shard(): a rank's shard of a table and its row scales, read from a checkpoint.
#include "tpembed/checkpoint_shard.hpp"

#include <memory>
#include <vector>

#include "io/checkpoint_error.hpp"
#include "io/opened_file.hpp"
#include "tpembed/error.hpp"
#include "tpembed/sharding.hpp"

namespace tpembed {

namespace {

// What the shard's views point into: file mappings and owned copies.
using Owners = std::vector<std::shared_ptr<const void>>;

TensorView owned(Owners& owners, Tensor tensor) {
  auto copy = std::make_shared<Tensor>(std::move(tensor));
  owners.push_back(copy);
  return copy->view();
}

// Rows [first, first + count) of `name` (of `total_rows`): a view of the mapping where they lie
// inside the tensor and are aligned, else a copy (zero-padded past the end).
TensorView read_rows(Owners& owners, const SafetensorsFile& file, const std::string& name,
                     std::int64_t first, std::int64_t count, std::int64_t total_rows,
                     std::optional<std::int64_t> int4_columns) {
  if (first + count <= total_rows) {
    try {
      TensorView view = file.rows(name, first, count, int4_columns);
      owners.push_back(file.keep_alive());
      return view;
    } catch (const CheckpointError&) {
      // Unaligned in the file: copy below (any other problem fails the same way there).
    }
  }
  return owned(owners, file.copy_rows(name, first, count, int4_columns));
}

// The scales to read: the caller's, else the default name when the checkpoint holds it, else "".
std::string scale_tensor_of(const SafetensorsCheckpoint& checkpoint,
                            const CheckpointShardRequest& request) {
  if (request.scale_tensor) return *request.scale_tensor;
  const std::string fallback = default_scale_tensor(request.tensor);
  return checkpoint.contains(fallback) ? fallback : std::string();
}

}  // namespace

std::string default_scale_tensor(const std::string& tensor) { return tensor + "_scale"; }

CheckpointShard read_checkpoint_shard(SafetensorsCheckpoint& checkpoint,
                                      const CheckpointShardRequest& request) {
  const CheckpointOptionNames& names = request.option_names;
  const std::string& tensor = request.tensor;
  TPEMBED_EXPECTS(request.sharding_dim == 0 || request.sharding_dim == 1, InvalidArgumentError,
                  "sharding_dim must be 0 (vocab) or 1 (hidden), got ", request.sharding_dim);
  TPEMBED_EXPECTS(request.tp_size >= 1 && request.tp_rank >= 0 && request.tp_rank < request.tp_size,
                  InvalidArgumentError, "tp_rank ", request.tp_rank, " is outside [0, tp_size = ",
                  request.tp_size, ")");
  const SafetensorsFile& file = checkpoint.file(tensor);
  const SafetensorsTensorInfo& info = file.info(tensor);
  const std::optional<std::int64_t> int4_columns =
      io::int4_columns(file.path(), info, request.as_int4_columns, names.int4_columns);
  TPEMBED_EXPECTS(info.stored_shape.size() == 2, ShapeError, file.path(), ": tensor ",
                  io::in_quotes(tensor), " has shape ", io::shape_text(info.stored_shape), " (",
                  info.stored_shape.size(), "-D); an embedding table is 2-D [vocab, hidden]");
  // The logical dtype and shape (an int4 table's columns resolved), without reading the data.
  const Tensor no_rows = file.copy_rows(tensor, 0, 0, int4_columns);

  CheckpointShard result;
  result.dtype = no_rows.dtype();
  result.rows = info.stored_shape[0];
  result.cols = no_rows.shape()[1];
  result.file_path = file.path();
  result.scale_tensor = scale_tensor_of(checkpoint, request);
  const std::string& scale_tensor = result.scale_tensor;
  TPEMBED_EXPECTS(!is_quantized(result.dtype) || !scale_tensor.empty(), InvalidArgumentError,
                  file.path(), ": tensor ", io::in_quotes(tensor), " is ", dtype_name(result.dtype),
                  " and needs its row scales: pass ", names.scale_tensor, " (the checkpoint has no ",
                  io::in_quotes(default_scale_tensor(tensor)), ")");
  TPEMBED_EXPECTS(scale_tensor != tensor, InvalidArgumentError, names.scale_tensor, " ",
                  io::in_quotes(scale_tensor), " names the table itself");
  result.table_fingerprint = checkpoint.table_fingerprint(tensor, scale_tensor);

  auto owners = std::make_shared<Owners>();
  EmbeddingShard& shard = result.shard;
  const SafetensorsFile* scale_file = nullptr;
  if (!scale_tensor.empty()) {
    scale_file = &checkpoint.file(scale_tensor);
    const std::vector<std::int64_t>& scale_shape = scale_file->info(scale_tensor).stored_shape;
    TPEMBED_EXPECTS(scale_shape.size() == 1 && scale_shape[0] == result.rows, ShapeError,
                    scale_file->path(), ": scale tensor ", io::in_quotes(scale_tensor),
                    " has shape ", io::shape_text(scale_shape), scale_shape.empty() ? " (0-d)" : "",
                    " but table ", io::in_quotes(tensor), " has ", result.rows,
                    " rows: it needs one scale per row, shape [", result.rows, "]");
  }
  if (request.sharding_dim == 0) {
    const auto [offset, rows] =
        shard_range(result.rows, request.tp_size, request.tp_rank, request.placement);
    shard.weight = read_rows(*owners, file, tensor, offset, rows, result.rows, int4_columns);
    if (scale_file != nullptr) {
      shard.scale = read_rows(*owners, *scale_file, scale_tensor, offset, rows, result.rows,
                              std::nullopt);
    }
  } else {
    // Checked on every rank alike (not only on the ranks whose range would reach past the end).
    TPEMBED_EXPECTS(request.placement != ShardPlacement::equal ||
                        result.cols % request.tp_size == 0,
                    ShapeError, file.path(), ": tensor ", io::in_quotes(tensor), " has ",
                    result.cols, " columns, which do not divide by tp_size ", request.tp_size,
                    ": equal hidden shards need a column count that does; use ",
                    names.packed_placement, " for uneven shards");
    const auto [first, count] =
        shard_range(result.cols, request.tp_size, request.tp_rank, request.placement);
    shard.weight = owned(*owners, file.columns(tensor, first, count, int4_columns));
    if (scale_file != nullptr) {  // scales are per row: every hidden shard holds all of them
      shard.scale = read_rows(*owners, *scale_file, scale_tensor, 0, result.rows, result.rows,
                              std::nullopt);
    }
  }
  shard.owner = owners;
  return result;
}

}  // namespace tpembed
