// tpembed: the command-line face of the library.
#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "tpembed: embedding lookup with tensor parallelism.\n"
      "Run a subcommand with --help for its options; under mpirun every rank runs the command."};
  app.require_subcommand(1);
  tpembed::cli::Launch launch;
  tpembed::cli::add_demo_command(app, launch);
  tpembed::cli::add_lookup_command(app, launch);
  tpembed::cli::add_quantize_command(app, launch);
  tpembed::cli::add_verify_command(app, launch);
  tpembed::cli::add_bench_command(app, launch);
  tpembed::cli::add_bench_tp_command(app, launch);
  return tpembed::cli::start_up(app, launch, argc, argv);
}
