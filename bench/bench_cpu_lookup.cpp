// Benchmark of the CPU lookup against this machine's copy ceiling, both measured in the same run
// (issue "core": an f32 lookup of V=32000, H=4096, 65536 ids reaches at least 70% of memcpy
// bandwidth). Not a test: it prints one row per case and checks only that the output is sane.
//
// Bytes moved = ids read + table rows read (+ one scale per id for quantized tables) + output rows
// written; GB/s uses 1 GB = 1e9 bytes. The ceiling is std::memcpy of a buffer as large as the f32
// output, split over as many threads as the lookup uses, counted as bytes read + bytes written.
//
// A plain main rather than Google Benchmark: every sample of a case is paired with a ceiling sample
// (see measure()), which Google Benchmark's self-sized iteration loops do not express; a fixed,
// small number of repeats keeps the whole run near 10 s on 2 cores; and a default build gets no
// new dependency.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tpembed/communicator.hpp"
#include "tpembed/dtype.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/lookup.hpp"
#include "tpembed/parallel_embedding.hpp"
#include "tpembed/tensor.hpp"

namespace {

using tpembed::DType;
using Clock = std::chrono::steady_clock;

// A timed sample shorter than this is made of several back-to-back calls, so that small cases do
// not time the clock and the thread start-up alone.
constexpr double kMinSampleSeconds = 0.02;

struct Options {
  std::int64_t vocab = 32000;
  std::int64_t hidden = 4096;
  std::int64_t tokens = 65536;
  std::vector<DType> dtypes = {DType::f32, DType::bf16, DType::i8, DType::i4};
  std::vector<std::int64_t> small_tokens = {1024, 8192};
  int repeats = 5;
};

[[noreturn]] void usage(const char* program, const std::string& complaint) {
  if (!complaint.empty()) std::fprintf(stderr, "%s: %s\n", program, complaint.c_str());
  std::fprintf(
      stderr,
      "usage: %s [--vocab V] [--hidden H] [--tokens N] [--dtype LIST] [--small-tokens LIST]"
      " [--repeats R]\n"
      "  --dtype LIST         table dtypes, comma-separated, of f32 bf16 i8 i4 "
      "(default all; f32 is always run)\n"
      "  --small-tokens LIST  extra f32 token counts, comma-separated (default "
      "1024,8192; 'none' for none)\n"
      "  --repeats R          timed samples per case; the median is reported (default 5)\n",
      program);
  std::exit(complaint.empty() ? 0 : 2);
}

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

std::int64_t parse_positive(const char* program, const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value <= 0)
    usage(program, flag + " wants a positive integer");
  return value;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage(argv[0], "");
    if (i + 1 >= argc) usage(argv[0], flag == "" ? "empty argument" : "missing value for " + flag);
    const std::string value = argv[++i];
    if (flag == "--vocab") {
      options.vocab = parse_positive(argv[0], flag, value);
    } else if (flag == "--hidden") {
      options.hidden = parse_positive(argv[0], flag, value);
    } else if (flag == "--tokens") {
      options.tokens = parse_positive(argv[0], flag, value);
    } else if (flag == "--repeats") {
      options.repeats = static_cast<int>(parse_positive(argv[0], flag, value));
    } else if (flag == "--dtype") {
      options.dtypes = {DType::f32};
      for (const std::string& name : split_commas(value)) {
        if (name != "f32" && name != "bf16" && name != "i8" && name != "i4") {
          usage(argv[0], "unknown --dtype " + name);
        }
        const DType dtype = tpembed::dtype_from_name(name);
        if (dtype != DType::f32) options.dtypes.push_back(dtype);
      }
    } else if (flag == "--small-tokens") {
      options.small_tokens.clear();
      if (value != "none") {
        for (const std::string& item : split_commas(value)) {
          options.small_tokens.push_back(parse_positive(argv[0], flag, item));
        }
      }
    } else {
      usage(argv[0], "unknown option " + flag);
    }
  }
  return options;
}

// Runs body(begin, end) over [0, count) split in `workers` contiguous pieces, the calling thread
// taking the first: the same split, and the same per-call thread start, as the lookup's.
void split_over_threads(std::int64_t count, int workers,
                        const std::function<void(std::int64_t, std::int64_t)>& body) {
  std::vector<std::thread> threads;
  const std::int64_t chunk = (count + workers - 1) / workers;
  for (int w = 1; w < workers; ++w) {
    const std::int64_t begin = std::min(count, w * chunk), end = std::min(count, begin + chunk);
    threads.emplace_back(body, begin, end);
  }
  body(0, std::min(count, chunk));
  for (auto& thread : threads) thread.join();
}

