// The CUDA backward's kernels (gradient.hpp documents the order they compute). The sorted list of
// positions is cut into tiles of kGradientTile entries; one block takes a tile and a slab of
// columns, each thread 8 (or 1) columns: it sums the grad_out rows of each row's run of entries
// from left to right and writes the gradient of a run that lies inside the tile at once. A run
// that crosses a tile boundary leaves its part in a slot of the workspace (head: the run that
// began in an earlier tile; tail: the run that goes on in the next), and the fix-up kernel adds a
// crossing row's parts in tile order, from the tile where it begins. Only integer atomics (the
// counts); every float sum has one fixed order.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/gradient_rule.hpp"
#include "tpembed/gradient.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::cuda_kernels::gradient {

constexpr int kTile = static_cast<int>(kGradientTile);
constexpr int kThreads = 128;  // per block: one column vector each
constexpr int kGroup = 8;      // grad_out rows loaded before they are summed

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

__device__ __forceinline__ float scale_at(const void* scales, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::f16: return f16_bits_to_f32(static_cast<const std::uint16_t*>(scales)[index]);
    case DType::bf16: return bf16_bits_to_f32(static_cast<const std::uint16_t*>(scales)[index]);
    default: return static_cast<const float*>(scales)[index];
  }
}

template <DType T>
__device__ __forceinline__ float to_f32(std::uint32_t bits) {
  if constexpr (T == DType::f32) {
    return __uint_as_float(bits);
  } else if constexpr (T == DType::bf16) {
    return __uint_as_float(bits << 16);
  } else {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  }
}

/// `Width` consecutive elements of a T row as f32 (8: 16-byte loads, the caller vouches for the
/// alignment; 1: one element). kStreaming: read once (grad_out), marked evict-first.
template <DType T, int Width, bool kStreaming = false>
__device__ __forceinline__ void load_f32(const std::uint8_t* src, float (&v)[Width]) {
  if constexpr (Width == 1) {
    if constexpr (T == DType::f32) {
      v[0] = *reinterpret_cast<const float*>(src);
    } else {
      v[0] = to_f32<T>(*reinterpret_cast<const std::uint16_t*>(src));
    }
  } else if constexpr (T == DType::f32) {
    const float4 a = kStreaming ? __ldcs(reinterpret_cast<const float4*>(src)) : reinterpret_cast<const float4*>(src)[0];
    const float4 b = kStreaming ? __ldcs(reinterpret_cast<const float4*>(src) + 1) : reinterpret_cast<const float4*>(src)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 a = kStreaming ? __ldcs(reinterpret_cast<const uint4*>(src)) : *reinterpret_cast<const uint4*>(src);
    const std::uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = to_f32<T>(w[i] & 0xffffu);
      v[2 * i + 1] = to_f32<T>(w[i] >> 16);
    }
  }
}

template <DType T>
__device__ __forceinline__ std::uint32_t from_f32(float value) {
  // The host's own rounding functions (numeric.hpp): the CPU and GPU round alike, NaNs included.
  if constexpr (T == DType::bf16) {
    return f32_to_bf16_bits(value);
  } else {
    return f32_to_f16_bits(value);
  }
}

template <DType T, int Width>
__device__ __forceinline__ void store_f32(std::uint8_t* dst, const float (&v)[Width]) {
  if constexpr (Width == 1) {
    if constexpr (T == DType::f32) {
      *reinterpret_cast<float*>(dst) = v[0];
    } else {
      *reinterpret_cast<std::uint16_t*>(dst) = static_cast<std::uint16_t>(from_f32<T>(v[0]));
    }
  } else if constexpr (T == DType::f32) {
    reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint4 a;
    a.x = from_f32<T>(v[0]) | from_f32<T>(v[1]) << 16;
    a.y = from_f32<T>(v[2]) | from_f32<T>(v[3]) << 16;
    a.z = from_f32<T>(v[4]) | from_f32<T>(v[5]) << 16;
    a.w = from_f32<T>(v[6]) | from_f32<T>(v[7]) << 16;
    *reinterpret_cast<uint4*>(dst) = a;
  }
}

/// Step 5 of the order: scale, add to the old value when accumulating, round once, store.
template <DType Weight, int Width>
__device__ __forceinline__ void finish_row(const Rows& r, std::uint32_t key, std::int64_t col, float (&sum)[Width]) {
  const bool padding = key >= r.rows;
  const std::int64_t local = padding ? key - r.rows : key;
  const void* scales = padding ? r.padding_scale : r.scale;
  if (scales != nullptr) {
    const float factor = scale_at(scales, r.scale_dtype, local);
#pragma unroll
    for (int i = 0; i < Width; ++i) sum[i] = __fmul_rn(sum[i], factor);
  }
  std::uint8_t* dst = (padding ? r.grad_padding + local * r.grad_padding_pitch : r.grad_weight + local * r.grad_weight_pitch) +
                      col * (Weight == DType::f32 ? 4 : 2);
  if (r.accumulate) {
    float old[Width];
    load_f32<Weight, Width>(dst, old);
#pragma unroll
    for (int i = 0; i < Width; ++i) sum[i] = __fadd_rn(old[i], sum[i]);
  }
  store_f32<Weight, Width>(dst, sum);
}

