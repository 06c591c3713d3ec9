// The CUDA gather kernels: one template per (id type x table dtype x output dtype x access path).
// Each output row is handled by a row of threads (threadIdx.x along the row, threadIdx.y across
// rows; blockIdx.y cuts long rows into chunks). The vector path's grid covers every row, one thread
// row per id and no row loop (a lookup of more rows than one launch holds takes several launches);
// the element-wise path loops grid-stride. Indices are 64-bit. The vector path moves 16 bytes of
// output per thread and step, with up to kUnroll independent table loads in flight before the first
// store. It is kept small (32 registers for 8-bit tables and 16-bit copies, all 2048 threads of an
// SM; one branch-free loop per row kind; no scaled loop where no scale can occur): on an H200 the
// lookup is bound by memory latency and bandwidth, and a small kernel keeps the most loads in flight
// and the fewest instructions on the way from an id's arrival to its row's stores (measured:
// bench/RESULTS.md).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/convert.cuh"
#include "tpembed/lookup.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::cuda_kernels {

// Build-time tuning knobs, for A/B runs of the benchmark (bench/build_capi_variant.sh); the
// defaults are the measured best on an H200 (bench/RESULTS.md).
#ifndef TPEMBED_LOOKUP_UNROLL
#define TPEMBED_LOOKUP_UNROLL 4
#endif
#ifndef TPEMBED_LOOKUP_STREAM_HINTS
#define TPEMBED_LOOKUP_STREAM_HINTS 1
#endif
#ifndef TPEMBED_LOOKUP_UNSCALED_16BIT_BLOCKS
#define TPEMBED_LOOKUP_UNSCALED_16BIT_BLOCKS 8
#endif
#ifndef TPEMBED_LOOKUP_MEDIUM_THREADS
#define TPEMBED_LOOKUP_MEDIUM_THREADS 128
#endif

constexpr int kBlockThreads = 256;
constexpr int kUnroll = TPEMBED_LOOKUP_UNROLL;
/// Large lookups of int4 tables mark their stores evict-first (st.global.cs; their loads are under
/// 16 bytes and take the read-only path): 0.5-1% faster on an H200. For 8-bit tables evict-first
/// loads and stores are neutral, and for 16- and 32-bit tables 5-10% slower once the lookup starts
/// from an L2 that holds other data (bench/RESULTS.md).
template <DType Table>
__host__ __device__ constexpr bool stream_hints() {
  return TPEMBED_LOOKUP_STREAM_HINTS != 0 && bits_of<Table>() == 4;
}
/// The most blocks along x of one launch: CUDA's limit, 2^31 - 1 (larger lookups take several
/// launches), unless a test lowered it (lookup_testing.hpp) to run that split.
std::int64_t max_launch_blocks();
/// Blocks of the vector kernel that must fit on an SM (the compiler holds registers to it) in
/// large (streaming) lookups: occupancy is what keeps loads in flight through the id-then-row
/// latency chain. All 2048 threads for narrow tables, and for 16-bit tables into 32-bit outputs or
/// copied unscaled (kScales false: the launch can meet no scale, and the scaled loop is compiled
/// out); the scaled loop and f16 <-> bf16 conversions need more registers, and 6 blocks are as far
/// as they go without spilling, 4 for 32-bit tables. Small lookups do not fill the GPU: no bound.
template <DType Table, DType Out, bool kStreaming, bool kScales>
__host__ __device__ constexpr int vector_blocks_per_sm() {
  if constexpr (!kStreaming) return 1;
  if constexpr (bits_of<Table>() <= 8) return 8;
  if constexpr (bits_of<Table>() == 16) {
    return kScales || (bits_of<Out>() == 16 && Table != Out) ? 6 : TPEMBED_LOOKUP_UNSCALED_16BIT_BLOCKS;
  }
  return 4;
}

/// Whether a table dtype has kernels without the scaled loop: the 16- and 32-bit tables, whose
/// scales are rare and whose scaled loop costs registers (quantised tables nearly always carry
/// scales, and fit the whole SM with them).
template <DType Table>
__host__ __device__ constexpr bool has_unscaled_kernels() {
  return bits_of<Table>() >= 16;
}