// splitmix64: a fast, seeded stream for filling tables (their values do not change the timing).
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Fills every byte of `tensor` (which also faults its pages in) with values valid for its dtype.
void fill_random(tpembed::Tensor& tensor, std::uint64_t seed) {
  SplitMix random{seed};
  const auto bytes = static_cast<std::size_t>(tensor.nbytes());
  auto* data = static_cast<std::uint8_t*>(tensor.data());
  if (tensor.dtype() == DType::f32) {
    auto* values = tensor.data_as<float>();
    for (std::size_t i = 0; i < bytes / 4; ++i) {
      values[i] = static_cast<float>(random.next() >> 40) * 0x1p-24f - 0.5f;
    }
  } else if (tensor.dtype() == DType::bf16) {
    // bf16 bits of values in [-1, 1): sign, exponent 0x70..0x7e, random mantissa.
    auto* values = tensor.data_as<std::uint16_t>();
    for (std::size_t i = 0; i < bytes / 2; ++i) {
      const std::uint64_t r = random.next();
      values[i] = static_cast<std::uint16_t>(((r & 1) << 15) | ((0x70 + (r >> 1) % 15) << 7) |
                                             ((r >> 8) & 0x7f));
    }
  } else {
    // i8 and i4: every bit pattern is a valid value.
    std::size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
      const std::uint64_t r = random.next();
      std::memcpy(data + i, &r, 8);
    }
    for (; i < bytes; ++i) data[i] = static_cast<std::uint8_t>(random.next());
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// The timed samples of one case, each with the copy ceiling measured just before it.
struct Samples {
  std::vector<double> seconds;       // per call
  std::vector<double> ceiling_gbps;  // empty when the case is not compared with the ceiling
  int calls_per_sample = 1;
};

// One warm-up call (which also sizes the samples), then `repeats` timed samples. When `ceiling` is
// given, it runs (and measures the copy ceiling) right before each sample: memory bandwidth on a
// shared machine drifts by tens of percent over seconds, and a ratio of two measurements taken
// seconds apart would mostly measure the drift.
Samples measure(int repeats, const std::function<void()>& call,
                const std::function<double()>& ceiling = {}) {
  auto start = Clock::now();
  call();
  const double warm_up = std::chrono::duration<double>(Clock::now() - start).count();
  Samples samples;
  samples.calls_per_sample =
      std::max(1, static_cast<int>(std::ceil(kMinSampleSeconds / std::max(warm_up, 1e-9))));
  for (int r = 0; r < repeats; ++r) {
    if (ceiling) samples.ceiling_gbps.push_back(ceiling());
    start = Clock::now();
    for (int c = 0; c < samples.calls_per_sample; ++c) call();
    samples.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count() /
                              samples.calls_per_sample);
  }
  return samples;
}

void print_header() {
  std::printf("%-42s %8s %9s %-20s %7s %9s %7s\n", "case", "GB moved", "ms/call", "   min..max ms",
              "GB/s", "ceil GB/s", "% ceil");
}

// Prints a row and returns its median GB/s. For a case paired with the ceiling, % ceil is the
// median over samples of (GB/s / ceiling GB/s of the same sample), also stored in `percent` if
// given.
double print_row(const std::string& name, double bytes, const Samples& samples,
                 double* percent = nullptr) {
  const double gbps = bytes / median(samples.seconds) / 1e9;
  std::printf("%-42s %8.3f %9.3f %9.3f..%-9.3f %7.2f", name.c_str(), bytes / 1e9,
              median(samples.seconds) * 1e3,
              *std::min_element(samples.seconds.begin(), samples.seconds.end()) * 1e3,
              *std::max_element(samples.seconds.begin(), samples.seconds.end()) * 1e3, gbps);
  if (samples.ceiling_gbps.empty()) {
    std::printf(" %9s %7s\n", "-", "-");
  } else {
    std::vector<double> ratios;
    for (std::size_t k = 0; k < samples.seconds.size(); ++k) {
      ratios.push_back(100.0 * bytes / samples.seconds[k] / 1e9 / samples.ceiling_gbps[k]);
    }
    const double ratio = median(ratios);
    std::printf(" %9.2f %6.1f%%\n", median(samples.ceiling_gbps), ratio);
    if (percent != nullptr) *percent = ratio;
  }
  std::fflush(stdout);
  return gbps;
}

