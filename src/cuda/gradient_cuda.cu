// embedding_backward_cuda(): classify the positions, sort them by row (CUB), sum the tiles, fix up
// the rows that cross tiles (gradient_kernels.cuh). Nothing here allocates or waits: the scratch is
// the caller's workspace, laid out by WorkspacePlan, and every step is a launch (or a memset) on the
// caller's stream, so the whole backward can be captured in a CUDA graph.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "cuda/gradient_kernels.cuh"
#include "cuda/gradient_sort.hpp"
#include "tpembed/gradient.hpp"

namespace tpembed {

namespace cuda_kernels {
int multiprocessor_count();
}  // namespace cuda_kernels

namespace {

using namespace cuda_kernels::gradient;

constexpr std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// Where each buffer sits in the workspace.
struct WorkspacePlan {
  std::uint32_t sentinel = 0;  // the key of positions that add nothing: after every row's
  int end_bit = 1;             // bits the sort looks at
  std::size_t keys_in = 0, keys_out = 0, positions_in = 0, positions_out = 0, sort_temp = 0, sort_bytes = 0,
              marks = 0, parts = 0, total = 0;

  WorkspacePlan(std::int64_t n, std::int64_t key_count, std::int64_t cols) {
    sentinel = static_cast<std::uint32_t>(key_count);
    while (end_bit < 32 && (std::uint64_t{1} << end_bit) <= sentinel) ++end_bit;
    const std::size_t words = aligned(static_cast<std::size_t>(n) * 4);
    std::size_t at = 0;
    keys_in = at, at += words;
    keys_out = at, at += words;
    positions_in = at, at += words;
    positions_out = at, at += words;
    if (n > 0) {
      sort_pairs(nullptr, sort_bytes, nullptr, nullptr, nullptr, nullptr, static_cast<int>(n), end_bit, nullptr);
    }
    sort_temp = at, at += aligned(sort_bytes);
    marks = at, at += aligned(static_cast<std::size_t>(key_count));
    const std::size_t tiles = static_cast<std::size_t>((n + kTile - 1) / kTile);
    parts = at, at += aligned(tiles * 2 * static_cast<std::size_t>(cols) * sizeof(float));
    total = std::max<std::size_t>(at, 256);
  }
};

template <typename Id>
__global__ void classify_kernel(const Id* __restrict__ ids, std::int64_t n, tpembed::gradient::IdRule rule,
                                std::uint32_t sentinel, std::uint32_t* __restrict__ keys,
                                std::uint32_t* __restrict__ positions, std::uint8_t* __restrict__ marks,
                                unsigned long long* __restrict__ counts) {
  unsigned found[4] = {0, 0, 0, 0};
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint32_t key = sentinel;
    const tpembed::gradient::Verdict verdict = rule.classify(static_cast<std::int64_t>(ids[i]), &key);
#pragma unroll
    for (int k = 0; k < 4; ++k) found[k] += verdict == k ? 1u : 0u;
    if (verdict != tpembed::gradient::accumulated) {
      key = sentinel;
    } else if (marks != nullptr) {
      marks[key] = 1;
    }
    keys[i] = key;
    positions[i] = static_cast<std::uint32_t>(i);
  }
  if (counts == nullptr) return;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const unsigned warp_total = __reduce_add_sync(0xffffffffu, found[k]);
    if ((threadIdx.x & 31) == 0 && warp_total != 0) atomicAdd(counts + k, static_cast<unsigned long long>(warp_total));
  }
}

// Overwriting: +0 into every row that no position selects (a block per row at a time, its
// threads along the row; the selected rows are written by the tiles).
__global__ void zero_kernel(Rows r, const std::uint8_t* __restrict__ marks, std::int64_t key_count,
                            std::int64_t row_bytes, bool wide) {
  for (std::int64_t key = blockIdx.x; key < key_count; key += gridDim.x) {
    if (marks[key]) continue;
    const bool padding = key >= r.rows;
    std::uint8_t* row = padding ? r.grad_padding + (key - r.rows) * r.grad_padding_pitch : r.grad_weight + key * r.grad_weight_pitch;
    if (wide) {
      for (std::int64_t b = threadIdx.x * 16; b < row_bytes; b += blockDim.x * 16) {
        *reinterpret_cast<uint4*>(row + b) = make_uint4(0, 0, 0, 0);
      }
    } else {
      for (std::int64_t b = threadIdx.x * 2; b < row_bytes; b += blockDim.x * 2) {
        *reinterpret_cast<std::uint16_t*>(row + b) = 0;  // every gradient dtype is whole 16-bit words
      }
    }
  }
}

// The tiles, then the fix-up of rows that cross tiles.
struct Launch {
  Rows r;
  Sorted s;
  cudaStream_t stream;
};

