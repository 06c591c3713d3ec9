// `tpembed bench`: the lookup's bandwidth against this machine's copy ceiling, both measured in the
// same run. Not a test: it prints one row per case and checks only that each output is right.
//
//   cpu:  lookup_cpu (and ParallelEmbedding::forward) against std::memcpy split over as many
//         threads as the lookup uses, every timed sample paired with a ceiling sample
//         (bench_cpu.cpp).
//   cuda: lookup_cuda replayed in a CUDA graph against the device-to-device copy ceiling and the
//         floor of one graph node (bench_cuda.cpp).
//
// Bytes moved = ids read + table rows read (+ one f32 scale per id for quantized tables) + output
// rows written; GB/s uses 1 GB = 1e9 bytes.
//
// A plain loop rather than Google Benchmark: every CPU sample is paired with a ceiling sample,
// which Google Benchmark's self-sized iteration loops do not express; a fixed, small number of
// repeats keeps the CPU run near 10 s on 2 cores; and a default build gets no new dependency.
//
// This file registers the command, fills in each device's defaults and dispatches; the printed
// rows and the --json file are bench_report.cpp's, the tables both devices time bench_tables.cpp's.
#include "bench.hpp"

#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli {

namespace {

using bench::Resolved;

struct BenchOptions {
  std::string device = "auto";
  std::int64_t vocab = 0;  // 0, empty: the device's default (resolve())
  std::vector<std::int64_t> hidden;
  std::vector<std::int64_t> tokens;
  std::vector<std::string> dtypes;
  int repeats = 0;
  std::string json_path;
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
  bench::Report report;
  const int status =
      options.cuda ? bench::run_cuda_bench(options, report) : bench::run_cpu_bench(options, report);
  if (json.is_open()) bench::write_json(json, raw.json_path, report);
  return status;
}

}  // namespace

void add_bench_command(CLI::App& app, Launch& launch) {
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
      ->check(positive_integer());
  bench
      ->add_option("--hidden", options->hidden,
                   "table columns, comma-separated (default: cpu 4096, cuda 4096,8192)")
      ->delimiter(',')
      ->check(positive_integer());
  bench
      ->add_option("--tokens", options->tokens,
                   "ids per lookup, comma-separated (default: cpu 65536,1024,8192; cuda "
                   "1,16,128,1024,8192,32768)")
      ->delimiter(',')
      ->check(positive_integer());
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
      ->check(integer_in(1, std::numeric_limits<int>::max()));
  bench->add_option("--json", options->json_path, "also write the header and every row to FILE")
      ->type_name("FILE");
  bench->callback([options, &launch] {
    launch.run = [options](Communicator&) { return run_bench(*options); };
  });
}

}  // namespace tpembed::cli
