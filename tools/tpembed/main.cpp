// tpembed: the command-line face of the library.
#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "tpembed: embedding lookup with tensor parallelism.\n"
      "Run a subcommand with --help for its options; under mpirun every rank runs the command.\n"
      "Under mpirun the ranks agree before they start: every rank must be given the same subcommand\n"
      "and options, except lookup's --table (each rank may name its own copy of the checkpoint),\n"
      "--ids/--ids-file (the ids must be the same) and --out/--show (rank 0's are used; with\n"
      "--output-layout scattered each rank writes its chunk to its own --out); a rank whose options,\n"
      "files or ids are wrong stops every rank, each printing that rank's message."};
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
