// The scattered token layouts of a tensor-parallel lookup (DESIGN.md, "Layouts (sequence
// parallelism)"): which chunk of the tokens each member holds, the group's ids in member order,
// and the forward and backward exchanges that leave each member with its chunk only.
#pragma once

#include <cstdint>
#include <exception>
#include <vector>

#include "op/place.hpp"
#include "tpembed/communicator.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/parallel_embedding.hpp"

namespace tpembed::op {

class PeerTables;

/// Entries of dimension `n` in chunk `t` of `parts` (torch.tensor_split: the first n % parts get
/// one more), and where it starts.
std::int64_t chunk_extent(std::int64_t n, int parts, int t);
std::int64_t chunk_start(std::int64_t n, int parts, int t);

/// Ids shape S cut along `dim` into `parts` chunks: chunk t's shape.
std::vector<std::int64_t> chunk_shape(const std::vector<std::int64_t>& shape, int dim, int parts,
                                      int t);

/// Who holds which tokens. "Member order" is the concatenation over group members m = 0..tp-1 of
/// the tokens of chunk tp_rank_of_member[m], each chunk in its own row-major order; every exchange
/// works on the group's ids in that order (M), so that member m's tokens are one contiguous block.
struct ScatterPlan {
  std::vector<std::int64_t> shape;  ///< S: the group's whole ids shape.
  int dim = 0;
  int tp = 1;
  int me = 0;  ///< This rank's group rank.
  std::vector<int> tp_rank_of_member;
  std::int64_t outer = 1;                   ///< Product of S[:dim].
  std::int64_t inner = 1;                   ///< Product of S[dim + 1:].
  std::int64_t total = 0;                   ///< N: tokens of the group.
  std::vector<std::int64_t> member_tokens;  ///< Tokens of each member's chunk.
  std::vector<std::int64_t> member_first;   ///< Where each member's block starts in member order.
  bool natural = true;  ///< Member order is the ids' own order (no permutation needed).

  std::int64_t my_tokens() const { return member_tokens[static_cast<std::size_t>(me)]; }
  std::int64_t my_first() const { return member_first[static_cast<std::size_t>(me)]; }
  /// Chunk t's tokens are one contiguous run of the whole ids (outer <= 1).
  bool chunks_contiguous() const { return outer <= 1; }
  /// The flat position in the whole ids of the member-ordered token k, for every k (size N).
  std::vector<std::int64_t> natural_positions() const;
  /// The flat positions in the whole ids of member m's tokens, in its chunk's order.
  std::vector<std::int64_t> chunk_positions(int member) const;
};

/// The plan for whole ids of shape `shape` (dim already checked to be in range).
ScatterPlan plan_scatter(const std::vector<std::int64_t>& shape, int dim,
                         const std::vector<int>& tp_rank_of_member, int me);

/// The output shape of a forward of `ids` for `layout` (tp rank layout.tp_rank): ids.shape + [H]
/// when replicated or when the ids are this rank's chunk already; chunk shape + [H] otherwise.
/// Throws InvalidArgumentError when scatter_dim is outside the ids' dimensions.
std::vector<std::int64_t> forward_out_shape(const ShardLayout& layout, const TensorView& ids);

/// Ids of host `ids` outside [0, valid_ids).
std::int64_t count_bad_ids(const TensorView& ids, std::int64_t valid_ids);

/// Dimensions of a scattered input chunk that its set-up record carries.
constexpr int kMaxScatteredDims = 8;

/// What a rank with scattered input says before a forward or backward (plain bytes, no padding).
struct ChunkFacts {
  std::int32_t failed;  ///< 1: this rank failed its own checks (its error follows, agreed).
  std::int32_t ndim;
  std::int32_t id_dtype;
  std::int32_t reserved;
  std::int64_t extents[kMaxScatteredDims];
};

/// Gathers every member's ChunkFacts for `ids` (this rank's chunk; host memory records), agrees on
/// any member's error (agree_or_throw: every rank throws it), then checks that the chunks fit
/// torch.tensor_split's rule for their total along `dim` (same dimensions, id dtype and other
/// extents; chunk t of the right size), throwing the same ShapeError or InvalidArgumentError on
/// every rank. Returns the group's whole ids shape.
std::vector<std::int64_t> agree_on_chunks(Communicator& group, const TensorView& ids,
                                          std::exception_ptr local_error, int dim,
                                          const std::vector<int>& tp_rank_of_member);

/// The group's ids in member order, on `place`: the ids themselves (replicated, natural order), a
/// permuted copy (replicated; GPU ids go through the host: this synchronises and cannot be
/// captured), or every member's chunk gathered (scattered input). `host` holds them in host memory
/// when `want_host` (or when they were built there anyway).
struct MemberIds {
  const void* data = nullptr;  ///< N ids of `dtype` on `place`.
  DType dtype = DType::i64;
  std::vector<std::uint8_t> host;  ///< N ids on the host, when asked for (or the permuted copy).
  const void* host_data = nullptr;
};

/// What a scattered exchange works with (all owned by the ParallelEmbedding).
struct ScatterContext {
  const EmbeddingShard& shard;
  const ShardLayout& layout;
  Communicator& group;
  Workspace& workspace;
  Place& place;
  const PeerTables* peer_tables;  ///< peer_rows: the owners' tables mapped here, else null.
};

/// Grows every buffer a scattered forward (or, with `backward`, a backward with a gradient of
/// `grad_dtype`) of up to `tokens` group tokens asks for, before the collective check.
void reserve_scattered(const ScatterContext& context, std::int64_t tokens, bool backward,
                       DType grad_dtype);

/// The scattered forward: `ids` as this rank passed them (whole or its chunk), `out` this rank's
/// chunk [chunk, H]. The bad-id count stored in `counter[0]` is that of this rank's chunk.
void scattered_forward(const ScatterContext& context, const ScatterPlan& plan,
                       const TensorView& ids, const TensorView& out, unsigned long long* counter);

/// What a scattered backward hands to the local backward: the group's ids in natural order and the
/// whole grad_out (gathered from every member's chunk), both on `place`.
struct GatheredGradient {
  TensorView ids;                      ///< shape S
  TensorView grad_out;                 ///< shape S + [H]
  std::vector<std::uint8_t> host_ids;  ///< backing of `ids` when they were rebuilt on the host
};

/// Gathers the chunks of grad_out (this rank's: [chunk, H]) into the whole gradient in natural
/// order, and the ids with it (scattered input), for the local backward.
GatheredGradient gather_gradient(const ScatterContext& context, const ScatterPlan& plan,
                                 const TensorView& ids, const TensorView& grad_out);

}  // namespace tpembed::op
