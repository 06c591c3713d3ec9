// tpembed.ParallelEmbedding's core: owns the C++ ParallelEmbedding and keeps what its views point
// into alive (the caller's arrays, or a checkpoint's mapping).
#include "tpembed/parallel_embedding.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "checkpoint.hpp"
#include "embedding_common.hpp"
#include "gradient.hpp"
#include "host_communicator.hpp"
#include "tpembed/communicator.hpp"
#include "tpembed/error.hpp"
#include "tpembed/sharding.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

ShardPlacement parse_placement(const std::string& name) {
  if (name == "equal") return ShardPlacement::equal;
  if (name == "packed") return ShardPlacement::packed;
  throw InvalidArgumentError(
      detail::concat("placement '", name, "' is neither 'equal' (the seed's shards) nor 'packed'"));
}

// `timeout`: MpiOptions::timeout_seconds of an MPI engine (how long a rank waits for its peers).
std::unique_ptr<Communicator> make_communicator(const std::string& engine,
                                                std::optional<double> timeout);

// `communicator`: an engine description (a str, from tpembed._communicators.engine()) or an object
// whose collectives the host engine runs (tpembed.torch's torch.distributed groups).
std::unique_ptr<Communicator> make_communicator(const nb::handle& communicator,
                                                std::optional<double> timeout) {
  if (!nb::isinstance<nb::str>(communicator)) return make_python_host_communicator(communicator);
  return make_communicator(nb::cast<std::string>(communicator), timeout);
}

std::unique_ptr<Communicator> make_communicator(const std::string& engine,
                                                std::optional<double> timeout) {
  if (engine == "single") return make_single_communicator();
  MpiOptions mpi;
  mpi.timeout_seconds = timeout;
  if (engine == "mpi") return make_mpi_communicator(mpi);
  // "mpi@<address>": an mpi4py communicator, by the address of its MPI_Comm handle.
  if (engine.rfind("mpi@", 0) == 0) {
    const auto address = static_cast<std::uintptr_t>(std::stoull(engine.substr(4)));
    return make_mpi_communicator(reinterpret_cast<const void*>(address), mpi);
  }
  // "nccl:<rank>:<size>:<device>:<timeout seconds>:<unique id in hex>" (tpembed.NcclCommunicator).
  if (engine.rfind("nccl:", 0) == 0) {
    std::vector<std::string> fields;
    std::size_t start = 5;
    for (std::size_t colon; (colon = engine.find(':', start)) != std::string::npos;
         start = colon + 1) {
      fields.push_back(engine.substr(start, colon - start));
    }
    fields.push_back(engine.substr(start));
    TPEMBED_EXPECTS(fields.size() == 5 && fields[4].size() % 2 == 0, InvalidArgumentError,
                    "malformed NCCL communicator description");
    std::vector<std::uint8_t> id(fields[4].size() / 2);
    for (std::size_t i = 0; i < id.size(); ++i) {
      id[i] = static_cast<std::uint8_t>(std::stoul(fields[4].substr(2 * i, 2), nullptr, 16));
    }
    NcclOptions options;
    options.timeout_seconds = std::stod(fields[3]);
    return make_nccl_communicator(id, std::stoi(fields[0]), std::stoi(fields[1]),
                                  std::stoi(fields[2]), options);
  }
  throw InvalidArgumentError(detail::concat(
      "communicator '", engine, "' is neither 'single', 'mpi' nor an NCCL communicator"));
}

// The group settings, as the Python constructor passes them.
struct GroupOptions {
  std::optional<int> tp_size;  // default: len(tp_group), else the communicator's size
  std::vector<int> tp_group;
  int sharding_dim = 0;
  std::optional<int> tp_rank;
  std::string placement;
  std::optional<std::int64_t> vocab_size;
  std::optional<std::string> out_dtype;
  bool strict = false;
  std::string vocab_exchange = "auto";
  bool collective_checks = true;
  std::string output_layout = "replicated";
  std::string input_layout = "replicated";
  int scatter_dim = 0;

