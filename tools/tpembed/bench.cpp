// PLACEHOLDER: `tpembed bench` is being written.
#include "commands.hpp"

namespace tpembed::cli {
void add_bench_command(CLI::App&, int&) {}
}  // namespace tpembed::cli
