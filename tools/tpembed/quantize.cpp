// PLACEHOLDER: `tpembed quantize` is being written.
#include "commands.hpp"

namespace tpembed::cli {
void add_quantize_command(CLI::App&, int&) {}
}  // namespace tpembed::cli
