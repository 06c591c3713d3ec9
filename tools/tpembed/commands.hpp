// Subcommands of the tpembed command-line tool. Each registers itself on the app; when CLI11 picks
// it, its callback fills in the Launch (what to run, and on which options ranks may differ), which
// main() runs only once every rank of mpirun has agreed on its arguments (start_up.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <set>

#include "tpembed/communicator.hpp"

namespace tpembed::cli {

/// What the command line asked for.
struct Launch {
  /// The chosen subcommand over `world` (the ranks of mpirun; one rank outside it). Returns its
  /// exit status (0 when every check passed). Set by the subcommand's callback.
  std::function<int(Communicator& world)> run;
  /// Whether the subcommand runs collectives over the world (and so needs MPI set up even
  /// outside mpirun).
  bool collective = false;
  /// Options that ranks may give differently: each is agreed on in its own way by the command
  /// (a checkpoint by its fingerprint, ids by their values) or used by rank 0 alone. Every other
  /// option must be given the same way on every rank.
  std::set<const CLI::Option*> per_rank;
};

/// `demo`: the embedded end-to-end job (generate, quantise, shard, look up, verify).
void add_demo_command(CLI::App& app, Launch& launch);
/// `lookup`: ids looked up in a checkpoint's table, on cpu or cuda, over the ranks of mpirun.
void add_lookup_command(CLI::App& app, Launch& launch);
/// `quantize`: a float table to int8, fp8 or int4 with per-row scales, written as safetensors.
void add_quantize_command(CLI::App& app, Launch& launch);
/// `verify`: every path this machine supports against the reference, as a pass/fail table.
void add_verify_command(CLI::App& app, Launch& launch);
/// `bench`: the lookup's bandwidth against this machine's copy ceiling (cpu or cuda).
void add_bench_command(CLI::App& app, Launch& launch);
/// `bench-tp`: lookup + collective over the ranks of mpirun, for both vocab exchanges.
void add_bench_tp_command(CLI::App& app, Launch& launch);

/// Parses the command line and runs what it asks for, as every rank agrees (start_up.cpp): a
/// parse error, a --help or options that differ on any rank make every rank stop before the
/// command's first collective, with the failing rank's message. Returns the exit status.
int start_up(CLI::App& app, Launch& launch, int argc, char** argv);

}  // namespace tpembed::cli