template <DType Grad, DType Weight, int Width>
cudaError_t launch_tiles(const Launch& l) {
  const std::int64_t tiles = (l.s.n + kTile - 1) / kTile;
  const std::int64_t vectors = (l.r.cols + Width - 1) / Width;
  const std::int64_t slabs = (vectors + kThreads - 1) / kThreads;
  if (slabs > 65535 || tiles > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (tiles == 0 || slabs == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(slabs));
  tile_kernel<Grad, Weight, Width><<<grid, kThreads, 0, l.stream>>>(l.r, l.s);
  if (tiles > 1) fixup_kernel<Weight, Width><<<grid, kThreads, 0, l.stream>>>(l.r, l.s);
  return cudaGetLastError();
}

template <DType Grad, DType Weight>
cudaError_t launch_width(const Launch& l, bool wide) {
  return wide ? launch_tiles<Grad, Weight, 8>(l) : launch_tiles<Grad, Weight, 1>(l);
}

template <DType Grad>
cudaError_t launch_weight(const Launch& l, DType weight, bool wide) {
  switch (weight) {
    case DType::f32: return launch_width<Grad, DType::f32>(l, wide);
    case DType::f16: return launch_width<Grad, DType::f16>(l, wide);
    case DType::bf16: return launch_width<Grad, DType::bf16>(l, wide);
    default: return cudaErrorInvalidValue;
  }
}

// Overwriting, the zeroing kernel runs on a second stream beside the sort and the tiles (they write
// other rows), forked from and joined back into the caller's stream by events, which a CUDA graph
// capture turns into graph edges. Each caller stream (per device, up to kMaxSideStreams of them)
// gets its own side stream, made by its first overwrite that is not being captured, so that a
// capture on one stream never draws in another stream's work; until then, past the limit, or when
// anything about it fails, the zeroing runs in line on the caller's stream.
class SideStream {
 public:
  static constexpr std::size_t kMaxSideStreams = 16;

  SideStream(cudaStream_t main, bool wanted) : main_(main) {
    if (!wanted) return;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    static std::mutex mutex;  // guards the map; each side stream has its own lock for fork..join
    static auto* sides = new std::map<std::pair<int, cudaStream_t>, Side*>();  // never freed
    Side* side = nullptr;
    {
      const std::lock_guard<std::mutex> guard(mutex);
      const auto key = std::make_pair(device, main);
      auto found = sides->find(key);
      if (found != sides->end()) {
        side = found->second;
      } else {
        cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
        const std::size_t on_device = static_cast<std::size_t>(std::count_if(
            sides->begin(), sides->end(), [&](const auto& entry) { return entry.first.first == device; }));
        if (cudaStreamIsCapturing(main, &capturing) != cudaSuccess || capturing != cudaStreamCaptureStatusNone ||
            on_device >= kMaxSideStreams) {
          cudaGetLastError();
          return;
        }
        auto made = std::make_unique<Side>();
        if (cudaStreamCreateWithFlags(&made->stream, cudaStreamNonBlocking) != cudaSuccess ||
            cudaEventCreateWithFlags(&made->fork, cudaEventDisableTiming) != cudaSuccess ||
            cudaEventCreateWithFlags(&made->join, cudaEventDisableTiming) != cudaSuccess) {
          cudaGetLastError();
          return;  // (what was made is leaked: this happens at most once per stream)
        }
        side = made.release();
        sides->emplace(key, side);
      }
    }
    lock_ = std::unique_lock<std::mutex>(side->lock);
    if (cudaEventRecord(side->fork, main) != cudaSuccess || cudaStreamWaitEvent(side->stream, side->fork, 0) != cudaSuccess) {
      cudaGetLastError();
      lock_.unlock();
      return;
    }
    side_ = side;
  }
  ~SideStream() { join(); }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  /// Where the zeroing goes: the side stream once forked, else the caller's.
  cudaStream_t stream() const { return side_ != nullptr ? side_->stream : main_; }

  /// The caller's stream waits for the side stream's work; returns the first failure (every way
  /// out of the backward joins, so that a capture never ends with the side stream still forked).
  cudaError_t join() {
    if (side_ == nullptr) return cudaSuccess;
    cudaError_t status = cudaEventRecord(side_->join, side_->stream);
    if (status == cudaSuccess) status = cudaStreamWaitEvent(main_, side_->join, 0);
    side_ = nullptr;
    lock_.unlock();
    return status;
  }

 private:
  struct Side {
    cudaStream_t stream = nullptr;
    cudaEvent_t fork = nullptr, join = nullptr;
    std::mutex lock;
  };
  cudaStream_t main_;
  Side* side_ = nullptr;
  std::unique_lock<std::mutex> lock_;
};

bool aligned16(const void* pointer, std::int64_t pitch_bytes) {
  return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0 && pitch_bytes % 16 == 0;
}

}  // namespace

std::size_t gradient_workspace_bytes_cuda(std::int64_t num_ids, std::int64_t rows, std::int64_t padding_rows,
                                          std::int64_t cols) {
  return WorkspacePlan(num_ids, rows + padding_rows, cols).total;
}

