// `tpembed bench --device cpu`: lookup_cpu (and ParallelEmbedding::forward) against std::memcpy
// split over as many threads as the lookup uses; every timed sample is paired with a ceiling sample
// (see measure()). The method of bench/RESULTS.md, "CPU lookup" (issue "core": an f32 lookup of
// V=32000, H=4096, 65536 ids reaches at least 70% of memcpy bandwidth; issue 13: quantized tables
// into every output dtype at least 50%). TPEMBED_CPU_ISA caps the row decoder's instruction set.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench.hpp"
#include "common.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli::bench {

namespace {

using Clock = std::chrono::steady_clock;

// A timed CPU sample shorter than this is made of several back-to-back calls, so that small cases
// do not time the clock and the thread start-up alone.
constexpr double kMinSampleSeconds = 0.02;

std::string case_kind(DType dtype, DType out) {
  return std::string(dtype_name(dtype)) + "->" + dtype_name(out) +
         (is_quantized(dtype) ? " f32-scale" : "");
}

// The output dtypes timed for `dtype`: a float table's own; for a quantized one bf16 (the default)
// and then f16 and f32, which decode through other conversions.
std::vector<DType> cpu_out_dtypes(DType dtype) {
  if (!is_quantized(dtype)) return {out_dtype_for(dtype)};
  return {DType::bf16, DType::f16, DType::f32};
}

// lookup_bytes() for an output of dtype `out` instead of the default one.
std::int64_t lookup_bytes_into(DType dtype, DType out, std::int64_t hidden, std::int64_t num_ids) {
  return lookup_bytes(dtype, hidden, num_ids) +
         (row_bytes(out, hidden) - row_bytes(out_dtype_for(dtype), hidden)) * num_ids;
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

// Prints a row (and adds it to the report) and returns its median GB/s. For a case paired with the
// ceiling, % ceil is the median over samples of (GB/s / ceiling GB/s of the same sample), also
// stored in `percent` if given.
double print_cpu_row(Progress& progress, const std::string& name, std::int64_t hidden,
                     std::int64_t bytes_moved, const Samples& samples, Report& report,
                     double* percent = nullptr) {
  const auto bytes = static_cast<double>(bytes_moved);
  const double seconds = median(samples.seconds);
  const double gbps = bytes / seconds / 1e9;
  const double fastest = *std::min_element(samples.seconds.begin(), samples.seconds.end());
  const double slowest = *std::max_element(samples.seconds.begin(), samples.seconds.end());
  std::string line = format("%-42s %8.3f %9.3f %9.3f..%-9.3f %7.2f", name.c_str(), bytes / 1e9,
                            seconds * 1e3, fastest * 1e3, slowest * 1e3, gbps);
  nlohmann::ordered_json row = {
      {"case", name},        {"hidden", hidden},        {"bytes", bytes_moved},
      {"ms", seconds * 1e3}, {"min_ms", fastest * 1e3}, {"max_ms", slowest * 1e3},
      {"gbps", gbps}};
  if (samples.ceiling_gbps.empty()) {
    line += format(" %9s %7s", "-", "-");
  } else {
    std::vector<double> ratios;
    for (std::size_t k = 0; k < samples.seconds.size(); ++k) {
      ratios.push_back(100.0 * bytes / samples.seconds[k] / 1e9 / samples.ceiling_gbps[k]);
    }
    const double ratio = median(ratios);
    line += format(" %9.2f %6.1f%%", median(samples.ceiling_gbps), ratio);
    row["ceiling_gbps"] = median(samples.ceiling_gbps);
    row["pct_ceiling"] = ratio;
    if (percent != nullptr) *percent = ratio;
  }
  print_line(progress, line);
  report.rows.push_back(std::move(row));
  return gbps;
}

// The output must hold the looked-up rows: compare every one with its table row (f32/bf16 copies
// are exact), so a broken copy cannot report a fast no-op. Quantized outputs are the tests' job.
void check_copy(const Table& table, const Tensor& ids, const void* out, std::int64_t num_ids,
                const std::string& name) {
  if (is_quantized(table.dtype)) return;
  const std::int64_t row = row_bytes(table.dtype, table.weight.shape()[1]);
  const auto* table_bytes = static_cast<const std::uint8_t*>(table.weight.data());
  const auto* out_bytes = static_cast<const std::uint8_t*>(out);
  for (std::int64_t i = 0; i < num_ids; ++i) {
    const std::int64_t id = ids.data_as<std::int64_t>()[i];
    if (std::memcmp(out_bytes + i * row, table_bytes + id * row, static_cast<std::size_t>(row))) {
      throw std::runtime_error(format("bench: %s: output row %lld is not table row %lld",
                                      name.c_str(), static_cast<long long>(i),
                                      static_cast<long long>(id)));
    }
  }
}

// The token counts timed for `dtype`: the first of --tokens for every dtype, the others for f32
// (into its default output dtype).
std::vector<std::int64_t> cpu_token_counts(const Resolved& options, DType dtype) {
  std::vector<std::int64_t> counts = {options.tokens[0]};
  if (dtype == DType::f32) {
    for (std::int64_t n : options.tokens) {
      if (std::find(counts.begin(), counts.end(), n) == counts.end()) counts.push_back(n);
    }
  }
  return counts;
}

void run_cpu(const Resolved& options, std::int64_t hidden, Progress& progress, Report& report) {
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::int64_t tokens = options.tokens[0];
  const std::int64_t max_tokens = *std::max_element(options.tokens.begin(), options.tokens.end());
  const std::int64_t copy_bytes = tokens * hidden * 4;  // the f32 output's size

  const char* isa_variable = std::getenv("TPEMBED_CPU_ISA");
  const std::string isa_cap =
      isa_variable != nullptr
          ? std::string("; row decoding capped: TPEMBED_CPU_ISA=") + isa_variable
          : std::string();
  print_line(progress,
             format("V=%lld H=%lld tokens=%lld, i64 ids uniform in [0, V); median of %d timed "
                    "samples per case after a warm-up; %d threads (hardware_concurrency, as the "
                    "lookup)%s",
                    static_cast<long long>(options.vocab), static_cast<long long>(hidden),
                    static_cast<long long>(tokens), options.repeats, threads, isa_cap.c_str()));

  // Every buffer is written before any timing, so no page fault is timed.
  Tensor out(DType::i8, {max_tokens * hidden * 4});
  std::memset(out.data(), 0, static_cast<std::size_t>(out.nbytes()));
  Tensor copy_source(DType::i8, {copy_bytes});
  std::memset(copy_source.data(), 1, static_cast<std::size_t>(copy_bytes));
  Tensor ids(DType::i64, {max_tokens});
  {
    std::mt19937_64 random(42);
    std::uniform_int_distribution<std::int64_t> pick(0, options.vocab - 1);
    for (std::int64_t i = 0; i < max_tokens; ++i) ids.data_as<std::int64_t>()[i] = pick(random);
  }

  // (1) The copy ceiling: memcpy of as many bytes as the f32 lookup writes, into the output
  // buffer, split over `threads` threads as the lookup is; counted as bytes read + written.
  const auto* src = static_cast<const std::uint8_t*>(copy_source.data());
  auto* dst = static_cast<std::uint8_t*>(out.data());
  const std::int64_t copy_moved_bytes = 2 * copy_bytes;
  const auto copy_moved = static_cast<double>(copy_moved_bytes);
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

  print_line(progress, format("%-42s %8s %9s %-20s %7s %9s %7s", "case", "GB moved", "ms/call",
                              "   min..max ms", "GB/s", "ceil GB/s", "% ceil"));
  progress.step("memcpy, 1 thread");
  print_cpu_row(progress, "memcpy, 1 thread", hidden, copy_moved_bytes,
                measure(
                    options.repeats,
                    [&] { std::memcpy(dst, src, static_cast<std::size_t>(copy_bytes)); }, ceiling),
                report);
  progress.step("memcpy, " + std::to_string(threads) + " threads");
  const double ceiling_gbps =
      print_cpu_row(progress, "memcpy, " + std::to_string(threads) + " threads: the CEILING",
                    hidden, copy_moved_bytes, measure(options.repeats, copy_all_threads), report);

  // (2) The lookup, launcher and op, per table dtype; each sample paired with a ceiling sample.
  std::unique_ptr<Communicator> comm = make_single_communicator();
  double f32_percent = -1;
  double quantized_percent = -1;  // the lowest over quantized tables and output dtypes
  for (DType dtype : options.dtypes) {
    const Table table = make_table(dtype, options.vocab, hidden);
    const std::string kind = case_kind(dtype, table.out_dtype);
    for (DType out_dtype : cpu_out_dtypes(dtype)) {
      const std::vector<std::int64_t> counts = out_dtype == table.out_dtype
                                                   ? cpu_token_counts(options, dtype)
                                                   : std::vector<std::int64_t>{tokens};
      for (std::int64_t num_ids : counts) {
        const std::string name =
            "lookup_cpu " + case_kind(dtype, out_dtype) + " " + std::to_string(num_ids) + " ids";
        progress.step(name);
        unsigned long long bad = 0;
        LookupParams params =
            whole_table_params(dtype, table.weight.data(), table.scale.data(), options.vocab,
                               hidden, ids.data(), num_ids, out.data(), &bad);
        params.out_dtype = out_dtype;
        const Samples samples = measure(
            options.repeats, [&] { lookup_cpu(params); }, ceiling);
        check_copy(table, ids, out.data(), num_ids, name);
        if (bad != 0)
          throw std::runtime_error(format("bench: %s: %llu ids counted bad", name.c_str(), bad));
        double percent = 0;
        print_cpu_row(progress, name, hidden, lookup_bytes_into(dtype, out_dtype, hidden, num_ids),
                      samples, report, &percent);
        if (dtype == DType::f32 && num_ids == tokens) f32_percent = percent;
        if (is_quantized(dtype) && num_ids == tokens) {
          quantized_percent =
              quantized_percent < 0 ? percent : std::min(quantized_percent, percent);
        }
      }
    }

    // The op layer on the headline size: checks, dispatch and the bad-id count on top.
    const std::string name = "forward    " + kind + " " + std::to_string(tokens) + " ids";
    progress.step("forward " + kind + " " + std::to_string(tokens) + " ids");
    EmbeddingShard shard;
    shard.weight = table.weight.view();
    if (is_quantized(dtype)) shard.scale = table.scale.view();
    EmbeddingConfig config;
    config.out_dtype = table.out_dtype;
    ParallelEmbedding embedding(*comm, shard, config);
    const TensorView id_view(ids.data(), DType::i64, {tokens});
    const TensorView out_view(out.data(), table.out_dtype, {tokens, hidden});
    const Samples samples = measure(
        options.repeats, [&] { embedding.forward(id_view, out_view); }, ceiling);
    check_copy(table, ids, out.data(), tokens, name);
    print_cpu_row(progress, name, hidden, lookup_bytes(dtype, hidden, tokens), samples, report);
  }

  if (f32_percent >= 0) {
    print_line(progress,
               format("f32 lookup_cpu, %lld ids: %.1f%% of the %d-thread memcpy ceiling (median "
                      "of per-sample ratios; ceiling median %.2f GB/s); the issue asks for >= 70%%"
                      ": %s",
                      static_cast<long long>(tokens), f32_percent, threads, ceiling_gbps,
                      f32_percent >= 70.0 ? "met" : "NOT met"));
  }
  if (quantized_percent >= 0) {
    print_line(progress,
               format("quantized lookup_cpu into every output dtype, %lld ids: at least %.1f%% of "
                      "the ceiling (the lowest row); issue 13 asks for >= 50%%: %s",
                      static_cast<long long>(tokens), quantized_percent,
                      quantized_percent >= 50.0 ? "met" : "NOT met"));
  }
}

}  // namespace

int run_cpu_bench(const Resolved& options, Report& report) {
  std::int64_t cases = 0;
  for (DType dtype : options.dtypes) {
    cases += static_cast<std::int64_t>(cpu_token_counts(options, dtype).size() +
                                       cpu_out_dtypes(dtype).size() - 1) +
             1;
  }
  Progress progress("tpembed bench", static_cast<std::int64_t>(options.hidden.size()) * (2 + cases),
                    true);
  report.header["device"] = "cpu";
  report.header["threads"] = std::max(1u, std::thread::hardware_concurrency());
  report.header["vocab"] = options.vocab;
  report.header["repeats"] = options.repeats;
  report.header["date"] = utc_date();
  for (std::size_t h = 0; h < options.hidden.size(); ++h) {
    if (h > 0) print_line(progress, "");
    run_cpu(options, options.hidden[h], progress, report);
  }
  return 0;  // a benchmark reports; the tests decide
}

}  // namespace tpembed::cli::bench