/// Raw table bits as 32-bit words (at least one).
template <int Bytes>
struct RawVector {
  std::uint32_t words[Bytes >= 4 ? Bytes / 4 : 1];
};

/// Loads `Bytes` of table: 16-byte loads where Bytes >= 16, marked evict-first (ld.global.cs) with
/// kEvictFirst; otherwise through the read-only data path.
template <int Bytes, bool kEvictFirst>
__device__ __forceinline__ void load_raw(const std::uint8_t* __restrict__ src, RawVector<Bytes>& raw) {
  if constexpr (Bytes >= 16) {
#pragma unroll
    for (int q = 0; q < Bytes / 16; ++q) {
      const uint4 a = kEvictFirst ? __ldcs(reinterpret_cast<const uint4*>(src) + q)
                                 : __ldg(reinterpret_cast<const uint4*>(src) + q);
      raw.words[4 * q] = a.x, raw.words[4 * q + 1] = a.y, raw.words[4 * q + 2] = a.z, raw.words[4 * q + 3] = a.w;
    }
  } else if constexpr (Bytes == 8) {
    const uint2 a = __ldg(reinterpret_cast<const uint2*>(src));
    raw.words[0] = a.x, raw.words[1] = a.y;
  } else if constexpr (Bytes == 4) {
    raw.words[0] = __ldg(reinterpret_cast<const unsigned int*>(src));
  } else {
    static_assert(Bytes == 2, "unexpected vector width");
    raw.words[0] = __ldg(reinterpret_cast<const unsigned short*>(src));
  }
}

/// 16 bytes of one repeated output element (zeros, or -0.0 for rows another rank owns).
template <DType Out>
__device__ __forceinline__ uint4 splat_zero(bool negative) {
  std::uint32_t word = 0;
  if (negative) word = bits_of<Out>() == 32 ? 0x80000000u : 0x80008000u;
  return make_uint4(word, word, word, word);
}

/// Programmatic dependent launch (sm_90): the kernel may start while the previous kernel in the
/// stream finishes; it waits here, before reading anything that kernel may have written (the ids),
/// and lets the next kernel start its own launch right away. Correct with any neighbour: the wait
/// returns once the previous grid has completed and flushed its memory.
__device__ __forceinline__ void wait_for_previous_grid_and_release_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Where row `row` comes from: a table or padding row (with its scale), a bad id, or another rank.
struct RowSource {
  const std::uint8_t* src = nullptr;
  const void* scales = nullptr;
  std::int64_t scale_index = 0;
  bool bad = false;
  bool unowned = false;
};

/// A pointer stored in read-only device memory, loaded through the read-only data path.
__device__ __forceinline__ const void* load_pointer(const void* const* address) {
  return reinterpret_cast<const void*>(__ldg(reinterpret_cast<const unsigned long long*>(address)));
}

template <typename Id>
__device__ __forceinline__ RowSource resolve_row(const LookupParams& p, std::int64_t row, std::int64_t padding_row_bytes) {
  RowSource source;
  const std::int64_t id = static_cast<std::int64_t>(static_cast<const Id*>(p.ids)[row]);
  if (id < 0 || id >= p.valid_ids) {
    source.bad = true;
    return source;
  }
  if (p.shards != nullptr) {
    // The group's table: the row is read from its owner's shard (a peer's memory, mapped here).
    int s = 0;
    if (p.shard_rows > 0) {
      const std::int64_t owner = id / p.shard_rows;
      s = owner < p.num_shards ? static_cast<int>(owner) : p.num_shards;
    } else {
      while (s + 1 < p.num_shards && id >= __ldg(&p.shards[s + 1].row_offset)) ++s;
    }
    source.unowned = true;  // until a shard holds the row
    if (s >= p.num_shards) return source;
    const LookupShard* shard = p.shards + s;
    const std::int64_t row_in_shard = id - __ldg(&shard->row_offset);
    if (row_in_shard >= 0 && row_in_shard < __ldg(&shard->rows)) {
      source.src = static_cast<const std::uint8_t*>(load_pointer(&shard->table)) + row_in_shard * p.table_row_bytes;
      source.scales = load_pointer(&shard->scale);
      source.scale_index = row_in_shard;
      source.unowned = false;
    }
    return source;
  }
  const std::int64_t local = id - p.row_offset;
  if (local >= 0 && local < p.table_rows) {
    source.src = static_cast<const std::uint8_t*>(p.table) + local * p.table_row_bytes;
    source.scales = p.scale;
    source.scale_index = local;
  } else if (local >= p.table_rows && local - p.table_rows < p.padding_rows) {
    source.scale_index = local - p.table_rows;
    source.src = static_cast<const std::uint8_t*>(p.padding) + source.scale_index * padding_row_bytes;
    source.scales = p.padding_scale;
  } else {
    source.unowned = true;
  }
  return source;
}

