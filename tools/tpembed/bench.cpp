// `tpembed bench`: the lookup's bandwidth against this machine's copy ceiling, both measured in the
// same run. Not a test: it prints one row per case and checks only that each output is right.
//
//   cpu:  lookup_cpu (and ParallelEmbedding::forward) against std::memcpy split over as many
//   threads
//         as the lookup uses; every timed sample is paired with a ceiling sample (see measure()).
//         The method of bench/RESULTS.md, "CPU lookup" (issue "core": an f32 lookup of V=32000,
//         H=4096, 65536 ids reaches at least 70% of memcpy bandwidth).
//   cuda: lookup_cuda replayed in a CUDA graph against the device-to-device copy ceiling and the
//         floor of one graph node; the method of bench/bench_cuda_lookup.py, which adds PyTorch.
//         The CUDA calls (events, graphs, the busy-wait) live in the library (tpembed/cuda.hpp), so
//         this file builds without CUDA.
//
// Bytes moved = ids read + table rows read (+ one f32 scale per id for quantized tables) + output
// rows written; GB/s uses 1 GB = 1e9 bytes.
//
// A plain loop rather than Google Benchmark: every CPU sample is paired with a ceiling sample,
// which Google Benchmark's self-sized iteration loops do not express; a fixed, small number of
// repeats keeps the CPU run near 10 s on 2 cores; and a default build gets no new dependency.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli {

namespace {

using Clock = std::chrono::steady_clock;

// A timed CPU sample shorter than this is made of several back-to-back calls, so that small cases
// do not time the clock and the thread start-up alone.
constexpr double kMinSampleSeconds = 0.02;
// GPU cases rotate over K id sets and outputs so that one pass touches at least this much: four
// of the H100's 50 MB L2, so the cache does not flatter small cases (as bench_cuda_lookup.py).
constexpr double kL2FlushBytes = 200e6;
constexpr int kMaxRotatingSets = 64;
// A device table is one random host block of at most this many bytes, repeated down the vocab.
constexpr std::int64_t kHostBlockBytes = std::int64_t{64} << 20;
// Output rows of each GPU case compared with lookup_cpu.
constexpr int kCheckedRows = 4;

struct BenchOptions {
  std::string device = "auto";
  std::int64_t vocab = 0;  // 0, empty: the device's default (resolve())
  std::vector<std::int64_t> hidden;
  std::vector<std::int64_t> tokens;
  std::vector<std::string> dtypes;
  int repeats = 0;
  std::string json_path;
};

struct Resolved {
  bool cuda = false;
  std::string device_note;  // why auto chose what it chose
  std::int64_t vocab = 0;
  std::vector<std::int64_t> hidden, tokens;
  std::vector<DType> dtypes;
  int repeats = 0;
};

Resolved resolve(const BenchOptions& options) {
  Resolved r;
  if (options.device == "cuda") {
    TPEMBED_EXPECTS(cuda_built(), UnsupportedError,
                    "bench --device cuda: this build of tpembed has no CUDA backend (rebuild where "
                    "nvcc is found, or use --device cpu)");
    TPEMBED_EXPECTS(cuda_device_count() > 0, UnsupportedError,
                    "bench --device cuda: no CUDA device visible (use --device cpu, or auto)");
    r.cuda = true;
  } else if (options.device == "auto") {
    r.cuda = cuda_device_count() > 0;
    r.device_note = r.cuda ? " (auto: a CUDA device is visible)"
                           : (cuda_built() ? " (auto: no CUDA device visible)"
                                           : " (auto: this build has no CUDA backend)");
  }
  r.vocab = options.vocab > 0 ? options.vocab : (r.cuda ? 128256 : 32000);
  r.hidden = !options.hidden.empty() ? options.hidden
                                     : (r.cuda ? std::vector<std::int64_t>{4096, 8192}
                                               : std::vector<std::int64_t>{4096});
  r.tokens = !options.tokens.empty()
                 ? options.tokens
                 : (r.cuda ? std::vector<std::int64_t>{1, 16, 128, 1024, 8192, 32768}
                           : std::vector<std::int64_t>{65536, 1024, 8192});
  const std::vector<std::string> names =
      !options.dtypes.empty()
          ? options.dtypes
          : (r.cuda ? std::vector<std::string>{"bf16", "f32", "i8", "fp8_e4m3", "i4"}
                    : std::vector<std::string>{"f32", "bf16", "i8", "i4"});
  for (const std::string& name : names) r.dtypes.push_back(dtype_from_name(name));
  r.repeats = options.repeats > 0 ? options.repeats : (r.cuda ? 40 : 5);
  return r;
}

// ---- output: printed rows, the progress line, the --json file --------------------------------

std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* pattern, ...) {
  va_list args, measuring;
  va_start(args, pattern);
  va_copy(measuring, args);
  const int length = std::vsnprintf(nullptr, 0, pattern, measuring);
  va_end(measuring);
  std::string text(static_cast<std::size_t>(std::max(length, 0)) + 1, '\0');
  std::vsnprintf(&text[0], text.size(), pattern, args);
  va_end(args);
  text.pop_back();
  return text;
}

