// `tpembed lookup`: ids looked up in a checkpoint's table, on the CPU or a GPU, by one rank or by the
// ranks of mpirun with the table sharded by vocab rows or hidden columns (each rank reads only its
// shard of the file). Prints a summary, or writes the embeddings to a safetensors file: the whole
// output from rank 0, or with --output-layout scattered each rank's chunk to its own file.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
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
  std::vector<std::int64_t> ids_shape;  // empty: one dimension
  std::string output_layout = "replicated";
  std::string input_layout = "replicated";
  int scatter_dim = 0;
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

// Where rank `rank` writes its chunk of a scattered output: --out with ".rank<R>" before its
// ".safetensors" (or at its end when it has another extension).
std::string chunk_file(const std::string& out, int rank) {
  const std::string extension = ".safetensors", tag = ".rank" + std::to_string(rank);
  const bool has_extension =
      out.size() > extension.size() && out.compare(out.size() - extension.size(), extension.size(), extension) == 0;
  return has_extension ? out.substr(0, out.size() - extension.size()) + tag + extension : out + tag;
}

// Everything a rank reads and parses before the lookup: ids, checkpoint, table, scales, its shard.
struct Prepared {
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> ids_shape;  // the whole ids' shape
  bool scattered = false;               // output_layout scattered: this rank holds `chunk` only
  IdChunk chunk;                        // this rank's chunk of the ids (scattered), else all of them
  std::string out_path;                 // the file this rank writes, if any
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
  const auto count = static_cast<std::int64_t>(p.ids.size());
  p.ids_shape = options.ids_shape.empty() ? std::vector<std::int64_t>{count} : options.ids_shape;
  std::int64_t shaped = 1;
  for (std::int64_t extent : p.ids_shape) shaped *= extent;
  TPEMBED_EXPECTS(shaped == count, ShapeError, "--ids-shape ", detail::bracketed(p.ids_shape), " holds ", shaped,
                  " ids, but ", count, count == 1 ? " id was" : " ids were", " given");
  p.scattered = options.output_layout == "scattered";
  const int ndim = static_cast<int>(p.ids_shape.size());
  TPEMBED_EXPECTS(!p.scattered || options.scatter_dim < ndim, InvalidArgumentError, "--scatter-dim ",
                  options.scatter_dim, " is not a dimension of the ids, of shape ", detail::bracketed(p.ids_shape),
                  " (dimensions 0 to ", ndim - 1, "); --ids-shape gives the ids more dimensions");
  const int tp_rank = world.rank() % tp;
  p.chunk = p.scattered ? chunk_of(p.ids, p.ids_shape, options.scatter_dim, tp, tp_rank)
                        : IdChunk{p.ids, p.ids_shape, 0};