/// Adds this thread's bad rows to the launch's count. Every thread of the block calls it, last.
/// Rows are counted in the blocks of the first chunk (blockIdx.y == 0) only. With p.bad_id_slots
/// their totals go to slots[1], and the counting block that finishes last moves the launch's
/// total to slots[0], leaving slots[1] and slots[2] (the finished-block count, which wraps back to
/// zero by itself) zero; a launch of one counting block (small lookups) stores its total straight
/// away, with no atomics. A lookup of several launches (see launch_gather_impl; `split`) adds every
/// launch's blocks into slots[1] and publishes in its last launch only (`publish`), so that
/// slots[0] gets the total of all of them.
__device__ __forceinline__ void report_bad_rows(const LookupParams& p, unsigned long long mine, bool split = false,
                                                bool publish = true) {
  if (p.bad_id_slots == nullptr) {
    if (mine != 0 && p.bad_id_count != nullptr) atomicAdd(p.bad_id_count, mine);
    return;
  }
  __shared__ unsigned long long block_total;
  const bool leader = threadIdx.x == 0 && threadIdx.y == 0;
  if (leader) block_total = 0;
  __syncthreads();
  if (mine != 0) atomicAdd(&block_total, mine);
  __syncthreads();
  if (!leader || blockIdx.y != 0) return;
  unsigned long long* slots = p.bad_id_slots;
  if (gridDim.x == 1 && !split) {
    slots[0] = block_total;
    return;
  }
  if (block_total != 0) {
    atomicAdd(&slots[1], block_total);
    __threadfence();  // this block's count lands before it counts itself finished
  }
  // atomicInc counts 0, 1, ..., gridDim.x - 1 and then wraps to 0: the last block leaves it zero.
  auto* finished = reinterpret_cast<unsigned int*>(&slots[2]);
  if (atomicInc(finished, gridDim.x - 1) == gridDim.x - 1 && publish) {
    __threadfence();
    slots[0] = atomicExch(&slots[1], 0ull);
  }
}

/// How the vector path splits the work: each row is cut into chunks of `chunk_items` output vectors
/// (blockIdx.y picks the chunk; one chunk per row unless the problem is too small to fill the GPU
/// otherwise).
struct VectorPlan {
  std::int64_t chunk_items;
  bool split = false;            ///< the lookup takes several launches (this is one of them)
  bool publish_bad_rows = true;  ///< false in all but the last launch of a split lookup
};

/// Stores one output vector, marked evict-first (st.global.cs) with kEvictFirst.
template <bool kEvictFirst>
__device__ __forceinline__ void store_vector(uint4* address, uint4 value) {
  if constexpr (kEvictFirst) {
    __stcs(address, value);
  } else {
    *address = value;
  }
}

/// What a row's output is made of: zeros (a bad id, or a row another rank owns), its table bits
/// times its scale, or its table bits alone. Each has its own loop, so that none of them branches
/// per vector.
enum class RowKind { zero, scaled, unscaled };