// Progress draws its line on stderr without a newline; a row printed on stdout meanwhile (the same
// terminal) would land at the end of it. So each printed line first wipes the progress line where
// Progress draws one (stderr a terminal); the next step() draws it again below.
void print_line(const std::string& line) {
  if (isatty(STDERR_FILENO) != 0) std::fputs("\r\033[K", stderr);
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string with_commas(std::int64_t value) {
  std::string digits = std::to_string(value), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string utc_date() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &utc);
  return text;
}

// One JSON object, fields in the order added.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value) {
    return raw(key, std::isfinite(value) ? format("%.10g", value) : "null");
  }
  JsonObject& add(const std::string& key, const std::string& value) {
    std::string quoted = "\"";
    for (const char c : value) {
      if (c == '"' || c == '\\') quoted.push_back('\\');
      if (static_cast<unsigned char>(c) < 0x20) {
        quoted += format("\\u%04x", static_cast<unsigned>(c));
      } else {
        quoted.push_back(c);
      }
    }
    return raw(key, quoted + "\"");
  }
  std::string text() const { return "{" + fields_ + "}"; }

 private:
  JsonObject& raw(const std::string& key, const std::string& literal) {
    fields_ += (fields_.empty() ? "\"" : ", \"") + key + "\": " + literal;
    return *this;
  }
  std::string fields_;
};

struct Report {
  JsonObject header;
  std::vector<JsonObject> rows;
};

void write_json(std::ofstream& file, const std::string& path, const Report& report) {
  file << "{\"header\": " << report.header.text() << ",\n \"rows\": [";
  for (std::size_t i = 0; i < report.rows.size(); ++i) {
    file << (i ? ",\n  " : "\n  ") << report.rows[i].text();
  }
  file << "\n]}\n";
  TPEMBED_EXPECTS(file.good(), InvalidArgumentError, "--json: writing '", path, "' failed");
}

