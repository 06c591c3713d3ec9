// ParallelEmbedding: the owner of a rank's shard, its group communicator and workspace.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "tpembed/communicator.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/gradient.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed {

/// Where each shard of the group sits, agreed by all ranks at set-up.
struct ShardLayout {
  int sharding_dim = 0;
  int tp_size = 1;
  int tp_rank = 0;
  std::int64_t global_rows = 0;   ///< V: addressable table rows (padding excluded).
  std::int64_t global_cols = 0;   ///< H: columns of the output.
  std::int64_t padding_rows = 0;  ///< P: rows after V that ids may select (tp 1 or dim 1 only).
  std::vector<std::int64_t> offsets;  ///< First row (dim 0) or column (dim 1) of each tp_rank.
  std::vector<std::int64_t> sizes;    ///< Rows (dim 0) or columns (dim 1) of each tp_rank.
  DType table_dtype = DType::f32;
  DType out_dtype = DType::f32;
  /// How vocab-parallel ranks combine rows (resolved: never `automatic`; all_reduce where unused).
  VocabExchange vocab_exchange = VocabExchange::all_reduce;
  /// The token layouts and the dimension they split (EmbeddingConfig; agreed at set-up).
  TokenLayout output_layout = TokenLayout::replicated;
  TokenLayout input_layout = TokenLayout::replicated;
  int scatter_dim = 0;

  /// Ids in [0, valid_ids()) are in range: V + P where padding is addressable, else V.
  std::int64_t valid_ids() const { return global_rows + padding_rows; }
};

/// A rank's view of a tensor-parallel embedding. Construction is collective: every rank of the
/// communicator calls it (with its own shard) — ranks of tp_size 1 too, when the communicator has
/// more than one rank — and in one collective over the whole communicator every rank says which
/// group it joins, what it holds and how it is set up (strict, collective_checks, out dtype,
/// exchange, placement, sharding dim, token layouts and scatter_dim, table and scale dtypes, shard
/// shape, table_fingerprint), with its own local error if it has one. Every rank checks every group from the same records, so any
/// mismatch — groups that do not partition the communicator, a tp_size or tp_group that differs, a
/// shard that does not fit the others, settings or dtypes that differ, a quantized table without
/// scales, tp ranks that collide, fingerprints of different tables — throws the same error on every
/// rank of the communicator, naming the setting, the rank and both values. Then the groups are
/// split off. With the peer_rows exchange the destructor is collective too: it waits for the group
/// (a barrier), so that no rank frees a table another rank's kernels still read.
///
/// A layer runs one forward at a time: a tp > 1 layer refuses (InvalidArgumentError) a thread that
/// enters forward() while another thread is inside, since interleaved collectives would pair up
/// wrongly across ranks. Use one layer per thread (each over its own communicator).
class ParallelEmbedding {
 public:
  ParallelEmbedding(Communicator& comm, EmbeddingShard shard, const EmbeddingConfig& config = {});
  ~ParallelEmbedding();
  ParallelEmbedding(ParallelEmbedding&&) noexcept;
  ParallelEmbedding& operator=(ParallelEmbedding&&) noexcept;

  /// Looks up `ids` (any shape, i32/i64) on every rank of the group; returns ids.shape + [H]
  /// (output_layout scattered: this rank's chunk's shape + [H], see below).
  /// Host tables only (for a table on a GPU, pass `out`). With tp_size > 1 and collective_checks on,
  /// one small collective first checks that every rank of the group passed valid arguments and the
  /// same ids (their count, and a 64-bit fingerprint of their values in order: cuda/fingerprint.hpp;
  /// the same ids as i32 on one rank and i64 on another agree); otherwise every rank throws the same
  /// error: a rank's own argument error, ShapeError for other counts, InvalidArgumentError for other
  /// ids, naming the ranks that differ from group rank 0.
  Tensor forward(const TensorView& ids);
  /// As forward(ids), into `out` (ids and out on the table's device). For a table on a GPU the work
  /// is queued on `stream` (a cudaStream_t; null: the default stream). With tp_size 1 and strict
  /// off, nothing synchronises with the host and nothing is allocated, so the call can be captured
  /// in a CUDA graph; with tp_size > 1 the same holds when collective_checks is off and the
  /// exchange runs on the device (peer_rows: one kernel; all_reduce or hidden sharding over NCCL),
  /// once a first call of the same size has grown the workspace. With a host-only communicator
  /// (MPI) and all_reduce, owned_rows or hidden sharding, device data is staged through host memory
  /// and the call returns when the output is complete.
  ///
  /// With output_layout scattered (tp_size > 1), `out` is this rank's chunk (TokenLayout's rule):
  /// the chunk's shape + [H], the rows of the chunk's tokens in its row-major order; forward(ids)
  /// returns that shape. The collective check then compares, for replicated ids, their count and
  /// fingerprint as above, and for scattered ids every rank's chunk shape and id dtype against the
  /// rule (ShapeError on every rank when they do not fit; the ids themselves differ by design and
  /// are not compared). The exchanges work on the group's ids in member order: the concatenation
  /// over group ranks m of the tokens of chunk tp_rank(m); when that is not the ids' own order
  /// (scatter_dim > 0 with several non-empty chunks, or tp ranks that are not the group ranks), a
  /// forward of replicated ids with all_reduce, owned_rows or hidden shards permutes them on the host
  /// (GPU ids are copied there and back: it synchronises and cannot be captured). peer_rows looks up
  /// the rank's chunk only: one kernel, no collective, capturable (collective_checks off) when the
  /// ids are scattered or the chunk is one run of the replicated ids (scatter_dim 0, or leading
  /// extents of 1); otherwise the chunk's ids are gathered on the host first.
  void forward(const TensorView& ids, const TensorView& out, void* stream = nullptr);

