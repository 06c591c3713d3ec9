// `tpembed bench-tp`: the tensor-parallel lookup under mpirun — lookup plus exchange for the vocab
// exchanges (the seed's all-reduce, owned rows, peer rows) and for hidden sharding, with the bytes
// each rank moves on the wire, the bus bandwidth, and each exchange's speed-up over the all-reduce;
// with --output-layout scattered the same in the sequence-parallel layout (each rank ends with its
// chunk of the tokens: reduce-scatter, owner-only all-to-all, peer rows of the own chunk, hidden
// all-to-all), checked against the reduce-scatter.
#include <algorithm>
#include <chrono>
#include <limits>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench_report.hpp"
#include "commands.hpp"
#include "common.hpp"

namespace tpembed::cli {

namespace {

struct TpBenchOptions {
  std::string device = "auto";
  std::string comm = "auto";
  std::int64_t vocab = 128256;
  std::int64_t hidden = 8192;
  std::vector<std::int64_t> tokens = {1, 16, 128, 1024, 8192, 32768};
  int repeats = 20;
  std::string output_layout = "replicated";
};

struct Case {
  const char* name;
  int sharding_dim;
  VocabExchange exchange;
};

// Rows [first_row, +rows) and columns [first_col, +cols) of one bf16 table of `hidden` columns
// whose every element is a hash of its place (positive normal values): vocab and hidden shards cut
// the same table, so every exchange's output can be checked against the first's (the timing does
// not depend on the values).
Tensor table_block(std::int64_t first_row, std::int64_t rows, std::int64_t first_col, std::int64_t cols,
                   std::int64_t hidden) {
  Tensor shard = allocate(DType::bf16, {rows, cols}, "a table shard");
  auto* bits = shard.data_as<std::uint16_t>();
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      std::uint64_t mixed = static_cast<std::uint64_t>((first_row + r) * hidden + first_col + c) + 0x9e3779b97f4a7c15ull;
      mixed = (mixed ^ (mixed >> 30)) * 0xbf58476d1ce4e5b9ull;
      mixed = (mixed ^ (mixed >> 27)) * 0x94d049bb133111ebull;
      bits[r * cols + c] = static_cast<std::uint16_t>(0x3c00u + ((mixed ^ (mixed >> 31)) & 0x3ffu));
    }
  }
  return shard;
}