// A table of one dtype with its scales (quantized dtypes only), as the op layer would hold it.
struct Table {
  DType dtype;
  DType out_dtype;
  tpembed::Tensor weight;
  tpembed::Tensor scale;
};

Table make_table(DType dtype, std::int64_t vocab, std::int64_t hidden) {
  Table table{dtype, tpembed::is_quantized(dtype) ? DType::bf16 : dtype, {}, {}};
  table.weight = tpembed::Tensor(dtype, {vocab, hidden});
  fill_random(table.weight, 1000 + static_cast<std::uint64_t>(dtype));
  if (tpembed::is_quantized(dtype)) {
    table.scale = tpembed::Tensor(DType::f32, {vocab});
    fill_random(table.scale, 2000);
    for (std::int64_t r = 0; r < vocab; ++r) table.scale.data_as<float>()[r] += 1.0f;
  }
  return table;
}

// LookupParams filled directly, as ParallelEmbedding does for one rank that holds the whole table.
tpembed::LookupParams lookup_params(const Table& table, const tpembed::TensorView& ids, void* out,
                                    unsigned long long* bad) {
  tpembed::LookupParams p;
  p.table = table.weight.data();
  p.table_dtype = table.dtype;
  p.table_rows = table.weight.shape()[0];
  p.cols = table.weight.shape()[1];
  p.table_row_bytes = tpembed::row_bytes(table.dtype, p.cols);
  p.scale = tpembed::is_quantized(table.dtype) ? table.scale.data() : nullptr;
  p.scale_dtype = DType::f32;
  p.valid_ids = p.table_rows;
  p.ids = ids.data;
  p.id_dtype = ids.dtype;
  p.num_ids = ids.numel();
  p.out = out;
  p.out_dtype = table.out_dtype;
  p.out_row_stride = p.cols;
  p.bad_id_count = bad;
  return p;
}

double lookup_bytes(const Table& table, std::int64_t num_ids) {
  const std::int64_t cols = table.weight.shape()[1];
  const std::int64_t per_id = 8 /* i64 id */ + tpembed::row_bytes(table.dtype, cols) +
                              (tpembed::is_quantized(table.dtype) ? 4 : 0) +
                              tpembed::row_bytes(table.out_dtype, cols);
  return static_cast<double>(per_id) * static_cast<double>(num_ids);
}

// The output must hold the looked-up rows: compare every one with its table row (f32/bf16 copies
// are exact), so a broken copy cannot report a fast no-op. Quantized outputs are the tests' job.
void check_copy(const Table& table, const tpembed::Tensor& ids, const void* out,
                std::int64_t num_ids) {
  if (tpembed::is_quantized(table.dtype)) return;
  const std::int64_t row = tpembed::row_bytes(table.dtype, table.weight.shape()[1]);
  const auto* table_bytes = static_cast<const std::uint8_t*>(table.weight.data());
  const auto* out_bytes = static_cast<const std::uint8_t*>(out);
  for (std::int64_t i = 0; i < num_ids; ++i) {
    const std::int64_t id = ids.data_as<std::int64_t>()[i];
    if (std::memcmp(out_bytes + i * row, table_bytes + id * row, static_cast<std::size_t>(row))) {
      std::fprintf(stderr, "bench_cpu_lookup: output row %lld is not table row %lld\n",
                   static_cast<long long>(i), static_cast<long long>(id));
      std::exit(1);
    }
  }
}