  EmbeddingConfig config(const Communicator& comm) const {
    EmbeddingConfig config;
    config.tp_size =
        tp_size ? *tp_size : (tp_group.empty() ? comm.size() : static_cast<int>(tp_group.size()));
    config.tp_group = tp_group;
    config.sharding_dim = sharding_dim;
    config.tp_rank = tp_rank;
    config.placement = parse_placement(placement);
    config.vocab_size = vocab_size;
    config.out_dtype = parse_dtype(out_dtype, "out_dtype");
    config.strict = strict;
    config.vocab_exchange = vocab_exchange_from_name(vocab_exchange);
    config.collective_checks = collective_checks;
    config.output_layout = token_layout_from_name(output_layout, "output_layout");
    config.input_layout = token_layout_from_name(input_layout, "input_layout");
    config.scatter_dim = scatter_dim;
    return config;
  }

  // This rank's shard index as ParallelEmbedding derives it: tp_rank, else its place in the group.
  int my_tp_rank(const Communicator& comm) const {
    if (tp_rank) return *tp_rank;
    if (tp_group.empty()) return comm.rank();
    const auto place = std::find(tp_group.begin(), tp_group.end(), comm.rank());
    TPEMBED_EXPECTS(place != tp_group.end(), InvalidArgumentError, "rank ", comm.rank(),
                    " is not in its tp_group");
    return static_cast<int>(place - tp_group.begin());
  }
};

// Runs `step` (this rank's conversion of its arguments) and agrees on its success over `comm`
// before set-up: a rank that refuses its arguments raises, with its reason, on every rank instead
// of leaving the others waiting in the set-up's collectives.
template <typename Step>
auto agreed(Communicator& comm, Step&& step) -> decltype(step()) {
  if (comm.size() == 1) return step();  // nobody to tell: the error as it is, without "rank 0: "
  std::exception_ptr failure;
  decltype(step()) result{};
  try {
    result = step();
  } catch (...) {
    failure = as_tpembed_error(std::current_exception());
  }
  agree_or_throw(comm, failure);
  return result;
}

class Layer {
 public:
  Layer(std::vector<InputArray> arrays, const EmbeddingShard& shard,
        std::unique_ptr<ParallelEmbedding> layer)
      : arrays_(std::move(arrays)), inputs_(shard_inputs(shard)), layer_(std::move(layer)) {}

  static Layer from_arrays(const nb::handle& weight, const nb::handle& per_token_scale,
                           const nb::handle& padding, const nb::handle& padding_scale,
                           const std::optional<std::string>& weight_dtype,
                           const std::optional<std::string>& scale_dtype,
                           std::optional<std::int64_t> hidden, const nb::handle& communicator,
                           std::optional<double> comm_timeout, const GroupOptions& options) {
    std::unique_ptr<Communicator> comm = make_communicator(communicator, comm_timeout);
    struct Converted {
      EmbeddingConfig config;
      ShardArrays arrays;
    };
    Converted converted = agreed(*comm, [&] {
      return Converted{options.config(*comm),
                       make_shard(weight, per_token_scale, padding, padding_scale, weight_dtype,
                                  scale_dtype, hidden)};
    });
    // The views point into these arrays: keep them (and the memory they own) with the layer.
    const EmbeddingShard& shard = converted.arrays.shard;
    auto layer = std::make_unique<ParallelEmbedding>(*comm, shard, converted.config);
    return Layer(std::move(converted.arrays.arrays), shard, std::move(layer));
  }

  static Layer from_checkpoint(const std::string& path, const std::string& tensor,
                               const std::optional<std::string>& scale_tensor,
                               std::optional<std::int64_t> hidden, const nb::handle& communicator,
                               std::optional<double> comm_timeout, const GroupOptions& options) {
    std::unique_ptr<Communicator> comm = make_communicator(communicator, comm_timeout);
    // A rank that cannot read its shard must not leave the others waiting in the set-up.
    struct Read {
      EmbeddingConfig config;
      CheckpointShard read;
    };
    Read read = agreed(*comm, [&] {
      EmbeddingConfig config = options.config(*comm);
      CheckpointShard shard =
          read_checkpoint_shard(path, tensor, scale_tensor, hidden, config.tp_size,
                                options.my_tp_rank(*comm), config.sharding_dim, config.placement);
      return Read{config, shard};
    });
    EmbeddingConfig& config = read.config;
    config.table_fingerprint = read.read.table_fingerprint;
    if (config.sharding_dim == 0 && config.placement == ShardPlacement::equal &&
        !config.vocab_size) {
      config.vocab_size = read.read.rows;  // the last equal shard may be zero-padded
    }
    const EmbeddingShard& shard = read.read.shard;
    auto layer = std::make_unique<ParallelEmbedding>(*comm, shard, config);
    return Layer({}, shard, std::move(layer));
  }