  /// Joins a forward of the group without ids, failing with `error`: for a rank whose arguments
  /// could not even be turned into tensors (a binding's conversion failed). It takes this rank's
  /// part of the forward's cross-rank check, so every rank of the group throws the error (naming
  /// this rank) instead of waiting for this one; with collective_checks off or tp_size 1 it
  /// rethrows `error` here alone. Always throws; a null `error` becomes an InvalidArgumentError.
  [[noreturn]] void fail_forward(std::exception_ptr error);

  /// The gradient of forward(ids) with respect to this rank's shard (gradient.hpp: the documented
  /// order, the same bits on every run and on CPU and GPU): grad_weight [rows, cols] of this rank's
  /// shard, f32, f16 or bf16, on the table's device. grad_out is the gradient of the whole output,
  /// ids.shape + [H], as every rank of a replicated output holds it (the backward of the all-reduce
  /// and of the all-gather is the identity on it); with hidden sharding it may also be this rank's
  /// columns only, ids.shape + [cols]. Vocab shards take the ids they own, hidden shards their
  /// columns; nothing is communicated for the gradient itself. With tp_size > 1 and
  /// collective_checks on, the forward's small cross-rank check runs first (the same ids on every
  /// rank, and every rank's argument error on all of them); off, a backward is local. On a GPU the
  /// work is queued on `stream` in the layer's workspace (grown by a first call of a size, after
  /// which a call allocates nothing and, with the checks off, waits for nothing: graph-capturable).
  /// Quantized tables have no gradient: UnsupportedError.
  ///
  /// With output_layout scattered (tp_size > 1), grad_out is this rank's chunk of the whole
  /// gradient, [chunk shape..., H] (the whole width, for hidden shards too), and `ids` as the forward
  /// took them (whole or this rank's chunk). Every rank's chunk is gathered (all_gather_v, and the
  /// ids too when scattered), put back in the ids' own order where member order differs (a bit-exact
  /// copy), and the local backward runs on the whole: the documented order over every position, so
  /// the shards' gradients are the unsharded gradient bit for bit. This moves the whole grad_out to
  /// every rank; an owner-only exchange (each owner receiving just its tokens' rows, compacted in
  /// order) would move less and keep the bits, and is left for later. Not capturable (the counts are
  /// planned on the host; scattered ids are gathered through a collective of their shapes).
  void backward(const TensorView& ids, const TensorView& grad_out, const TensorView& grad_weight,
                void* stream = nullptr, const BackwardOptions& options = {});
  /// What the last backward counted (a GPU layer waits for the last backward's stream).
  GradientCounts last_gradient_counts() const;

  /// The shape of forward(ids)'s output: ids.shape + [H], or with output_layout scattered this
  /// rank's chunk's shape + [H] (the ids' own shape + [H] when they are the chunk already). Throws
  /// InvalidArgumentError when the scattered layout's scatter_dim is not a dimension of the ids.
  std::vector<std::int64_t> output_shape(const TensorView& ids) const;
  /// Where the shards sit.
  const ShardLayout& layout() const;
  /// The group communicator (size tp_size).
  Communicator& group();
  /// Ids found out of range by the last forward (every rank counts the same ids; with
  /// output_layout scattered, each rank counts its own chunk's, and the group's counts add up to
  /// the whole ids'). For a GPU table this waits for the last forward's stream and reads the device
  /// counter.
  std::uint64_t last_bad_id_count() const;
  /// The device counter of out-of-range ids (an unsigned long long in device memory): once a
  /// forward's work is complete it holds that forward's count (stored by its lookup kernel, so no
  /// reset runs before each forward); null for host tables. Graph users read it after replay
  /// instead of calling last_bad_id_count(). One forward at a time per layer.
  const unsigned long long* bad_id_counter() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpembed
