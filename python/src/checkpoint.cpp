#include "checkpoint.hpp"

#include <memory>
#include <vector>

#include "tpembed/error.hpp"
#include "tpembed/safetensors.hpp"
#include "tpembed/sharding.hpp"

namespace tpembed::python {

namespace {

// What the shard's views point into: file mappings and owned copies.
using Owners = std::vector<std::shared_ptr<const void>>;

TensorView owned(Owners& owners, Tensor tensor) {
  auto copy = std::make_shared<Tensor>(std::move(tensor));
  owners.push_back(copy);
  return copy->view();
}

// Rows [first, first + count) of `name`: a view of the mapping where they lie inside the tensor
// and are aligned, else a copy (zero-padded past the end).
TensorView read_rows(Owners& owners, const SafetensorsFile& file, const std::string& name,
                     std::int64_t first, std::int64_t count, std::int64_t total_rows,
                     std::optional<std::int64_t> int4_columns) {
  if (first + count <= total_rows) {
    try {
      TensorView view = file.rows(name, first, count, int4_columns);
      owners.push_back(file.keep_alive());
      return view;
    } catch (const CheckpointError&) {
      // Unaligned in the file: copy below (a missing tensor fails the same way there).
    }
  }
  return owned(owners, file.copy_rows(name, first, count, int4_columns));
}

// The vocab rows of a tensor as stored (for a 1-D scale tensor: its length).
std::int64_t stored_rows(const SafetensorsFile& file, const std::string& name) {
  const std::vector<std::int64_t>& shape = file.info(name).stored_shape;
  TPEMBED_EXPECTS(!shape.empty(), ShapeError, file.path(), ": tensor '", name,
                  "' is a scalar; expected rows");
  return shape[0];
}

}  // namespace

CheckpointShard read_checkpoint_shard(const std::string& path, const std::string& tensor,
                                      const std::optional<std::string>& scale_tensor,
                                      std::optional<std::int64_t> int4_columns, int tp_size,
                                      int tp_rank, int sharding_dim, ShardPlacement placement) {
  TPEMBED_EXPECTS(sharding_dim == 0 || sharding_dim == 1, InvalidArgumentError,
                  "sharding_dim must be 0 (vocab) or 1 (hidden), got ", sharding_dim);
  TPEMBED_EXPECTS(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, InvalidArgumentError,
                  "tp_rank ", tp_rank, " is outside [0, tp_size = ", tp_size, ")");
  SafetensorsCheckpoint checkpoint(path);
  const SafetensorsFile& file = checkpoint.file(tensor);
  // The logical shape (an int4 tensor's columns resolved), read without touching the data.
  const std::vector<std::int64_t> row_shape = file.copy_rows(tensor, 0, 0, int4_columns).shape();
  TPEMBED_EXPECTS(row_shape.size() == 2, ShapeError, path, ": tensor '", tensor, "' has ",
                  row_shape.size(), " dimensions; an embedding table is 2-D [vocab, hidden]");
  const std::int64_t vocab = stored_rows(file, tensor);
  const std::int64_t hidden = row_shape[1];

  auto owners = std::make_shared<Owners>();
  CheckpointShard result;
  result.vocab_rows = vocab;
  result.table_fingerprint = checkpoint.table_fingerprint(tensor, scale_tensor.value_or(""));
  EmbeddingShard& shard = result.shard;
  const SafetensorsFile* scale_file = scale_tensor ? &checkpoint.file(*scale_tensor) : nullptr;
  if (sharding_dim == 0) {
    const auto [offset, rows] = shard_range(vocab, tp_size, tp_rank, placement);
    shard.weight = read_rows(*owners, file, tensor, offset, rows, vocab, int4_columns);
    if (scale_file != nullptr) {
      shard.scale = read_rows(*owners, *scale_file, *scale_tensor, offset, rows,
                              stored_rows(*scale_file, *scale_tensor), std::nullopt);
    }
  } else {
    const auto [first, count] = shard_range(hidden, tp_size, tp_rank, placement);
    TPEMBED_EXPECTS(first + count <= hidden, ShapeError, "equal hidden shards need hidden (",
                    hidden, ") to divide by tp_size (", tp_size, "); use placement='packed'");
    shard.weight = owned(*owners, file.columns(tensor, first, count, int4_columns));
    if (scale_file != nullptr) {  // scales are per row: every hidden shard holds all of them
      const std::int64_t scale_rows = stored_rows(*scale_file, *scale_tensor);
      shard.scale =
          read_rows(*owners, *scale_file, *scale_tensor, 0, scale_rows, scale_rows, std::nullopt);
    }
  }
  shard.owner = owners;
  return result;
}

}  // namespace tpembed::python
