// The hidden-parallel layout as one kernel: gathered column blocks to output rows, every member's
// piece in the same launch (blockIdx.y picks the piece), in the widest unit all offsets allow.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "tpembed/lookup.hpp"

namespace tpembed {

namespace {

constexpr int kMaxPieces = 64;
constexpr int kThreads = 256;

struct PieceTable {
  LayoutPiece pieces[kMaxPieces];
};

template <typename Unit>
__global__ void __launch_bounds__(kThreads) layout_kernel(const std::uint8_t* __restrict__ source, std::int64_t source_pitch,
                                                          std::uint8_t* __restrict__ out, std::int64_t out_pitch,
                                                          std::int64_t rows, const PieceTable table) {
  const LayoutPiece piece = table.pieces[blockIdx.y];
  const std::int64_t units = piece.bytes / static_cast<std::int64_t>(sizeof(Unit));
  const std::int64_t total = rows * units;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / units, u = i % units;
    const auto* from = reinterpret_cast<const Unit*>(source + piece.source_offset + r * source_pitch);
    auto* to = reinterpret_cast<Unit*>(out + r * out_pitch + piece.destination_offset);
    to[u] = from[u];
  }
}

// The widest power-of-two unit (<= 16 bytes) dividing every address, pitch, offset and width.
int unit_bytes(const LayoutParams& p, int first, int count) {
  std::uint64_t bits = reinterpret_cast<std::uintptr_t>(p.source) | reinterpret_cast<std::uintptr_t>(p.out) |
                       static_cast<std::uint64_t>(p.source_pitch) | static_cast<std::uint64_t>(p.out_pitch) | 16u;
  for (int i = first; i < first + count; ++i) {
    bits |= static_cast<std::uint64_t>(p.pieces[i].source_offset) | static_cast<std::uint64_t>(p.pieces[i].destination_offset) |
            static_cast<std::uint64_t>(p.pieces[i].bytes);
  }
  return static_cast<int>(bits & (~bits + 1));  // lowest set bit
}

}  // namespace

int layout_columns_cuda(const LayoutParams& params, void* stream_handle) {
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const auto* source = static_cast<const std::uint8_t*>(params.source);
  auto* out = static_cast<std::uint8_t*>(params.out);
  for (int first = 0; first < params.num_pieces; first += kMaxPieces) {
    const int count = std::min(kMaxPieces, params.num_pieces - first);
    PieceTable table{};
    std::int64_t widest = 0;
    for (int i = 0; i < count; ++i) {
      table.pieces[i] = params.pieces[first + i];
      widest = std::max(widest, table.pieces[i].bytes);
    }
    if (widest == 0 || params.rows == 0) continue;
    const int unit = unit_bytes(params, first, count);
    const std::int64_t work = params.rows * (widest / unit);
    const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>((work + kThreads - 1) / kThreads, 1 << 16)),
                    static_cast<unsigned>(count));
    switch (unit) {
      case 16: layout_kernel<uint4><<<grid, kThreads, 0, stream>>>(source, params.source_pitch, out, params.out_pitch, params.rows, table); break;
      case 8: layout_kernel<uint2><<<grid, kThreads, 0, stream>>>(source, params.source_pitch, out, params.out_pitch, params.rows, table); break;
      case 4: layout_kernel<unsigned int><<<grid, kThreads, 0, stream>>>(source, params.source_pitch, out, params.out_pitch, params.rows, table); break;
      case 2: layout_kernel<unsigned short><<<grid, kThreads, 0, stream>>>(source, params.source_pitch, out, params.out_pitch, params.rows, table); break;
      default: layout_kernel<unsigned char><<<grid, kThreads, 0, stream>>>(source, params.source_pitch, out, params.out_pitch, params.rows, table); break;
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  return cudaSuccess;
}

}  // namespace tpembed
