// A C entry point to the CUDA lookup launcher, for bench/bench_cuda_lookup.py (ctypes), so that our
// kernel and PyTorch's run in one process, on one stream, timed the same way.
#include "tpembed/lookup.hpp"

extern "C" {

/// Launches lookup_cuda with a whole local table (tp 1, no padding). Dtype arguments are
/// tpembed::DType values; `scale` may be null; returns the cudaError_t of the launch. Bad ids are
/// added to `*bad_ids` (LookupParams::bad_id_count), or, with `slots` set, counted as
/// ParallelEmbedding counts them: `bad_ids` is then three zeroed words (LookupParams::bad_id_slots)
/// and each lookup's blocks end with a reduction and an atomic.
int tpembed_bench_lookup(const void* table, int table_dtype, long long rows, long long cols,
                         const void* scale, int scale_dtype, const void* ids, int id_dtype,
                         long long num_ids, void* out, int out_dtype, unsigned long long* bad_ids,
                         int slots, void* stream) {
  using tpembed::DType;
  tpembed::LookupParams p;
  p.table = table;
  p.table_dtype = static_cast<DType>(table_dtype);
  p.table_rows = rows;
  p.cols = cols;
  p.table_row_bytes = tpembed::row_bytes(p.table_dtype, cols);
  p.scale = scale;
  p.scale_dtype = static_cast<DType>(scale_dtype);
  p.valid_ids = rows;
  p.ids = ids;
  p.id_dtype = static_cast<DType>(id_dtype);
  p.num_ids = num_ids;
  p.out = out;
  p.out_dtype = static_cast<DType>(out_dtype);
  p.out_row_stride = cols;
  (slots != 0 ? p.bad_id_slots : p.bad_id_count) = bad_ids;
  return tpembed::lookup_cuda(p, stream);
}

}  // extern "C"
