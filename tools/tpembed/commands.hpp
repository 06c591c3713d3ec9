// Subcommands of the tpembed command-line tool.
#pragma once

#include <CLI/CLI.hpp>

namespace tpembed::cli {

/// Registers `demo`: the embedded end-to-end job (generate, quantise, shard, look up, verify).
/// `exit_code` receives the command's status (0 when every check passed).
void add_demo_command(CLI::App& app, int& exit_code);

}  // namespace tpembed::cli
