// The operation: embedding lookup with tensor parallelism (DESIGN.md section 1).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tpembed/communicator.hpp"
#include "tpembed/dtype.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed {

/// How the shards of the tp group sit along the sharded dimension.
enum class ShardPlacement : std::uint8_t {
  /// The seed's layout: every rank holds the same number of rows (or columns) and rank r starts at
  /// r * that number. A vocab that does not divide by tp is zero-padded at the end; name the real
  /// vocab in `vocab_size` so ids past it count as out of range.
  equal,
  /// Shards of any size, back to back in tp_rank order (offsets are prefix sums of the sizes).
  /// The default everywhere (EmbeddingConfig, the CLI's --placement, Python's placement=).
  packed,
};

/// How vocab-parallel ranks (sharding_dim 0) combine their rows into everyone's output.
enum class VocabExchange : std::uint8_t {
  /// all_reduce where the communicator takes device buffers (NCCL: nothing on the host, so the call
  /// can be captured in a CUDA graph), owned_rows where collectives go through the host (MPI).
  /// Never peer_rows, whose collective destructor a caller must ask for knowingly.
  automatic,
  /// The seed's: every rank writes the rows it owns and zeros elsewhere, and the group sums
  /// (each rank moves 2(tp-1)/tp of the output through the ring).
  all_reduce,
  /// Each token's row comes from its owner only: ranks look up just the ids they own and gather
  /// those rows (each rank receives (tp-1)/tp of the output). Plans on the host from the ids, so it
  /// copies GPU ids to the host first.
  owned_rows,
  /// Each token's row comes from its owner only, read by one lookup kernel straight out of the
  /// owner's table in GPU memory: at set-up every member maps the others' tables (CUDA IPC between
  /// processes of one machine, peer access between GPUs of one process); a forward is then that
  /// one kernel — no collective, nothing on the host, graph-capturable — and each rank reads
  /// (tp-1)/tp of the output over NVLink. GPU tables of one machine only (UnsupportedError on
  /// every rank otherwise, naming the rank and why). Destroying the embedding is then collective: a
  /// barrier, so that no member frees a table that another may still read — destroy the layers of
  /// a group in the same order on every rank, while the communicator still works.
  peer_rows,
};

/// "automatic", "all_reduce", "owned_rows" or "peer_rows".
const char* vocab_exchange_name(VocabExchange exchange);

/// The exchange named `name` (a vocab_exchange_name(), or "auto" for automatic); throws
/// InvalidArgumentError listing the names otherwise.
VocabExchange vocab_exchange_from_name(const std::string& name);

/// Which tokens a rank of the tp group holds (DESIGN.md, "Layouts (sequence parallelism)").
///
/// The scattered rule: ids of shape S are split along `scatter_dim` d (0 <= d < S's dimensions)
/// into tp_size chunks by torch.tensor_split's rule: with n = S[d], chunk t holds
/// n / tp + (t < n % tp ? 1 : 0) entries of dimension d, starting at t * (n / tp) + min(t, n % tp)
/// (the first n % tp chunks get one more; chunks may be empty). The rank whose tp_rank is t holds
/// chunk t: its ids have shape S with S[d] replaced by chunk t's size, and its output that shape +
/// [H], the rows of chunk t's tokens in the chunk's own row-major order. With tp_size 1 the one
/// chunk is everything: scattered is replicated.
enum class TokenLayout : std::uint8_t {
  /// Every rank of the group holds every token (the seed's).
  replicated,
  /// Every rank holds its chunk of the tokens only (Megatron's reduce-scatter output, torchtitan's
  /// Shard(1), SGLang's scattered attention-TP input).
  scattered,
};

/// "replicated" or "scattered".
const char* token_layout_name(TokenLayout layout);

/// The layout named `name` (a token_layout_name()); throws InvalidArgumentError naming `what` (the
/// option being parsed, e.g. "output_layout") and the names otherwise.
TokenLayout token_layout_from_name(const std::string& name, const char* what = "token layout");

