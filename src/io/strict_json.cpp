#include "io/strict_json.hpp"

#include <vector>

#include "io/checkpoint_error.hpp"

namespace tpembed::io {

namespace {

using nlohmann::json;

// Builds the document from SAX events, refusing too deep nesting and repeated keys as it goes, so
// hostile input is stopped before it builds a deep or huge tree. nlohmann's callback parser would
// do the same checks, but it rescans an object's members each time a member object closes, which
// makes a header of n tensors take O(n^2) (40,000 tensors: over a minute); this stays O(n log n).
class StrictBuilder {
 public:
  StrictBuilder(int max_depth, int name_depth) : max_depth_(max_depth), name_depth_(name_depth) {}

  bool null() { return add(json(nullptr)); }
  bool boolean(bool value) { return add(json(value)); }
  bool number_integer(json::number_integer_t value) { return add(json(value)); }
  bool number_unsigned(json::number_unsigned_t value) { return add(json(value)); }
  bool number_float(json::number_float_t value, const json::string_t&) { return add(json(value)); }
  bool string(json::string_t& value) { return add(json(std::move(value))); }
  bool binary(json::binary_t& value) { return add(json::binary(std::move(value))); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& name) {
    // The enclosing object is open_.back(); its keys sit at the depth of the open containers.
    if (open_.back()->contains(name)) {
      problem =
          (depth() == name_depth_ ? "duplicate tensor name " : "duplicate key ") + in_quotes(name);
      return false;
    }
    key_ = std::move(name);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& error) {
    syntax_error = error.what();
    return false;
  }

  json root;
  std::string problem;       ///< A structural problem (depth, duplicate key), if one stopped us.
  std::string syntax_error;  ///< The parser's message, if the text is not JSON.

 private:
  int depth() const { return static_cast<int>(open_.size()); }

  // Places `value` in the open container (or as the root); returns where it now lives.
  json* place(json&& value) {
    if (open_.empty()) {
      root = std::move(value);
      return &root;
    }
    json& parent = *open_.back();
    if (parent.is_object()) return &(parent[key_] = std::move(value));
    parent.push_back(std::move(value));
    // A pointer into the array stays valid: nothing is appended to it until this child closes.
    return &parent.back();
  }

  bool too_deep() {
    if (depth() <= max_depth_) return false;
    problem = "JSON nested deeper than " + std::to_string(max_depth_) + " levels";
    return true;
  }

  bool add(json&& value) {
    if (too_deep()) return false;
    place(std::move(value));
    return true;
  }

  bool open(json&& container) {
    if (too_deep()) return false;
    open_.push_back(place(std::move(container)));
    return true;
  }

  bool close() {
    open_.pop_back();
    return true;
  }

  int max_depth_, name_depth_;
  std::vector<json*> open_;
  std::string key_;
};

}  // namespace

nlohmann::json parse_strict_json(std::string_view text, const std::string& file,
                                 const char* document, int max_depth, int name_depth) {
  StrictBuilder builder(max_depth, name_depth);
  const bool parsed = json::sax_parse(text.begin(), text.end(), &builder);
  if (!builder.problem.empty()) fail(file, document, ": ", builder.problem);
  if (!parsed) fail(file, document, " is not valid JSON: ", builder.syntax_error);
  return std::move(builder.root);
}

std::string shown(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 60) + "...";
  return text;
}

}  // namespace tpembed::io
