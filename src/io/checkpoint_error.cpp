#include "io/checkpoint_error.hpp"

#include <sstream>

namespace tpembed::io {

namespace {
constexpr std::size_t kMaxQuotedChars = 120;
constexpr std::size_t kMaxListedNames = 20;
}  // namespace

std::string escaped(const std::string& text) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f && c != '\\') {
      out.push_back(c);
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out += "\\x";
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    }
  }
  return out;
}

std::string in_quotes(const std::string& text) {
  if (text.size() <= kMaxQuotedChars) return "'" + escaped(text) + "'";
  return "'" + escaped(text.substr(0, kMaxQuotedChars)) + "...' (" + std::to_string(text.size()) +
         " bytes)";
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t d = 0; d < shape.size(); ++d) text += (d ? ", " : "") + std::to_string(shape[d]);
  return text + "]";
}

std::string missing_tensor_message(const std::string& name, const std::vector<std::string>& names,
                                   const char* holder) {
  std::ostringstream text;
  text << "no tensor named " << in_quotes(name) << "; the " << holder << " holds " << names.size()
       << (names.size() == 1 ? " tensor" : " tensors");
  for (std::size_t i = 0; i < names.size() && i < kMaxListedNames; ++i) {
    text << (i == 0 ? ": " : ", ") << in_quotes(names[i]);
  }
  if (names.size() > kMaxListedNames)
    text << ", ... and " << names.size() - kMaxListedNames << " more";
  return text.str();
}

}  // namespace tpembed::io
