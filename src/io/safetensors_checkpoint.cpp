// SafetensorsCheckpoint: one file, or several resolved through model.safetensors.index.json.
#include <algorithm>
#include <filesystem>

#include "io/checkpoint_error.hpp"
#include "io/fingerprint.hpp"
#include "io/mapped_file.hpp"
#include "io/safetensors_header.hpp"
#include "io/strict_json.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed {

namespace {

namespace fs = std::filesystem;

constexpr const char* kIndexName = "model.safetensors.index.json";
// An index holds a tensor -> file map and a little metadata; nothing deeper than that is needed,
// but writers nest metadata a little, so allow a few levels.
constexpr int kMaxIndexDepth = 8;

// The index's text. Opened as checkpoints are (MappedFile): a FIFO or a device is refused, not
// waited on.
std::string read_text_file(const std::string& path) {
  const io::MappedFile file(path);
  if (file.size() > io::kMaxHeaderBytes) {
    io::fail(path, "index is ", file.size(), " bytes, more than the ", io::kMaxHeaderBytes,
             "-byte limit");
  }
  std::string text(static_cast<std::size_t>(file.size()), '\0');
  if (file.size() > 0) file.read_at(text.data(), 0, file.size());
  return text;
}

// Where an index's file entry points; the entry must stay inside the index's directory.
std::string resolve_shard_path(const std::string& index, const std::string& tensor,
                               const std::string& file) {
  const fs::path relative(file);
  bool escapes = file.empty() || relative.is_absolute();
  for (const fs::path& part : relative) escapes = escapes || part == "..";
  const fs::path directory = fs::path(index).parent_path();
  const fs::path shard = directory / relative;
  // A symbolic link (the entry itself or a directory on its way) may lead out of the directory as
  // surely as "..": compare where both really are. An entry that does not resolve is left to the
  // open that fails later, naming it.
  std::string through_link;
  std::error_code error;
  const fs::path real_shard = fs::canonical(shard, error);
  if (!escapes && !error) {
    const fs::path real_directory =
        fs::canonical(directory.empty() ? fs::path(".") : directory, error);
    if (!error) {
      const auto [end, rest] = std::mismatch(real_directory.begin(), real_directory.end(),
                                             real_shard.begin(), real_shard.end());
      escapes = end != real_directory.end() || rest == real_shard.end();
      if (escapes)
        through_link =
            " (through a symbolic link, it is " + io::in_quotes(real_shard.string()) + ")";
    }
  }
  if (escapes) {
    io::fail(index, "weight_map sends tensor ", io::in_quotes(tensor), " to ", io::in_quotes(file),
             ", which is not a file inside the checkpoint's directory", through_link);
  }
  return shard.string();
}

}  // namespace

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) : source_(path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) io::fail(path, "cannot open: no such file or directory");
  std::string single = path, index;
  if (fs::is_directory(status)) {
    const fs::path directory(path);
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(directory, error)) {
      if (entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
    }
    if (fs::exists(directory / kIndexName)) {
      index = (directory / kIndexName).string();
    } else if (fs::exists(directory / "model.safetensors")) {
      single = (directory / "model.safetensors").string();
    } else if (files.size() == 1) {
      single = files[0];
    } else {
      io::fail(path, "directory holds no ", kIndexName, ", no model.safetensors and ",
               files.empty() ? "no other .safetensors file"
                             : std::to_string(files.size()) + " .safetensors files to choose from");
    }
  } else if (fs::path(path).extension() == ".json") {
    index = path;
  }
  if (index.empty()) {
    auto file = std::make_shared<SafetensorsFile>(single);
    for (const std::string& name : file->names()) file_of_tensor_.emplace(name, single);
    metadata_ = file->metadata();
    open_files_.emplace(single, std::move(file));
    source_ = single;
    return;
  }

  source_ = index;
  const nlohmann::json root =
      io::parse_strict_json(read_text_file(index), index, "index", kMaxIndexDepth, 2);
  if (!root.is_object()) io::fail(index, "index is a JSON ", root.type_name(), ", not an object");
  const auto weight_map = root.find("weight_map");
  if (weight_map == root.end() || !weight_map->is_object()) {
    io::fail(index, "index has no \"weight_map\" object mapping tensor names to files");
  }
  std::map<std::string, std::string> resolved;  // file entry -> path: a few files hold many tensors
  for (const auto& [tensor, file] : weight_map->items()) {
    if (!file.is_string()) {
      io::fail(index, "weight_map entry ", io::in_quotes(tensor), " is ", file.type_name(), " ",
               io::shown(file), ", not a file name");
    }
    const std::string& entry = file.get_ref<const std::string&>();
    auto known = resolved.find(entry);
    if (known == resolved.end()) {
      known = resolved.emplace(entry, resolve_shard_path(index, tensor, entry)).first;
    }
    file_of_tensor_.emplace(tensor, known->second);
  }
  const auto metadata = root.find("metadata");
  if (metadata != root.end() && metadata->is_object()) {
    for (const auto& [key, value] : metadata->items()) {
      if (value.is_string()) metadata_.emplace(key, value.get<std::string>());
      if (value.is_number()) metadata_.emplace(key, value.dump());
    }
  }
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> names;
  names.reserve(file_of_tensor_.size());
  for (const auto& entry : file_of_tensor_) names.push_back(entry.first);
  return names;
}

bool SafetensorsCheckpoint::contains(const std::string& name) const {
  return file_of_tensor_.count(name) != 0;
}

const std::string& SafetensorsCheckpoint::file_path(const std::string& name) const {
  const auto found = file_of_tensor_.find(name);
  if (found == file_of_tensor_.end()) {
    io::fail(source_, io::missing_tensor_message(name, names(), "checkpoint"));
  }
  return found->second;
}

const SafetensorsFile& SafetensorsCheckpoint::file(const std::string& name) {
  const std::string& path = file_path(name);
  auto opened = open_files_.find(path);
  if (opened == open_files_.end()) {
    opened = open_files_.emplace(path, std::make_shared<SafetensorsFile>(path)).first;
  }
  if (!opened->second->contains(name)) {
    io::fail(path, "the index ", source_, " puts tensor ", io::in_quotes(name), " here, but ",
             io::missing_tensor_message(name, opened->second->names(), "file"));
  }
  return *opened->second;
}

const std::map<std::string, std::string>& SafetensorsCheckpoint::metadata() const {
  return metadata_;
}

std::uint64_t SafetensorsCheckpoint::table_fingerprint(const std::string& tensor,
                                                       const std::string& scale_tensor) {
  io::Fnv1a hash;
  hash.add(file(tensor).fingerprint(tensor));
  if (!scale_tensor.empty()) hash.add(file(scale_tensor).fingerprint(scale_tensor));
  return hash.nonzero();
}

}  // namespace tpembed
