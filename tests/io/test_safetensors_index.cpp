// Sharded checkpoints: model.safetensors.index.json resolves tensor names to files; a directory,
// an index or a single file opens; malformed indexes give CheckpointErrors naming the index.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "expect_error.hpp"
#include "safetensors_files.hpp"
#include "tpembed/safetensors.hpp"

namespace tpembed::testing {
namespace {

void expect_checkpoint_error(const std::function<void()>& call, const std::string& needle) {
  expect_error<CheckpointError>(call, needle);
}

class ShardedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    write_safetensors(dir_.file("model-00001-of-00002.safetensors"),
                      {{"embed", TensorView(embed_, DType::f32, {3, 2})},
                       {"norm", TensorView(norm_, DType::f32, {2})}});
    write_safetensors(dir_.file("model-00002-of-00002.safetensors"),
                      {{"lm_head", TensorView(head_, DType::i8, {2, 2})}});
    write_index(R"({"metadata": {"total_size": 36, "format": "pt", "nested": {"x": 1}},
                    "weight_map": {"embed": "model-00001-of-00002.safetensors",
                                   "norm": "model-00001-of-00002.safetensors",
                                   "lm_head": "model-00002-of-00002.safetensors"}})");
  }
  void write_index(const std::string& json) {
    write_file(dir_.file("model.safetensors.index.json"), json);
  }

  ScratchDir dir_;
  const float embed_[6] = {1, 2, 3, 4, 5, 6};
  const float norm_[2] = {7, 8};
  const std::int8_t head_[4] = {-1, 2, -3, 4};
};

TEST_F(ShardedCheckpoint, ResolvesEveryTensorToItsFile) {
  for (const std::string& path : {dir_.path(), dir_.file("model.safetensors.index.json")}) {
    SCOPED_TRACE(path);
    SafetensorsCheckpoint checkpoint(path);
    EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"embed", "lm_head", "norm"}));
    EXPECT_TRUE(checkpoint.contains("lm_head"));
    EXPECT_FALSE(checkpoint.contains("nope"));
    EXPECT_EQ(checkpoint.file_path("lm_head"), dir_.file("model-00002-of-00002.safetensors"));
    EXPECT_EQ(checkpoint.file("embed").rows("embed", 1, 1).as<float>()[1], 4.0f);
    EXPECT_EQ(checkpoint.file("lm_head").tensor("lm_head").as<std::int8_t>()[2], -3);
    EXPECT_EQ(&checkpoint.file("norm"), &checkpoint.file("embed")) << "a file is opened once";
    EXPECT_EQ(checkpoint.metadata(),
              (std::map<std::string, std::string>{{"format", "pt"}, {"total_size", "36"}}));
    expect_checkpoint_error([&] { checkpoint.file_path("nope"); },
                 "model.safetensors.index.json: no tensor named 'nope'; the checkpoint holds 3 "
                 "tensors: 'embed', 'lm_head', 'norm'");
  }
}

TEST_F(ShardedCheckpoint, ATensorTheIndexPlacesInTheWrongFileIsNamed) {
  write_index(R"({"weight_map": {"embed": "model-00002-of-00002.safetensors"}})");
  SafetensorsCheckpoint checkpoint(dir_.path());
  expect_checkpoint_error(
      [&] { checkpoint.file("embed"); },
      "model-00002-of-00002.safetensors: the index " + dir_.file("model.safetensors.index.json") +
          " puts tensor 'embed' here, but no tensor named 'embed'; the file holds 1 tensor: "
          "'lm_head'");
}

TEST_F(ShardedCheckpoint, AMissingShardFileIsNamed) {
  write_index(R"({"weight_map": {"embed": "model-00009-of-00009.safetensors"}})");
  SafetensorsCheckpoint checkpoint(dir_.path());
  expect_checkpoint_error([&] { checkpoint.file("embed"); }, "model-00009-of-00009.safetensors: cannot open");
}

TEST_F(ShardedCheckpoint, MalformedIndexes) {
  const std::pair<const char*, const char*> cases[] = {
      {"{", "index is not valid JSON"},
      {"[]", "index is a JSON array, not an object"},
      {"{}", "index has no \"weight_map\" object"},
      {R"({"weight_map": []})", "index has no \"weight_map\" object"},
      {R"({"weight_map": {"embed": 3}})", "weight_map entry 'embed' is number 3, not a file name"},
      {R"({"weight_map": {"embed": "../x.safetensors"}})",
       "sends tensor 'embed' to '../x.safetensors', which is not a file inside"},
      {R"({"weight_map": {"embed": "/etc/passwd"}})", "which is not a file inside"},
      {R"({"weight_map": {"embed": ""}})", "which is not a file inside"},
      {R"({"weight_map": {"embed": "a", "embed": "b"}})", "index: duplicate tensor name 'embed'"},
  };
  for (const auto& [json, needle] : cases) {
    SCOPED_TRACE(json);
    write_index(json);
    expect_checkpoint_error([&] { SafetensorsCheckpoint checkpoint(dir_.path()); }, needle);
  }
}

TEST(CheckpointSources, SingleFilesAndDirectoriesWithoutAnIndex) {
  ScratchDir dir;
  const std::int32_t value = 42;
  write_safetensors(dir.file("weights.safetensors"), {{"w", TensorView(&value, DType::i32, {1})}},
                    {{"step", "10"}});
  // A directory with one .safetensors file; the file itself.
  for (const std::string& path : {dir.path(), dir.file("weights.safetensors")}) {
    SafetensorsCheckpoint checkpoint(path);
    EXPECT_EQ(checkpoint.names(), std::vector<std::string>{"w"});
    EXPECT_EQ(checkpoint.file("w").tensor("w").as<std::int32_t>()[0], 42);
    EXPECT_EQ(checkpoint.metadata().at("step"), "10");
  }
  // Two files and no index: ambiguous, unless one is model.safetensors.
  write_safetensors(dir.file("other.safetensors"), {{"x", TensorView(&value, DType::i32, {1})}});
  expect_checkpoint_error([&] { SafetensorsCheckpoint checkpoint(dir.path()); },
               "directory holds no model.safetensors.index.json, no model.safetensors and 2 "
               ".safetensors files to choose from");
  write_safetensors(dir.file("model.safetensors"), {{"m", TensorView(&value, DType::i32, {1})}});
  EXPECT_EQ(SafetensorsCheckpoint(dir.path()).names(), std::vector<std::string>{"m"});
  expect_checkpoint_error([&] { SafetensorsCheckpoint checkpoint(dir.file("absent")); },
               "absent: cannot open: no such file or directory");
  ScratchDir empty;
  expect_checkpoint_error([&] { SafetensorsCheckpoint checkpoint(empty.path()); },
               "no other .safetensors file");
}

}  // namespace
}  // namespace tpembed::testing