// ---- what both devices share: tables, lookup parameters, bytes moved -------------------------

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
void fill_random(Tensor& tensor, std::uint64_t seed) {
  SplitMix random{seed};
  const auto bytes = static_cast<std::size_t>(tensor.nbytes());
  auto* data = static_cast<std::uint8_t*>(tensor.data());
  if (tensor.dtype() == DType::f32) {
    auto* values = tensor.data_as<float>();
    for (std::size_t i = 0; i < bytes / 4; ++i) {
      values[i] = static_cast<float>(random.next() >> 40) * 0x1p-24f - 0.5f;
    }
  } else if (tensor.dtype() == DType::bf16 || tensor.dtype() == DType::f16) {
    // Bits of values in [-1, 1): sign, an exponent below the bias, random mantissa.
    const bool bf16 = tensor.dtype() == DType::bf16;
    auto* values = tensor.data_as<std::uint16_t>();
    for (std::size_t i = 0; i < bytes / 2; ++i) {
      const std::uint64_t r = random.next();
      values[i] = static_cast<std::uint16_t>(
          bf16 ? ((r & 1) << 15) | ((0x70 + (r >> 1) % 15) << 7) | ((r >> 8) & 0x7f)
               : ((r & 1) << 15) | ((1 + (r >> 1) % 14) << 10) | ((r >> 8) & 0x3ff));
    }
  } else {
    // i8 and i4: every bit pattern is a valid value; fp8 e4m3: all but the two NaNs.
    std::size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
      const std::uint64_t r = random.next();
      std::memcpy(data + i, &r, 8);
    }
    for (; i < bytes; ++i) data[i] = static_cast<std::uint8_t>(random.next());
    if (tensor.dtype() == DType::fp8_e4m3) {
      for (i = 0; i < bytes; ++i) {
        if ((data[i] & 0x7f) == 0x7f) data[i] ^= 1;
      }
    }
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

DType out_dtype_for(DType table_dtype) {
  return is_quantized(table_dtype) ? DType::bf16 : table_dtype;
}

std::string case_kind(DType dtype) {
  return std::string(dtype_name(dtype)) + "->" + dtype_name(out_dtype_for(dtype)) +
         (is_quantized(dtype) ? " f32-scale" : "");
}

// A host table of one dtype with its f32 row scales (quantized dtypes only).
struct Table {
  DType dtype;
  DType out_dtype;
  Tensor weight;
  Tensor scale;
};

Table make_table(DType dtype, std::int64_t vocab, std::int64_t hidden) {
  Table table{dtype, out_dtype_for(dtype), {}, {}};
  table.weight = Tensor(dtype, {vocab, hidden});
  fill_random(table.weight, 1000 + static_cast<std::uint64_t>(dtype));
  if (is_quantized(dtype)) {
    table.scale = Tensor(DType::f32, {vocab});
    fill_random(table.scale, 2000);
    for (std::int64_t r = 0; r < vocab; ++r) table.scale.data_as<float>()[r] += 1.0f;
  }
  return table;
}

// LookupParams filled directly, as ParallelEmbedding does for one rank that holds the whole table
// (and as bench/lookup_capi.cpp does): i64 ids, no padding, f32 scales for quantized tables.
LookupParams whole_table_params(DType dtype, const void* table, const void* scale,
                                std::int64_t rows, std::int64_t cols, const void* ids,
                                std::int64_t num_ids, void* out, unsigned long long* bad) {
  LookupParams p;
  p.table = table;
  p.table_dtype = dtype;
  p.table_rows = rows;
  p.cols = cols;
  p.table_row_bytes = row_bytes(dtype, cols);
  p.scale = is_quantized(dtype) ? scale : nullptr;
  p.scale_dtype = DType::f32;
  p.valid_ids = rows;
  p.ids = ids;
  p.id_dtype = DType::i64;
  p.num_ids = num_ids;
  p.out = out;
  p.out_dtype = out_dtype_for(dtype);
  p.out_row_stride = cols;
  p.bad_id_count = bad;
  return p;
}

std::int64_t lookup_bytes(DType dtype, std::int64_t cols, std::int64_t num_ids) {
  const std::int64_t per_id = 8 /* i64 id */ + row_bytes(dtype, cols) +
                              (is_quantized(dtype) ? 4 : 0) + row_bytes(out_dtype_for(dtype), cols);
  return per_id * num_ids;
}

// ---- cpu -------------------------------------------------------------------------------------

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
double print_cpu_row(const std::string& name, std::int64_t hidden, double bytes,
                     const Samples& samples, Report& report, double* percent = nullptr) {
  const double seconds = median(samples.seconds);
  const double gbps = bytes / seconds / 1e9;
  const double fastest = *std::min_element(samples.seconds.begin(), samples.seconds.end());
  const double slowest = *std::max_element(samples.seconds.begin(), samples.seconds.end());
  std::string line = format("%-42s %8.3f %9.3f %9.3f..%-9.3f %7.2f", name.c_str(), bytes / 1e9,
                            seconds * 1e3, fastest * 1e3, slowest * 1e3, gbps);
  JsonObject row;
  row.add("case", name).add("hidden", static_cast<double>(hidden)).add("bytes", bytes);
  row.add("ms", seconds * 1e3).add("min_ms", fastest * 1e3).add("max_ms", slowest * 1e3);
  row.add("gbps", gbps);
  if (samples.ceiling_gbps.empty()) {
    line += format(" %9s %7s", "-", "-");
  } else {
    std::vector<double> ratios;
    for (std::size_t k = 0; k < samples.seconds.size(); ++k) {
      ratios.push_back(100.0 * bytes / samples.seconds[k] / 1e9 / samples.ceiling_gbps[k]);
    }
    const double ratio = median(ratios);
    line += format(" %9.2f %6.1f%%", median(samples.ceiling_gbps), ratio);
    row.add("ceiling_gbps", median(samples.ceiling_gbps)).add("pct_ceiling", ratio);
    if (percent != nullptr) *percent = ratio;
  }
  print_line(line);
  report.rows.push_back(row);
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

// The token counts timed for `dtype`: the first of --tokens for every dtype, the others for f32.
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

  print_line(
      format("V=%lld H=%lld tokens=%lld, i64 ids uniform in [0, V); median of %d timed "
             "samples per case after a warm-up; %d threads (hardware_concurrency, as the "
             "lookup)",
             static_cast<long long>(options.vocab), static_cast<long long>(hidden),
             static_cast<long long>(tokens), options.repeats, threads));

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

  print_line(format("%-42s %8s %9s %-20s %7s %9s %7s", "case", "GB moved", "ms/call",
                    "   min..max ms", "GB/s", "ceil GB/s", "% ceil"));
  progress.step("memcpy, 1 thread");
  print_cpu_row("memcpy, 1 thread", hidden, copy_moved,
                measure(
                    options.repeats,
                    [&] { std::memcpy(dst, src, static_cast<std::size_t>(copy_bytes)); }, ceiling),
                report);
  progress.step("memcpy, " + std::to_string(threads) + " threads");
  const double ceiling_gbps =
      print_cpu_row("memcpy, " + std::to_string(threads) + " threads: the CEILING", hidden,
                    copy_moved, measure(options.repeats, copy_all_threads), report);

  // (2) The lookup, launcher and op, per table dtype; each sample paired with a ceiling sample.
  std::unique_ptr<Communicator> comm = make_single_communicator();
  double f32_percent = -1;
  for (DType dtype : options.dtypes) {
    const Table table = make_table(dtype, options.vocab, hidden);
    const std::string kind = case_kind(dtype);
    for (std::int64_t num_ids : cpu_token_counts(options, dtype)) {
      const std::string name = "lookup_cpu " + kind + " " + std::to_string(num_ids) + " ids";
      progress.step(name);
      unsigned long long bad = 0;
      const LookupParams params =
          whole_table_params(dtype, table.weight.data(), table.scale.data(), options.vocab, hidden,
                             ids.data(), num_ids, out.data(), &bad);
      const Samples samples = measure(
          options.repeats, [&] { lookup_cpu(params); }, ceiling);
      check_copy(table, ids, out.data(), num_ids, name);
      if (bad != 0)
        throw std::runtime_error(format("bench: %s: %llu ids counted bad", name.c_str(), bad));
      double percent = 0;
      print_cpu_row(name, hidden, static_cast<double>(lookup_bytes(dtype, hidden, num_ids)),
                    samples, report, &percent);
      if (dtype == DType::f32 && num_ids == tokens) f32_percent = percent;
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
    print_cpu_row(name, hidden, static_cast<double>(lookup_bytes(dtype, hidden, tokens)), samples,
                  report);
  }

  if (f32_percent >= 0) {
    print_line(
        format("f32 lookup_cpu, %lld ids: %.1f%% of the %d-thread memcpy ceiling (median "
               "of per-sample ratios; ceiling median %.2f GB/s); the issue asks for >= 70%%"
               ": %s",
               static_cast<long long>(tokens), f32_percent, threads, ceiling_gbps,
               f32_percent >= 70.0 ? "met" : "NOT met"));
  }
}

int run_cpu_bench(const Resolved& options, Report& report) {
  std::int64_t cases = 0;
  for (DType dtype : options.dtypes) {
    cases += static_cast<std::int64_t>(cpu_token_counts(options, dtype).size()) + 1;
  }
  Progress progress("tpembed bench", static_cast<std::int64_t>(options.hidden.size()) * (2 + cases),
                    true);
  report.header.add("device", "cpu")
      .add("threads", static_cast<double>(std::max(1u, std::thread::hardware_concurrency())))
      .add("vocab", static_cast<double>(options.vocab))
      .add("repeats", options.repeats)
      .add("date", utc_date());
  for (std::size_t h = 0; h < options.hidden.size(); ++h) {
    if (h > 0) print_line("");
    run_cpu(options, options.hidden[h], progress, report);
  }
  return 0;  // a benchmark reports; the tests decide
}

// ---- cuda ------------------------------------------------------------------------------------

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
  report.header.add("device", device)
      .add("date", date)
      .add("copy_ceiling_gbs", ceiling)
      .add("graph_node_floor_us", floor_us)
      .add("vocab", static_cast<double>(options.vocab))
      .add("repeats", options.repeats);

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
        print_line(format("| %s -> %s | %lld | %lld | %d | %s | %.2f | %.2f | %.0f | %.1f%% |",
                          dtype_name(dtype), out_name, static_cast<long long>(hidden),
                          static_cast<long long>(tokens), c.sets, with_commas(c.bytes).c_str(), us,
                          us / floor_us, gbps, 100.0 * gbps / ceiling));
        JsonObject row;
        row.add("table", dtype_name(dtype)).add("out", out_name);
        row.add("hidden", static_cast<double>(hidden)).add("tokens", static_cast<double>(tokens));
        row.add("rotating_sets", c.sets).add("bytes", static_cast<double>(c.bytes));
        row.add("ours_us", us).add("ours_min_us", c.timing.min_ms * 1e3);
        row.add("ours_max_us", c.timing.max_ms * 1e3).add("ours_gbs", gbps);
        row.add("ours_pct_ceiling", 100.0 * gbps / ceiling)
            .add("ours_per_graph_floor", us / floor_us);
        report.rows.push_back(row);
      }
    }
  }
  print_line(
      format("Every case's output was checked bit for bit against lookup_cpu on %d rows; no "
             "id was counted bad.",
             kCheckedRows));
  print_line(
      "The same cases against PyTorch (index_select; gather then scale): "
      "bench/bench_cuda_lookup.py.");
  return 0;
}

