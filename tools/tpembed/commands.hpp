// Subcommands of the tpembed command-line tool. Each registers itself on the app; its callback
// stores the command's exit status (0 when every check passed) in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace tpembed::cli {

/// `demo`: the embedded end-to-end job (generate, quantise, shard, look up, verify).
void add_demo_command(CLI::App& app, int& exit_code);
/// `lookup`: ids looked up in a checkpoint's table, on cpu or cuda, over the ranks of mpirun.
void add_lookup_command(CLI::App& app, int& exit_code);
/// `quantize`: a float table to int8, fp8 or int4 with per-row scales, written as safetensors.
void add_quantize_command(CLI::App& app, int& exit_code);
/// `verify`: every path this machine supports against the reference, as a pass/fail table.
void add_verify_command(CLI::App& app, int& exit_code);
/// `bench`: the lookup's bandwidth against this machine's copy ceiling (cpu or cuda).
void add_bench_command(CLI::App& app, int& exit_code);
/// `bench-tp`: lookup + collective over the ranks of mpirun, for both vocab exchanges.
void add_bench_tp_command(CLI::App& app, int& exit_code);

}  // namespace tpembed::cli