/// Moves this thread's share of one output row chunk: vectors [first, chunk_end), `step` apart.
template <DType Table, DType Out, RowKind kKind, bool kStreaming>
__device__ __forceinline__ void move_row(const LookupParams& p, const RowSource& source, uint4* __restrict__ dst,
                                         uint4 zero, int first, int chunk_end, int step) {
  const std::uint8_t* __restrict__ src = source.src;
  constexpr int kVectorBytes = input_bytes_per_vector<Table, Out>();
  constexpr bool kPlainCopy = Table == Out && kKind == RowKind::unscaled;
  constexpr bool kEvictFirst = kStreaming && stream_hints<Table>();
  float factor = 1.0f;
  if constexpr (kKind == RowKind::scaled && kStreaming) {
    factor = load_scale(source.scales, p.scale_dtype, source.scale_index);
  }
  for (; first < chunk_end; first += step * kUnroll) {
    RawVector<kVectorBytes> raw[kUnroll];
    if constexpr (kKind != RowKind::zero) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int item = first + u * step;
        if (item < chunk_end) load_raw<kVectorBytes, kEvictFirst>(src + static_cast<std::int64_t>(item) * kVectorBytes, raw[u]);
      }
    }
    // Small lookups load the scale after the row's bits are in flight: its load branches on the
    // scale dtype, and the compiler waits for it where the branches meet, which before the row's
    // loads would put a second memory latency on the path. (Large lookups hide that latency behind
    // other warps, and keep the registers a late scale would take.)
    if constexpr (kKind == RowKind::scaled && !kStreaming) {
      factor = load_scale(source.scales, p.scale_dtype, source.scale_index);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int item = first + u * step;
      if (item >= chunk_end) break;
      uint4 value = zero;
      if constexpr (kPlainCopy) {
        value = make_uint4(raw[u].words[0], raw[u].words[1], raw[u].words[2], raw[u].words[3]);
      } else if constexpr (kKind != RowKind::zero) {
        value = convert_vector<Table, Out, kKind == RowKind::scaled>(raw[u].words, factor);
      }
      store_vector<kEvictFirst>(dst + item, value);
    }
  }
}

template <typename Id, DType Table, DType Out, bool kStreaming, bool kScales>
__global__ void __launch_bounds__(kBlockThreads, (vector_blocks_per_sm<Table, Out, kStreaming, kScales>())) gather_vector(const LookupParams p, const VectorPlan plan) {
  wait_for_previous_grid_and_release_next();
  constexpr int kOutputs = outputs_per_vector<Out>();
  // Vector indices within a row fit an int (the launcher sends rows of 2^31 vectors or more down
  // the element-wise path).
  const int items = static_cast<int>(p.cols / kOutputs);
  const int chunk_begin = static_cast<int>(blockIdx.y * plan.chunk_items);
  const int chunk_end = chunk_begin + static_cast<int>(plan.chunk_items) < items
                            ? chunk_begin + static_cast<int>(plan.chunk_items) : items;
  const int first = chunk_begin + static_cast<int>(threadIdx.x), step = static_cast<int>(blockDim.x);
  unsigned bad_rows = 0;  // 0 or 1: a thread moves at most one row
  auto gather_row = [&](std::int64_t row) {
    const RowSource source = resolve_row<Id>(p, row, row_bytes(Table, p.cols));
    if (source.bad && threadIdx.x == 0 && blockIdx.y == 0) ++bad_rows;
    auto* dst = reinterpret_cast<uint4*>(static_cast<std::uint8_t*>(p.out) + row * row_bytes(Out, p.out_row_stride));
    if (source.src == nullptr) {
      const uint4 zero = splat_zero<Out>(source.unowned && p.unowned_negative_zero);
      move_row<Table, Out, RowKind::zero, kStreaming>(p, source, dst, zero, first, chunk_end, step);
    } else if (kScales && source.scales != nullptr) {
      move_row<Table, Out, RowKind::scaled, kStreaming>(p, source, dst, uint4{}, first, chunk_end, step);
    } else {
      move_row<Table, Out, RowKind::unscaled, kStreaming>(p, source, dst, uint4{}, first, chunk_end, step);
    }
  };
  // The grid covers every row (the launcher makes sure, splitting lookups of more rows than one
  // launch holds), so the kernel has no row loop: small lookups are measurably faster from launch
  // to last store (1-token lookups: ~0.2 us on an H200), and large ones need no registers for a
  // loop's state (16-bit tables then fit all 2048 threads of an SM with no spills).
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row < p.num_ids) gather_row(row);
  report_bad_rows(p, bad_rows, plan.split, plan.publish_bad_rows);
}

