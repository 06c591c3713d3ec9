// The gradient of the lookup with respect to one rank's shard (DESIGN.md, "The gradient"): a
// deterministic embedding backward, on the CPU and on CUDA, with the same bits on both.
//
// For every flat position p of `ids` whose id selects a row of this shard (and is not the ignored
// id), grad_out[p] (the shard's columns of it) is added into that row's gradient:
//
//   grad_weight[row] (+)= scale[row] * sum over { p : ids[p] == row_offset + row } of grad_out[p]
//
// The order of the sum (the same on every run, for any thread count or grid, CPU and GPU alike, and
// for any sharding: it involves no row but the one summed):
//   1. A row's positions p (those whose id selects it) are taken in increasing order and cut into
//      chunks of kGradientChunk = 32: the row's 1st to 32nd positions, its 33rd to 64th, ...
//   2. A chunk's sum is the fp32 sum of its grad_out values (converted exactly to fp32) from left to
//      right, starting from the first value itself: ((x1 + x2) + x3) + ...
//   3. The row's sum S adds its chunks' sums from left to right: S = ((c1 + c2) + c3) + ...
//   4. g = S * scale[row] in fp32 (no scale: g = S); the gradient is round(g) when overwriting, and
//      round(float(old) + g) when accumulating, rounded once to the gradient's dtype (nearest even).
//      Overwriting sets every row that no position selects to +0; accumulating leaves them as they
//      are. Every fp32 operation above is one IEEE operation (no fused multiply-add).
// Each value of a row of m positions passes through at most k = min(m - 1, 31 + ceil(m / 32) - 1)
// additions, so |S - exact sum| <= k * 2^-24 * sum |x| (to first order): a sequential sum's bound
// for rare rows, and a far smaller one for hot rows. Vocab shards see only their rows, each whole,
// so the shards' gradients side by side are the unsharded gradient bit for bit.
//
// NaN: a sum that is NaN is NaN on both backends, but its payload may differ (the GPU's adds give
// the canonical NaN); every finite or infinite result has the same bits.
//
// Quantized tables have no gradient (they are for inference): the op layer refuses them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "tpembed/dtype.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed {

/// Positions per chunk of a row's sum (step 1 above): part of the documented order.
inline constexpr std::int64_t kGradientChunk = 32;

/// What a backward found, position by position (each flat position of the ids is one of these).
struct GradientCounts {
  std::uint64_t accumulated = 0;   ///< Positions whose grad_out row went into a table or padding row.
  std::uint64_t unowned = 0;       ///< In range, but another shard's row (vocab sharding).
  std::uint64_t out_of_range = 0;  ///< Negative, or not below valid_ids: contribute nothing.
  std::uint64_t ignored = 0;       ///< Equal to the ignored id (padding_idx).
};

// ---- the launchers (raw pointers; the op layer below validates) ---------------------------------

/// Everything one backward needs. For each flat position p of `ids`:
///
///   id = ids[p]; local = id - row_offset
///   if has_ignored_id and id == ignored_id:         ignored
///   else if id < 0 or id >= valid_ids:              out of range
///   else if 0 <= local < rows:                      grad_out row p goes to grad_weight row `local`
///   else if 0 <= local - rows < padding_rows:       ... to grad_padding row `local - rows`
///   else:                                           unowned
///
/// grad_out row p is `cols` elements at grad_out + p * grad_out_row_stride (point grad_out at the
/// shard's first column to take a hidden shard's columns of the whole gradient).
struct GradientParams {
  const void* ids = nullptr;
  DType id_dtype = DType::i64;
  std::int64_t num_ids = 0;  ///< At most 2^31 - 1.

  const void* grad_out = nullptr;
  DType grad_out_dtype = DType::f32;     ///< f32, f16 or bf16.
  std::int64_t grad_out_row_stride = 0;  ///< Elements between rows of grad_out (>= cols).
  std::int64_t cols = 0;

  std::int64_t row_offset = 0;  ///< Global id of grad_weight row 0.
  std::int64_t rows = 0;        ///< Rows of grad_weight.
  std::int64_t padding_rows = 0;
  std::int64_t valid_ids = 0;   ///< Ids in [0, valid_ids) are in range.
  bool has_ignored_id = false;
  std::int64_t ignored_id = 0;

  const void* scale = nullptr;          ///< One factor per row (a scaled float table), or null.
  const void* padding_scale = nullptr;  ///< One factor per padding row, or null.
  DType scale_dtype = DType::f32;

