// `tpembed bench`'s output: printed lines kept clear of the progress line, number formatting, and
// the --json file.
#pragma once

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common.hpp"

namespace tpembed::cli::bench {

/// printf into a std::string.
std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));

/// Prints `line` and a newline on stdout, flushed.
void print_line(const std::string& line);

/// The same while `progress` may be drawn. Progress draws its line on stderr without a newline, and
/// a line printed on stdout meanwhile (the same terminal) would land at the end of it; so the
/// progress line is wiped first, and its next step() draws it again below.
void print_line(Progress& progress, const std::string& line);

/// 1234567 as "1,234,567".
std::string with_commas(std::int64_t value);

/// Now, as "2025-01-31 12:00:00 UTC".
std::string utc_date();

/// What --json writes: the run's header and one object per printed row, keys in the order added
/// (non-finite numbers become null).
struct Report {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
};

/// Writes {"header": ..., "rows": [...]} to `file`, opened on `path`, indented as
/// bench/bench_cuda_lookup.py writes its file. Throws InvalidArgumentError when writing fails.
void write_json(std::ofstream& file, const std::string& path, const Report& report);

}  // namespace tpembed::cli::bench
