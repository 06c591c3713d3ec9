// The tools' common start-up: every rank parses its own command line, then the ranks agree on what
// they parsed before any command runs, so that a rank that cannot go on (a bad option, a missing
// file, a --help, options that differ from its peers') stops every rank with its message instead
// of leaving the others waiting in a collective it will never join.
//
// CLI11 runs checks (ranges, existing files) and the subcommand's callback while parsing, before
// anything else; so the world communicator is made after parsing, whatever its outcome, and the
// outcomes are exchanged over it. Outside a launcher (no mpirun) a single process keeps CLI11's
// usual behaviour and makes MPI only for the commands that use it.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"

namespace tpembed::cli {

namespace {

enum class Parsed { command, help, error };

struct Outcome {
  Parsed status = Parsed::command;
  int exit_code = 0;
  std::string message;               ///< Parsed::error: what went wrong.
  std::string settings;              ///< What ranks must share, as given.
  std::exception_ptr parse_failure;  ///< A CLI::ParseError (help included), for app.exit().
};

// The subcommand and the options every rank must give the same way, as given on the command line.
std::string shared_settings(CLI::App& app, const Launch& launch) {
  std::string text;
  for (const CLI::App* command : app.get_subcommands()) {
    text += command->get_name();
    for (const CLI::Option* option : command->get_options()) {
      if (option->count() == 0 || launch.per_rank.count(option) != 0) continue;
      text += " " + option->get_name();
      const std::vector<std::string>& values = option->results();
      for (std::size_t i = 0; i < values.size(); ++i) text += (i ? "," : "=") + values[i];
    }
  }
  return text;
}

std::string per_rank_names(const Launch& launch) {
  std::vector<std::string> names;
  for (const CLI::Option* option : launch.per_rank) names.push_back(option->get_name());
  std::sort(names.begin(), names.end());
  std::string text;
  for (std::size_t i = 0; i < names.size(); ++i) {
    text += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  }
  return text;
}

std::string describe(const Error& error) {
  return std::string("error (") + error_code_name(error.code()) + "): " + error.what();
}

Outcome parse(CLI::App& app, Launch& launch, int argc, char** argv) {
  Outcome outcome;
  try {
    app.parse(argc, argv);
    outcome.settings = shared_settings(app, launch);
  } catch (const CLI::CallForHelp&) {
    outcome = {Parsed::help, 0, "", "--help", std::current_exception()};
  } catch (const CLI::CallForAllHelp&) {
    outcome = {Parsed::help, 0, "", "--help-all", std::current_exception()};
  } catch (const CLI::ParseError& error) {
    outcome = {Parsed::error, error.get_exit_code(), std::string("error: ") + error.what(), "",
               std::current_exception()};
  } catch (const Error& error) {
    outcome = {Parsed::error, 1, describe(error), "", nullptr};
  } catch (const std::exception& error) {
    outcome = {Parsed::error, 1, std::string("error: ") + error.what(), "", nullptr};
  }
  return outcome;
}

void print_error(const std::string& who, const std::string& message) {
  std::fprintf(stderr, "tpembed: %s%s\n", who.c_str(), message.c_str());
  std::fflush(stderr);
}

// Runs the command; an error it throws is printed (by every rank that gets it) and exits 1.
int run(const Launch& launch, Communicator& world, const std::string& who) {
  try {
    return launch.run(world);
  } catch (const Error& error) {
    print_error(who, describe(error));
  } catch (const std::exception& error) {
    print_error(who, std::string("error: ") + error.what());
  }
  return 1;
}

// One process outside a launcher: CLI11's own messages and exit codes.
int start_alone(CLI::App& app, const Launch& launch, Outcome& outcome) {
  if (outcome.parse_failure) {
    try {
      std::rethrow_exception(outcome.parse_failure);
    } catch (const CLI::ParseError& error) {
      return app.exit(error);
    }
  }
  if (outcome.status == Parsed::error) {
    print_error("", outcome.message);
    return outcome.exit_code;
  }
  std::unique_ptr<Communicator> world;
  try {
    world = launch.collective ? make_world() : make_single_communicator();
  } catch (const Error& error) {
    print_error("", describe(error));
    return 1;
  }
  return run(launch, *world, "");
}

}  // namespace

int start_up(CLI::App& app, Launch& launch, int argc, char** argv) {
  Outcome outcome = parse(app, launch, argc, argv);
  if (!launched_as_rank() || !mpi_available()) return start_alone(app, launch, outcome);

  std::unique_ptr<Communicator> world;
  try {
    world = make_world();
  } catch (const Error& error) {
    print_error("", describe(error));
    return 1;
  }
  if (world->size() == 1) {
    if (outcome.status != Parsed::command) return start_alone(app, launch, outcome);
    return run(launch, *world, "");
  }
  const int rank = world->rank();
  const std::string who = "rank " + std::to_string(rank) + ": ";

  // What every rank parsed: its status and exit code, its error, and the settings it was given.
  std::vector<std::string> statuses, messages, settings;
  try {
    statuses = gather_text(*world, std::to_string(static_cast<int>(outcome.status)) + " " +
                                       std::to_string(outcome.exit_code));
    messages = gather_text(*world, outcome.message);
    settings = gather_text(*world, outcome.settings);
  } catch (const Error& error) {
    print_error(who, describe(error));
    return 1;
  }
  std::vector<std::pair<int, std::string>> failures;
  int exit_code = 0;
  for (int r = 0; r < world->size(); ++r) {
    int status = 0, code = 0;
    std::sscanf(statuses[static_cast<std::size_t>(r)].c_str(), "%d %d", &status, &code);
    if (status != static_cast<int>(Parsed::error)) continue;
    if (failures.empty()) exit_code = code;  // the lowest failing rank's
    failures.emplace_back(r, messages[static_cast<std::size_t>(r)]);
  }
  if (!failures.empty()) {
    print_error(who, "stopped before the command started: " + ranks_and_texts(failures));
    return exit_code;
  }
  if (std::any_of(settings.begin(), settings.end(),
                  [&](const std::string& s) { return s != settings[0]; })) {
    const std::string per_rank = per_rank_names(launch);
    print_error(who,
                "error (invalid_argument): the ranks were started with different options: " +
                    ranks_and_texts(settings) +
                    ". Every rank must be given the same subcommand and options" +
                    (per_rank.empty()
                         ? ""
                         : " (" + per_rank + " may differ: they are checked in their own way)"));
    return 1;
  }
  if (outcome.status == Parsed::help) {
    // Every rank asked for help: rank 0 prints it once.
    if (rank != 0) return 0;
    try {
      std::rethrow_exception(outcome.parse_failure);
    } catch (const CLI::ParseError& error) {
      return app.exit(error);
    }
  }
  return run(launch, *world, who);
}

}  // namespace tpembed::cli
