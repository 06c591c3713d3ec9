// `tpembed bench --device cuda`: lookup_cuda replayed in a CUDA graph against the device-to-device
// copy ceiling and the floor of one graph node; the method of bench/bench_cuda_lookup.py, which
// adds PyTorch. The CUDA calls (events, graphs, the busy-wait) live in the library
// (tpembed/cuda.hpp), so this file builds without CUDA.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bench.hpp"
#include "common.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli::bench {

namespace {

// GPU cases rotate over K id sets and outputs so that one pass touches at least this much: four
// of the H100's 50 MB L2, so the cache does not flatter small cases (as bench_cuda_lookup.py).
constexpr double kL2FlushBytes = 200e6;
constexpr int kMaxRotatingSets = 64;
// A device table is one random host block of at most this many bytes, repeated down the vocab.
constexpr std::int64_t kHostBlockBytes = std::int64_t{64} << 20;
// Output rows of each GPU case compared with lookup_cpu.
constexpr int kCheckedRows = 4;

// A table in device memory, made of one random host block of whole rows (at most kHostBlockBytes)
// repeated down the vocab, scales likewise: host memory stays small while the device table has its
// full size, and row `id` equals block row `id % block_rows`, so outputs can be checked on the CPU.
struct DeviceTable {
  Table block;  // host: block_rows rows
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  DeviceBuffer weight;
  DeviceBuffer scale;

