// The lookup backends: one masked, dequantising gather, on the CPU (and on CUDA when built).
// These are launchers in the flashinfer sense: raw pointers and sizes in, no validation beyond
// what the op layer (embedding.hpp) already did.
#pragma once

#include <cstdint>

#include "tpembed/dtype.hpp"

namespace tpembed {

/// One shard of a vocab-sharded table, as LookupParams::shards lists them.
struct LookupShard {
  const void* table = nullptr;  ///< rows x cols elements, LookupParams::table_row_bytes apart.
  const void* scale = nullptr;  ///< One scale per row (LookupParams::scale_dtype), or null.
  std::int64_t row_offset = 0;  ///< Global id of the shard's row 0.
  std::int64_t rows = 0;
};

/// Everything one gather needs. For each flat position i of `ids`:
///
///   id = ids[i]; local = id - row_offset
///   if id < 0 or id >= valid_ids:           out row i = 0, and the id is counted as bad
///   else if 0 <= local < table_rows:        out row i = f(table row `local`)
///   else if local - table_rows < padding_rows: out row i = f(padding row `local - table_rows`)
///   else:                                   out row i = 0 (another rank owns the id)
///
/// The zero written for an id another rank owns is -0.0 when `unowned_negative_zero` is set: -0.0
/// is the identity of IEEE addition (x + -0.0 == x for every x, -0.0 included), so the vocab-
/// parallel all-reduce then reproduces the owner's row bit for bit. Bad ids always give +0.0.
///
/// where f(row)[c] = round_to_out_dtype(float(row[c]) * float(scale[row])), the scale factor
/// being 1 when no scale is given (a same-dtype float copy is then bit-exact).
///
/// With `num_shards` > 0 the table is the whole group's: `shards` lists every shard of a
/// vocab-sharded table (the same dtype, width and row pitch), and an id in [0, valid_ids) reads the
/// row of the shard s with shards[s].row_offset <= id < shards[s].row_offset + shards[s].rows (a
/// zero row, as for an id another rank owns, where none holds it). `table`, `scale`, `table_rows`, `row_offset` and the padding
/// are then unused. This is how a rank reads rows straight out of its peers' GPU memory.
struct LookupParams {
  const void* table = nullptr;       ///< Local table: table_rows rows of `cols` elements.
  DType table_dtype = DType::f32;
  std::int64_t table_rows = 0;
  std::int64_t cols = 0;             ///< Columns held by this rank (the row width).
  std::int64_t table_row_bytes = 0;  ///< Distance between table rows in bytes (>= row_bytes()).

  const void* scale = nullptr;  ///< One scale per local table row, or null.
  DType scale_dtype = DType::f32;

  const void* padding = nullptr;  ///< padding_rows rows, same dtype and width as the table.
  std::int64_t padding_rows = 0;
  const void* padding_scale = nullptr;  ///< One scale per padding row (scale_dtype), or null.

  std::int64_t row_offset = 0;  ///< Global id of local row 0 (vocab sharding), else 0.
  std::int64_t valid_ids = 0;   ///< Ids in [0, valid_ids) are in range; the rest are bad.

  const void* ids = nullptr;
  DType id_dtype = DType::i64;
  std::int64_t num_ids = 0;

  void* out = nullptr;                ///< num_ids rows of `cols` elements of out_dtype...
  DType out_dtype = DType::f32;
  std::int64_t out_row_stride = 0;    ///< ...`out_row_stride` elements apart (>= cols).

  unsigned long long* bad_id_count = nullptr;  ///< Incremented by the number of bad ids, or null.
  /// Instead of bad_id_count: three words (in the lookup's memory), zero before the first lookup
  /// that uses them. The lookup *stores* its bad-id count in [0] and leaves [1] and [2] (its
  /// scratch) zero again, so repeated lookups, a replayed CUDA graph included, need no reset
  /// between them (no memset node before each lookup).
  unsigned long long* bad_id_slots = nullptr;
  bool unowned_negative_zero = false;          ///< Fill rows owned by other ranks with -0.0.

  /// The group's shards (see above): an array of `num_shards` in the lookup's memory (device memory
  /// for lookup_cuda: peers' tables mapped into this process), or null.
  const LookupShard* shards = nullptr;
  std::int32_t num_shards = 0;
  /// The largest power of two up to 16 that divides every shard's table address (the CUDA launcher
  /// cannot read `shards` to pick its access path; scales are read one at a time).
  std::int32_t shards_alignment = 1;
  /// Rows of every shard when shard s starts at s * shard_rows (equal placement): the owner is then
  /// id / shard_rows. 0: the owner is searched for.
  std::int64_t shard_rows = 0;
};

/// One member's block of a hidden-parallel all-gather and where its columns go in the output.
struct LayoutPiece {
  std::int64_t source_offset = 0;       ///< Bytes from the start of the gathered buffer to the block.
  std::int64_t destination_offset = 0;  ///< Bytes from the start of an output row to the piece.
  std::int64_t bytes = 0;               ///< Bytes of the piece in each row.
};

/// Lays gathered column blocks out as output rows: for every piece p and row r, `p.bytes` bytes go
/// from `source + p.source_offset + r * source_pitch` to `out + r * out_pitch + p.destination_offset`.
struct LayoutParams {
  const void* source = nullptr;
  std::int64_t source_pitch = 0;  ///< Bytes between rows inside a block.
  void* out = nullptr;
  std::int64_t out_pitch = 0;     ///< Bytes between output rows.
  std::int64_t rows = 0;
  const LayoutPiece* pieces = nullptr;  ///< Host array of `num_pieces` pieces.
  int num_pieces = 0;
};

/// The layout on the host.
void layout_columns_cpu(const LayoutParams& params);

/// The layout as one kernel launch on a CUDA `stream` (pieces travel in the launch's parameters;
/// more than 64 pieces take one launch per 64). Moves 16 bytes at a time where every offset, width
/// and pitch allows. Returns the launch's cudaError_t.
int layout_columns_cuda(const LayoutParams& params, void* stream);

/// Runs the gather on the host, splitting large work over the machine's cores.
void lookup_cpu(const LookupParams& params);

/// Launches the gather on a CUDA `stream` (a cudaStream_t; null: the default stream). All pointers
/// are device memory (bad_id_count too). No allocation, no host synchronisation and no device-side
/// assert: the launch can be captured in a CUDA graph. Returns the launch's cudaError_t (0 is
/// success). Rows go through 16-byte loads and stores where widths and alignment allow.
int lookup_cuda(const LookupParams& params, void* stream);

/// Scans host ids for the first one outside [0, valid_ids). Returns its flat position, or -1.
std::int64_t find_first_bad_id(const void* ids, DType id_dtype, std::int64_t num_ids,
                               std::int64_t valid_ids);

}  // namespace tpembed
