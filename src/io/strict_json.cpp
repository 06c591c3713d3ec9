#include "io/strict_json.hpp"

#include <set>
#include <vector>

#include "io/checkpoint_error.hpp"

namespace tpembed::io {

namespace {
// Thrown by the parse callback to stop at the first structural problem.
struct StructureProblem {
  std::string what;
};
}  // namespace

nlohmann::json parse_strict_json(std::string_view text, const std::string& file,
                                 const char* document, int max_depth, int name_depth) {
  using nlohmann::json;
  std::vector<std::set<std::string>> keys_of_open_objects;
  // Runs on every parse event, so hostile input is stopped before it builds a deep or huge tree.
  const auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > max_depth) {
      throw StructureProblem{"JSON nested deeper than " + std::to_string(max_depth) + " levels"};
    }
    if (event == json::parse_event_t::object_start) keys_of_open_objects.emplace_back();
    if (event == json::parse_event_t::object_end) keys_of_open_objects.pop_back();
    if (event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys_of_open_objects.back().insert(key).second) {
        throw StructureProblem{(depth == name_depth ? "duplicate tensor name " : "duplicate key ") +
                               in_quotes(key)};
      }
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const StructureProblem& problem) {
    fail(file, document, ": ", problem.what);
  } catch (const json::exception& error) {
    fail(file, document, " is not valid JSON: ", error.what());
  }
}

std::string shown(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 60) + "...";
  return text;
}

}  // namespace tpembed::io