  std::int64_t block_rows() const { return block.weight.shape()[0]; }
};

// Fills `device` (rows of `row` bytes) with the host block's rows, repeated: one upload, then
// device-to-device copies doubling the filled part.
void upload_repeated(DeviceBuffer& device, const Tensor& block, std::int64_t rows,
                     std::int64_t row) {
  const std::int64_t block_rows = block.shape()[0];
  device.copy_from_host(block.data(), static_cast<std::size_t>(block_rows * row));
  auto* base = static_cast<std::uint8_t*>(device.data());
  for (std::int64_t filled = block_rows; filled < rows;) {
    const std::int64_t count = std::min(filled, rows - filled);
    cuda_copy(base + filled * row, base, static_cast<std::size_t>(count * row));
    filled += count;
  }
}

DeviceTable make_device_table(DType dtype, std::int64_t vocab, std::int64_t hidden) {
  DeviceTable table;
  table.rows = vocab;
  table.cols = hidden;
  const std::int64_t row = row_bytes(dtype, hidden);
  table.block =
      make_table(dtype, std::clamp<std::int64_t>(kHostBlockBytes / row, 1, vocab), hidden);
  table.weight = DeviceBuffer(static_cast<std::size_t>(vocab * row));
  upload_repeated(table.weight, table.block.weight, vocab, row);
  if (is_quantized(dtype)) {
    table.scale = DeviceBuffer(static_cast<std::size_t>(vocab * 4));
    upload_repeated(table.scale, table.block.scale, vocab, 4);
  }
  return table;
}

// Compares a few output rows of one lookup (ids `host_ids`, output `device_out`) bit for bit with
// lookup_cpu of the same ids in the host block.
void check_against_cpu(const DeviceTable& table, const std::vector<std::int64_t>& host_ids,
                       const std::uint8_t* device_out, const std::string& name) {
  const DType dtype = table.block.dtype;
  const auto tokens = static_cast<std::int64_t>(host_ids.size());
  const std::int64_t out_row = row_bytes(out_dtype_for(dtype), table.cols);
  std::vector<std::int64_t> positions;
  for (int k = 0; k < kCheckedRows; ++k) {
    const std::int64_t position = tokens == 1 ? 0 : k * (tokens - 1) / (kCheckedRows - 1);
    if (positions.empty() || positions.back() != position) positions.push_back(position);
  }
  std::vector<std::int64_t> block_ids;
  for (std::int64_t position : positions) {
    block_ids.push_back(host_ids[static_cast<std::size_t>(position)] % table.block_rows());
  }
  const auto checked = static_cast<std::int64_t>(positions.size());
  std::vector<std::uint8_t> expected(static_cast<std::size_t>(checked * out_row));
  std::vector<std::uint8_t> actual(expected.size());
  lookup_cpu(whole_table_params(dtype, table.block.weight.data(), table.block.scale.data(),
                                table.block_rows(), table.cols, block_ids.data(), checked,
                                expected.data(), nullptr));
  for (std::int64_t k = 0; k < checked; ++k) {
    cuda_copy(actual.data() + k * out_row, device_out + positions[k] * out_row,
              static_cast<std::size_t>(out_row));
    if (std::memcmp(actual.data() + k * out_row, expected.data() + k * out_row,
                    static_cast<std::size_t>(out_row)) != 0) {
      throw std::runtime_error(
          format("bench: %s: output row %lld (id %lld) differs from lookup_cpu", name.c_str(),
                 static_cast<long long>(positions[k]),
                 static_cast<long long>(host_ids[static_cast<std::size_t>(positions[k])])));
    }
  }
}

struct CudaCase {
  std::int64_t bytes = 0;
  int sets = 0;
  CudaGraphTiming timing;
};

// One case as bench_cuda_lookup.py times it: K id sets and outputs, K = enough for one pass to
// touch kL2FlushBytes; a graph of the K lookups replayed; the time per lookup = replay time / K.
CudaCase time_cuda_case(const DeviceTable& table, std::int64_t tokens, int repeats,
                        const std::string& name) {
  const DType dtype = table.block.dtype;
  CudaCase result;
  result.bytes = lookup_bytes(dtype, table.cols, tokens);
  result.sets = static_cast<int>(std::clamp<double>(
      std::ceil(kL2FlushBytes / static_cast<double>(result.bytes)), 2, kMaxRotatingSets));
  const std::int64_t out_row = row_bytes(out_dtype_for(dtype), table.cols);

  std::vector<std::int64_t> host_ids(static_cast<std::size_t>(result.sets * tokens));
  std::mt19937_64 random(static_cast<std::uint64_t>(tokens * 131 + table.cols));
  std::uniform_int_distribution<std::int64_t> pick(0, table.rows - 1);
  for (std::int64_t& id : host_ids) id = pick(random);
  DeviceBuffer ids(host_ids.size() * 8);
  ids.copy_from_host(host_ids.data(), host_ids.size() * 8);
  DeviceBuffer outs(static_cast<std::size_t>(result.sets * tokens * out_row));
  DeviceBuffer bad(sizeof(unsigned long long));
  cuda_fill(bad.data(), 0, bad.size());

  std::vector<LookupParams> lookups;
  for (int k = 0; k < result.sets; ++k) {
    lookups.push_back(
        whole_table_params(dtype, table.weight.data(), table.scale.data(), table.rows, table.cols,
                           static_cast<const std::int64_t*>(ids.data()) + k * tokens, tokens,
                           static_cast<std::uint8_t*>(outs.data()) + k * tokens * out_row,
                           static_cast<unsigned long long*>(bad.data())));
  }

  // Right before timing, once: the first set's output against the CPU backend.
  cuda_check(lookup_cuda(lookups[0], nullptr), "lookup_cuda");
  cuda_synchronize(nullptr);
  check_against_cpu(table, std::vector<std::int64_t>(host_ids.begin(), host_ids.begin() + tokens),
                    static_cast<const std::uint8_t*>(outs.data()), name);

  result.timing = cuda_graph_time(
      [&](void* stream) {
        for (const LookupParams& lookup : lookups)
          cuda_check(lookup_cuda(lookup, stream), "lookup_cuda");
      },
      result.sets, repeats);

  unsigned long long bad_ids = 0;
  bad.copy_to_host(&bad_ids, sizeof bad_ids);
  if (bad_ids != 0) {
    throw std::runtime_error(format("bench: %s: %llu ids counted bad", name.c_str(), bad_ids));
  }
  return result;
}
}  // namespace

