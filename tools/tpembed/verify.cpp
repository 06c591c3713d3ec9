// `tpembed verify`: runs every path this machine supports — the CPU and CUDA backends, one rank and
// every rank of the world, both sharding dims, equal and packed shards, every vocab exchange
// (peer rows with GPU tables), in the replicated and the scattered output layout — against the reference
// (the CPU backend on the whole, unsharded table) and prints a pass/fail table.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"

namespace tpembed::cli {

namespace {

struct VerifyOptions {
  std::int64_t vocab = 1003;
  std::int64_t hidden = 256;
  std::int64_t tokens = 2048;
  std::vector<std::string> dtypes = {"f32", "bf16", "f16", "i8", "fp8_e4m3", "i4"};
  std::string device = "all";
  std::uint64_t seed = 3;
};

struct Path {
  bool cuda;
  int tp;
  int sharding_dim;
  ShardPlacement placement;
  VocabExchange exchange = VocabExchange::all_reduce;  ///< dim 0 with tp > 1
  bool scattered = false;  ///< output_layout scattered: each rank checks its chunk of the tokens
};

std::string describe(const Path& path) {
  std::string text = path.cuda ? "cuda" : "cpu";
  text += " tp=" + std::to_string(path.tp);
  if (path.tp > 1) {
    text += " dim=" + std::to_string(path.sharding_dim);
    text += path.placement == ShardPlacement::equal ? " equal" : " packed";
    if (path.sharding_dim == 0) text += std::string(" ") + vocab_exchange_name(path.exchange);
    if (path.scattered) text += " scattered";
  }
  return text;
}

// One lookup over the whole world on `path`; returns this rank's output (host bytes): every token's
// row, or with a scattered output its chunk's (shard_range(ids, tp, rank, ShardPlacement::packed): torch.tensor_split's rule).
std::vector<std::uint8_t> run_path(Communicator& world, const Path& path, const QuantizedTable& table, DType out_dtype,
                                   const std::vector<std::int64_t>& ids, std::int64_t vocab, std::uint64_t& bad) {
  const int tp = path.tp;
  EmbeddingConfig config;
  config.tp_size = tp;
  config.sharding_dim = path.sharding_dim;
  config.placement = path.placement;
  config.out_dtype = out_dtype;
  config.vocab_exchange = path.exchange;
  config.output_layout = path.scattered ? TokenLayout::scattered : TokenLayout::replicated;
  if (tp > 1) {
    config.tp_group.resize(static_cast<std::size_t>(tp));
    for (int r = 0; r < tp; ++r) config.tp_group[static_cast<std::size_t>(r)] = r;
  }
  if (tp > 1 && path.sharding_dim == 0 && path.placement == ShardPlacement::equal) config.vocab_size = vocab;
  const TensorView scale = table.scale.data() ? table.scale.view() : TensorView();
  const auto count = static_cast<std::int64_t>(ids.size());
  const std::int64_t hidden = table.weight.shape()[1];
  const std::int64_t rows = path.scattered ? shard_range(count, tp, world.rank(), ShardPlacement::packed).second : count;
  const std::size_t out_bytes = static_cast<std::size_t>(rows * row_bytes(out_dtype, hidden));
  // Host memory that may run out on one rank alone: agreed on before the layer's collective set-up.
  std::vector<std::uint8_t> out;
  EmbeddingShard shard = on_every_rank(world, [&] {
    out.resize(out_bytes);
    return tp == 1 ? cut_shard(table.weight.view(), scale, 0, 1, 0, ShardPlacement::packed)
                   : cut_shard(table.weight.view(), scale, path.sharding_dim, tp, world.rank(), path.placement);
  });
  if (!path.cuda) {
    ParallelEmbedding layer(world, std::move(shard), config);
    layer.forward(TensorView(ids.data(), DType::i64, {count}), TensorView(out.data(), out_dtype, {rows, hidden}));
    bad = layer.last_bad_id_count();
    return out;
  }
  const int device = node_local_cuda_device(world);
  cuda_set_device(device);  // this rank's streams and timings stay on its own GPU
  // Copies that may fail on one rank alone (out of memory) are agreed on before any collective.
  struct Buffers {
    EmbeddingShard shard;
    std::unique_ptr<DeviceBuffer> ids, out;
  };
  Buffers gpu = on_every_rank(world, [&] {
    Buffers made{copy_shard_to_device(shard, device),
                 std::make_unique<DeviceBuffer>(ids.size() * sizeof(std::int64_t), device),
                 std::make_unique<DeviceBuffer>(out_bytes, device)};
    made.ids->copy_from_host(ids.data(), ids.size() * sizeof(std::int64_t));
    cuda_fill(made.out->data(), 0xcd, out_bytes);  // poison: an unwritten element shows
    return made;
  });
  ParallelEmbedding layer(world, std::move(gpu.shard), config);
  layer.forward(gpu.ids->view(DType::i64, {count}), gpu.out->view(out_dtype, {rows, hidden}));
  gpu.out->copy_to_host(out.data(), out_bytes);
  bad = layer.last_bad_id_count();
  return out;
}

int run_verify(Communicator& world_ref, const VerifyOptions& options) {
  Communicator* world = &world_ref;
  const bool lead = world->rank() == 0;
  const int ranks = world->size();
  // The CUDA paths run over every rank: they are checked only where every rank sees a GPU.
  const std::int64_t devices = cuda_device_count();
  std::vector<std::int64_t> devices_of(static_cast<std::size_t>(ranks));
  world->all_gather(&devices, devices_of.data(), 1, DType::i64);
  std::vector<std::pair<int, std::string>> without_gpu;
  for (int r = 0; r < ranks; ++r) {
    if (devices_of[static_cast<std::size_t>(r)] == 0) without_gpu.emplace_back(r, "no CUDA device visible");
  }
  const bool have_cuda = without_gpu.empty();
  const std::string no_cuda_reason =
      !cuda_built() ? "this build has no CUDA backend"
                    : ranks == 1 ? "no CUDA device visible" : ranks_and_texts(without_gpu);
  TPEMBED_EXPECTS(options.device != "cuda" || have_cuda, UnsupportedError, "verify --device cuda: ", no_cuda_reason);

  std::vector<Path> paths;
  for (bool cuda : {false, true}) {
    if (cuda ? (!have_cuda || options.device == "cpu") : options.device == "cuda") continue;
    if (cuda) paths.push_back({cuda, 1, 0, ShardPlacement::packed});  // cpu tp=1 is the reference
    if (ranks == 1) continue;
    for (int dim : {0, 1}) {
      for (auto placement : {ShardPlacement::packed, ShardPlacement::equal}) {
        if (dim == 1 && placement == ShardPlacement::equal && options.hidden % ranks != 0) continue;
        for (bool scattered : {false, true}) {
          if (dim == 1) {
            paths.push_back({cuda, ranks, dim, placement, VocabExchange::all_reduce, scattered});
            continue;
          }
          for (auto exchange : {VocabExchange::all_reduce, VocabExchange::owned_rows, VocabExchange::peer_rows}) {
            if (exchange == VocabExchange::peer_rows && !cuda) continue;  // reads GPU memory only
            paths.push_back({cuda, ranks, dim, placement, exchange, scattered});
          }
        }
      }
    }
  }

  std::vector<std::string> skipped;
  if (!have_cuda && options.device != "cpu") skipped.push_back("the CUDA paths (" + no_cuda_reason + ")");
  if (ranks == 1) skipped.push_back("the tensor-parallel paths (one rank: run under mpirun -np 2 or more)");
  if (options.hidden % ranks != 0 && ranks > 1) {
    skipped.push_back("hidden sharding with equal shards (--hidden " + std::to_string(options.hidden) +
                      " does not divide by " + std::to_string(ranks) + " ranks)");
  }
  std::string skipped_text;
  for (const std::string& what : skipped) skipped_text += (skipped_text.empty() ? "" : "; ") + what;
  // The CPU backend on one rank is the reference itself: with nothing else there is nothing to check.
  TPEMBED_EXPECTS(!paths.empty(), UnsupportedError, "verify: nothing to check here: skipped ", skipped_text,
                  "; the CPU backend on one rank is the reference itself");

  // Each rank makes its own copy of the table (it may run out of memory alone): agreed on first.
  const Tensor original =
      on_every_rank(*world, [&] { return generate_table(options.vocab, options.hidden, options.seed); });
  const auto ids = on_every_rank(*world, [&] { return sample_ids(options.vocab, options.tokens, ranks, options.seed + 1); });
  const auto count = static_cast<std::int64_t>(ids.size());
  if (lead) {
    std::printf("tpembed verify: generated table V=%lld x H=%lld, %lld ids (3 out of range), %d rank%s, %s\n",
                static_cast<long long>(options.vocab), static_cast<long long>(options.hidden),
                static_cast<long long>(count), ranks, ranks == 1 ? "" : "s",
                have_cuda ? "CUDA devices visible" : "no CUDA device (cuda paths skipped)");
    if (!skipped_text.empty()) std::printf("skipped: %s\n", skipped_text.c_str());
    std::printf("reference: the CPU backend on the whole table, one rank\n\n");
    std::printf("%-46s %-16s %-8s %s\n", "path", "table -> out", "bad ids", "result");
  }
  Progress progress("verify", static_cast<std::int64_t>(options.dtypes.size() * paths.size()), lead);
  int failures = 0;
  for (const std::string& name : options.dtypes) {
    const DType dtype = dtype_from_name(name);
    const DType out_dtype = is_quantized(dtype) ? DType::bf16 : dtype;
    QuantizedTable table;
    const Tensor expected = on_every_rank(*world, [&] {
      table = table_as(original, dtype);
      EmbeddingOptions whole;
      whole.out_dtype = out_dtype;
      if (table.scale.data()) whole.per_token_scale = table.scale.view();
      return embedding(TensorView(ids.data(), DType::i64, {count}), table.weight.view(), whole);
    });
    for (const Path& path : paths) {
      progress.step(describe(path) + " " + name);
      std::uint64_t bad = 0;
      std::string problem;
      std::int64_t wrong_rows = 0;
      std::exception_ptr failure;
      try {
        const auto out = run_path(*world, path, table, out_dtype, ids, options.vocab, bad);
        const std::size_t row = static_cast<std::size_t>(row_bytes(out_dtype, options.hidden));
        // A scattered output holds its chunk of the reference's rows; its bad ids are added up below.
        const auto [first, rows] =
            path.scattered ? shard_range(count, path.tp, world->rank(), ShardPlacement::packed) : std::pair<std::int64_t, std::int64_t>{0, count};
        for (std::int64_t t = 0; t < rows; ++t) {
          wrong_rows += std::memcmp(out.data() + t * row,
                                    static_cast<const std::uint8_t*>(expected.data()) + (first + t) * row, row) != 0;
        }
        if (!path.scattered && bad != 3) throw InvalidArgumentError("bad-id count " + std::to_string(bad) + ", expected 3");
      } catch (...) {
        failure = std::current_exception();
      }
      // Every rank learns of every failing rank and its reason.
      try {
        agree_or_throw(*world, failure);
      } catch (const Error& error) {
        problem = error.what();
      }
      std::int64_t verdict[3] = {wrong_rows, problem.empty() ? 0 : 1, static_cast<std::int64_t>(bad)};
      std::int64_t total[3] = {0, 0, 0};
      world->all_reduce_sum(verdict, total, 3, DType::i64);
      // Scattered: each rank counted its chunk's bad ids; the group's add up to the 3 of the ids.
      if (path.scattered && problem.empty() && total[2] != 3) {
        problem = "bad-id count " + std::to_string(total[2]) + " over the chunks, expected 3";
      }
      if (path.scattered) bad = static_cast<std::uint64_t>(total[2]);
      const bool ok = total[0] == 0 && total[1] == 0 && problem.empty();
      failures += ok ? 0 : 1;
      if (lead) {
        std::string result = ok ? "PASS (bit-exact on every rank)" : "FAIL";
        if (total[0] > 0) result += ": " + std::to_string(total[0]) + " wrong rows over all ranks";
        if (!problem.empty()) result += ": " + problem;
        print_line(progress, format("%-46s %-16s %-8llu %s", describe(path).c_str(),
                                    (name + " -> " + dtype_name(out_dtype)).c_str(),
                                    static_cast<unsigned long long>(bad), result.c_str()));
      }
    }
  }
  if (lead) {
    std::printf("\n%s: %d of %zu checks failed%s\n", failures == 0 ? "PASS" : "FAIL", failures,
                options.dtypes.size() * paths.size(), skipped.empty() ? "" : " (some paths skipped: see above)");
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

void add_verify_command(CLI::App& app, Launch& launch) {
  auto options = std::make_shared<VerifyOptions>();
  CLI::App* verify = app.add_subcommand(
      "verify",
      "Check every lookup path this machine supports against the reference: the CPU and CUDA backends,\n"
      "one rank and all ranks of mpirun, vocab and hidden sharding, equal and packed shards, each exchange\n"
      "in the replicated and the scattered output layout (every rank checks its chunk of the tokens,\n"
      "torch.tensor_split's rule, against the reference's rows of that chunk), for each\n"
      "table dtype (quantised ones per-row absmax with f32 scales, looked up as bf16). The reference is\n"
      "the CPU backend on the whole, unsharded table. Prints a pass/fail table and what it skipped (CUDA\n"
      "paths unless every rank sees a GPU); exits 1 on any failure, and when nothing could be checked\n"
      "(one rank without a GPU: the CPU backend on one rank is the reference itself).\n"
      "Example: mpirun -np 4 tpembed verify --vocab 32000 --hidden 512");
  verify->add_option("--vocab", options->vocab, "rows of the generated table")->check(positive_integer())->capture_default_str();
  verify->add_option("--hidden", options->hidden, "columns of the generated table")->check(positive_integer())->capture_default_str();
  verify->add_option("--tokens", options->tokens, "random ids to look up (shard boundaries and 3 bad ids are added)")
      ->check(non_negative_integer())->capture_default_str();
  verify->add_option("--dtypes", options->dtypes, "table dtypes to check")
      ->delimiter(',')->check(CLI::IsMember(table_dtype_names()))->capture_default_str();
  verify->add_option("--device", options->device, "which backends: all (those present), cpu or cuda")
      ->check(CLI::IsMember({"all", "cpu", "cuda"}))->capture_default_str();
  verify->add_option("--seed", options->seed, "random seed")->capture_default_str();
  verify->callback([options, &launch] {
    launch.collective = true;
    launch.run = [options](Communicator& world) { return run_verify(world, *options); };
  });
}

}  // namespace tpembed::cli