  // A refusal that the Python layer made before set-up (a bad keyword, a non-array table): sets up
  // the communicator and joins the others' agreement with it, so every rank raises it.
  [[noreturn]] static void refuse_setup(const nb::handle& communicator,
                                        std::optional<double> comm_timeout, bool argument_error,
                                        const std::string& message) {
    std::unique_ptr<Communicator> comm = make_communicator(communicator, comm_timeout);
    if (comm->size() == 1) std::rethrow_exception(python_refusal(argument_error, message));
    agree_or_throw(*comm, python_refusal(argument_error, message));
    throw BackendError("refuse_setup: the agreement did not raise");  // unreachable
  }

  nb::object forward(const nb::handle& ids, const nb::handle& out, const nb::callable& allocate,
                     std::uintptr_t stream) {
    return forward_into(*layer_, inputs_, ids, out, allocate, stream, /*release_gil=*/false);
  }

  // A refusal that the Python layer made of a forward's arguments: joins the group's check.
  [[noreturn]] void fail_forward(bool argument_error, const std::string& message) {
    layer_->fail_forward(python_refusal(argument_error, message));
  }

  // The gradient of forward(ids) for this rank's shard, into grad_weight or an allocated one of
  // the shard's shape [rows, cols]. Arguments this rank refuses join the group's check, as a
  // forward's do (the backward's check is the forward's).
  nb::object backward(const nb::handle& ids, const nb::handle& grad_out,
                      const nb::handle& grad_weight, const nb::callable& allocate,
                      const std::optional<std::string>& out_dtype,
                      const std::optional<std::string>& grad_out_dtype, bool accumulate,
                      std::optional<std::int64_t> padding_idx, const nb::handle& grad_padding,
                      std::uintptr_t stream) {
    std::optional<InputArray> ids_array, grad_out_array;
    TensorView ids_view, grad_out_tensor;
    GradientOutput weight, padding;
    BackwardOptions options;
    try {
      ids_array = input_array(ids, "ids");
      ids_view = to_view(*ids_array, "ids");
      grad_out_array = input_array(grad_out, "grad_out");
      grad_out_tensor =
          grad_out_view(*grad_out_array, parse_dtype(grad_out_dtype, "grad_out_dtype"));
      const TensorView& table = inputs_.front().view;
      weight = gradient_output(grad_weight, "grad_weight", parse_dtype(out_dtype, "out_dtype"),
                               "out_dtype", table.shape, &allocate);
      padding = gradient_output(grad_padding, "grad_padding", weight.view.dtype,
                                "grad_weight's dtype", {}, nullptr);
      std::vector<NamedView> read = inputs_;
      read.push_back({"ids", ids_view});
      read.push_back({"grad_out", grad_out_tensor});
      std::vector<NamedView> besides_weight = read;
      besides_weight.push_back({"grad_padding", padding.view});
      check_gradient_overlap("grad_weight", weight.view, besides_weight);
      check_gradient_overlap("grad_padding", padding.view, read);
      options.accumulate = accumulate;
      options.ignored_id = padding_idx;
      options.grad_padding = padding.view;
    } catch (...) {
      layer_->fail_forward(as_tpembed_error(std::current_exception()));
    }
    layer_->backward(ids_view, grad_out_tensor, weight.view, reinterpret_cast<void*>(stream),
                     options);
    return weight.result;
  }

  nb::dict last_gradient_counts() const { return counts_dict(layer_->last_gradient_counts()); }

  // The host arrays the layer reads (its table, scales, padding), each as (name, bytes, dtype name,
  // shape): read-only uint8 views of the layer's memory (a checkpoint's mapping) that keep `self`
  // alive. tpembed.torch copies a checkpoint's shard out of them into its parameters.
  static nb::list shard_arrays(const nb::handle& self) {
    const Layer& layer = nb::cast<const Layer&>(self);
    nb::list arrays;
    for (const NamedView& input : layer.inputs_) {
      if (input.view.data == nullptr) continue;
      TPEMBED_EXPECTS(input.view.device.kind == DeviceKind::cpu, InvalidArgumentError,
                      "shard_arrays: the layer's ", input.name, " is not in host memory");
      const std::size_t bytes[1] = {static_cast<std::size_t>(input.view.nbytes())};
      nb::ndarray<nb::numpy, const std::uint8_t, nb::ndim<1>> raw(input.view.data, 1, bytes, self);
      arrays.append(nb::make_tuple(input.name, raw, dtype_name(input.view.dtype), input.view.shape));
    }
    return arrays;
  }

