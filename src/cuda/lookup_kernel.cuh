// The CUDA gather kernel: one template per (id type x table dtype x output dtype x access path).
// Each output row is handled by a row of threads (threadIdx.x along the row, threadIdx.y across
// rows); rows are looped grid-stride with 64-bit indices. The vector path moves 16 bytes of output
// per thread and step, with kUnroll independent loads in flight before the first store.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tpembed/lookup.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed::cuda_kernels {

constexpr int kBlockThreads = 256;
constexpr int kUnroll = 4;

template <DType D>
__host__ __device__ constexpr int bits_of() {
  return D == DType::f32 ? 32 : (D == DType::f16 || D == DType::bf16) ? 16 : D == DType::i4 ? 4 : 8;
}

/// Outputs per 16-byte output vector.
template <DType Out>
__host__ __device__ constexpr int outputs_per_vector() {
  return 128 / bits_of<Out>();
}

/// Table bytes behind one output vector.
template <DType Table, DType Out>
__host__ __device__ constexpr int input_bytes_per_vector() {
  return outputs_per_vector<Out>() * bits_of<Table>() / 8;
}

template <DType Table>
__device__ __forceinline__ float decode(std::uint32_t code) {
  if constexpr (Table == DType::f32) {
    return __uint_as_float(code);
  } else if constexpr (Table == DType::f16) {
    return f16_bits_to_f32(static_cast<std::uint16_t>(code));
  } else if constexpr (Table == DType::bf16) {
    return __uint_as_float(code << 16);
  } else if constexpr (Table == DType::i8) {
    return static_cast<float>(static_cast<std::int8_t>(code));
  } else if constexpr (Table == DType::fp8_e4m3) {
    return fp8_e4m3_bits_to_f32(static_cast<std::uint8_t>(code));
  } else {
    return static_cast<float>(static_cast<std::int32_t>(code << 28) >> 28);
  }
}

template <DType Out>
__device__ __forceinline__ std::uint32_t encode(float value) {
  if constexpr (Out == DType::f32) {
    return __float_as_uint(value);
  } else if constexpr (Out == DType::f16) {
    return f32_to_f16_bits(value);
  } else {
    return f32_to_bf16_bits(value);
  }
}

__device__ __forceinline__ float load_scale(const void* scales, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::f16: return f16_bits_to_f32(static_cast<const std::uint16_t*>(scales)[index]);
    case DType::bf16: return __uint_as_float(static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(scales)[index]) << 16);
    default: return static_cast<const float*>(scales)[index];
  }
}

/// Raw table bits behind one output vector, as 32-bit words (at least one).
template <int Bytes>
struct RawVector {
  std::uint32_t words[Bytes >= 4 ? Bytes / 4 : 1];
};

template <int Bytes>
__device__ __forceinline__ void load_raw(const std::uint8_t* __restrict__ src, RawVector<Bytes>& raw) {
  if constexpr (Bytes == 32) {
    const uint4 a = *reinterpret_cast<const uint4*>(src), b = *reinterpret_cast<const uint4*>(src + 16);
    raw.words[0] = a.x, raw.words[1] = a.y, raw.words[2] = a.z, raw.words[3] = a.w;
    raw.words[4] = b.x, raw.words[5] = b.y, raw.words[6] = b.z, raw.words[7] = b.w;
  } else if constexpr (Bytes == 16) {
    const uint4 a = *reinterpret_cast<const uint4*>(src);
    raw.words[0] = a.x, raw.words[1] = a.y, raw.words[2] = a.z, raw.words[3] = a.w;
  } else if constexpr (Bytes == 8) {
    const uint2 a = *reinterpret_cast<const uint2*>(src);
    raw.words[0] = a.x, raw.words[1] = a.y;
  } else if constexpr (Bytes == 4) {
    raw.words[0] = *reinterpret_cast<const std::uint32_t*>(src);
  } else {
    static_assert(Bytes == 2, "unexpected vector width");
    raw.words[0] = *reinterpret_cast<const std::uint16_t*>(src);
  }
}

