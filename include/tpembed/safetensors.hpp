// Checkpoints in the safetensors format (Hugging Face): reading tensors zero-copy from a memory
// map, reading only the rows or columns a rank holds, resolving sharded checkpoints through their
// model.safetensors.index.json, and writing files atomically.
//
// Layout of a file: an 8-byte little-endian header length N, N bytes of a JSON object
//   {"name": {"dtype": "BF16", "shape": [V, H], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}          (optional, string values only)
// then the data buffer; offsets count from the start of the data buffer.
//
// Dtypes map to tpembed's: F32 f32, F16 f16, BF16 bf16, I8 i8, F8_E4M3 fp8_e4m3, I32 i32, I64 i64.
// U8 is read as packed int4 (two signed nibbles a byte, low nibble first, each row starting on a
// fresh byte): a U8 tensor [.., ceil(H/2)] is an i4 tensor [.., H]. The column count H is not in
// the stored shape, so it comes from the caller (`as_int4_columns`) or from the metadata entry
// "tpembed.int4_columns.<name>" = "H" that write_safetensors() records for every i4 tensor.
// The other standard dtypes (BOOL, U16, I16, U32, U64, F64, F8_E5M2) are validated and listed but
// cannot be read into a tensor (CheckpointError). Any other dtype makes the file invalid.
//
// Every problem with a file — missing, unreadable, truncated, malformed or hostile header, a tensor
// it lacks — is a CheckpointError whose message starts with the file's path.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tpembed/dtype.hpp"
#include "tpembed/error.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed {

/// Prefix of the metadata key that records the logical column count of an int4 tensor stored as U8.
inline constexpr const char* kInt4ColumnsKeyPrefix = "tpembed.int4_columns.";

/// The safetensors name of a tpembed dtype ("F32", "BF16", ...; i4 is stored as "U8").
const char* safetensors_dtype_name(DType dtype);

/// The tpembed dtype of a safetensors dtype name (U8 gives i4), or nullopt when tpembed has none.
std::optional<DType> dtype_from_safetensors(const std::string& name);

/// One tensor of a safetensors file, as its header describes it.
struct SafetensorsTensorInfo {
  std::string name;
  std::string stored_dtype;                ///< As in the header: "BF16", "U8", "F64", ...
  std::vector<std::int64_t> stored_shape;  ///< As in the header (U8: bytes in the last dim).
  std::int64_t begin = 0;                  ///< Byte range [begin, end) in the data buffer.
  std::int64_t end = 0;
  std::optional<std::int64_t> int4_columns;  ///< U8 only: the column count the metadata records.
};

/// A read-only safetensors file, memory-mapped. Views it returns point into the mapping and stay
/// valid while this object, a copy of it, or keep_alive() lives. The file must not be truncated or
/// rewritten in place while mapped (write_safetensors() replaces files atomically, which is safe):
/// every call that reads or hands out a view first checks that the file still has the size it had
/// when opened (CheckpointError otherwise), and copies are read with pread, which reports a short
/// file as an error; but a view handed out before the file was cut short faults (SIGBUS) when the
/// missing bytes are touched, which no check can prevent.
///
/// Memory: opening maps the file but reads only its header. tensor() and rows() fault in only the
/// pages the caller touches (the mapping is advised MADV_RANDOM so the kernel does not read ahead
/// into other ranks' bytes; a rows() range is advised MADV_WILLNEED). columns() reads each row's
/// slice with pread into the new tensor, so no page of the mapping enters the process's memory.
class SafetensorsFile {
 public:
  /// Opens, maps and validates `path`. Throws CheckpointError naming the file and the problem.
  explicit SafetensorsFile(const std::string& path);

  /// The path the file was opened with.
  const std::string& path() const;
  /// Names of the tensors, in the order of their bytes in the file.
  std::vector<std::string> names() const;
  /// True when the file holds a tensor called `name`.
  bool contains(const std::string& name) const;
  /// The header's description of `name`; CheckpointError (listing the tensors) when it is absent.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  /// The "__metadata__" entries (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const;
  /// Size of the file in bytes.
  std::int64_t file_size() const;

  /// The whole tensor, zero copy. A U8 tensor is read as i4 with `as_int4_columns` columns (or the
  /// count its metadata records; one of them is required, and they must agree); passing
  /// `as_int4_columns` for a tensor that is not U8 is an InvalidArgumentError. CheckpointError
  /// when the tensor's bytes are not aligned to its element size in memory (files written by
  /// tpembed or the reference implementation always are; copy_rows() copies instead).
  TensorView tensor(const std::string& name,
                    std::optional<std::int64_t> as_int4_columns = std::nullopt) const;

  /// Rows [first, first + count) of a tensor of one or more dimensions (i4: exactly two), zero
  /// copy: rows are contiguous in the file. The range must lie inside the tensor.
  TensorView rows(const std::string& name, std::int64_t first, std::int64_t count,
                  std::optional<std::int64_t> as_int4_columns = std::nullopt) const;

