// `tpembed bench`'s output: medians, number formatting, and the --json file.
#pragma once

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common.hpp"

namespace tpembed::cli::bench {

/// The middle of `values` (the mean of the two middle ones for an even count).
double median(std::vector<double> values);

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
