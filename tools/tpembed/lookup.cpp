// PLACEHOLDER: `tpembed lookup` is being written.
#include "commands.hpp"

namespace tpembed::cli {
void add_lookup_command(CLI::App&, int&) {}
}  // namespace tpembed::cli
