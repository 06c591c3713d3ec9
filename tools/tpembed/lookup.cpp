// `tpembed lookup`: ids looked up in a checkpoint's table, on the CPU or a GPU, by one rank or by the
// ranks of mpirun with the table sharded by vocab rows or hidden columns (each rank reads only its
// shard of the file). Prints a summary, or writes the embeddings to a safetensors file.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <numeric>
#include <string>

#include "commands.hpp"
#include "common.hpp"

namespace tpembed::cli {

namespace {

struct LookupOptions {
  std::string table;
  std::string tensor = "model.embed_tokens.weight";
  std::string scale_tensor;
  std::string ids;
  std::string ids_file;
  int tp = 0;
  int sharding_dim = 0;
  std::string placement = "packed";
  std::string vocab_exchange = "auto";
  std::string device = "cpu";
  std::string out_dtype;
  bool strict = false;
  std::string out;
  std::int64_t int4_columns = 0;
  int show = 3;
};

float element_as_f32(const Tensor& out, std::int64_t index) {
  const auto* bytes = static_cast<const std::uint8_t*>(out.data());
  switch (out.dtype()) {
    case DType::f16: return f16_bits_to_f32(reinterpret_cast<const std::uint16_t*>(bytes)[index]);
    case DType::bf16: return bf16_bits_to_f32(reinterpret_cast<const std::uint16_t*>(bytes)[index]);
    default: return reinterpret_cast<const float*>(bytes)[index];
  }
}

// Everything a rank reads and parses before the lookup: ids, checkpoint, table, scales, its shard.
struct Prepared {
  std::vector<std::int64_t> ids;
  std::unique_ptr<SafetensorsCheckpoint> checkpoint;
  std::string file_path, scale_tensor, table_text;
  DType table_dtype = DType::f32;
  std::int64_t rows = 0, hidden = 0;
  std::uint64_t fingerprint = 0;
  EmbeddingShard shard;
  EmbeddingConfig config;
  DType out_dtype = DType::f32;
  Tensor out;
};

void prepare(Communicator& world, const LookupOptions& options, Prepared& p) {
  const int tp = options.tp == 0 ? world.size() : options.tp;
  TPEMBED_EXPECTS(world.size() % tp == 0, InvalidArgumentError, "--tp ", tp, " does not divide the ",
                  world.size(), " ranks of the world into tensor-parallel groups");
  p.ids = options.ids_file.empty() ? parse_id_list(options.ids) : read_id_file(options.ids_file);

  p.checkpoint = std::make_unique<SafetensorsCheckpoint>(options.table);
  SafetensorsCheckpoint& checkpoint = *p.checkpoint;
  const auto placement = options.placement == "equal" ? ShardPlacement::equal : ShardPlacement::packed;
  CheckpointShardRequest request;
  request.tensor = options.tensor;
  if (!options.scale_tensor.empty()) request.scale_tensor = options.scale_tensor;
  if (options.int4_columns > 0) request.as_int4_columns = options.int4_columns;
  request.tp_size = tp;
  request.tp_rank = world.rank() % tp;
  request.sharding_dim = options.sharding_dim;
  request.placement = placement;
  request.option_names = cli_option_names();
  CheckpointShard read = read_checkpoint_shard(checkpoint, request);
  p.file_path = read.file_path;
  p.table_dtype = read.dtype;
  p.rows = read.rows;
  p.hidden = read.cols;
  p.scale_tensor = read.scale_tensor;
  p.shard = std::move(read.shard);
  p.fingerprint = read.table_fingerprint;
  TPEMBED_EXPECTS(!is_quantized(p.table_dtype) || !options.out_dtype.empty(), InvalidArgumentError, p.file_path,
                  ": tensor '", options.tensor, "' is ", dtype_name(p.table_dtype),
                  ": name the output dtype with --out-dtype f32|f16|bf16");
  if (world.rank() == 0 && !options.out.empty()) {
    std::vector<std::string> inputs = {p.file_path};
    if (!p.scale_tensor.empty()) inputs.push_back(checkpoint.file_path(p.scale_tensor));
    check_safetensors_output(options.out, inputs);
  }
  p.table_text = format("'%s' %s [%lld, %lld]%s in %s", options.tensor.c_str(), dtype_name(p.table_dtype),
                        static_cast<long long>(p.rows), static_cast<long long>(p.hidden),
                        p.scale_tensor.empty() ? "" : (" with scales '" + p.scale_tensor + "'").c_str(),
                        p.file_path.c_str());

  EmbeddingConfig& config = p.config;
  config.tp_size = tp;
  config.sharding_dim = options.sharding_dim;
  config.placement = placement;
  config.strict = options.strict;
  config.vocab_exchange = vocab_exchange_from_name(options.vocab_exchange);
  config.table_fingerprint = p.fingerprint;
  if (!options.out_dtype.empty()) config.out_dtype = dtype_from_name(options.out_dtype);
  if (tp > 1) {
    const int first = world.rank() / tp * tp;
    for (int r = 0; r < tp; ++r) config.tp_group.push_back(first + r);
  }
  if (tp > 1 && options.sharding_dim == 0 && placement == ShardPlacement::equal) config.vocab_size = p.rows;
  p.out_dtype = config.out_dtype ? *config.out_dtype : p.table_dtype;
  p.out = allocate(p.out_dtype, {static_cast<std::int64_t>(p.ids.size()), p.hidden}, "the output");
}

int run_lookup(Communicator& world, const LookupOptions& options) {
  const bool lead = world.rank() == 0;
  // What each rank reads may fail on that rank alone: every rank learns of it before any collective.
  Prepared p;
  on_every_rank(world, [&] {
    prepare(world, options, p);
    return 0;
  });
  // Ranks must look the same ids up in the same table: a difference would give wrong rows silently.
  agree_on_value(world, "ids", ids_fingerprint(p.ids), describe_ids(p.ids));
  agree_on_value(world, "table", p.fingerprint, p.table_text);

  const std::vector<std::int64_t>& ids = p.ids;
  const auto count = static_cast<std::int64_t>(ids.size());
  const std::int64_t hidden = p.hidden;
  const DType out_dtype = p.out_dtype;
  const EmbeddingConfig& config = p.config;
  const int tp = config.tp_size;
  Tensor& out = p.out;

  const auto start = std::chrono::steady_clock::now();
  std::uint64_t bad = 0;
  VocabExchange exchange = VocabExchange::all_reduce;
  if (options.device == "cuda") {
    // Copies that may fail on one rank alone (no GPU, out of memory) are agreed on before any collective.
    const int device = on_every_rank(world, [&] {
      const int chosen = node_local_cuda_device(world);
      cuda_set_device(chosen);  // this rank's streams stay on its own GPU
      return chosen;
    });
    EmbeddingShard on_gpu = on_every_rank(world, [&] { return copy_shard_to_device(p.shard, device); });
    auto [device_ids, device_out] = on_every_rank(world, [&] {
      std::pair<DeviceBuffer, DeviceBuffer> buffers{DeviceBuffer(ids.size() * 8, device),
                                                    DeviceBuffer(static_cast<std::size_t>(out.nbytes()), device)};
      buffers.first.copy_from_host(ids.data(), ids.size() * 8);
      return buffers;
    });
    ParallelEmbedding layer(world, std::move(on_gpu), config);
    layer.forward(device_ids.view(DType::i64, {count}), device_out.view(out_dtype, {count, hidden}));
    device_out.copy_to_host(out.data(), static_cast<std::size_t>(out.nbytes()));
    bad = layer.last_bad_id_count();
    exchange = layer.layout().vocab_exchange;
  } else {
    ParallelEmbedding layer(world, std::move(p.shard), config);
    layer.forward(TensorView(ids.data(), DType::i64, {count}), out.view());
    bad = layer.last_bad_id_count();
    exchange = layer.layout().vocab_exchange;
  }
  const std::string exchange_text =
      tp > 1 && options.sharding_dim == 0 ? std::string(", ") + vocab_exchange_name(exchange) + " exchange" : "";
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  if (lead) {
    std::printf("looked up %lld ids in %s '%s' (%s [%lld, %lld]%s) on %s, tp %d, sharding dim %d (%s%s): out %s "
                "[%lld, %lld] in %.2f ms; %llu ids out of range\n",
                static_cast<long long>(count), p.file_path.c_str(), options.tensor.c_str(), dtype_name(p.table_dtype),
                static_cast<long long>(p.rows), static_cast<long long>(hidden),
                p.scale_tensor.empty() ? "" : (", scales '" + p.scale_tensor + "'").c_str(), options.device.c_str(),
                tp, options.sharding_dim, options.placement.c_str(), exchange_text.c_str(), dtype_name(out_dtype),
                static_cast<long long>(count), static_cast<long long>(hidden), ms,
                static_cast<unsigned long long>(bad));
    std::fflush(stdout);
  }
  // Rank 0 writes its --out (ranks may give --out differently: every rank joins this agreement, so
  // a failure there is every rank's).
  on_every_rank(world, [&] {
    if (lead && !options.out.empty()) {
      write_safetensors(options.out, {{"embeddings", out.view()}},
                        {{"tpembed.table", p.file_path + ":" + options.tensor}, {"tpembed.ids", std::to_string(count)}});
      std::printf("wrote tensor 'embeddings' to %s\n", options.out.c_str());
    }
    return 0;
  });
  if (!lead || !options.out.empty()) return 0;
  for (std::int64_t t = 0; t < std::min<std::int64_t>(count, options.show); ++t) {
    double norm = 0;
    for (std::int64_t c = 0; c < hidden; ++c) norm += std::pow(double{element_as_f32(out, t * hidden + c)}, 2);
    std::printf("  id %lld: norm %.6g, first values", static_cast<long long>(ids[static_cast<std::size_t>(t)]),
                std::sqrt(norm));
    for (std::int64_t c = 0; c < std::min<std::int64_t>(hidden, 6); ++c) {
      std::printf(" %.6g", double{element_as_f32(out, t * hidden + c)});
    }
    std::printf("%s\n", hidden > 6 ? " ..." : "");
  }
  if (count > options.show) std::printf("  ... %lld more rows\n", static_cast<long long>(count - options.show));
  return 0;
}

}  // namespace

void add_lookup_command(CLI::App& app, Launch& launch) {
  auto options = std::make_shared<LookupOptions>();
  CLI::App* command = app.add_subcommand(
      "lookup",
      "Look ids up in a table of a safetensors checkpoint. Under mpirun the table is sharded over the\n"
      "ranks (--tp, default all of them) by vocab rows (--sharding-dim 0) or hidden columns (1), and each\n"
      "rank reads only its shard from the file. Quantised tables (i8, fp8 e4m3, int4 stored as U8) use\n"
      "their row scales (<tensor>_scale unless --scale-tensor says otherwise) and need --out-dtype.\n"
      "Prints the output's shape, norms and first values, or writes it to --out as safetensors.\n"
      "Example: mpirun -np 2 tpembed lookup --table model.safetensors --tensor model.embed_tokens.weight \\\n"
      "           --ids 1,2,3 --tp 2 --sharding-dim 1 --device cuda");
  launch.per_rank.insert(
      command->add_option("--table", options->table, "checkpoint: a .safetensors file, an index.json or a directory")
          ->required()->check(CLI::ExistingPath));
  command->add_option("--tensor", options->tensor, "the table's tensor name")->capture_default_str();
  command->add_option("--scale-tensor", options->scale_tensor, "tensor name of the row scales");
  auto* ids = command->add_option("--ids", options->ids, "comma-separated ids, e.g. 1,2,3 (negative ids are bad ids)");
  auto* ids_file = command->add_option("--ids-file", options->ids_file, "a text file of ids (commas, spaces or newlines)")
                       ->check(existing_regular_file());
  ids->excludes(ids_file);
  command->add_option("--tp", options->tp, "tensor-parallel size (default: every rank of mpirun)")
      ->check(integer_in(0, std::numeric_limits<int>::max()));
  command->add_option("--sharding-dim", options->sharding_dim, "0: shard vocab rows, 1: shard hidden columns")
      ->check(CLI::IsMember({0, 1}))->capture_default_str();
  command->add_option("--placement", options->placement, "packed (any sizes) or equal (the seed's layout)")
      ->check(CLI::IsMember({"packed", "equal"}))->capture_default_str();
  command->add_option("--vocab-exchange", options->vocab_exchange,
                      "vocab sharding over ranks: auto, all_reduce (the seed's sum), owned_rows (each row from its\n"
                      "owner only), peer_rows (GPU tables of one machine: one kernel reads peers' memory)")
      ->check(CLI::IsMember({"auto", "all_reduce", "owned_rows", "peer_rows"}))
      ->capture_default_str();
  command->add_option("--device", options->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  command->add_option("--out-dtype", options->out_dtype, "output dtype (default: the table's; required if quantised)")
      ->check(CLI::IsMember(output_dtype_names()));
  command->add_flag("--strict", options->strict, "fail (on every rank) when an id is out of range");
  auto* out = command->add_option("--out", options->out,
                                   "write the embeddings to this safetensors file (tensor 'embeddings'; rank 0 writes it)");
  command->add_option("--int4-columns", options->int4_columns,
                      "columns of an int4 table stored as U8 without tpembed's metadata")
      ->check(positive_integer());
  auto* show = command->add_option("--show", options->show, "rows to print")->check(integer_in(0, std::numeric_limits<int>::max()))
                   ->capture_default_str();
  launch.per_rank.insert({ids, ids_file, out, show});
  command->callback([options, &launch, ids, ids_file] {
    TPEMBED_EXPECTS(ids->count() + ids_file->count() > 0, InvalidArgumentError, "give the ids with --ids or --ids-file");
    launch.collective = true;
    launch.run = [options](Communicator& world) { return run_lookup(world, *options); };
  });
}

}  // namespace tpembed::cli
