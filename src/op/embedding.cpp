// The one-call op of the seed: a ParallelEmbedding set up for one lookup.
#include "tpembed/embedding.hpp"

#include <array>
#include <memory>
#include <vector>

#include "op/checks.hpp"
#include "op/place.hpp"
#include "op/scattered.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed {

namespace {

EmbeddingShard borrowed_shard(const TensorView& weight, const EmbeddingOptions& options) {
  EmbeddingShard shard;
  shard.weight = weight;
  shard.scale = options.per_token_scale;
  shard.padding = options.padding;
  shard.padding_scale = options.padding_scale;
  return shard;
}

ParallelEmbedding make_embedding(const TensorView& weight, const EmbeddingOptions& options,
                                 Communicator* comm) {
  // With tp_size 1 the rank works alone, strict or not (the fast path below never touches `comm`):
  // the one-call op is collective only over a tp group.
  if (comm == nullptr || options.tp_size == 1) {
    TPEMBED_EXPECTS(options.tp_size == 1, InvalidArgumentError, "tp_size ", options.tp_size,
                    " needs a communicator spanning the tp group");
    auto single = make_single_communicator();
    return ParallelEmbedding(*single, borrowed_shard(weight, options), options);
  }
  return ParallelEmbedding(*comm, borrowed_shard(weight, options), options);
}

}  // namespace

EmbeddingShard EmbeddingShard::owning(Tensor weight, Tensor scale, Tensor padding,
                                      Tensor padding_scale) {
  auto owned = std::make_shared<std::array<Tensor, 4>>();
  (*owned)[0] = std::move(weight);
  (*owned)[1] = std::move(scale);
  (*owned)[2] = std::move(padding);
  (*owned)[3] = std::move(padding_scale);
  auto view_or_absent = [](const Tensor& tensor) {
    return tensor.data() == nullptr && tensor.shape().empty() ? TensorView() : tensor.view();
  };
  EmbeddingShard shard;
  shard.weight = view_or_absent((*owned)[0]);
  shard.scale = view_or_absent((*owned)[1]);
  shard.padding = view_or_absent((*owned)[2]);
  shard.padding_scale = view_or_absent((*owned)[3]);
  shard.owner = owned;
  return shard;
}

const char* vocab_exchange_name(VocabExchange exchange) {
  switch (exchange) {
    case VocabExchange::automatic: return "automatic";
    case VocabExchange::all_reduce: return "all_reduce";
    case VocabExchange::owned_rows: return "owned_rows";
    case VocabExchange::peer_rows: return "peer_rows";
  }
  return "unknown";
}

VocabExchange vocab_exchange_from_name(const std::string& name) {
  for (VocabExchange exchange : {VocabExchange::automatic, VocabExchange::all_reduce, VocabExchange::owned_rows,
                                 VocabExchange::peer_rows}) {
    if (name == vocab_exchange_name(exchange) || (name == "auto" && exchange == VocabExchange::automatic)) {
      return exchange;
    }
  }
  throw InvalidArgumentError(detail::concat("vocab_exchange '", name,
                                            "' is none of 'auto', 'all_reduce', 'owned_rows', 'peer_rows'"));
}

EmbeddingShard copy_shard_to_device(const EmbeddingShard& host, int device) {
  auto buffers = std::make_shared<std::vector<DeviceBuffer>>();
  buffers->reserve(4);  // views below point into these buffers: no reallocation
  auto upload = [&](const TensorView& view, const char* name) {
    if (view.absent()) return TensorView();
    TPEMBED_EXPECTS(view.device.kind == DeviceKind::cpu, InvalidArgumentError, "copy_shard_to_device: ", name,
                    " is on ", device_name(view.device), ", not in host memory");
    buffers->emplace_back(static_cast<std::size_t>(view.nbytes()), device);
    buffers->back().copy_from_host(view.data, static_cast<std::size_t>(view.nbytes()));
    return buffers->back().view(view.dtype, view.shape);
  };
  EmbeddingShard shard;
  shard.weight = upload(host.weight, "weight");
  shard.scale = upload(host.scale, "scale");
  shard.padding = upload(host.padding, "padding");
  shard.padding_scale = upload(host.padding_scale, "padding_scale");
  shard.owner = buffers;
  return shard;
}

Tensor embedding(const TensorView& ids, const TensorView& weight, const EmbeddingOptions& options,
                 Communicator* comm) {
  return make_embedding(weight, options, comm).forward(ids);
}

void embedding(const TensorView& ids, const TensorView& weight, const TensorView& out,
               const EmbeddingOptions& options, Communicator* comm, void* stream) {
  if (options.tp_size != 1 || options.strict) {
    make_embedding(weight, options, comm).forward(ids, out, stream);
    return;
  }
  // One rank, nothing to count: check, then one gather on the table's device. Nothing is allocated
  // and nothing waits, so on a GPU the call can be captured in a CUDA graph.
  const EmbeddingShard shard = borrowed_shard(weight, options);
  const DType out_dtype = op::check_local_shard(shard, options);
  const ShardLayout layout = op::plan_layout({op::describe_shard(shard, options, 0, out_dtype)}, 0);
  op::check_ids(ids, weight.device);
  if (layout.output_layout == TokenLayout::scattered) {
    // One rank's chunk is all of them; scatter_dim must still name a dimension of the ids.
    op::check_out(out, op::forward_out_shape(layout, ids), out_dtype, weight.device);
  } else {
    op::check_out(out, ids, layout.global_cols, out_dtype, weight.device);
  }
  op::Place place(weight.device, stream);
  place.lookup(op::lookup_params(shard, layout, ids, out.mutable_data(), layout.global_cols));
}

}  // namespace tpembed
