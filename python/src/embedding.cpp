// tpembed.embedding(): the one-call op for tp 1, into an output the caller passes or the Python
// layer allocates (in the table's framework) once the op has checked the arguments.
//
// A GPU table without strict is one gather through the library's stateless embedding(): nothing
// allocated, nothing kept, nothing waited for, so a CUDA graph captures the call even for a table
// it has not seen (torch.compile's reduce-overhead mode copies a table that is not a parameter
// into its own memory while it records). strict reads the bad-id count back, which needs a
// device counter that outlives the call: those GPU set-ups (a ParallelEmbedding over the caller's
// views, holding the counter) are kept per distinct table and options, so a later strict call
// with the same ones does not allocate again. Host set-ups are made per call.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <map>
#include <memory>
#include <sstream>

#include "arrays.hpp"
#include "bindings.hpp"
#include "embedding_common.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

// GPU set-ups by key; never evicted implicitly (a captured graph may still use the counter).
std::map<std::string, std::unique_ptr<ParallelEmbedding>>& gpu_setups() {
  static auto* setups = new std::map<std::string, std::unique_ptr<ParallelEmbedding>>();
  return *setups;  // leaked on purpose: no cudaFree during interpreter teardown
}

void describe(std::ostringstream& key, const TensorView& view) {
  key << view.data << ':' << int(view.dtype) << ':' << device_name(view.device) << '[';
  for (std::int64_t extent : view.shape) key << extent << ',';
  key << "];";
}

std::string setup_key(const EmbeddingShard& shard, const EmbeddingConfig& config) {
  std::ostringstream key;
  for (const TensorView* view :
       {&shard.weight, &shard.scale, &shard.padding, &shard.padding_scale}) {
    describe(key, *view);
  }
  key << (config.out_dtype ? int(*config.out_dtype) : -1) << ';' << config.strict;
  return key.str();
}

nb::object embedding(const nb::handle& ids, const nb::handle& weight, const nb::handle& out,
                     const nb::callable& allocate, const nb::handle& per_token_scale,
                     const nb::handle& padding, const nb::handle& padding_scale,
                     const std::optional<std::string>& out_dtype,
                     const std::optional<std::string>& weight_dtype,
                     const std::optional<std::string>& scale_dtype,
                     std::optional<std::int64_t> hidden, bool strict, std::uintptr_t stream) {
  EmbeddingConfig config;
  config.out_dtype = parse_dtype(out_dtype, "out_dtype");
  config.strict = strict;
  const ShardArrays arrays = make_shard(weight, per_token_scale, padding, padding_scale,
                                        weight_dtype, scale_dtype, hidden);
  const EmbeddingShard& shard = arrays.shard;

  std::unique_ptr<ParallelEmbedding> host_setup;
  ParallelEmbedding* layer = nullptr;
  if (shard.weight.device.kind == DeviceKind::cuda && !strict) {
    EmbeddingOptions options;
    static_cast<EmbeddingConfig&>(options) = config;
    options.per_token_scale = shard.scale;
    options.padding = shard.padding;
    options.padding_scale = shard.padding_scale;
    return lookup_into(options, shard.weight, shard_inputs(shard), ids, out, allocate, stream);
  }
  if (shard.weight.device.kind == DeviceKind::cuda) {
    auto& setups = gpu_setups();
    std::unique_ptr<ParallelEmbedding>& entry = setups[setup_key(shard, config)];
    if (!entry) {
      try {
        entry = std::make_unique<ParallelEmbedding>(*make_single_communicator(), shard, config);
      } catch (...) {
        setups.erase(setup_key(shard, config));
        throw;
      }
    }
    layer = entry.get();
  } else {
    host_setup = std::make_unique<ParallelEmbedding>(*make_single_communicator(), shard, config);
    layer = host_setup.get();
  }
  return forward_into(*layer, shard_inputs(shard), ids, out, allocate, stream,
                      host_setup != nullptr);
}

}  // namespace

void bind_embedding(nb::module_& m) {
  // Arrays come as plain objects: make_shard and forward_into import them, naming the argument.
  m.def("_embedding", &embedding, nb::arg("ids").none(), nb::arg("weight").none(),
        nb::arg("out").none(), nb::arg("allocate"), nb::arg("per_token_scale").none(),
        nb::arg("padding").none(), nb::arg("padding_scale").none(), nb::arg("out_dtype").none(),
        nb::arg("weight_dtype").none(), nb::arg("scale_dtype").none(), nb::arg("hidden").none(),
        nb::arg("strict"), nb::arg("stream"),
        "Core of tpembed.embedding(); returns the allocated output, or None when `out` was given.");
  m.def(
      "_clear_embedding_cache", [] { gpu_setups().clear(); },
      "Frees the GPU set-ups (and their device counters) tpembed.embedding(strict=True) keeps.");
}

}  // namespace tpembed::python
