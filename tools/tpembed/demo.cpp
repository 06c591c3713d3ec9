// `tpembed demo`: the embedded default job. Generates a table, quantises it, shards it over the
// ranks of the world (mpirun), looks ids up with both sharding dims and several dtypes, and checks
// every rank's output against the lookup of the unsharded table.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli {

namespace {

struct DemoOptions {
  std::int64_t vocab = 1003;  // odd on purpose: shards come out uneven
  std::int64_t hidden = 250;
  std::int64_t tokens = 4096;
  std::uint64_t seed = 1;
};

struct DemoCase {
  const char* name;
  DType table;
  DType out;
  int sharding_dim;
  ShardPlacement placement;
};

// A table drawn from N(0, 0.02), like an embedding layer at initialisation, as f32.
Tensor generate_table(const DemoOptions& options) {
  Tensor table(DType::f32, {options.vocab, options.hidden});
  std::mt19937_64 rng(options.seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  float* values = table.data_as<float>();
  for (std::int64_t i = 0; i < table.numel(); ++i) values[i] = normal(rng);
  return table;
}

Tensor to_bf16(const Tensor& table) {
  Tensor out(DType::bf16, table.shape());
  const float* in = table.data_as<float>();
  auto* bits = out.data_as<std::uint16_t>();
  for (std::int64_t i = 0; i < table.numel(); ++i) bits[i] = f32_to_bf16_bits(in[i]);
  return out;
}

std::string join(const std::vector<std::int64_t>& values) {
  std::ostringstream text;
  for (std::size_t i = 0; i < values.size(); ++i) text << (i ? "," : "") << values[i];
  return text.str();
}

// Relative RMS error of dequantised rows (the whole table looked up) against the f32 original.
double relative_rms_error(const Tensor& original, const TensorView& weight, const TensorView& scale) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(original.shape()[0]));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i);
  EmbeddingOptions options;
  options.per_token_scale = scale;
  options.out_dtype = DType::f32;
  const Tensor restored =
      embedding(TensorView(ids.data(), DType::i64, {static_cast<std::int64_t>(ids.size())}), weight, options);
  double error = 0, norm = 0;
  for (std::int64_t i = 0; i < original.numel(); ++i) {
    const double a = original.data_as<float>()[i], b = restored.data_as<float>()[i];
    error += (a - b) * (a - b);
    norm += a * a;
  }
  return std::sqrt(error / std::max(norm, 1e-30));
}