  nb::dict layout() const {
    const ShardLayout& layout = layer_->layout();
    nb::dict d;
    d["sharding_dim"] = layout.sharding_dim;
    d["tp_size"] = layout.tp_size;
    d["tp_rank"] = layout.tp_rank;
    d["global_rows"] = layout.global_rows;
    d["global_cols"] = layout.global_cols;
    d["padding_rows"] = layout.padding_rows;
    d["offsets"] = layout.offsets;
    d["sizes"] = layout.sizes;
    d["table_dtype"] = dtype_name(layout.table_dtype);
    d["out_dtype"] = dtype_name(layout.out_dtype);
    d["vocab_exchange"] = vocab_exchange_name(layout.vocab_exchange);
    d["output_layout"] = token_layout_name(layout.output_layout);
    d["input_layout"] = token_layout_name(layout.input_layout);
    d["scatter_dim"] = layout.scatter_dim;
    return d;
  }

  std::uint64_t last_bad_id_count() const { return layer_->last_bad_id_count(); }
  std::uintptr_t bad_id_counter() const {
    return reinterpret_cast<std::uintptr_t>(layer_->bad_id_counter());
  }

 private:
  // A Python-side refusal as an error that crosses ranks: TypeError and ValueError are argument
  // errors (ValueError, and TypeError too, on every rank), anything else a RuntimeError.
  static std::exception_ptr python_refusal(bool argument_error, const std::string& message) {
    if (argument_error) return std::make_exception_ptr(InvalidArgumentError(message));
    return std::make_exception_ptr(BackendError(message));
  }

  std::vector<InputArray> arrays_;
  std::vector<NamedView>
      inputs_;  // views into arrays_ (or a checkpoint): what out must not overlap
  std::unique_ptr<ParallelEmbedding> layer_;
};

GroupOptions group_options(std::optional<int> tp_size, const std::vector<int>& tp_group,
                           int sharding_dim, std::optional<int> tp_rank,
                           const std::string& placement, std::optional<std::int64_t> vocab_size,
                           const std::optional<std::string>& out_dtype, bool strict,
                           const std::string& vocab_exchange, bool collective_checks,
                           const std::string& output_layout, const std::string& input_layout,
                           int scatter_dim) {
  return GroupOptions{tp_size,   tp_group,          sharding_dim,  tp_rank,      placement,
                      vocab_size, out_dtype,        strict,        vocab_exchange,
                      collective_checks, output_layout, input_layout, scatter_dim};
}

}  // namespace