int run(const Options& options) {
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::int64_t max_tokens = options.tokens;
  for (std::int64_t n : options.small_tokens) max_tokens = std::max(max_tokens, n);
  const std::int64_t copy_bytes = options.tokens * options.hidden * 4;  // the f32 output's size

  std::printf(
      "bench_cpu_lookup: V=%lld H=%lld tokens=%lld, i64 ids uniform in [0, V); "
      "median of %d timed samples per case after a warm-up; %d threads "
      "(hardware_concurrency, as the lookup)\n",
      static_cast<long long>(options.vocab), static_cast<long long>(options.hidden),
      static_cast<long long>(options.tokens), options.repeats, threads);

  // Every buffer is written before any timing, so no page fault is timed.
  tpembed::Tensor out(DType::i8, {max_tokens * options.hidden * 4});
  std::memset(out.data(), 0, static_cast<std::size_t>(out.nbytes()));
  tpembed::Tensor copy_source(DType::i8, {copy_bytes});
  std::memset(copy_source.data(), 1, static_cast<std::size_t>(copy_bytes));
  tpembed::Tensor ids(DType::i64, {max_tokens});
  {
    std::mt19937_64 random(42);
    std::uniform_int_distribution<std::int64_t> pick(0, options.vocab - 1);
    for (std::int64_t i = 0; i < max_tokens; ++i) ids.data_as<std::int64_t>()[i] = pick(random);
  }

  // (1) The copy ceiling: memcpy of as many bytes as the f32 lookup writes, into the output
  // buffer, split over `threads` threads as the lookup is; counted as bytes read + written.
  const auto* src = static_cast<const std::uint8_t*>(copy_source.data());
  auto* dst = static_cast<std::uint8_t*>(out.data());
  const double copy_moved = 2.0 * static_cast<double>(copy_bytes);
  const auto copy_all_threads = [&] {
    split_over_threads(copy_bytes, threads, [&](std::int64_t begin, std::int64_t end) {
      std::memcpy(dst + begin, src + begin, static_cast<std::size_t>(end - begin));
    });
  };
  const auto ceiling = [&] {
    const auto start = Clock::now();
    copy_all_threads();
    return copy_moved / std::chrono::duration<double>(Clock::now() - start).count() / 1e9;
  };

  print_header();
  print_row("memcpy, 1 thread", copy_moved,
            measure(
                options.repeats,
                [&] { std::memcpy(dst, src, static_cast<std::size_t>(copy_bytes)); }, ceiling));
  const double ceiling_gbps =
      print_row("memcpy, " + std::to_string(threads) + " threads: the CEILING", copy_moved,
                measure(options.repeats, copy_all_threads));

  // (2) The lookup, launcher and op, per table dtype; each sample paired with a ceiling sample.
  std::unique_ptr<tpembed::Communicator> comm = tpembed::make_single_communicator();
  double f32_percent = 0;
  for (DType dtype : options.dtypes) {
    const Table table = make_table(dtype, options.vocab, options.hidden);
    const std::string kind = std::string(tpembed::dtype_name(dtype)) + "->" +
                             tpembed::dtype_name(table.out_dtype) +
                             (tpembed::is_quantized(dtype) ? " f32-scale" : "");

    std::vector<std::int64_t> token_counts = {options.tokens};
    if (dtype == DType::f32) {
      for (std::int64_t n : options.small_tokens) {
        if (n != options.tokens) token_counts.push_back(n);
      }
    }
    for (std::int64_t num_ids : token_counts) {
      const tpembed::TensorView id_view(ids.data(), DType::i64, {num_ids});
      unsigned long long bad = 0;
      const tpembed::LookupParams params = lookup_params(table, id_view, out.data(), &bad);
      const Samples samples = measure(
          options.repeats, [&] { tpembed::lookup_cpu(params); }, ceiling);
      check_copy(table, ids, out.data(), num_ids);
      if (bad != 0) {
        std::fprintf(stderr, "bench_cpu_lookup: %llu ids counted bad\n", bad);
        return 1;
      }
      double percent = 0;
      print_row("lookup_cpu " + kind + " " + std::to_string(num_ids) + " ids",
                lookup_bytes(table, num_ids), samples, &percent);
      if (dtype == DType::f32 && num_ids == options.tokens) f32_percent = percent;
    }

    // The op layer on the headline size: checks, dispatch and the bad-id count on top.
    tpembed::EmbeddingShard shard;
    shard.weight = table.weight.view();
    if (tpembed::is_quantized(dtype)) shard.scale = table.scale.view();
    tpembed::EmbeddingConfig config;
    config.out_dtype = table.out_dtype;
    tpembed::ParallelEmbedding embedding(*comm, shard, config);
    const tpembed::TensorView id_view(ids.data(), DType::i64, {options.tokens});
    const tpembed::TensorView out_view(out.data(), table.out_dtype,
                                       {options.tokens, options.hidden});
    const Samples samples = measure(
        options.repeats, [&] { embedding.forward(id_view, out_view); }, ceiling);
    check_copy(table, ids, out.data(), options.tokens);
    print_row("forward    " + kind + " " + std::to_string(options.tokens) + " ids",
              lookup_bytes(table, options.tokens), samples);
  }

  std::printf(
      "f32 lookup_cpu, %lld ids: %.1f%% of the %d-thread memcpy ceiling (median of per-sample"
      " ratios; ceiling median %.2f GB/s); the issue asks for >= 70%%: %s\n",
      static_cast<long long>(options.tokens), f32_percent, threads, ceiling_gbps,
      f32_percent >= 70.0 ? "met" : "NOT met");
  return 0;  // a benchmark reports; the tests decide
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_cpu_lookup: %s\n", error.what());
    return 1;
  }
}