int run_bench(const BenchOptions& raw) {
  const Resolved options = resolve(raw);
  std::ofstream json;  // opened first, so that a bad path fails before the run, not after it
  if (!raw.json_path.empty()) {
    json.open(raw.json_path);
    TPEMBED_EXPECTS(json.good(), InvalidArgumentError, "--json: cannot write '", raw.json_path,
                    "'");
  }
  print_line(format("tpembed bench --device %s%s", options.cuda ? "cuda" : "cpu",
                    options.device_note.c_str()));
  Report report;
  const int status =
      options.cuda ? run_cuda_bench(options, report) : run_cpu_bench(options, report);
  if (json.is_open()) write_json(json, raw.json_path, report);
  return status;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Time the lookup against this machine's copy ceiling, measured in the same run: one row per\n"
      "case with bytes moved, time, GB/s and % of the ceiling (the tables of bench/RESULTS.md).\n"
      "Example: tpembed bench --device cpu");
  bench->footer(
      "cpu:  lookup_cpu and ParallelEmbedding::forward against std::memcpy split over as many\n"
      "      threads as the lookup uses, each timed sample paired with a ceiling sample. The\n"
      "      first --tokens value is timed for every dtype, the others for f32 lookup_cpu only.\n"
      "      Defaults: V=32000, H=4096, tokens 65536,1024,8192, dtypes f32,bf16,i8,i4,\n"
      "      5 repeats (~11 s on 2 cores).\n"
      "cuda: lookup_cuda in a replayed CUDA graph against the device-to-device copy ceiling\n"
      "      and the floor of one graph node; each case's output is first checked against\n"
      "      lookup_cpu. Defaults (the CUDA issue's grid): V=128256, H=4096,8192, tokens\n"
      "      1,16,128,1024,8192,32768, dtypes bf16,f32,i8,fp8_e4m3,i4, 40 repeats.\n"
      "      bench/bench_cuda_lookup.py times the same cases against PyTorch.\n"
      "Quantized tables (i8, fp8_e4m3, i4) have f32 row scales and give bf16; float tables\n"
      "give their own dtype. Ids are i64, uniform over the vocab. On a terminal a progress\n"
      "line shows the case being timed.\n"
      "Examples:\n"
      "  tpembed bench --device cpu\n"
      "  tpembed bench --device cuda --hidden 4096 --tokens 8192,32768 --dtype bf16,i8 \\\n"
      "                --json bench.json");
  bench
      ->add_option("--device", options->device,
                   "cpu, cuda, or auto: cuda when a CUDA device is visible, else cpu")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  bench->add_option("--vocab", options->vocab, "table rows (default: cpu 32000, cuda 128256)")
      ->check(CLI::PositiveNumber);
  bench
      ->add_option("--hidden", options->hidden,
                   "table columns, comma-separated (default: cpu 4096, cuda 4096,8192)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  bench
      ->add_option("--tokens", options->tokens,
                   "ids per lookup, comma-separated (default: cpu 65536,1024,8192; cuda "
                   "1,16,128,1024,8192,32768)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  bench
      ->add_option("--dtype", options->dtypes,
                   "table dtypes, comma-separated (default: cpu f32,bf16,i8,i4; cuda "
                   "bf16,f32,i8,fp8_e4m3,i4)")
      ->delimiter(',')
      ->check(CLI::IsMember(table_dtype_names()));
  bench
      ->add_option("--repeats", options->repeats,
                   "timed samples (cpu) or graph replays (cuda) per case; the median is reported "
                   "(default: cpu 5, cuda 40)")
      ->check(CLI::PositiveNumber);
  bench->add_option("--json", options->json_path, "also write the header and every row to FILE")
      ->type_name("FILE");
  bench->callback([options, &exit_code] { exit_code = run_bench(*options); });
}

}  // namespace tpembed::cli
