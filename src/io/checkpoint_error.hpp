// Building CheckpointError messages: "<file>: <problem>", with names quoted and long lists cut.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tpembed/error.hpp"

namespace tpembed::io {

/// Throws CheckpointError("<file>: " + the streamed parts).
template <typename... Args>
[[noreturn]] void fail(const std::string& file, const Args&... parts) {
  throw CheckpointError(file + ": " + detail::concat(parts...));
}

/// `text` with control bytes (NUL included) and backslashes written as \xNN and \\, so that a
/// message shows a name whole: a NUL would end the C string what() returns.
std::string escaped(const std::string& text);

/// `text` in single quotes, cut to a readable length (names in hostile files may be huge) and
/// escaped.
std::string in_quotes(const std::string& text);

/// "[2, 3]".
std::string shape_text(const std::vector<std::int64_t>& shape);

/// "no tensor named 'x'; the file holds 3 tensors: 'a', 'b', 'c'" (the list cut after a few).
std::string missing_tensor_message(const std::string& name, const std::vector<std::string>& names,
                                   const char* holder);

}  // namespace tpembed::io