int run_bench_tp(Communicator& world_ref, const TpBenchOptions& options) {
  Communicator* world = &world_ref;
  const int tp = world->size(), rank = world->rank();
  const bool lead = rank == 0;
  // Every rank must take the same path: the rank that sees the fewest GPUs decides for all.
  std::int64_t gpus = cuda_device_count();
  std::vector<std::int64_t> gpus_of(static_cast<std::size_t>(tp));
  world->all_gather(&gpus, gpus_of.data(), 1, DType::i64);
  const std::int64_t fewest = *std::min_element(gpus_of.begin(), gpus_of.end());
  const bool cuda = options.device == "cuda" || (options.device == "auto" && fewest > 0);
  TPEMBED_EXPECTS(!cuda || fewest > 0, UnsupportedError, "bench-tp --device cuda: no CUDA device visible",
                  tp > 1 ? " on some rank" : "");
  const bool nccl_possible = cuda && nccl_available() && fewest >= tp;
  TPEMBED_EXPECTS(options.comm != "nccl" || nccl_possible, UnsupportedError,
                  "bench-tp --comm nccl needs the CUDA backend, NCCL and one GPU per rank (", fewest,
                  " GPUs visible for ", tp, " ranks", cuda ? "" : ", and --device is cpu", ")");
  const bool nccl = nccl_possible && options.comm != "mpi";
  const int device = !cuda ? 0 : on_every_rank(*world, [&] {
    const int chosen = node_local_cuda_device(*world);
    cuda_set_device(chosen);  // this rank's streams, timings and NCCL stay on its GPU
    return chosen;
  });
  std::unique_ptr<Communicator> nccl_group = nccl ? make_nccl_communicator(*world, device) : nullptr;
  Communicator& group = nccl ? *nccl_group : *world;

  // peer_rows needs the tables in GPU memory of one machine with peer access; where it cannot run,
  // every rank alike gets UnsupportedError and the case is left out.
  const bool scattered = options.output_layout == "scattered";
  const Case replicated_cases[] = {{"vocab, all-reduce", 0, VocabExchange::all_reduce},
                                   {"vocab, owned rows", 0, VocabExchange::owned_rows},
                                   {"vocab, peer rows", 0, VocabExchange::peer_rows},
                                   {"hidden, all-gather", 1, VocabExchange::all_reduce}};
  const Case scattered_cases[] = {{"vocab, reduce-scatter", 0, VocabExchange::all_reduce},
                                  {"vocab, owned rows all-to-all", 0, VocabExchange::owned_rows},
                                  {"vocab, peer rows of the own chunk", 0, VocabExchange::peer_rows},
                                  {"hidden, all-to-all", 1, VocabExchange::all_reduce}};
  const Case(&all_cases)[4] = scattered ? scattered_cases : replicated_cases;
  const char* baseline = scattered ? "reduce-scatter" : "all-reduce";
  std::vector<Case> cases;
  std::vector<std::unique_ptr<ParallelEmbedding>> layers;
  for (const Case& c : all_cases) {
    const bool peer_case = c.exchange == VocabExchange::peer_rows;
    if (peer_case && (!cuda || tp == 1)) continue;
    const std::int64_t total = c.sharding_dim == 0 ? options.vocab : options.hidden;
    const auto [offset, size] = shard_range(total, tp, rank, ShardPlacement::packed);
    // An allocation that fails on one rank alone is every rank's error, before the set-up's collective.
    EmbeddingShard host = on_every_rank(*world, [&] {
      return EmbeddingShard::owning(c.sharding_dim == 0 ? table_block(offset, size, 0, options.hidden, options.hidden)
                                                        : table_block(0, options.vocab, offset, size, options.hidden));
    });
    EmbeddingConfig config;
    config.tp_size = tp;
    config.sharding_dim = c.sharding_dim;
    config.placement = ShardPlacement::packed;
    config.vocab_exchange = c.exchange;
    config.collective_checks = false;  // every rank passes the same ids; lets the forward be captured
    config.output_layout = scattered ? TokenLayout::scattered : TokenLayout::replicated;
    std::unique_ptr<ParallelEmbedding> layer;
    try {
      EmbeddingShard shard =
          cuda ? on_every_rank(*world, [&] { return copy_shard_to_device(host, device); }) : std::move(host);
      layer = std::make_unique<ParallelEmbedding>(group, std::move(shard), config);
    } catch (const UnsupportedError& error) {
      if (!peer_case) throw;
      if (lead) std::printf("(peer rows left out: %s)\n", error.what());
      continue;
    }
    cases.push_back(c);
    layers.push_back(std::move(layer));
  }
  // Capturable: peer rows (no collective), and all-reduce / all-gather / reduce-scatter over an
  // engine that takes device buffers (NCCL). Owned rows plan on the host (counts cross the group
  // first), and the hidden all-to-all of a scattered output is not capturable: never.
  const auto captured = [&](const ParallelEmbedding& layer) {
    const VocabExchange exchange = layer.layout().vocab_exchange;
    if (!cuda || exchange == VocabExchange::owned_rows) return false;
    if (scattered && layer.layout().sharding_dim == 1 && tp > 1) return false;
    return exchange == VocabExchange::peer_rows || group.accepts_device_buffers();
  };
  if (lead) {
    std::printf("tpembed bench-tp: tp %d over %s (%s), bf16 table V=%lld x H=%lld, packed shards; each row: the "
                "slowest rank's median of %d lookups + exchange, timed as CUDA graph replays where the exchange can "
                "be captured (graph), else by the wall clock (wall); output %s\n",
                tp, group.engine().c_str(), cuda ? "GPU buffers" : "host buffers", static_cast<long long>(options.vocab),
                static_cast<long long>(options.hidden), options.repeats,
                scattered ? "scattered (each rank its chunk of the tokens: torch.tensor_split's rule)" : "replicated");
    std::printf("| tokens | sharding, exchange | timed | time us | bytes on the wire per rank | bus GB/s | vs %s |\n",
                baseline);
    std::printf("|---|---|---|---|---|---|---|\n");
  }
  Progress progress("bench-tp", static_cast<std::int64_t>(options.tokens.size() * cases.size()), lead);
  int failures = 0;
  for (std::int64_t tokens : options.tokens) {
    std::vector<std::int64_t> ids(static_cast<std::size_t>(tokens));
    std::mt19937_64 rng(static_cast<std::uint64_t>(tokens));  // the same ids on every rank
    std::uniform_int_distribution<std::int64_t> any(0, options.vocab - 1);
    for (auto& id : ids) id = any(rng);
    const std::int64_t row = options.hidden * 2;
    // This rank's rows of the output: all of them, or its chunk's.
    const auto [chunk_first, chunk_rows] =
        scattered ? shard_range(tokens, tp, rank, ShardPlacement::packed) : std::pair<std::int64_t, std::int64_t>{0, tokens};
    const std::int64_t out_bytes = chunk_rows * row;
    std::unique_ptr<DeviceBuffer> device_ids, device_out;
    Tensor host_out;  // the output where the tables are on the host
    TensorView ids_view(ids.data(), DType::i64, {tokens}), out_view;
    if (cuda) {
      on_every_rank(*world, [&] {
        device_ids = std::make_unique<DeviceBuffer>(ids.size() * 8, device);
        device_ids->copy_from_host(ids.data(), ids.size() * 8);
        device_out = std::make_unique<DeviceBuffer>(static_cast<std::size_t>(out_bytes), device);
        return 0;
      });
      ids_view = device_ids->view(DType::i64, {tokens});
      out_view = device_out->view(DType::bf16, {chunk_rows, options.hidden});
    } else {
      host_out =
          on_every_rank(*world, [&] { return allocate(DType::bf16, {chunk_rows, options.hidden}, "the output"); });
      out_view = host_out.view();
    }
    std::vector<std::uint8_t> output;  // a vocab exchange's output, compared with the all-reduce's
    // Rows this rank owns: the owned-row and peer-row exchanges bring in the rest.
    const auto [first_row, rows_held] = shard_range(options.vocab, tp, rank, ShardPlacement::packed);
    const auto owns = [&](std::int64_t id) { return id >= first_row && id < first_row + rows_held; };
    const std::int64_t owned = std::count_if(ids.begin(), ids.end(), owns);
    // Scattered: the rows of this rank's chunk it owns, and the rows it owns in the other chunks
    // (the owned-row all-to-all receives the rest of its chunk and sends those).
    const std::int64_t owned_in_chunk =
        std::count_if(ids.begin() + chunk_first, ids.begin() + chunk_first + chunk_rows, owns);
    const std::int64_t owned_elsewhere = owned - owned_in_chunk;
    const std::int64_t own_cols = shard_range(options.hidden, tp, rank, ShardPlacement::packed).second;
    const double ring = tp > 1 ? static_cast<double>(tp - 1) / tp : 0.0;
    std::vector<std::uint8_t> reference;
    double all_reduce_us = 0;
    for (std::size_t c = 0; c < cases.size(); ++c) {
      progress.step(std::to_string(tokens) + " tokens, " + cases[c].name);
      ParallelEmbedding& layer = *layers[c];
      const VocabExchange exchange = layer.layout().vocab_exchange;
      double wire = 0;
      if (!scattered) {
        wire = cases[c].sharding_dim == 1             ? ring * static_cast<double>(out_bytes)
               : exchange == VocabExchange::all_reduce ? 2 * ring * static_cast<double>(out_bytes)
                                                       : static_cast<double>((tokens - owned) * row);
      } else if (cases[c].sharding_dim == 1) {  // its chunk's columns from every other rank
        wire = static_cast<double>(chunk_rows * (options.hidden - own_cols) * 2);
      } else if (exchange == VocabExchange::all_reduce) {  // a ring reduce-scatter of the whole output
        wire = ring * static_cast<double>(tokens * row);
      } else if (exchange == VocabExchange::owned_rows) {  // the larger way: rows received or sent
        wire = static_cast<double>(std::max(chunk_rows - owned_in_chunk, owned_elsewhere) * row);
      } else {  // peer rows: its chunk's rows that peers own, read from their tables
        wire = static_cast<double>((chunk_rows - owned_in_chunk) * row);
      }
      double mine[2] = {0, wire};
      if (captured(layer)) {
        // Several forwards per graph where each is short, so the replay's own cost is spread.
        const int per_graph = out_bytes < (std::int64_t{16} << 20) ? 10 : 1;
        const CudaGraphTiming timing = cuda_graph_time(
            [&](void* stream) {
              for (int i = 0; i < per_graph; ++i) layer.forward(ids_view, out_view, stream);
            },
            per_graph, options.repeats);
        mine[0] = timing.median_ms * 1e3;
      } else {
        for (int warm = 0; warm < 2; ++warm) layer.forward(ids_view, out_view);
        std::vector<double> samples;
        for (int r = 0; r < options.repeats; ++r) {
          if (cuda) cuda_synchronize();
          const auto start = std::chrono::steady_clock::now();
          layer.forward(ids_view, out_view);
          if (cuda) cuda_synchronize();
          samples.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
        }
        mine[0] = bench::median(samples);
      }
      // The slowest rank's median, and its largest wire volume.
      std::vector<double> all(2 * static_cast<std::size_t>(tp));
      world->all_gather(mine, all.data(), 2 * 8, DType::i8);
      double us = 0, bytes = 0;
      for (int r = 0; r < tp; ++r) {
        us = std::max(us, all[2 * static_cast<std::size_t>(r)]);
        bytes = std::max(bytes, all[2 * static_cast<std::size_t>(r) + 1]);
      }
      {  // every exchange must agree bit for bit with the first (the all-reduce or reduce-scatter)
        output.resize(static_cast<std::size_t>(out_bytes));
        if (cuda) {
          cuda_synchronize();
          device_out->copy_to_host(output.data(), output.size());
        } else {
          std::copy_n(static_cast<const std::uint8_t*>(host_out.data()), output.size(), output.begin());
        }
        if (c == 0) reference.swap(output);
        if (c > 0 && output != reference) ++failures;
      }
      if (c == 0) all_reduce_us = us;
      if (lead) {
        char versus[32] = "";
        if (cases[c].sharding_dim == 0 && c > 0) std::snprintf(versus, sizeof versus, "%.2fx", all_reduce_us / us);
        print_line(progress, format("| %lld | %s | %s | %.1f | %.0f | %.1f | %s |", static_cast<long long>(tokens),
                                    cases[c].name, captured(layer) ? "graph" : "wall", us, bytes,
                                    us > 0 ? bytes / (us * 1e3) : 0.0, versus));
      }
    }
  }
  std::int64_t any_failure = failures, total_failures = 0;
  world->all_reduce_sum(&any_failure, &total_failures, 1, DType::i64);
  if (lead) {
    std::printf("%s\n", total_failures == 0 ? format("every exchange matched the %s bit for bit on every rank",
                                                   baseline).c_str()
                                            : format("MISMATCH: %lld rows of exchanges differ from the %s",
                                                     static_cast<long long>(total_failures), baseline).c_str());
  }
  return total_failures == 0 ? 0 : 1;
}

}  // namespace