  p.checkpoint = std::make_unique<SafetensorsCheckpoint>(options.table);
  SafetensorsCheckpoint& checkpoint = *p.checkpoint;
  const auto placement = options.placement == "equal" ? ShardPlacement::equal : ShardPlacement::packed;
  CheckpointShardRequest request;
  request.tensor = options.tensor;
  if (!options.scale_tensor.empty()) request.scale_tensor = options.scale_tensor;
  if (options.int4_columns > 0) request.as_int4_columns = options.int4_columns;
  request.tp_size = tp;
  request.tp_rank = tp_rank;
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
  // Replicated: rank 0 writes the whole output; scattered: every rank given --out writes its chunk.
  if (!options.out.empty() && (p.scattered || world.rank() == 0)) {
    p.out_path = p.scattered ? chunk_file(options.out, world.rank()) : options.out;
    std::vector<std::string> inputs = {p.file_path};
    if (!p.scale_tensor.empty()) inputs.push_back(checkpoint.file_path(p.scale_tensor));
    check_safetensors_output(p.out_path, inputs);
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
  config.output_layout = token_layout_from_name(options.output_layout, "--output-layout");
  config.input_layout = token_layout_from_name(options.input_layout, "--input-layout");
  config.scatter_dim = options.scatter_dim;
  if (!options.out_dtype.empty()) config.out_dtype = dtype_from_name(options.out_dtype);
  if (tp > 1) {
    const int first = world.rank() / tp * tp;
    for (int r = 0; r < tp; ++r) config.tp_group.push_back(first + r);
  }
  if (tp > 1 && options.sharding_dim == 0 && placement == ShardPlacement::equal) config.vocab_size = p.rows;
  p.out_dtype = config.out_dtype ? *config.out_dtype : p.table_dtype;
  std::vector<std::int64_t> out_shape = p.chunk.shape;
  out_shape.push_back(p.hidden);
  p.out = allocate(p.out_dtype, out_shape, "the output");
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
  // (With --input-layout scattered too: every rank is given the whole ids and passes its chunk.)
  // (--ids-shape is a shared option: agreed with the others at start-up.)
  agree_on_value(world, "ids", ids_fingerprint(p.ids), describe_ids(p.ids));
  agree_on_value(world, "table", p.fingerprint, p.table_text);

  const auto count = static_cast<std::int64_t>(p.ids.size());
  const std::int64_t hidden = p.hidden;
  const DType out_dtype = p.out_dtype;
  const EmbeddingConfig& config = p.config;
  const int tp = config.tp_size;
  Tensor& out = p.out;
  // What this rank passes: the whole ids, or with --input-layout scattered its chunk only.
  const bool scattered_input = config.input_layout == TokenLayout::scattered;
  const std::vector<std::int64_t>& given = scattered_input ? p.chunk.ids : p.ids;
  const std::vector<std::int64_t>& given_shape = scattered_input ? p.chunk.shape : p.ids_shape;
  // The rows this rank's output holds, in order: its chunk's ids (all the ids when replicated).
  const std::vector<std::int64_t>& held = p.chunk.ids;

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
      std::pair<DeviceBuffer, DeviceBuffer> buffers{DeviceBuffer(given.size() * 8, device),
                                                    DeviceBuffer(static_cast<std::size_t>(out.nbytes()), device)};
      buffers.first.copy_from_host(given.data(), given.size() * 8);
      return buffers;
    });
    ParallelEmbedding layer(world, std::move(on_gpu), config);
    layer.forward(device_ids.view(DType::i64, given_shape), device_out.view(out_dtype, out.shape()));
    device_out.copy_to_host(out.data(), static_cast<std::size_t>(out.nbytes()));
    bad = layer.last_bad_id_count();
    exchange = layer.layout().vocab_exchange;
  } else {
    ParallelEmbedding layer(world, std::move(p.shard), config);
    layer.forward(TensorView(given.data(), DType::i64, given_shape), out.view());
    bad = layer.last_bad_id_count();
    exchange = layer.layout().vocab_exchange;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (p.scattered && tp > 1) {
    // Each rank counted its own chunk's bad ids: a group's add up to the whole ids' (every group
    // looks up the same ids).
    std::int64_t mine = static_cast<std::int64_t>(bad), all = 0;
    world.all_reduce_sum(&mine, &all, 1, DType::i64);
    bad = static_cast<std::uint64_t>(all / (world.size() / tp));
  }
  const std::string exchange_text =
      tp > 1 && options.sharding_dim == 0 ? std::string(", ") + vocab_exchange_name(exchange) + " exchange" : "";
  std::vector<std::int64_t> whole_shape = p.ids_shape;
  whole_shape.push_back(hidden);
  // Scattered: which chunk each rank holds (one line from rank 0, in rank order).
  std::vector<std::string> chunks;
  if (p.scattered) {
    const auto d = static_cast<std::size_t>(config.scatter_dim);
    chunks = gather_text(world, format("tp rank %d: [%lld, %lld) of dim %d, out %s", world.rank() % tp,
                                       static_cast<long long>(p.chunk.first),
                                       static_cast<long long>(p.chunk.first + p.chunk.shape[d]), config.scatter_dim,
                                       detail::bracketed(out.shape()).c_str()));
  }

  if (lead) {
    std::printf("looked up %lld ids in %s '%s' (%s [%lld, %lld]%s) on %s, tp %d, sharding dim %d (%s%s): out %s "
                "%s in %.2f ms; %llu ids out of range\n",
                static_cast<long long>(count), p.file_path.c_str(), options.tensor.c_str(), dtype_name(p.table_dtype),
                static_cast<long long>(p.rows), static_cast<long long>(hidden),
                p.scale_tensor.empty() ? "" : (", scales '" + p.scale_tensor + "'").c_str(), options.device.c_str(),
                tp, options.sharding_dim, options.placement.c_str(), exchange_text.c_str(), dtype_name(out_dtype),
                detail::bracketed(whole_shape).c_str(), ms, static_cast<unsigned long long>(bad));
    if (p.scattered) {
      std::printf("output scattered along dim %d (%s input): each rank holds its chunk: %s\n", config.scatter_dim,
                  scattered_input ? "scattered" : "replicated", ranks_and_texts(chunks).c_str());
    }
    std::fflush(stdout);
  }
  // Rank 0 writes its --out, or with a scattered output every rank given --out writes its chunk
  // (ranks may give --out differently: every rank joins this agreement, so a failure there is every
  // rank's).
  on_every_rank(world, [&] {
    if (!p.out_path.empty()) {
      std::map<std::string, std::string> metadata = {{"tpembed.table", p.file_path + ":" + options.tensor},
                                                     {"tpembed.ids", std::to_string(count)},
                                                     {"tpembed.ids_shape", detail::bracketed(p.ids_shape)}};
      if (p.scattered) {
        const auto d = static_cast<std::size_t>(config.scatter_dim);
        metadata["tpembed.output_layout"] = "scattered";
        metadata["tpembed.scatter_dim"] = std::to_string(config.scatter_dim);
        metadata["tpembed.tp_size"] = std::to_string(tp);
        metadata["tpembed.tp_rank"] = std::to_string(world.rank() % tp);
        metadata["tpembed.chunk"] = format("%lld:%lld", static_cast<long long>(p.chunk.first),
                                           static_cast<long long>(p.chunk.first + p.chunk.shape[d]));
      }
      write_safetensors(p.out_path, {{"embeddings", out.view()}}, metadata);
      std::printf("%swrote tensor 'embeddings' %s to %s\n",
                  p.scattered ? format("rank %d: ", world.rank()).c_str() : "", detail::bracketed(out.shape()).c_str(),
                  p.out_path.c_str());
      std::fflush(stdout);
    }
    return 0;
  });
  if (!lead || !options.out.empty()) return 0;
  const auto rows = static_cast<std::int64_t>(held.size());
  for (std::int64_t t = 0; t < std::min<std::int64_t>(rows, options.show); ++t) {
    double norm = 0;
    for (std::int64_t c = 0; c < hidden; ++c) norm += std::pow(double{element_as_f32(out, t * hidden + c)}, 2);
    std::printf("  id %lld: norm %.6g, first values", static_cast<long long>(held[static_cast<std::size_t>(t)]),
                std::sqrt(norm));
    for (std::int64_t c = 0; c < std::min<std::int64_t>(hidden, 6); ++c) {
      std::printf(" %.6g", double{element_as_f32(out, t * hidden + c)});
    }
    std::printf("%s\n", hidden > 6 ? " ..." : "");
  }
  if (rows > options.show) {
    std::printf("  ... %lld more rows%s\n", static_cast<long long>(rows - options.show),
                p.scattered ? " of rank 0's chunk" : "");
  }
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
      "Sequence parallelism: with --output-layout scattered the ids (of --ids-shape) are split along\n"
      "--scatter-dim into tp chunks by torch.tensor_split's rule (n entries: chunk t has n/tp + (t < n%tp)\n"
      "of them, the first n%tp chunks one more, chunks may be empty) and tp rank t ends with chunk t's rows\n"
      "only: shape = its chunk's shape + [H]. Each rank given --out then writes its own chunk to its own\n"
      "file, --out with .rank<R> (R: its mpirun rank) before .safetensors: --out e.safetensors gives\n"
      "e.rank0.safetensors, e.rank1.safetensors, ...; the metadata names the chunk (tpembed.chunk\n"
      "first:end along tpembed.scatter_dim, tpembed.tp_rank). Concatenating the files of tp ranks 0..tp-1\n"
      "along --scatter-dim gives the replicated output. --input-layout scattered: every rank is still\n"
      "given the whole ids (they are checked to agree), and passes only its chunk to the lookup, as\n"
      "SGLang's attention-TP holds them; it needs --output-layout scattered, and the output is the same.\n"
      "Example: mpirun -np 2 tpembed lookup --table model.safetensors --tensor model.embed_tokens.weight \\\n"
      "           --ids 1,2,3 --tp 2 --sharding-dim 1 --device cuda\n"
      "         mpirun -np 2 tpembed lookup --table model.safetensors --ids 1,2,3,4,5,6 --ids-shape 2,3 \\\n"
      "           --output-layout scattered --scatter-dim 1 --out e.safetensors   # e.rank0: [2, 2, H], e.rank1: [2, 1, H]");
  launch.per_rank.insert(
      command->add_option("--table", options->table, "checkpoint: a .safetensors file, an index.json or a directory")
          ->required()->check(CLI::ExistingPath));
  command->add_option("--tensor", options->tensor, "the table's tensor name")->capture_default_str();
  command->add_option("--scale-tensor", options->scale_tensor, "tensor name of the row scales");
  auto* ids = command->add_option("--ids", options->ids, "comma-separated ids, e.g. 1,2,3 (negative ids are bad ids)");
  auto* ids_file = command->add_option("--ids-file", options->ids_file, "a text file of ids (commas, spaces or newlines)")
                       ->check(existing_regular_file());
  ids->excludes(ids_file);
  command->add_option("--ids-shape", options->ids_shape,
                      "shape of the ids in row-major order, e.g. 2,3 for 6 ids (default: one dimension)")
      ->delimiter(',')->check(non_negative_integer());
  command->add_option("--output-layout", options->output_layout,
                      "replicated: every rank gets the whole output (rank 0 writes --out); scattered: tp rank t\n"
                      "gets chunk t of the ids along --scatter-dim (torch.tensor_split's chunks) and writes it\n"
                      "to its own file (see above). Vocab sharding: all_reduce becomes a reduce-scatter,\n"
                      "owned_rows sends each row to the one rank that needs it, peer_rows looks up the own\n"
                      "chunk only; hidden sharding sends each rank its chunk's columns")
      ->check(CLI::IsMember({"replicated", "scattered"}))->capture_default_str();
  command->add_option("--input-layout", options->input_layout,
                      "replicated: the lookup gets the whole ids on every rank; scattered: each rank passes\n"
                      "only its chunk of the (whole, agreed) ids it is given; needs --output-layout scattered")
      ->check(CLI::IsMember({"replicated", "scattered"}))->capture_default_str();
  command->add_option("--scatter-dim", options->scatter_dim,
                      "the dimension of the ids (of --ids-shape) that scattered layouts split; unused when both\n"
                      "layouts are replicated")
      ->check(integer_in(0, std::numeric_limits<int>::max()))->capture_default_str();
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
                                   "write the embeddings to this safetensors file (tensor 'embeddings'; rank 0 writes it;\n"
                                   "--output-layout scattered: each rank its chunk, to --out with .rank<R>)");
  command->add_option("--int4-columns", options->int4_columns,
                      "columns of an int4 table stored as U8 without tpembed's metadata")
      ->check(positive_integer());
  auto* show = command->add_option("--show", options->show, "rows to print")->check(integer_in(0, std::numeric_limits<int>::max()))
                   ->capture_default_str();
  launch.per_rank.insert({ids, ids_file, out, show});
  command->callback([options, &launch, ids, ids_file] {
    TPEMBED_EXPECTS(ids->count() + ids_file->count() > 0, InvalidArgumentError, "give the ids with --ids or --ids-file");
    TPEMBED_EXPECTS(options->input_layout == "replicated" || options->output_layout == "scattered",
                    InvalidArgumentError,
                    "--input-layout scattered needs --output-layout scattered: a rank that passes only its chunk of "
                    "the ids can only get its chunk's rows");
    launch.collective = true;
    launch.run = [options](Communicator& world) { return run_lookup(world, *options); };
  });
}

}  // namespace tpembed::cli
