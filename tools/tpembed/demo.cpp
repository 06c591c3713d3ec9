// `tpembed demo`: the embedded default job. Rank 0 writes a small bf16 checkpoint (safetensors) and
// quantises it to int8, fp8 e4m3 and int4 checkpoints; then every rank reads only its shard of each
// from the files, the ranks look ids up together (vocab- and hidden-parallel, equal and packed
// shards, out-of-range ids included), and every rank's output is checked against the lookup of the
// whole, unsharded table. A short report says what was done and whether it matched.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "quantize_report.hpp"

namespace tpembed::cli {

namespace {

constexpr const char* kTensor = "model.embed_tokens.weight";

struct DemoOptions {
  std::int64_t vocab = 1003;  // odd on purpose: shards come out uneven
  std::int64_t hidden = 256;
  std::int64_t tokens = 4096;
  std::uint64_t seed = 1;
  std::string keep;  // directory to write the checkpoints into and keep
};

struct DemoCase {
  const char* name;
  const char* file;  // checkpoint file in the demo directory
  DType out;
  int sharding_dim;
  ShardPlacement placement;
};

std::string join(const std::vector<std::int64_t>& values) {
  std::ostringstream text;
  for (std::size_t i = 0; i < values.size(); ++i) text << (i ? "," : "") << values[i];
  return text.str();
}

// Rank 0's choice of directory, known to every rank: a new temporary one, or --keep, which must be
// a directory or a new one in a directory that exists (a path whose parents are missing is refused,
// not created: a typo there should not grow a tree). A failure on rank 0 is every rank's.
std::string shared_directory(Communicator& world, const DemoOptions& options) {
  const std::string chosen = on_every_rank(world, [&] {
    if (world.rank() != 0) return std::string();
    if (options.keep.empty()) {
      std::string pattern = (std::filesystem::temp_directory_path() / "tpembed-demo-XXXXXX").string();
      TPEMBED_EXPECTS(mkdtemp(pattern.data()) != nullptr, BackendError, "cannot create a directory under ",
                      std::filesystem::temp_directory_path().string(), ": ", std::strerror(errno));
      return pattern;
    }
    std::error_code error;
    if (!std::filesystem::is_directory(options.keep, error)) {
      TPEMBED_EXPECTS(!std::filesystem::exists(options.keep, error), InvalidArgumentError, "--keep '", options.keep,
                      "' exists and is not a directory");
      TPEMBED_EXPECTS(::mkdir(options.keep.c_str(), 0755) == 0, InvalidArgumentError, "--keep '", options.keep,
                      "': cannot create the directory: ", std::strerror(errno),
                      errno == ENOENT ? " (its parent directory does not exist; it is not created)" : "");
    }
    return options.keep;
  });
  return gather_text(world, chosen)[0];
}

int run_demo(Communicator& world_ref, const DemoOptions& options) {
  Communicator* world = &world_ref;
  const int tp = world->size(), rank = world->rank();
  const bool lead = rank == 0;
  const std::string directory = shared_directory(*world, options);
  auto file_in = [&](const char* name) { return (std::filesystem::path(directory) / name).string(); };

  // 1. Rank 0 writes the checkpoint and its quantised versions; the others wait for the files.
  std::exception_ptr setup_error;
  QuantizeReport reports[3];
  const char* quantised_files[3] = {"embed_i8.safetensors", "embed_fp8.safetensors", "embed_i4.safetensors"};
  const DType quantised_dtypes[3] = {DType::i8, DType::fp8_e4m3, DType::i4};
  if (lead) {
    try {
      const Tensor original = generate_table(options.vocab, options.hidden, options.seed);
      const QuantizedTable bf16 = table_as(original, DType::bf16);
      write_safetensors(file_in("model.safetensors"), {{kTensor, bf16.weight.view()}},
                        {{"format", "pt"}, {"tpembed.demo", "N(0, 0.02) table, rounded to bf16"}});
      for (int q = 0; q < 3; ++q) {
        reports[q] = quantize_checkpoint_tensor(file_in("model.safetensors"), kTensor, quantised_dtypes[q], DType::f32,
                                                file_in(quantised_files[q]), default_scale_tensor(kTensor), false);
      }
    } catch (...) {
      setup_error = std::current_exception();
    }
  }
  agree_or_throw(*world, setup_error);

  // Ids: random in-range, every shard boundary, and three out-of-range ones.
  const std::vector<std::int64_t> ids = sample_ids(options.vocab, options.tokens, tp, options.seed + 7);
  const auto count = static_cast<std::int64_t>(ids.size());
  const TensorView id_view(ids.data(), DType::i64, {count});
  if (lead) {
    std::printf("tpembed demo: %d rank%s (%s communicator); checkpoints in %s%s\n", tp, tp == 1 ? "" : "s",
                world->engine().c_str(), directory.c_str(), options.keep.empty() ? " (removed at the end)" : "");
    std::printf("  model.safetensors: '%s' bf16 [%lld, %lld], drawn from N(0, 0.02)\n", kTensor,
                static_cast<long long>(options.vocab), static_cast<long long>(options.hidden));
    for (int q = 0; q < 3; ++q) {
      std::printf("  %s: %s with f32 row scales; error max %.2e of row absmax, RMS %.2e of the table's norm\n",
                  quantised_files[q], dtype_name(quantised_dtypes[q]), reports[q].max_relative_error,
                  reports[q].rms_relative_error);
    }
    std::printf("  %lld ids: random, every shard boundary, and 3 out of range (-1, V, 2^40)\n\n",
                static_cast<long long>(count));
    std::printf("%-30s %-6s %-3s %-7s %-22s %-8s %-14s %s\n", "case (each rank reads its shard)", "out", "dim",
                "shards", "rows/cols per rank", "bad ids", "vs unsharded", "time");
  }

  // 2. Every case: shards read from the files, looked up together, checked against the whole table.
  const DemoCase cases[] = {
      {"bf16, vocab-parallel", "model.safetensors", DType::bf16, 0, ShardPlacement::packed},
      {"bf16, hidden-parallel", "model.safetensors", DType::bf16, 1, ShardPlacement::packed},
      {"int8, vocab-parallel", "embed_i8.safetensors", DType::bf16, 0, ShardPlacement::equal},
      {"fp8 e4m3, hidden-parallel", "embed_fp8.safetensors", DType::f32, 1, ShardPlacement::packed},
      {"int4, vocab-parallel", "embed_i4.safetensors", DType::bf16, 0, ShardPlacement::packed},
  };
  int failures = 0;
  for (const DemoCase& c : cases) {
    // Each rank opens the files itself (a shared directory may fail on one node): agreed first.
    struct Opened {
      std::unique_ptr<SafetensorsCheckpoint> checkpoint;
      std::string scales;
      Tensor expected;
      EmbeddingShard shard;
      std::uint64_t fingerprint = 0;
    } opened;
    on_every_rank(*world, [&] {
      opened.checkpoint = std::make_unique<SafetensorsCheckpoint>(file_in(c.file));
      SafetensorsCheckpoint& checkpoint = *opened.checkpoint;
      CheckpointShardRequest request;
      request.tensor = kTensor;
      request.tp_size = tp;
      request.tp_rank = rank;
      request.sharding_dim = c.sharding_dim;
      request.placement = c.placement;
      request.option_names = cli_option_names();
      CheckpointShard read = read_checkpoint_shard(checkpoint, request);
      opened.scales = read.scale_tensor;
      // The reference: the whole table from the same file, looked up on this rank alone.
      EmbeddingOptions whole;
      whole.out_dtype = c.out;
      if (!opened.scales.empty()) whole.per_token_scale = checkpoint.file(opened.scales).tensor(opened.scales);
      opened.expected = embedding(id_view, checkpoint.file(kTensor).tensor(kTensor), whole);
      opened.shard = std::move(read.shard);
      opened.fingerprint = read.table_fingerprint;
      return 0;
    });
    const Tensor& expected = opened.expected;

    EmbeddingConfig config;
    config.table_fingerprint = opened.fingerprint;
    config.tp_size = tp;
    config.sharding_dim = c.sharding_dim;
    config.placement = c.placement;
    config.out_dtype = c.out;
    if (c.sharding_dim == 0 && c.placement == ShardPlacement::equal) config.vocab_size = options.vocab;
    ParallelEmbedding layer(*world, std::move(opened.shard), config);
    const auto start = std::chrono::steady_clock::now();
    const Tensor out = layer.forward(id_view);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    std::int64_t mismatched = std::memcmp(out.data(), expected.data(), static_cast<std::size_t>(expected.nbytes())) != 0;
    std::int64_t mismatched_ranks = 0;
    world->all_reduce_sum(&mismatched, &mismatched_ranks, 1, DType::i64);
    failures += mismatched_ranks > 0;
    if (lead) {
      std::printf("%-30s %-6s %-3d %-7s %-22s %-8llu %-14s %.2f ms\n", c.name, dtype_name(c.out), c.sharding_dim,
                  c.placement == ShardPlacement::equal ? "equal" : "packed", join(layer.layout().sizes).c_str(),
                  static_cast<unsigned long long>(layer.last_bad_id_count()),
                  mismatched_ranks ? "MISMATCH" : "bit-exact", ms);
    }
  }
  world->barrier();
  if (lead) {
    if (options.keep.empty()) std::filesystem::remove_all(directory);
    if (failures == 0) {
      std::printf("\nPASS: on every rank, every case equals the lookup of the unsharded table, bit for bit.\n");
    } else {
      std::printf("\nFAIL: %d case(s) differ from the lookup of the unsharded table.\n", failures);
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

void add_demo_command(CLI::App& app, Launch& launch) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* demo = app.add_subcommand(
      "demo",
      "Run the embedded end-to-end job: write a small bf16 checkpoint (safetensors), quantise it to int8,\n"
      "fp8 e4m3 and int4 checkpoints, have every rank of mpirun read only its shard of each (by vocab\n"
      "rows or hidden columns), look ids up together (out-of-range ones too), and check every rank's\n"
      "output against the lookup of the whole table. Prints a report; exits 1 on any mismatch.\n"
      "Example: mpirun -np 4 tpembed demo --vocab 32000 --hidden 512 --keep ./demo-checkpoints");
  demo->add_option("--vocab", options->vocab, "rows of the generated table")->check(positive_integer())->capture_default_str();
  demo->add_option("--hidden", options->hidden, "columns of the generated table")->check(positive_integer())->capture_default_str();
  demo->add_option("--tokens", options->tokens, "random ids to look up")->check(non_negative_integer())->capture_default_str();
  demo->add_option("--seed", options->seed, "random seed")->capture_default_str();
  demo->add_option("--keep", options->keep,
                   "write the checkpoints into this directory and keep them (created if its parent exists)");
  demo->callback([options, &launch] {
    launch.collective = true;
    launch.run = [options](Communicator& world) { return run_demo(world, *options); };
  });
}

}  // namespace tpembed::cli