int run_demo(const DemoOptions& options) {
  std::unique_ptr<Communicator> world = mpi_available() ? make_mpi_communicator() : make_single_communicator();
  const int tp = world->size(), rank = world->rank();
  const bool lead = rank == 0;

  const Tensor original = generate_table(options);
  const Tensor bf16_table = to_bf16(original);
  const QuantizedTable int8 = quantize_rows(original.view(), DType::i8, DType::f32);
  const QuantizedTable fp8 = quantize_rows(original.view(), DType::fp8_e4m3, DType::bf16);
  const QuantizedTable int4 = quantize_rows(original.view(), DType::i4, DType::f16);

  // Ids: random in-range, plus every shard boundary and a few out-of-range ones.
  std::vector<std::int64_t> ids;
  std::mt19937_64 rng(options.seed + 7);
  std::uniform_int_distribution<std::int64_t> any(0, options.vocab - 1);
  for (std::int64_t i = 0; i < options.tokens; ++i) ids.push_back(any(rng));
  for (int t = 0; t < tp; ++t) ids.push_back(shard_range(options.vocab, tp, t, ShardPlacement::packed).first);
  for (std::int64_t bad : {std::int64_t{-1}, options.vocab, std::int64_t{1} << 40}) ids.push_back(bad);
  const TensorView id_view(ids.data(), DType::i64, {static_cast<std::int64_t>(ids.size())});

  if (lead) {
    std::printf("tpembed demo: table V=%lld x H=%lld (N(0, 0.02)), %d rank%s (%s communicator), %zu ids "
                "of which 3 are out of range\n",
                static_cast<long long>(options.vocab), static_cast<long long>(options.hidden), tp,
                tp == 1 ? "" : "s", world->engine().c_str(), ids.size());
    std::printf("quantised per row (absmax): int8 rel. RMS error %.2e, fp8 %.2e, int4 %.2e\n\n",
                relative_rms_error(original, int8.weight, int8.scale),
                relative_rms_error(original, fp8.weight, fp8.scale),
                relative_rms_error(original, int4.weight, int4.scale));
    std::printf("%-30s %-6s %-3s %-24s %-8s %-14s %s\n", "case", "out", "dim", "shard sizes", "bad ids",
                "vs unsharded", "time");
  }

  const DemoCase cases[] = {
      {"bf16, vocab-parallel", DType::bf16, DType::bf16, 0, ShardPlacement::packed},
      {"bf16, hidden-parallel", DType::bf16, DType::bf16, 1, ShardPlacement::packed},
      {"int8, vocab-parallel (seed)", DType::i8, DType::bf16, 0, ShardPlacement::equal},
      {"fp8 e4m3, hidden-parallel", DType::fp8_e4m3, DType::f32, 1, ShardPlacement::packed},
      {"int4, vocab-parallel", DType::i4, DType::bf16, 0, ShardPlacement::packed},
  };
  int failures = 0;
  for (const DemoCase& c : cases) {
    TensorView weight = bf16_table.view(), scale;
    if (c.table == DType::i8) weight = int8.weight, scale = int8.scale;
    if (c.table == DType::fp8_e4m3) weight = fp8.weight, scale = fp8.scale;
    if (c.table == DType::i4) weight = int4.weight, scale = int4.scale;

    // The reference: the unsharded table, looked up on this rank alone.
    EmbeddingOptions whole;
    whole.per_token_scale = scale;
    whole.out_dtype = c.out;
    const Tensor expected = embedding(id_view, weight, whole);

    // This rank's shard.
    const std::int64_t total = c.sharding_dim == 0 ? options.vocab : options.hidden;
    const auto [offset, size] = shard_range(total, tp, rank, c.placement);
    Tensor scale_shard = scale.absent() ? Tensor() : (c.sharding_dim == 0 ? slice_rows(scale, offset, size)
                                                                          : slice_cols(scale, 0, 0));
    Tensor weight_shard = c.sharding_dim == 0 ? slice_rows(weight, offset, size) : slice_cols(weight, offset, size);
    EmbeddingConfig config;
    config.tp_size = tp;
    config.sharding_dim = c.sharding_dim;
    config.placement = c.placement;
    config.out_dtype = c.out;
    if (c.sharding_dim == 0 && c.placement == ShardPlacement::equal) config.vocab_size = options.vocab;
    ParallelEmbedding layer(*world, EmbeddingShard::owning(std::move(weight_shard), std::move(scale_shard)), config);

    const auto start = std::chrono::steady_clock::now();
    const Tensor out = layer.forward(id_view);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    std::int64_t mismatched = std::memcmp(out.data(), expected.data(), static_cast<std::size_t>(expected.nbytes())) != 0;
    std::int64_t mismatched_ranks = 0;
    world->all_reduce_sum(&mismatched, &mismatched_ranks, 1, DType::i64);
    failures += mismatched_ranks > 0;
    if (lead) {
      std::printf("%-30s %-6s %-3d %-24s %-8llu %-14s %.2f ms\n", c.name, dtype_name(c.out), c.sharding_dim,
                  join(layer.layout().sizes).c_str(), static_cast<unsigned long long>(layer.last_bad_id_count()),
                  mismatched_ranks ? "MISMATCH" : "bit-exact", ms);
    }
  }
  if (lead) {
    if (failures == 0) {
      std::printf("\nPASS: on every rank, every case equals the unsharded lookup bit for bit.\n");
    } else {
      std::printf("\nFAIL: %d case(s) differ from the unsharded lookup.\n", failures);
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

void add_demo_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* demo = app.add_subcommand(
      "demo",
      "Run the embedded end-to-end job: generate a table, quantise it (int8, fp8, int4), shard it over\n"
      "the ranks of the world by vocab and by hidden columns, look ids up (out-of-range ones too), and\n"
      "check every rank's output against the lookup of the unsharded table.\n"
      "Example: mpirun -np 4 tpembed demo --vocab 32000 --hidden 512");
  demo->add_option("--vocab", options->vocab, "rows of the generated table")->check(CLI::PositiveNumber)->capture_default_str();
  demo->add_option("--hidden", options->hidden, "columns of the generated table")->check(CLI::PositiveNumber)->capture_default_str();
  demo->add_option("--tokens", options->tokens, "random ids to look up")->check(CLI::NonNegativeNumber)->capture_default_str();
  demo->add_option("--seed", options->seed, "random seed")->capture_default_str();
  demo->callback([options, &exit_code] { exit_code = run_demo(*options); });
}

}  // namespace tpembed::cli