/// Element `col` of a table row, as its raw code.
template <DType Table>
__device__ __forceinline__ std::uint32_t load_code(const std::uint8_t* row, std::int64_t col) {
  if constexpr (bits_of<Table>() == 32) {
    return reinterpret_cast<const std::uint32_t*>(row)[col];
  } else if constexpr (bits_of<Table>() == 16) {
    return reinterpret_cast<const std::uint16_t*>(row)[col];
  } else if constexpr (bits_of<Table>() == 8) {
    return row[col];
  } else {
    return (row[col >> 1] >> (4 * (col & 1))) & 0xfu;
  }
}

template <DType Out>
__device__ __forceinline__ void store_code(std::uint8_t* row, std::int64_t col, std::uint32_t code) {
  if constexpr (bits_of<Out>() == 32) {
    reinterpret_cast<std::uint32_t*>(row)[col] = code;
  } else {
    reinterpret_cast<std::uint16_t*>(row)[col] = static_cast<std::uint16_t>(code);
  }
}

/// The path for any width and alignment: one element per thread and step (element-aligned data).
template <typename Id, DType Table, DType Out>
__global__ void __launch_bounds__(kBlockThreads) gather_scalar(const LookupParams p) {
  wait_for_previous_grid_and_release_next();
  const std::int64_t out_row_bytes = row_bytes(Out, p.out_row_stride);
  const std::int64_t padding_row_bytes = row_bytes(Table, p.cols);
  const std::int64_t row_step = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  unsigned long long bad_rows = 0;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.num_ids;
       row += row_step) {
    const RowSource source = resolve_row<Id>(p, row, padding_row_bytes);
    if (source.bad && threadIdx.x == 0) ++bad_rows;
    const float factor = source.scales != nullptr ? load_scale(source.scales, p.scale_dtype, source.scale_index) : 1.0f;
    const bool negative = source.unowned && p.unowned_negative_zero;
    std::uint8_t* dst = static_cast<std::uint8_t*>(p.out) + row * out_row_bytes;
    for (std::int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      std::uint32_t code = encode_single<Out>(negative ? -0.0f : 0.0f);
      if (source.src != nullptr) {
        const std::uint32_t raw = load_code<Table>(source.src, c);
        if (Table == Out && source.scales == nullptr) {
          code = raw;  // bit-exact copy, NaN payloads included
        } else {
          float value = decode_single<Table>(raw);
          if (source.scales != nullptr) value = value * factor;
          code = encode_single<Out>(value);
        }
      }
      store_code<Out>(dst, c, code);
    }
  }
  report_bad_rows(p, bad_rows);
}

/// Launches the kernel for one (Id, Table, Out); defined in the instantiation files.
template <typename Id, DType Table, DType Out>
cudaError_t launch_gather(const LookupParams& p, cudaStream_t stream);

/// Multiprocessors of the current device (queried once per device).
int multiprocessor_count();