int run_cuda_bench(const Resolved& options, Report& report) {
  const std::string device = cuda_device_description(0);
  const std::string date = utc_date();
  print_line(format("%s, %s; V=%lld, i64 ids uniform in [0, V)", device.c_str(), date.c_str(),
                    static_cast<long long>(options.vocab)));
  print_line(
      format("each case: a CUDA graph of K lookups over K id sets and outputs (one pass "
             ">= 200 MB), replayed; time per lookup = median of %d replays / K",
             options.repeats));
  const double ceiling = cuda_copy_ceiling_gbps();
  const double floor_us = cuda_graph_node_floor_us();
  print_line(
      format("device-to-device copy ceiling (2 GiB, read+write): %.0f GB/s; graph-node "
             "floor (64 KB copy, replayed): %.2f us",
             ceiling, floor_us));
  report.header["device"] = device;
  report.header["date"] = date;
  report.header["copy_ceiling_gbs"] = ceiling;
  report.header["graph_node_floor_us"] = floor_us;
  report.header["vocab"] = options.vocab;
  report.header["repeats"] = options.repeats;

  print_line(
      "| table -> out | H | tokens | K | bytes moved | tpembed us | x graph floor | GB/s | "
      "% ceiling |");
  print_line("|---|---|---|---|---|---|---|---|---|");
  Progress progress("tpembed bench",
                    static_cast<std::int64_t>(options.dtypes.size() * options.hidden.size() *
                                              options.tokens.size()),
                    true);
  for (DType dtype : options.dtypes) {
    const char* out_name = dtype_name(out_dtype_for(dtype));
    for (std::int64_t hidden : options.hidden) {
      const DeviceTable table = make_device_table(dtype, options.vocab, hidden);
      for (std::int64_t tokens : options.tokens) {
        const std::string name =
            format("%s -> %s, H=%lld, %lld tokens", dtype_name(dtype), out_name,
                   static_cast<long long>(hidden), static_cast<long long>(tokens));
        progress.step(name);
        const CudaCase c = time_cuda_case(table, tokens, options.repeats, name);
        const double us = c.timing.median_ms * 1e3;
        const double gbps = static_cast<double>(c.bytes) / (c.timing.median_ms * 1e-3) / 1e9;
        print_line(progress,
                   format("| %s -> %s | %lld | %lld | %d | %s | %.2f | %.2f | %.0f | %.1f%% |",
                          dtype_name(dtype), out_name, static_cast<long long>(hidden),
                          static_cast<long long>(tokens), c.sets, with_commas(c.bytes).c_str(), us,
                          us / floor_us, gbps, 100.0 * gbps / ceiling));
        nlohmann::ordered_json row = {{"table", dtype_name(dtype)},
                                      {"out", out_name},
                                      {"hidden", hidden},
                                      {"tokens", tokens},
                                      {"rotating_sets", c.sets},
                                      {"bytes", c.bytes},
                                      {"ours_us", us},
                                      {"ours_min_us", c.timing.min_ms * 1e3},
                                      {"ours_max_us", c.timing.max_ms * 1e3},
                                      {"ours_gbs", gbps},
                                      {"ours_pct_ceiling", 100.0 * gbps / ceiling},
                                      {"ours_per_graph_floor", us / floor_us}};
        report.rows.push_back(std::move(row));
      }
    }
  }
  print_line(progress,
             format("Every case's output was checked bit for bit against lookup_cpu on %d rows; no "
                    "id was counted bad.",
                    kCheckedRows));
  print_line(progress,
             "The same cases against PyTorch (index_select; gather then scale): "
             "bench/bench_cuda_lookup.py.");
  return 0;
}

}  // namespace tpembed::cli::bench