/// How a rank takes part in a (possibly tensor-parallel) lookup.
struct EmbeddingConfig {
  int tp_size = 1;                 ///< Ranks sharing the table.
  std::vector<int> tp_group;       ///< Ranks of the communicator in this rank's group; empty: all.
  int sharding_dim = 0;            ///< 0: rows (vocab) are sharded; 1: columns (hidden).
  std::optional<int> tp_rank;      ///< Shard index of this rank; default: its place in tp_group.
  ShardPlacement placement = ShardPlacement::packed;  ///< How the shards sit; see ShardPlacement.
  std::optional<std::int64_t> vocab_size;  ///< Equal vocab shards only: the real (unpadded) vocab.
  std::optional<DType> out_dtype;  ///< Output dtype; default the table's (required if quantized).
  bool strict = false;             ///< Throw OutOfRangeError when any id is out of range.
  VocabExchange vocab_exchange = VocabExchange::automatic;  ///< sharding_dim 0 with tp > 1 only.
  /// The forward's output (and the backward's grad_out): every token on every rank (replicated), or
  /// this rank's chunk of the tokens only (scattered; the rule at TokenLayout). Scattered, each
  /// exchange moves only what the chunk needs: all_reduce becomes a reduce-scatter of the masked
  /// lookup, owned_rows sends each row only to the rank whose chunk holds its token (all-to-all),
  /// peer_rows looks up only the rank's chunk straight from its owners' tables (no collective),
  /// hidden shards send each rank only its chunk's columns (all-to-all). The backward takes the
  /// rank's chunk of grad_out, gathers the group's and runs the local deterministic backward: the
  /// shards' gradients are the unsharded gradient bit for bit. Every rank must set the same value.
  TokenLayout output_layout = TokenLayout::replicated;
  /// The forward's (and backward's) ids: the group's whole ids on every rank (replicated), or this
  /// rank's chunk only (scattered; every rank passes its own chunk, of its own shape, and the
  /// chunks' shapes must fit the rule for their total along scatter_dim: the same other extents and
  /// the same id dtype on every rank). Scattered input needs a scattered output (InvalidArgumentError
  /// otherwise). peer_rows looks the chunk up as it is; the other exchanges, and the backward, first
  /// gather the group's ids (one small collective of every rank's chunk shape, made even with
  /// collective_checks off, then an all-gather of the ids). Every rank must set the same value.
  TokenLayout input_layout = TokenLayout::replicated;
  /// The dimension of the ids that scattered layouts split (unused when both are replicated); ids
  /// with fewer dimensions are refused on every rank. Every rank must set the same value.
  int scatter_dim = 0;
  /// tp > 1: forward() first checks its arguments across the group (one small collective), so that
  /// a rank with bad arguments, a different number of ids or other ids (a fingerprint of their
  /// values, computed on the ids' device) raises the error on every rank instead of leaving the
  /// others waiting or returning wrong rows. Off, each rank checks only its own arguments and
  /// forward() queues nothing but the lookup and the exchange: with NCCL (all_reduce) or peer_rows
  /// it can then be captured in a CUDA graph, and ranks that pass different ids get wrong rows
  /// without a word. Every rank must set the same value (agreed at set-up).
  bool collective_checks = true;
  /// A fingerprint of where this rank's shard came from (0: not given), for example a hash of the
  /// checkpoint's tensor name, dtype and global shape, as the safetensors loaders fill it. Set-up
  /// refuses, on every rank, a group whose ranks give different non-zero fingerprints (ranks that
  /// opened different checkpoints); ranks that give 0 are not compared.
  std::uint64_t table_fingerprint = 0;
};

/// A rank's part of the table. Views, plus an optional owner that keeps their memory alive.
struct EmbeddingShard {
  TensorView weight;         ///< [rows, cols] of any table dtype.
  TensorView scale;          ///< [rows] f32/f16/bf16; required for quantized tables.
  TensorView padding;        ///< [padding_rows, cols], the table's dtype; optional.
  TensorView padding_scale;  ///< [padding_rows], the scale's dtype; required with quantized padding.
  std::shared_ptr<const void> owner;  ///< Optional: whatever owns the memory behind the views.

  /// A shard that owns host tensors (pass empty Tensors for absent parts).
  static EmbeddingShard owning(Tensor weight, Tensor scale = {}, Tensor padding = {},
                               Tensor padding_scale = {});
};

/// A copy of a host shard in the memory of CUDA device `device` (every part that is present); the
/// returned shard owns its device buffers. Throws UnsupportedError in a build without CUDA.
EmbeddingShard copy_shard_to_device(const EmbeddingShard& host, int device);

/// Everything the one-call op takes besides ids and table: the group settings and the optional
/// tensors, as in the seed's signature.
struct EmbeddingOptions : EmbeddingConfig {
  TensorView per_token_scale;  ///< One scale per local table row.
  TensorView padding;          ///< Extra rows logically after the local table.
  TensorView padding_scale;    ///< One scale per padding row.
};

/// out = embedding(ids, weight, ...): looks up `ids` (any shape, i32/i64) and returns a host tensor
/// of shape ids.shape + [H]. With tp_size > 1 `comm` must span the group (or the world, with
/// tp_group naming the group), every rank of the group must call it, and every rank gets the whole
/// output (its chunk of it with output_layout scattered: the chunk's shape + [H]). Sets up the group on each call; for repeated lookups keep a ParallelEmbedding.
Tensor embedding(const TensorView& ids, const TensorView& weight, const EmbeddingOptions& options = {},
                 Communicator* comm = nullptr);

/// As above, writing into `out` (shape ids.shape + [H], dtype the output dtype). GPU tensors are
/// looked up on `stream` (a cudaStream_t). With tp_size 1 and strict off this is one gather and
/// nothing else (no allocation, no host synchronisation: it can be captured in a CUDA graph); the
/// bad-id count is then not kept (use a ParallelEmbedding for it).
void embedding(const TensorView& ids, const TensorView& weight, const TensorView& out,
               const EmbeddingOptions& options, Communicator* comm = nullptr, void* stream = nullptr);

}  // namespace tpembed