/// One tile (blockIdx.x) and one slab of kThreads column vectors (blockIdx.y).
template <DType Grad, DType Weight, int Width>
__global__ void __launch_bounds__(kThreads) tile_kernel(Rows r, Sorted s) {
  __shared__ std::uint32_t keys[kTile + 1];
  __shared__ std::uint32_t positions[kTile];
  __shared__ std::uint32_t neighbours[2];  // the key before the tile and the key after it
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kTile;
  const std::int64_t remaining = s.n - first;
  const int count = remaining < kTile ? static_cast<int>(remaining) : kTile;
  const int t = threadIdx.x;
  if (t < kTile) {
    keys[t] = t < count ? s.keys[first + t] : s.sentinel;
    positions[t] = t < count ? s.positions[first + t] : 0;
  } else if (t == kTile) {
    keys[kTile] = s.sentinel;
    neighbours[0] = first > 0 ? s.keys[first - 1] : s.sentinel;
  } else if (t == kTile + 1) {
    neighbours[1] = first + kTile < s.n ? s.keys[first + kTile] : s.sentinel;
  }
  __syncthreads();
  const std::int64_t vector = static_cast<std::int64_t>(blockIdx.y) * kThreads + t;
  const std::int64_t col = vector * Width;
  if (col >= r.cols) return;
  const std::int64_t col_bytes = col * static_cast<std::int64_t>(Grad == DType::f32 ? 4 : 2);
  const std::uint32_t before = neighbours[0], after = neighbours[1];

  float sum[Width];
  int run_start = 0;
  for (int group = 0; group < kTile; group += kGroup) {
    if (keys[group] == s.sentinel) break;
    float x[kGroup][Width];
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      if (keys[group + u] != s.sentinel) {
        load_f32<Grad, Width, true>(r.grad_out + positions[group + u] * r.grad_out_pitch + col_bytes, x[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      const int j = group + u;
      const std::uint32_t key = keys[j];
      if (key == s.sentinel) break;
#pragma unroll
      for (int i = 0; i < Width; ++i) sum[i] = j == run_start ? x[u][i] : __fadd_rn(sum[i], x[u][i]);
      if (keys[j + 1] == key) continue;
      // The run [run_start, j] of `key` ends here.
      const bool from_before = run_start == 0 && before == key;
      const bool goes_on = j == kTile - 1 && after == key;
      if (from_before || goes_on) {
        float* part = s.parts + (static_cast<std::int64_t>(blockIdx.x) * 2 + (from_before ? 0 : 1)) * r.cols + col;
        if constexpr (Width == 1) {
          part[0] = sum[0];
        } else {
          reinterpret_cast<float4*>(part)[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
          reinterpret_cast<float4*>(part)[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
        }
      } else {
        finish_row<Weight, Width>(r, key, col, sum);
      }
      run_start = j + 1;
    }
  }
}

/// For a row whose run goes on past tile blockIdx.x and begins in it: its parts, added in tile
/// order (the tail slot of this tile, then the head slots of the tiles it covers).
template <DType Weight, int Width>
__global__ void __launch_bounds__(kThreads) fixup_kernel(Rows r, Sorted s) {
  const std::int64_t tile = blockIdx.x;
  const std::int64_t last = tile * kTile + kTile - 1;
  if (last + 1 >= s.n) return;
  const std::uint32_t key = s.keys[last];
  if (key == s.sentinel || s.keys[last + 1] != key) return;          // does not go on
  if (tile > 0 && s.keys[tile * kTile - 1] == key) return;            // began in an earlier tile
  const std::int64_t col = (static_cast<std::int64_t>(blockIdx.y) * kThreads + threadIdx.x) * Width;
  if (col >= r.cols) return;
  // The run's end: the first entry past it (keys are sorted).
  std::int64_t lo = last + 1, hi = s.n;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi) / 2;
    if (s.keys[mid] == key) lo = mid + 1; else hi = mid;
  }
  const std::int64_t end_tile = (lo - 1) / kTile;
  float sum[Width];
  const float* tail = s.parts + (tile * 2 + 1) * r.cols + col;
#pragma unroll
  for (int i = 0; i < Width; ++i) sum[i] = tail[i];
  constexpr int kAhead = 8;
  for (std::int64_t u = tile + 1; u <= end_tile; u += kAhead) {
    float part[kAhead][Width];
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      if (u + a <= end_tile) {
        const float* head = s.parts + ((u + a) * 2) * r.cols + col;
#pragma unroll
        for (int i = 0; i < Width; ++i) part[a][i] = head[i];
      }
    }
#pragma unroll
    for (int a = 0; a < kAhead; ++a) {
      if (u + a <= end_tile) {
#pragma unroll
        for (int i = 0; i < Width; ++i) sum[i] = __fadd_rn(sum[i], part[a][i]);
      }
    }
  }
  finish_row<Weight, Width>(r, key, col, sum);
}

}  // namespace tpembed::cuda_kernels::gradient