/// Converts the raw bits of one vector into 16 bytes of output: value * factor, rounded once.
template <DType Table, DType Out, bool kScaled>
__device__ __forceinline__ uint4 convert(const RawVector<input_bytes_per_vector<Table, Out>()>& raw, float factor) {
  constexpr int kOutputs = outputs_per_vector<Out>();
  constexpr int kBits = bits_of<Table>();
  constexpr std::uint32_t kMask = kBits == 32 ? 0xffffffffu : ((1u << kBits) - 1u);
  std::uint32_t packed[4] = {0, 0, 0, 0};
#pragma unroll
  for (int k = 0; k < kOutputs; ++k) {
    const std::uint32_t code = (raw.words[(k * kBits) / 32] >> ((k * kBits) % 32)) & kMask;
    float value = decode<Table>(code);
    if constexpr (kScaled) value = value * factor;
    const std::uint32_t bits = encode<Out>(value);
    if constexpr (bits_of<Out>() == 32) {
      packed[k] = bits;
    } else {
      packed[k / 2] |= bits << (16 * (k % 2));
    }
  }
  return make_uint4(packed[0], packed[1], packed[2], packed[3]);
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

template <typename Id>
__device__ __forceinline__ RowSource resolve_row(const LookupParams& p, std::int64_t row, std::int64_t padding_row_bytes) {
  RowSource source;
  const std::int64_t id = static_cast<std::int64_t>(static_cast<const Id*>(p.ids)[row]);
  if (id < 0 || id >= p.valid_ids) {
    source.bad = true;
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

template <typename Id, DType Table, DType Out>
__global__ void __launch_bounds__(kBlockThreads) gather_vector(const LookupParams p) {
  constexpr int kOutputs = outputs_per_vector<Out>();
  constexpr int kInBytes = input_bytes_per_vector<Table, Out>();
  constexpr bool kPlainCopy = Table == Out;
  wait_for_previous_grid_and_release_next();
  const std::int64_t vectors = p.cols / kOutputs;
  const std::int64_t out_row_bytes = row_bytes(Out, p.out_row_stride);
  const std::int64_t padding_row_bytes = row_bytes(Table, p.cols);
  const std::int64_t row_step = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.num_ids;
       row += row_step) {
    const RowSource source = resolve_row<Id>(p, row, padding_row_bytes);
    if (source.bad && threadIdx.x == 0 && p.bad_id_count != nullptr) atomicAdd(p.bad_id_count, 1ull);
    const float factor = source.scales != nullptr ? load_scale(source.scales, p.scale_dtype, source.scale_index) : 1.0f;
    const uint4 zero = splat_zero<Out>(source.unowned && p.unowned_negative_zero);
    auto* dst = reinterpret_cast<uint4*>(static_cast<std::uint8_t*>(p.out) + row * out_row_bytes);
    for (std::int64_t first = threadIdx.x; first < vectors; first += static_cast<std::int64_t>(blockDim.x) * kUnroll) {
      RawVector<kInBytes> raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t v = first + static_cast<std::int64_t>(u) * blockDim.x;
        if (source.src != nullptr && v < vectors) load_raw<kInBytes>(source.src + v * kInBytes, raw[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t v = first + static_cast<std::int64_t>(u) * blockDim.x;
        if (v >= vectors) break;
        uint4 value = zero;
        if (source.src != nullptr) {
          if constexpr (kPlainCopy) {
            if (source.scales == nullptr) {
              value = make_uint4(raw[u].words[0], raw[u].words[1], raw[u].words[2], raw[u].words[3]);
            } else {
              value = convert<Table, Out, true>(raw[u], factor);
            }
          } else if (source.scales == nullptr) {
            value = convert<Table, Out, false>(raw[u], factor);
          } else {
            value = convert<Table, Out, true>(raw[u], factor);
          }
        }
        dst[v] = value;
      }
    }
  }
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
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.num_ids;
       row += row_step) {
    const RowSource source = resolve_row<Id>(p, row, padding_row_bytes);
    if (source.bad && threadIdx.x == 0 && p.bad_id_count != nullptr) atomicAdd(p.bad_id_count, 1ull);
    const float factor = source.scales != nullptr ? load_scale(source.scales, p.scale_dtype, source.scale_index) : 1.0f;
    const bool negative = source.unowned && p.unowned_negative_zero;
    std::uint8_t* dst = static_cast<std::uint8_t*>(p.out) + row * out_row_bytes;
    for (std::int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      std::uint32_t code = encode<Out>(negative ? -0.0f : 0.0f);
      if (source.src != nullptr) {
        const std::uint32_t raw = load_code<Table>(source.src, c);
        if (Table == Out && source.scales == nullptr) {
          code = raw;  // bit-exact copy, NaN payloads included
        } else {
          float value = decode<Table>(raw);
          if (source.scales != nullptr) value = value * factor;
          code = encode<Out>(value);
        }
      }
      store_code<Out>(dst, c, code);
    }
  }
}

/// Launches the kernel for one (Id, Table, Out); defined in the instantiation files.
template <typename Id, DType Table, DType Out>
cudaError_t launch_gather(const LookupParams& p, cudaStream_t stream);

template <typename Id, DType Table, DType Out>
cudaError_t launch_gather_impl(const LookupParams& p, cudaStream_t stream) {
  constexpr int kOutputs = outputs_per_vector<Out>();
  constexpr int kInAlign = input_bytes_per_vector<Table, Out>() < 16 ? input_bytes_per_vector<Table, Out>() : 16;
  auto aligned = [](const void* pointer, std::int64_t alignment) {
    return reinterpret_cast<std::uintptr_t>(pointer) % static_cast<std::uintptr_t>(alignment) == 0;
  };
  const bool vector = p.cols % kOutputs == 0 && aligned(p.out, 16) && row_bytes(Out, p.out_row_stride) % 16 == 0 &&
                      aligned(p.table, kInAlign) && p.table_row_bytes % kInAlign == 0 &&
                      (p.padding == nullptr || aligned(p.padding, kInAlign));
  // Threads along a row: enough for the row's work items, a power of two up to the block.
  const std::int64_t items = vector ? (p.cols / kOutputs + kUnroll - 1) / kUnroll : p.cols;
  int threads_x = 1;
  while (threads_x < items && threads_x < kBlockThreads) threads_x *= 2;
  const dim3 block(threads_x, kBlockThreads / threads_x);
  const std::int64_t blocks = (p.num_ids + block.y - 1) / block.y;
  const dim3 grid(static_cast<unsigned>(blocks < (1 << 24) ? blocks : (1 << 24)));
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  const cudaError_t status = vector ? cudaLaunchKernelEx(&config, gather_vector<Id, Table, Out>, p)
                                    : cudaLaunchKernelEx(&config, gather_scalar<Id, Table, Out>, p);
  return status != cudaSuccess ? status : cudaGetLastError();
}

}  // namespace tpembed::cuda_kernels