void bind_parallel_embedding(nb::module_& m) {
  nb::class_<Layer>(m, "_ParallelEmbedding", "Core of tpembed.ParallelEmbedding.")
      .def_static(
          "from_arrays",
          [](const nb::handle& weight, const nb::handle& per_token_scale, const nb::handle& padding,
             const nb::handle& padding_scale, const std::optional<std::string>& weight_dtype,
             const std::optional<std::string>& scale_dtype, std::optional<std::int64_t> hidden,
             const nb::handle& communicator, std::optional<double> comm_timeout,
             std::optional<int> tp_size, const std::vector<int>& tp_group, int sharding_dim,
             std::optional<int> tp_rank, const std::string& placement,
             std::optional<std::int64_t> vocab_size, const std::optional<std::string>& out_dtype,
             bool strict, const std::string& vocab_exchange, bool collective_checks,
             const std::string& output_layout, const std::string& input_layout, int scatter_dim) {
            return Layer::from_arrays(
                weight, per_token_scale, padding, padding_scale, weight_dtype, scale_dtype, hidden,
                communicator, comm_timeout,
                group_options(tp_size, tp_group, sharding_dim, tp_rank, placement, vocab_size,
                              out_dtype, strict, vocab_exchange, collective_checks, output_layout,
                              input_layout, scatter_dim));
          },
          // Arrays come as plain objects: make_shard imports them, naming the argument.
          nb::arg("weight").none(), nb::arg("per_token_scale").none(), nb::arg("padding").none(),
          nb::arg("padding_scale").none(), nb::arg("weight_dtype").none(),
          nb::arg("scale_dtype").none(), nb::arg("hidden").none(), nb::arg("communicator"),
          nb::arg("comm_timeout").none(), nb::arg("tp_size").none(), nb::arg("tp_group"),
          nb::arg("sharding_dim"), nb::arg("tp_rank").none(), nb::arg("placement"),
          nb::arg("vocab_size").none(), nb::arg("out_dtype").none(), nb::arg("strict"),
          nb::arg("vocab_exchange"), nb::arg("collective_checks"), nb::arg("output_layout"),
          nb::arg("input_layout"), nb::arg("scatter_dim"))
      .def_static(
          "from_checkpoint",
          [](const std::string& path, const std::string& tensor,
             const std::optional<std::string>& scale_tensor, std::optional<std::int64_t> hidden,
             const nb::handle& communicator, std::optional<double> comm_timeout,
             std::optional<int> tp_size, const std::vector<int>& tp_group, int sharding_dim,
             std::optional<int> tp_rank, const std::string& placement,
             std::optional<std::int64_t> vocab_size, const std::optional<std::string>& out_dtype,
             bool strict, const std::string& vocab_exchange, bool collective_checks,
             const std::string& output_layout, const std::string& input_layout, int scatter_dim) {
            return Layer::from_checkpoint(
                path, tensor, scale_tensor, hidden, communicator, comm_timeout,
                group_options(tp_size, tp_group, sharding_dim, tp_rank, placement, vocab_size,
                              out_dtype, strict, vocab_exchange, collective_checks, output_layout,
                              input_layout, scatter_dim));
          },
          nb::arg("path"), nb::arg("tensor"), nb::arg("scale_tensor").none(),
          nb::arg("hidden").none(), nb::arg("communicator"), nb::arg("comm_timeout").none(),
          nb::arg("tp_size").none(), nb::arg("tp_group"), nb::arg("sharding_dim"),
          nb::arg("tp_rank").none(), nb::arg("placement"), nb::arg("vocab_size").none(),
          nb::arg("out_dtype").none(), nb::arg("strict"), nb::arg("vocab_exchange"),
          nb::arg("collective_checks"), nb::arg("output_layout"), nb::arg("input_layout"),
          nb::arg("scatter_dim"))
      .def_static("refuse_setup", &Layer::refuse_setup, nb::arg("communicator"),
                  nb::arg("comm_timeout").none(), nb::arg("argument_error"), nb::arg("message"),
                  "Joins the set-up of the other ranks with this rank's refusal; always raises.")
      .def("forward", &Layer::forward, nb::arg("ids").none(), nb::arg("out").none(),
           nb::arg("allocate"), nb::arg("stream"))
      .def("fail_forward", &Layer::fail_forward, nb::arg("argument_error"), nb::arg("message"),
           "Joins the group's forward with this rank's refusal of its arguments; always raises.")
      .def("backward", &Layer::backward, nb::arg("ids").none(), nb::arg("grad_out").none(),
           nb::arg("grad_weight").none(), nb::arg("allocate"), nb::arg("out_dtype").none(),
           nb::arg("grad_out_dtype").none(), nb::arg("accumulate"), nb::arg("padding_idx").none(),
           nb::arg("grad_padding").none(), nb::arg("stream"),
           "Core of ParallelEmbedding.backward(); returns the allocated grad_weight, or None.")
      .def("last_gradient_counts", &Layer::last_gradient_counts)
      .def("shard_arrays", &Layer::shard_arrays,
           "[(name, uint8 view, dtype name, shape)] of the host arrays the layer reads.")
      .def("layout", &Layer::layout)
      .def("last_bad_id_count", &Layer::last_bad_id_count)
      .def("bad_id_counter", &Layer::bad_id_counter);

  m.def(
      "_shard_range",
      [](std::int64_t total, int tp_size, int tp_rank, const std::string& placement) {
        return shard_range(total, tp_size, tp_rank, parse_placement(placement));
      },
      nb::arg("total"), nb::arg("tp_size"), nb::arg("tp_rank"), nb::arg("placement"));
}

}  // namespace tpembed::python
