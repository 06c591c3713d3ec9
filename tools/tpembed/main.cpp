// tpembed: the command-line face of the library.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "commands.hpp"
#include "tpembed/error.hpp"

namespace {

// "rank 2: " under mpirun (the launcher tells each process its rank), "" otherwise.
std::string rank_prefix() {
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (rank == nullptr) rank = std::getenv("PMI_RANK");
  return rank == nullptr ? std::string() : "rank " + std::string(rank) + ": ";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tpembed: embedding lookup with tensor parallelism.\n"
      "Run a subcommand with --help for its options; under mpirun every rank runs the command."};
  app.require_subcommand(1);
  int exit_code = 0;
  tpembed::cli::add_demo_command(app, exit_code);
  tpembed::cli::add_lookup_command(app, exit_code);
  tpembed::cli::add_quantize_command(app, exit_code);
  tpembed::cli::add_verify_command(app, exit_code);
  tpembed::cli::add_bench_command(app, exit_code);
  tpembed::cli::add_bench_tp_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const tpembed::Error& error) {
    std::fprintf(stderr, "tpembed: %serror (%s): %s\n", rank_prefix().c_str(), tpembed::error_code_name(error.code()),
                 error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tpembed: %serror: %s\n", rank_prefix().c_str(), error.what());
    return 1;
  }
  return exit_code;
}
