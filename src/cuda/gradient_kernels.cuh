// The CUDA backward's kernels (gradient.hpp documents the order they compute). The sorted list of
// positions is cut into tiles of 32 entries; one block takes a tile and a slab of columns, each
// thread 8 (or 1) columns. A row whose entries lie inside one tile is one chunk: the block sums it
// from left to right and writes its gradient. A row that crosses a tile boundary has its chunks
// (its 1st-32nd entries, 33rd-64th, ...) start one per tile, each in the tile after the last; the
// block of the tile where a chunk starts sums it (reading up to 31 entries into the next tile) and
// leaves it in a slot of the workspace, and the fix-up kernel, from the tile where the row begins,
// adds the row's chunks in order. Overwriting, a zeroing kernel first writes +0 into the rows no
// entry selects. Only integer atomics (the counts); every float sum has one fixed order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/gradient_rule.hpp"
#include "cuda/convert.cuh"
#include "tpembed/gradient.hpp"

namespace tpembed::cuda_kernels::gradient {

constexpr int kTile = static_cast<int>(kGradientChunk);
constexpr int kThreads = 128;  // per block: one column vector each
constexpr int kGroup = 4;      // grad_out rows (and old gradient rows) loaded before they are summed

/// What every backward kernel needs to find its rows (by value in the launch).
struct Rows {
  const std::uint8_t* grad_out;   // at the shard's first column
  std::int64_t grad_out_pitch;    // bytes
  std::uint8_t* grad_weight;
  std::int64_t grad_weight_pitch;  // bytes
  std::uint8_t* grad_padding;
  std::int64_t grad_padding_pitch;  // bytes
  const void* scale;
  const void* padding_scale;
  DType scale_dtype;
  std::int64_t rows;  // table rows: keys from here on are padding rows
  std::int64_t cols;
  bool accumulate;
};

/// The sorted entries and the tile parts.
struct Sorted {
  const std::uint32_t* keys;       // n keys, ascending; invalid positions hold `sentinel`
  const std::uint32_t* positions;  // n flat positions, ascending within a key
  std::int64_t n;
  std::uint32_t sentinel;
  float* parts;  // [tiles][2][cols]: slot 0 head, slot 1 tail
};

/// `Width` elements of a T row as loaded (16-byte loads for 8; the caller vouches for the
/// alignment), converted to f32 only where used: half the registers of f32 copies for 16-bit rows.
template <DType T, int Width>
struct Raw {
  std::uint32_t w[Width == 1 ? 1 : (T == DType::f32 ? Width : Width / 2)];
};

template <DType T, int Width, bool kStreaming = false>
__device__ __forceinline__ void load_raw(const std::uint8_t* src, Raw<T, Width>& raw) {
  if constexpr (Width == 1) {
    raw.w[0] = T == DType::f32 ? *reinterpret_cast<const std::uint32_t*>(src) : *reinterpret_cast<const std::uint16_t*>(src);
  } else {
#pragma unroll
    for (int q = 0; q < static_cast<int>(sizeof(raw.w) / 16); ++q) {
      const uint4 a = kStreaming ? __ldcs(reinterpret_cast<const uint4*>(src) + q) : reinterpret_cast<const uint4*>(src)[q];
      raw.w[4 * q] = a.x, raw.w[4 * q + 1] = a.y, raw.w[4 * q + 2] = a.z, raw.w[4 * q + 3] = a.w;
    }
  }
}

template <DType T, int Width>
__device__ __forceinline__ void store_f32(std::uint8_t* dst, const float (&v)[Width]) {
  if constexpr (Width == 1) {
    if constexpr (T == DType::f32) {
      *reinterpret_cast<float*>(dst) = v[0];
    } else {
      *reinterpret_cast<std::uint16_t*>(dst) = static_cast<std::uint16_t>(encode_single<T>(v[0]));
    }
  } else if constexpr (T == DType::f32) {
    reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    *reinterpret_cast<uint4*>(dst) =
        make_uint4(pack_pair<T>(v[0], v[1]), pack_pair<T>(v[2], v[3]), pack_pair<T>(v[4], v[5]), pack_pair<T>(v[6], v[7]));
  }
}

/// Where the gradient row of `key` (a table row, or a padding row after them) starts, at column `col`.
template <DType Weight>
__device__ __forceinline__ std::uint8_t* gradient_at(const Rows& r, std::uint32_t key, std::int64_t col) {
  const bool padding = key >= r.rows;
  return (padding ? r.grad_padding + (key - r.rows) * r.grad_padding_pitch : r.grad_weight + key * r.grad_weight_pitch) +
         col * (Weight == DType::f32 ? 4 : 2);
}

/// Step 4 of the order: scale, add the old value (`old`, loaded by the caller) when accumulating,
/// round once, store.
template <DType Weight, int Width>
__device__ __forceinline__ void finish_row(const Rows& r, std::uint32_t key, std::int64_t col, float (&sum)[Width],
                                           const Raw<Weight, Width>& old) {
  const bool padding = key >= r.rows;
  const void* scales = padding ? r.padding_scale : r.scale;
  if (scales != nullptr) {
    const float factor = load_scale(scales, r.scale_dtype, padding ? key - r.rows : key);
#pragma unroll
    for (int i = 0; i < Width; ++i) sum[i] = __fmul_rn(sum[i], factor);
  }
  if (r.accumulate) {
#pragma unroll
    for (int i = 0; i < Width; ++i) sum[i] = __fadd_rn(decode_code<Weight>(old.w, i), sum[i]);
  }
  store_f32<Weight, Width>(gradient_at<Weight>(r, key, col), sum);
}

template <int Width>
__device__ __forceinline__ void store_chunk(const Rows& r, const Sorted& s, std::int64_t tile, int slot, std::int64_t col,
                                            const float (&sum)[Width]) {
  float* part = s.parts + (tile * 2 + slot) * r.cols + col;
  if constexpr (Width == 1) {
    part[0] = sum[0];
  } else {
    reinterpret_cast<float4*>(part)[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
    reinterpret_cast<float4*>(part)[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
  }
}

/// The first entry of `key` in the sorted keys [lo, hi) (one is there), found by the 32 lanes of
/// a warp probing 32 places at a time: a few dependent loads instead of log2(n).
__device__ __forceinline__ std::int64_t warp_first_entry(const std::uint32_t* keys, std::int64_t lo, std::int64_t hi,
                                                         std::uint32_t key) {
  const int lane = threadIdx.x & 31;
  while (hi - lo > 1) {
    const std::int64_t step = (hi - lo + 31) / 32;
    const std::int64_t probe = lo + lane * step;
    const bool below = probe < hi && keys[probe] < key;
    const int count = __popc(__ballot_sync(0xffffffffu, below));  // probes below `key`: a prefix
    if (count == 0) return lo;
    const std::int64_t next_lo = lo + (count - 1) * step + 1;
    hi = min(hi, lo + count * step + 1);
    lo = next_lo;
  }
  return lo;
}

// What an entry of a tile does (tile_kernel's plan).
enum : std::uint8_t { kChunkStart = 1, kChunkEnd = 2, kToHeadSlot = 4, kToTailSlot = 8 };

/// One tile (blockIdx.x) and one slab of kThreads column vectors (blockIdx.y): warp 0 plans the
/// tile's chunks (where each starts and ends and where its sum goes); then every thread sums its
/// columns of them with kGroup grad_out rows (and, accumulating, the old gradient rows) in flight.
template <DType Grad, DType Weight, int Width>
__global__ void __launch_bounds__(kThreads) tile_kernel(Rows r, Sorted s) {
  // This tile's entries and the next tile's (a chunk that starts here may end there).
  __shared__ std::uint32_t keys[2 * kTile + 1];
  __shared__ std::uint32_t positions[2 * kTile];
  __shared__ std::uint8_t flags[2 * kTile];
  __shared__ int range[2];            // entries [range[0], range[1]) are summed
  __shared__ std::uint32_t previous;  // the key of the entry before the tile (sentinel: none)
  const std::int64_t tile = blockIdx.x;
  const std::int64_t first = tile * kTile;
  const int t = threadIdx.x;
  if (t < 2 * kTile) {
    const bool in = first + t < s.n;
    keys[t] = in ? s.keys[first + t] : s.sentinel;
    positions[t] = in ? s.positions[first + t] : 0;
    flags[t] = 0;
  } else if (t == 2 * kTile) {
    keys[2 * kTile] = s.sentinel;
    previous = tile > 0 ? s.keys[first - 1] : s.sentinel;
  }
  __syncthreads();
  if (t < 32) {
    // A row begun in an earlier tile has its chunks start every 32 entries from its first entry.
    std::int64_t row_start = first;
    if (tile > 0 && keys[0] != s.sentinel && previous == keys[0]) {
      row_start = warp_first_entry(s.keys, 0, first, keys[0]);
    }
    // Lane j looks at entry j: the lane where a run of the tile begins plans that run's chunk.
    const std::uint32_t key = keys[t];
    const bool valid = key != s.sentinel;
    const bool begins = valid && (t == 0 || keys[t - 1] != key);
    const unsigned begin_lanes = __ballot_sync(0xffffffffu, begins);
    const int count = __popc(__ballot_sync(0xffffffffu, valid));  // valid entries come first
    // How far the tile's last row goes on into the next tile (entries 32..63 of this block's).
    const std::uint32_t last_key = keys[kTile - 1];
    const unsigned going_on = __ballot_sync(0xffffffffu, last_key != s.sentinel && keys[kTile + t] == last_key);
    const int past_end = kTile + (going_on == 0xffffffffu ? kTile : __ffs(~going_on) - 1);
    int lo = kTile * 2, hi = 0;
    if (begins) {
      const unsigned later = t == 31 ? 0u : begin_lanes >> (t + 1);
      const int end = later != 0 ? t + __ffs(later) : count;  // one past the run's last entry here
      const bool from_before = t == 0 && row_start < first;
      const bool goes_on = end == kTile && keys[kTile] == key;
      const int chunk = from_before ? static_cast<int>((kTile - (first - row_start) % kTile) % kTile) : t;
      if (chunk < end) {  // else the row's chunk began in the tile before and ends in this run
        const int last = goes_on ? min(chunk + kTile, past_end) - 1 : end - 1;
        const std::uint8_t dest = from_before ? kToHeadSlot : goes_on ? kToTailSlot : 0;
        if (chunk == last) {
          flags[chunk] = kChunkStart | kChunkEnd | dest;
        } else {
          flags[chunk] = kChunkStart;
          flags[last] = kChunkEnd | dest;
        }
        lo = chunk;
        hi = last + 1;
      }
    }
    lo = __reduce_min_sync(0xffffffffu, lo);
    hi = __reduce_max_sync(0xffffffffu, hi);
    if (t == 0) {
      range[0] = lo < hi ? lo : 0;
      range[1] = lo < hi ? hi : 0;
    }
  }
  __syncthreads();
  const std::int64_t col = (static_cast<std::int64_t>(blockIdx.y) * kThreads + t) * Width;
  if (col >= r.cols) return;
  const std::int64_t col_bytes = col * (Grad == DType::f32 ? 4 : 2);

  float sum[Width];
  const int lo = range[0], hi = range[1];
  for (int group = lo; group < hi; group += kGroup) {
    Raw<Grad, Width> x[kGroup];
    Raw<Weight, Width> old[kGroup];
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      if (group + u < hi) {
        load_raw<Grad, Width, true>(r.grad_out + positions[group + u] * r.grad_out_pitch + col_bytes, x[u]);
      }
    }
    if (r.accumulate) {
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        if (group + u < hi && (flags[group + u] & (kChunkEnd | kToHeadSlot | kToTailSlot)) == kChunkEnd) {
          load_raw<Weight, Width>(gradient_at<Weight>(r, keys[group + u], col), old[u]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      const int j = group + u;
      if (j >= hi) break;
      const std::uint8_t f = flags[j];
#pragma unroll
      for (int i = 0; i < Width; ++i) {
        const float value = decode_code<Grad>(x[u].w, i);
        sum[i] = (f & kChunkStart) ? value : __fadd_rn(sum[i], value);
      }
      if (f & kChunkEnd) {
        if (f & kToHeadSlot) {
          store_chunk<Width>(r, s, tile, 0, col, sum);  // a later chunk of a row begun before
        } else if (f & kToTailSlot) {
          store_chunk<Width>(r, s, tile, 1, col, sum);  // the first chunk of a row that goes on
        } else {
          finish_row<Weight, Width>(r, keys[j], col, sum, old[u]);  // the row's only chunk
        }
      }
    }
  }

}

/// For a row that begins in tile blockIdx.x and goes on past it: its chunks' sums in order (the
/// first in this tile's tail slot, chunk c in the head slot of the c-th tile after it).
template <DType Weight, int Width>
__global__ void __launch_bounds__(kThreads) fixup_kernel(Rows r, Sorted s) {
  const std::int64_t tile = blockIdx.x;
  const std::int64_t last = tile * kTile + kTile - 1;
  if (last + 1 >= s.n) return;
  const std::uint32_t key = s.keys[last];
  if (key == s.sentinel || s.keys[last + 1] != key) return;  // does not go on
  if (tile > 0 && s.keys[tile * kTile - 1] == key) return;    // began in an earlier tile
  const std::int64_t col = (static_cast<std::int64_t>(blockIdx.y) * kThreads + threadIdx.x) * Width;
  std::int64_t start = tile * kTile;  // the row's first entry: the tile's last run begins there
  for (std::int64_t hi = last; start < hi;) {
    const std::int64_t mid = (start + hi) / 2;
    if (s.keys[mid] < key) start = mid + 1; else hi = mid;
  }
  if (col >= r.cols) return;
  float sum[Width];
  Raw<Weight, Width> old;
  const float* head = s.parts + (tile * 2 + 1) * r.cols + col;
#pragma unroll
  for (int i = 0; i < Width; ++i) sum[i] = head[i];
  constexpr int kAhead = 8;
  bool more = true;
  for (std::int64_t c = 1; more; c += kAhead) {
    bool has[kAhead];
    float part[kAhead][Width];
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      const std::int64_t entry = start + (c + a) * kTile;  // chunk c + a's first entry
      has[a] = entry < s.n && s.keys[entry] == key;
    }
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      if (has[a]) {
        const float* chunk = s.parts + ((tile + c + a) * 2) * r.cols + col;
#pragma unroll
        for (int i = 0; i < Width; ++i) part[a][i] = chunk[i];
      }
    }
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      if (has[a]) {
#pragma unroll
        for (int i = 0; i < Width; ++i) sum[i] = __fadd_rn(sum[i], part[a][i]);
      }
    }
    more = has[kAhead - 1];
  }
  if (r.accumulate) load_raw<Weight, Width>(gradient_at<Weight>(r, key, col), old);
  finish_row<Weight, Width>(r, key, col, sum, old);
}

}  // namespace tpembed::cuda_kernels::gradient