int embedding_backward_cuda(const GradientParams& p, void* stream_handle) {
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const std::int64_t n = p.num_ids, key_count = p.rows + p.padding_rows;
  const WorkspacePlan plan(n, key_count, p.cols);
  if (p.workspace == nullptr || p.workspace_bytes < plan.total) return cudaErrorInvalidValue;
  auto* workspace = static_cast<std::uint8_t*>(p.workspace);
  const std::int64_t grad_bytes = p.grad_dtype == DType::f32 ? 4 : 2;
  const std::int64_t out_bytes = p.grad_out_dtype == DType::f32 ? 4 : 2;

  Rows r;
  r.grad_out = static_cast<const std::uint8_t*>(p.grad_out);
  r.grad_out_pitch = p.grad_out_row_stride * out_bytes;
  r.grad_weight = static_cast<std::uint8_t*>(p.grad_weight);
  r.grad_weight_pitch = p.grad_weight_row_stride * grad_bytes;
  r.grad_padding = static_cast<std::uint8_t*>(p.grad_padding);
  r.grad_padding_pitch = p.grad_padding_row_stride * grad_bytes;
  r.scale = p.scale;
  r.padding_scale = p.padding_scale;
  r.scale_dtype = p.scale_dtype;
  r.rows = p.rows;
  r.cols = p.cols;
  r.accumulate = p.accumulate;

  auto* keys_in = reinterpret_cast<std::uint32_t*>(workspace + plan.keys_in);
  auto* keys_out = reinterpret_cast<std::uint32_t*>(workspace + plan.keys_out);
  auto* positions_in = reinterpret_cast<std::uint32_t*>(workspace + plan.positions_in);
  auto* positions_out = reinterpret_cast<std::uint32_t*>(workspace + plan.positions_out);
  std::uint8_t* marks = p.accumulate || key_count == 0 ? nullptr : workspace + plan.marks;

  cudaError_t status = cudaSuccess;
  if (p.counts != nullptr) status = cudaMemsetAsync(p.counts, 0, 4 * sizeof(unsigned long long), stream);
  if (status == cudaSuccess && marks != nullptr) status = cudaMemsetAsync(marks, 0, static_cast<std::size_t>(key_count), stream);
  if (status != cudaSuccess) return status;
  const int sms = cuda_kernels::multiprocessor_count();
  if (n > 0) {
    const int blocks = static_cast<int>(std::min<std::int64_t>((n + 255) / 256, std::int64_t{sms} * 8));
    const tpembed::gradient::IdRule rule = tpembed::gradient::IdRule::of(p);
    if (p.id_dtype == DType::i32) {
      classify_kernel<<<blocks, 256, 0, stream>>>(static_cast<const std::int32_t*>(p.ids), n, rule, plan.sentinel, keys_in,
                                                  positions_in, marks, p.counts);
    } else {
      classify_kernel<<<blocks, 256, 0, stream>>>(static_cast<const std::int64_t*>(p.ids), n, rule, plan.sentinel, keys_in,
                                                  positions_in, marks, p.counts);
    }
  }
  if ((status = cudaGetLastError()) != cudaSuccess) return status;
  SideStream side(stream, marks != nullptr && p.cols > 0 && n > 0);
  if (marks != nullptr && p.cols > 0) {
    const std::int64_t row_bytes = p.cols * grad_bytes;
    const bool wide = row_bytes % 16 == 0 && aligned16(p.grad_weight, r.grad_weight_pitch) &&
                      (p.grad_padding == nullptr || aligned16(p.grad_padding, r.grad_padding_pitch));
    const int blocks = static_cast<int>(std::min<std::int64_t>(key_count, std::int64_t{sms} * 16));
    zero_kernel<<<blocks, 128, 0, side.stream()>>>(r, marks, key_count, row_bytes, wide);
  }
  if ((status = cudaGetLastError()) != cudaSuccess) return status;
  if (p.cols == 0 || key_count == 0 || n == 0) return cudaSuccess;

  Sorted s;
  s.keys = keys_out;
  s.positions = positions_out;
  s.n = n;
  s.sentinel = plan.sentinel;
  s.parts = reinterpret_cast<float*>(workspace + plan.parts);
  std::size_t sort_bytes = plan.sort_bytes;
  status = sort_pairs(workspace + plan.sort_temp, sort_bytes, keys_in, keys_out, positions_in, positions_out,
                      static_cast<int>(n), plan.end_bit, stream);
  if (status != cudaSuccess) return status;
  const bool wide = p.cols % 8 == 0 && aligned16(p.grad_out, r.grad_out_pitch) &&
                    aligned16(p.grad_weight, r.grad_weight_pitch) &&
                    (p.grad_padding == nullptr || aligned16(p.grad_padding, r.grad_padding_pitch));
  const Launch launch{r, s, stream};
  switch (p.grad_out_dtype) {
    case DType::f32: status = launch_weight<DType::f32>(launch, p.grad_dtype, wide); break;
    case DType::f16: status = launch_weight<DType::f16>(launch, p.grad_dtype, wide); break;
    case DType::bf16: status = launch_weight<DType::bf16>(launch, p.grad_dtype, wide); break;
    default: status = cudaErrorInvalidValue;
  }
  const cudaError_t joined = side.join();
  return status != cudaSuccess ? status : joined;
}

}  // namespace tpembed
