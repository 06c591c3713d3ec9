// JSON parsing for files that may be hostile: bounded nesting, no silently dropped duplicate keys.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tpembed::io {

/// Parses `text`, the `document` ("header", "index") of `file` (both for messages). Throws
/// CheckpointError when it is not JSON, nests deeper than `max_depth` (the top value is at depth
/// 0), or repeats a key in one object; a key repeated at `name_depth` is reported as a duplicate
/// tensor name.
nlohmann::json parse_strict_json(std::string_view text, const std::string& file,
                                 const char* document, int max_depth, int name_depth);

/// A JSON value for a message: compact, and cut short.
std::string shown(const nlohmann::json& value);

}  // namespace tpembed::io