  void* grad_weight = nullptr;            ///< rows x cols of grad_dtype...
  std::int64_t grad_weight_row_stride = 0;  ///< ...this many elements apart (>= cols).
  void* grad_padding = nullptr;           ///< padding_rows x cols of grad_dtype, or null...
  std::int64_t grad_padding_row_stride = 0;
  DType grad_dtype = DType::f32;          ///< f32, f16 or bf16.
  bool accumulate = false;

  /// Four words in the backward's memory, or null: the GradientCounts of this call, *stored* (not
  /// added) in the order of its fields.
  unsigned long long* counts = nullptr;

  /// CUDA only: scratch of at least gradient_workspace_bytes_cuda() bytes, 256-byte aligned.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

/// The backward on the host, over the machine's cores (bits independent of their number).
void embedding_backward_cpu(const GradientParams& params);

/// The scratch a CUDA backward of `num_ids` ids into `rows` + `padding_rows` rows of `cols` columns
/// needs (sort buffers, chunk sums of rows that cross tiles, row marks). Depends on nothing else.
std::size_t gradient_workspace_bytes_cuda(std::int64_t num_ids, std::int64_t rows, std::int64_t padding_rows,
                                          std::int64_t cols);

/// Queues the backward on a CUDA `stream`: a few kernels and a radix sort (CUB) in the caller's
/// workspace — no allocation, no host synchronisation, no float atomics: capturable in a CUDA graph.
/// All pointers are device memory. Returns the first failing launch's cudaError_t (0: success).
int embedding_backward_cuda(const GradientParams& params, void* stream);

// ---- the op ------------------------------------------------------------------------------------

/// What ParallelEmbedding::backward() takes besides ids, grad_out and grad_weight.
struct BackwardOptions {
  bool accumulate = false;               ///< Add into grad_weight (and grad_padding).
  std::optional<std::int64_t> ignored_id;  ///< A global id whose positions add nothing (padding_idx).
  /// The padding rows' gradient, [padding rows, cols]; absent: positions that select padding rows
  /// add nothing (counted as unowned).
  TensorView grad_padding;
};

/// The settings of one backward, besides ids, grad_out and grad_weight.
struct GradientOptions {
  std::int64_t row_offset = 0;  ///< Global id of grad_weight's row 0 (a vocab shard's offset).
  /// Ids in [0, valid_ids) are in range (the rest are counted as out of range); default
  /// row_offset + rows + padding rows.
  std::optional<std::int64_t> valid_ids;
  /// The ignored id (PyTorch's padding_idx, a global id): its positions add nothing.
  std::optional<std::int64_t> ignored_id;
  /// First column of grad_out taken (a hidden shard given the whole gradient): grad_out's last
  /// dimension must hold column_offset + cols columns.
  std::int64_t column_offset = 0;
  TensorView per_token_scale;  ///< The table's scale ([rows], f32/f16/bf16), when it has one.
  TensorView padding_scale;    ///< The padding's scale ([padding rows]), with per_token_scale.
  TensorView grad_padding;     ///< [padding rows, cols], grad_weight's dtype: the padding's gradient.
  bool accumulate = false;     ///< Add into grad_weight (and grad_padding) instead of overwriting.
  /// CUDA: a workspace of at least gradient_workspace_bytes() on grad_weight's device. Absent: the
  /// call takes one from the stream-ordered allocator (cudaMallocAsync) and returns it after the work.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  /// Optional: where the GradientCounts go (four 64-bit words on grad_weight's device, stored in
  /// field order when the work completes). Null: not kept.
  unsigned long long* counts = nullptr;
};

/// The scratch embedding_backward() needs on `device` for these sizes (0 on the host).
std::size_t gradient_workspace_bytes(const Device& device, std::int64_t num_ids, std::int64_t rows,
                                     std::int64_t padding_rows, std::int64_t cols);

/// grad_weight (+)= the gradient of out = embedding(ids, weight) with respect to weight, for
/// grad_out of shape ids.shape + [W] (f32, f16 or bf16; W = cols, or more with column_offset) into
/// grad_weight [rows, cols] (f32, f16 or bf16), in the order documented above. Every tensor lives
/// on one device; on a GPU the work is queued on `stream` (a cudaStream_t) and nothing waits or
/// allocates when a workspace is given. Throws InvalidArgumentError / ShapeError naming the
/// argument for anything that does not fit.
void embedding_backward(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                        const GradientOptions& options = {}, void* stream = nullptr);

}  // namespace tpembed
