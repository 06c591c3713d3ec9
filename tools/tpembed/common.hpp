// Helpers shared by the tpembed subcommands: the world communicator, rank-aware printing, id lists,
// dtype and device options, and a progress line for long work.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tpembed/tpembed.hpp"

namespace tpembed::cli {

/// The MPI world when this build has MPI (a single rank outside mpirun), else a single rank.
std::unique_ptr<Communicator> make_world();

/// Parses "1,2,3" (whitespace allowed, negative ids allowed: they are looked up as bad ids).
/// Throws InvalidArgumentError naming the bad token and its position.
std::vector<std::int64_t> parse_id_list(const std::string& text, const std::string& source = "--ids");

/// Reads ids from a text file: numbers separated by commas, spaces or newlines.
std::vector<std::int64_t> read_id_file(const std::string& path);

/// A progress line on stderr, drawn only when stderr is a terminal and only on rank 0.
class Progress {
 public:
  Progress(std::string what, std::int64_t total, bool enabled);
  ~Progress();
  void step(const std::string& detail = "");

 private:
  std::string what_;
  std::int64_t total_;
  std::int64_t done_ = 0;
  bool enabled_;
};

/// CLI11 validators/transformers for dtype names.
std::vector<std::string> table_dtype_names();
std::vector<std::string> output_dtype_names();

}  // namespace tpembed::cli
