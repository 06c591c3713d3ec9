// Helpers shared by the tpembed subcommands: the world communicator, rank-aware printing, id lists,
// dtype and device options, and a progress line for long work.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "tpembed/safetensors.hpp"
#include "tpembed/tpembed.hpp"

namespace tpembed::cli {

/// The MPI world when this build has MPI (a single rank outside mpirun), else a single rank.
std::unique_ptr<Communicator> make_world();

/// True when a launcher (mpirun, mpiexec, srun) started this process as one rank of a job: its
/// environment says so (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK).
bool launched_as_rank();

/// Every rank's `text`, in rank order (each may have a different length). Collective.
std::vector<std::string> gather_text(Communicator& world, const std::string& text);

/// "rank 0: a; ranks 1,2: b": each rank's entry (texts[r] is rank r's), equal entries grouped.
std::string ranks_and_texts(const std::vector<std::string>& texts);
/// The same for some ranks only: (rank, text) pairs in rank order.
std::string ranks_and_texts(const std::vector<std::pair<int, std::string>>& entries);

/// Makes sure every rank of `world` holds the same `what` ("ids": the ids it looks up, "table": the
/// table it opened), compared by `fingerprint`: when any differs, every rank throws the same
/// InvalidArgumentError listing each rank's `description`. Costs one all-gather of 8 bytes a
/// rank when they agree. Collective.
void agree_on_value(Communicator& world, const std::string& what, std::uint64_t fingerprint,
                    const std::string& description);

/// FNV-1a of the ids (count first), for agree_on_value.
std::uint64_t ids_fingerprint(const std::vector<std::int64_t>& ids);

/// "3 ids: 1, 2, 3" (the first few only).
std::string describe_ids(const std::vector<std::int64_t>& ids);

/// CLI11 check for an integer option in [minimum, maximum], in words ("--tp: 'x' is not an
/// integer from 0 to 2147483647"); CLI11's own NonNegativeNumber prints the double range.
CLI::Validator integer_in(std::int64_t minimum, std::int64_t maximum);
/// integer_in(1, the largest int64): counts and sizes.
CLI::Validator positive_integer();
/// integer_in(0, the largest int64).
CLI::Validator non_negative_integer();

/// CLI11 check for an input file that must be a regular file (not a FIFO, which would block, a
/// device or a directory).
CLI::Validator existing_regular_file();

/// A host tensor of `dtype` and `shape`, for `what` (said in the message). Out of memory is a
/// BackendError that says how many bytes could not be allocated.
Tensor allocate(DType dtype, const std::vector<std::int64_t>& shape, const std::string& what);

/// Parses "1,2,3" (whitespace allowed, negative ids allowed: they are looked up as bad ids).
/// Throws InvalidArgumentError naming the bad token and its position.
std::vector<std::int64_t> parse_id_list(const std::string& text, const std::string& source = "--ids");

/// Reads ids from a text file: numbers separated by commas, spaces or newlines. Only a regular file
/// is read (a FIFO would block until someone writes to it): InvalidArgumentError otherwise.
std::vector<std::int64_t> read_id_file(const std::string& path);

/// A progress line on stderr, drawn only when stderr is a terminal and only on rank 0.
class Progress {
 public:
  Progress(std::string what, std::int64_t total, bool enabled);
  ~Progress();
  void step(const std::string& detail = "");
  /// Wipes the line if it is drawn, so that other output on the terminal starts on a clean line;
  /// the next step() draws it again.
  void clear();

 private:
  std::string what_;
  std::int64_t total_;
  std::int64_t done_ = 0;
  bool enabled_;
  bool drawn_ = false;
};

/// printf into a std::string.
std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));

/// Prints `line` and a newline on stdout, flushed.
void print_line(const std::string& line);

/// The same while `progress` may be drawn. Progress draws its line on stderr without a newline, and
/// a line printed on stdout meanwhile (the same terminal) would land at the end of it; so the
/// progress line is wiped first, and its next step() draws it again below.
void print_line(Progress& progress, const std::string& line);

/// Runs `step` (set-up that may fail on one rank alone: an allocation, a copy to the GPU) and makes
/// every rank of `comm` agree on the outcome (agree_or_throw): when any rank failed, every rank
/// throws, so none goes on into a collective that the failed one will never join. Returns what
/// `step` returned. Collective.
template <typename Step>
auto on_every_rank(Communicator& comm, Step step) -> decltype(step()) {
  std::exception_ptr failure;
  std::optional<decltype(step())> result;
  try {
    result.emplace(step());
  } catch (...) {
    failure = std::current_exception();
  }
  agree_or_throw(comm, failure);
  return std::move(*result);
}

/// A table drawn from N(0, 0.02) (an embedding layer at initialisation), as f32 [vocab, hidden].
Tensor generate_table(std::int64_t vocab, std::int64_t hidden, std::uint64_t seed);

/// A whole table of `dtype` made from an f32 table: rounded for float dtypes (no scale), quantised
/// per row with f32 scales for i8, fp8_e4m3 and i4.
QuantizedTable table_as(const Tensor& f32_table, DType dtype);

/// Rank `tp_rank`'s shard of a whole table and its scales (owned copies; hidden shards keep every
/// scale), laid out as `placement` says.
EmbeddingShard cut_shard(const TensorView& weight, const TensorView& scale, int sharding_dim, int tp_size,
                         int tp_rank, ShardPlacement placement);

/// Random ids over [0, vocab), then every shard boundary of `tp` packed and equal shards and three
/// out-of-range ids (-1, vocab, 2^40).
std::vector<std::int64_t> sample_ids(std::int64_t vocab, std::int64_t count, int tp, std::uint64_t seed);

/// Ids of `shape` (row-major `ids`) and their chunk `index` of `parts` along `dim`: the chunk's ids
/// in its own row-major order, and its shape (`shape` with shape[dim] the chunk's size). The chunks
/// are torch.tensor_split's, as TokenLayout documents them: shard_range(.., ShardPlacement::packed).
struct IdChunk {
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> shape;
  std::int64_t first = 0;  ///< The chunk's first index along `dim`.
};
IdChunk chunk_of(const std::vector<std::int64_t>& ids, const std::vector<std::int64_t>& shape, int dim, int parts,
                 int index);

/// How the CLI names the options that read_checkpoint_shard()'s messages ask for.
CheckpointOptionNames cli_option_names();

/// CLI11 validators/transformers for dtype names.
std::vector<std::string> table_dtype_names();
std::vector<std::string> output_dtype_names();

}  // namespace tpembed::cli