void add_bench_tp_command(CLI::App& app, Launch& launch) {
  auto options = std::make_shared<TpBenchOptions>();
  CLI::App* command = app.add_subcommand(
      "bench-tp",
      "Time the tensor-parallel lookup over the ranks of mpirun: lookup + exchange for vocab sharding\n"
      "with the seed's all-reduce, the owned-row exchange and (GPU tables of one machine) the peer-row\n"
      "exchange, and for hidden sharding (all-gather). Each row gives the slowest rank's median time\n"
      "(CUDA graph replays where the exchange can be captured: NCCL or peer rows; else wall clock), the\n"
      "bytes each rank moves on the wire (all-reduce 2(tp-1)/tp of the output, owned and peer rows the\n"
      "rows it does not own, all-gather (tp-1)/tp) and the bus bandwidth; vocab rows give their speed-up\n"
      "over the all-reduce. Every exchange (the hidden one too: both shardings cut one table) is checked\n"
      "to agree bit for bit with the all-reduce.\n"
      "--output-layout scattered times the sequence-parallel layout instead: each rank ends with its chunk\n"
      "of the tokens (torch.tensor_split's chunks): vocab sharding with the reduce-scatter ((tp-1)/tp of\n"
      "the whole output on the wire), the owned-row all-to-all (the larger of the rows a rank receives for\n"
      "its chunk and the rows it sends to the others' chunks), peer rows of the own chunk (the chunk's rows\n"
      "read from peers' tables), and hidden sharding's all-to-all (its chunk's columns from every other\n"
      "rank); each is checked against the reduce-scatter, and the vocab rows give their speed-up over it.\n"
      "Example: mpirun -np 4 tpembed bench-tp --device cuda --comm nccl --hidden 8192 [--output-layout scattered]");
  command->add_option("--device", options->device, "cpu, cuda, or auto (cuda when a GPU is visible)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  command->add_option("--comm", options->comm, "mpi, nccl (one GPU per rank), or auto (nccl where it can)")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}))->capture_default_str();
  command->add_option("--vocab", options->vocab, "table rows")->check(positive_integer())->capture_default_str();
  command->add_option("--hidden", options->hidden, "table columns")->check(positive_integer())->capture_default_str();
  command->add_option("--tokens", options->tokens, "token counts")->delimiter(',')->check(positive_integer())
      ->capture_default_str();
  command->add_option("--repeats", options->repeats, "timed lookups per row")
      ->check(integer_in(1, std::numeric_limits<int>::max()))
      ->capture_default_str();
  command->add_option("--output-layout", options->output_layout,
                      "replicated (every rank the whole output) or scattered (each rank its chunk of the tokens)")
      ->check(CLI::IsMember({"replicated", "scattered"}))->capture_default_str();
  command->callback([options, &launch] {
    launch.collective = true;
    launch.run = [options](Communicator& world) { return run_bench_tp(world, *options); };
  });
}

}  // namespace tpembed::cli
