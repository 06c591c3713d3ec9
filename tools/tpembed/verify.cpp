// PLACEHOLDER: `tpembed verify` is being written.
#include "commands.hpp"

namespace tpembed::cli {
void add_verify_command(CLI::App&, int&) {}
}  // namespace tpembed::cli