template <typename Id, DType Table, DType Out>
cudaError_t launch_gather_impl(const LookupParams& p, cudaStream_t stream) {
  constexpr int kOutputs = outputs_per_vector<Out>();
  constexpr int kInAlign = input_bytes_per_vector<Table, Out>() < 16 ? input_bytes_per_vector<Table, Out>() : 16;
  auto aligned = [](const void* pointer, std::int64_t alignment) {
    return reinterpret_cast<std::uintptr_t>(pointer) % static_cast<std::uintptr_t>(alignment) == 0;
  };
  auto tables_aligned = [&](std::int64_t alignment) {
    if (p.shards != nullptr) return p.shards_alignment % alignment == 0 && p.table_row_bytes % alignment == 0;
    return aligned(p.table, alignment) && p.table_row_bytes % alignment == 0 &&
           (p.padding == nullptr || aligned(p.padding, alignment));
  };
  const bool vector = p.cols % kOutputs == 0 && p.cols / kOutputs < (std::int64_t{1} << 31) && aligned(p.out, 16) && row_bytes(Out, p.out_row_stride) % 16 == 0 &&
                      tables_aligned(kInAlign);

  cudaLaunchConfig_t config{};
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  auto pow2_at_least = [](std::int64_t n) {
    int threads = 1;
    while (threads < n && threads < kBlockThreads) threads *= 2;
    return threads;
  };
  auto row_grid = [&](unsigned rows_per_block) {
    const std::int64_t blocks = (p.num_ids + rows_per_block - 1) / rows_per_block;
    return static_cast<unsigned>(blocks < (1 << 24) ? blocks : (1 << 24));
  };

  if (!vector) {
    const int threads_x = pow2_at_least(p.cols);
    config.blockDim = dim3(threads_x, kBlockThreads / threads_x);
    config.gridDim = dim3(row_grid(config.blockDim.y));
    const cudaError_t status = cudaLaunchKernelEx(&config, gather_scalar<Id, Table, Out>, p);
    return status != cudaSuccess ? status : cudaGetLastError();
  }

  VectorPlan plan{};
  const std::int64_t vectors = p.cols / kOutputs;
  // Large lookups: kUnroll vectors a thread, so that each thread has that many loads in flight.
  // Small ones (latency-bound: under two full waves of the GPU at that rate) take one vector a
  // thread, and rows are cut into chunks over blockIdx.y, so that they still spread over every SM.
  const std::int64_t enough = std::int64_t{2} * multiprocessor_count() * kBlockThreads * kUnroll;
  const int per_thread = p.num_ids * vectors >= enough ? kUnroll : 1;
  const int threads_x = pow2_at_least((vectors + per_thread - 1) / per_thread);
  plan.chunk_items = static_cast<std::int64_t>(threads_x) * per_thread;
  const std::int64_t chunks = (vectors + plan.chunk_items - 1) / plan.chunk_items;
  if (chunks > 65535) plan.chunk_items = (vectors + 65534) / 65535;
  const std::int64_t grid_y = (vectors + plan.chunk_items - 1) / plan.chunk_items;
  // Medium lookups (up to 4x `enough`) whose rows need at most 128 threads take blocks of 128:
  // more, shorter blocks spread a lookup of about two waves more evenly over the SMs (measured on
  // the H200: 2-6% faster at 1024 tokens of H 4096; no better for wider rows or larger lookups).
  const bool medium = per_thread == kUnroll && p.num_ids * vectors < 4 * enough && threads_x <= TPEMBED_LOOKUP_MEDIUM_THREADS;
  const int block_threads = medium ? TPEMBED_LOOKUP_MEDIUM_THREADS : kBlockThreads;
  config.blockDim = dim3(threads_x, grid_y == 1 ? block_threads / threads_x : 1);
  config.gridDim = dim3(1, static_cast<unsigned>(grid_y > 0 ? grid_y : 1));
  // The shards' scales live in device memory: a launch over shards always takes the scaled kernel.
  const bool scales = p.shards != nullptr || p.scale != nullptr || p.padding_scale != nullptr;
  auto kernel = per_thread > 1 ? gather_vector<Id, Table, Out, true, true> : gather_vector<Id, Table, Out, false, true>;
  if constexpr (has_unscaled_kernels<Table>()) {
    if (!scales) kernel = per_thread > 1 ? gather_vector<Id, Table, Out, true, false> : gather_vector<Id, Table, Out, false, false>;
  }
  // One thread row per id: a lookup of more rows than one launch's grid holds (2^31 - 1 blocks)
  // takes several launches, over consecutive ranges of ids.
  const std::int64_t rows_per_launch = max_launch_blocks() * config.blockDim.y;
  const std::int64_t out_row_bytes = row_bytes(Out, p.out_row_stride);
  LookupParams part = p;
  for (std::int64_t begin = 0; begin < p.num_ids; begin += rows_per_launch) {
    part.num_ids = p.num_ids - begin < rows_per_launch ? p.num_ids - begin : rows_per_launch;
    part.ids = static_cast<const Id*>(p.ids) + begin;
    part.out = static_cast<std::uint8_t*>(p.out) + begin * out_row_bytes;
    plan.split = p.num_ids > rows_per_launch;
    plan.publish_bad_rows = begin + part.num_ids == p.num_ids;
    config.gridDim.x = static_cast<unsigned>((part.num_ids + config.blockDim.y - 1) / config.blockDim.y);
    const cudaError_t status = cudaLaunchKernelEx(&config, kernel, part, plan);
    if (status != cudaSuccess) return status;
  }
  return cudaGetLastError();
}

}  // namespace tpembed::cuda_kernels