  /// Rows [first, first + count) copied into an owned tensor; rows past the end are zeros (the
  /// zero padding of equal vocab shards, as slice_rows()). Works for unaligned tensors too.
  Tensor copy_rows(const std::string& name, std::int64_t first, std::int64_t count,
                   std::optional<std::int64_t> as_int4_columns = std::nullopt) const;

  /// Columns [first, first + count) of every row of a 2-D tensor, copied into an owned [rows,
  /// count] tensor; only those bytes are read from the file (i4 nibbles are repacked so that the
  /// slice starts on a low nibble). The range must lie inside the tensor.
  Tensor columns(const std::string& name, std::int64_t first, std::int64_t count,
                 std::optional<std::int64_t> as_int4_columns = std::nullopt) const;

  /// A 64-bit fingerprint of tensor `name` as this file stores it: FNV-1a over its name, stored
  /// dtype, stored shape, int4 column count, byte range and the file's size. Copies of one file
  /// give the same value on every machine; files that differ in any of those give different values
  /// (barring a 64-bit collision). It is not a hash of the values: two files of the same layout and
  /// size whose numbers differ give the same fingerprint. Never 0. CheckpointError when absent.
  std::uint64_t fingerprint(const std::string& name) const;

  /// An owner of the mapping, for EmbeddingShard::owner: keeps views valid after this object dies.
  std::shared_ptr<const void> keep_alive() const;

 private:
  struct State;
  std::shared_ptr<const State> state_;
};

/// A checkpoint that may be split over several safetensors files. Open it with
/// - a directory: its model.safetensors.index.json when present, else its model.safetensors, else
///   its only *.safetensors file;
/// - an index file ({"weight_map": {tensor: file, ...}, ...}; files relative to its directory, and
///   inside it: an absolute path, a "..", or a symbolic link that resolves outside the directory is
///   refused);
/// - a single .safetensors file.
/// Files are opened (mapped, header parsed) the first time a tensor in them is asked for, so file()
/// is not safe to call from several threads at once; the SafetensorsFile it returns is.
class SafetensorsCheckpoint {
 public:
  /// Resolves `path` as above. Throws CheckpointError naming the path and the problem.
  explicit SafetensorsCheckpoint(const std::string& path);

  /// Every tensor name of the checkpoint, sorted.
  std::vector<std::string> names() const;
  /// True when the checkpoint maps `name` to a file.
  bool contains(const std::string& name) const;
  /// Path of the file that holds `name`; CheckpointError (listing the tensors) when it is absent.
  const std::string& file_path(const std::string& name) const;
  /// The opened file that holds `name` (opened on first use; CheckpointError when the file does
  /// not actually hold it).
  const SafetensorsFile& file(const std::string& name);
  /// The index's "metadata" entries whose values are strings or numbers; for a single file, its
  /// "__metadata__".
  const std::map<std::string, std::string>& metadata() const;

  /// The fingerprint of a table for EmbeddingConfig::table_fingerprint, so that ranks that opened
  /// different checkpoints are refused when a ParallelEmbedding is set up: the file fingerprint
  /// (SafetensorsFile::fingerprint) of `tensor`, combined with that of `scale_tensor` when it is
  /// not empty. Opens the files that hold them. Never 0. CheckpointError when either is absent.
  std::uint64_t table_fingerprint(const std::string& tensor, const std::string& scale_tensor = "");

 private:
  std::map<std::string, std::string> file_of_tensor_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> open_files_;
  std::string source_;
};

/// Checks that write_safetensors() may write `path`, before any work is done: `path` is either
/// absent, in a directory that exists (nothing is created), or a regular file that is writable
/// (by mode bits as well as access(2), so that root is refused a read-only file too) and is not
/// one of `inputs` (compared by device and inode, so another path to an input file is caught).
/// Symbolic links, directories, devices (/dev/null, /dev/full), FIFOs and sockets are refused:
/// replacing one by a regular file is never what was meant. Throws CheckpointError naming `path`
/// and the reason.
void check_safetensors_output(const std::string& path, const std::vector<std::string>& inputs = {});

/// Writes `tensors` (host memory) and `metadata` to a safetensors file at `path`, atomically: the
/// bytes go to a temporary file in the same directory that is renamed over `path` once complete.
/// `path` is first checked as check_safetensors_output() says; a file it replaces keeps its mode.
/// The header is padded with spaces to a multiple of 8 bytes and tensors are laid out by
/// decreasing element size, then by name (as the reference implementation does), so every tensor
/// is aligned in a mapped file. An i4 tensor [.., H] is written as U8 [.., ceil(H/2)] plus the
/// metadata entry "tpembed.int4_columns.<name>" = "H". Throws InvalidArgumentError for a bad
/// tensor or a metadata key that clashes with that entry, CheckpointError when writing fails.
void write_safetensors(const std::string& path, const std::map<std::string, TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace tpembed
