// Internal to `tpembed bench` (bench*.cpp): the resolved options, the tables and lookups both
// devices time, and the two device runs. The command itself is declared in commands.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench_report.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli::bench {

/// The command's options with the chosen device's defaults filled in (bench.cpp).
struct Resolved {
  bool cuda = false;
  std::string device_note;  // why auto chose what it chose
  std::int64_t vocab = 0;
  std::vector<std::int64_t> hidden, tokens;
  std::vector<DType> dtypes;
  int repeats = 0;
};

/// The output dtype of a lookup of a `table_dtype` table: bf16 for quantized tables, else its own.
DType out_dtype_for(DType table_dtype);

/// A host table of one dtype with its f32 row scales (quantized dtypes only).
struct Table {
  DType dtype;
  DType out_dtype;
  Tensor weight;
  Tensor scale;
};

/// A [vocab, hidden] table of seeded random values valid for `dtype`, every page written; quantized
/// dtypes get f32 row scales in [0.5, 1.5).
Table make_table(DType dtype, std::int64_t vocab, std::int64_t hidden);

/// LookupParams filled directly, as ParallelEmbedding does for one rank that holds the whole table
/// (and as bench/lookup_capi.cpp does): i64 ids, no padding, f32 scales for quantized tables.
LookupParams whole_table_params(DType dtype, const void* table, const void* scale,
                                std::int64_t rows, std::int64_t cols, const void* ids,
                                std::int64_t num_ids, void* out, unsigned long long* bad);

/// Bytes one lookup moves: ids read + table rows read (+ one f32 scale per id for quantized
/// tables) + output rows written.
std::int64_t lookup_bytes(DType dtype, std::int64_t cols, std::int64_t num_ids);

/// The CPU run (bench_cpu.cpp) and the CUDA run (bench_cuda.cpp): each prints its rows, adds them
/// and its header to `report`, and returns the command's exit status.
int run_cpu_bench(const Resolved& options, Report& report);
int run_cuda_bench(const Resolved& options, Report& report);

}  // namespace tpembed::cli::bench
