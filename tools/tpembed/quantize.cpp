// `tpembed quantize`: a float table from a checkpoint to int8, fp8 e4m3 or int4 with per-row absmax
// scales, written as safetensors (weight and scale), with the error against the original.
#include <cmath>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "quantize_report.hpp"

namespace tpembed::cli {

namespace {

struct QuantizeOptions {
  std::string table;
  std::string tensor = "model.embed_tokens.weight";
  std::string to = "i8";
  std::string scale_dtype = "f32";
  std::string out;
  std::string scale_name;
};

}  // namespace

QuantizeReport quantize_checkpoint_tensor(const std::string& table_path, const std::string& tensor, DType target,
                                          DType scale_dtype, const std::string& out_path,
                                          const std::string& scale_name, bool show_progress) {
  TPEMBED_EXPECTS(!scale_name.empty() && scale_name != tensor, InvalidArgumentError, "--scale-name '", scale_name,
                  "' must name a tensor other than the table '", tensor, "' (the file holds both)");
  SafetensorsCheckpoint checkpoint(table_path);
  const SafetensorsFile& file = checkpoint.file(tensor);
  // Refused from the header, before reading: a U8 (int4) table would otherwise ask for its column
  // count, which quantize has no option for.
  const SafetensorsTensorInfo& info = file.info(tensor);
  const std::optional<DType> stored = dtype_from_safetensors(info.stored_dtype);
  TPEMBED_EXPECTS(stored && is_float(*stored) && info.stored_shape.size() == 2, InvalidArgumentError, file.path(),
                  ": tensor '", tensor, "' is stored as ", info.stored_dtype, detail::bracketed(info.stored_shape),
                  "; quantize takes a 2-D f32, f16 or bf16 table");
  const TensorView table = file.tensor(tensor);
  check_safetensors_output(out_path, {file.path()});  // before the work, not after it
  QuantizedTable quantized;
  try {
    quantized = quantize_rows(table, target, scale_dtype);
  } catch (const InvalidArgumentError& error) {  // names a row: say in which file
    throw InvalidArgumentError(file.path() + ": tensor '" + tensor + "': " + error.what());
  }

  // Error against the original, row block by row block (the dequantised rows come from the lookup).
  QuantizeReport report;
  report.rows = table.shape[0];
  report.cols = table.shape[1];
  const std::int64_t block = 4096;
  Progress progress("measuring the error", (report.rows + block - 1) / block, show_progress);
  double error_squares = 0, value_squares = 0;
  std::vector<std::int64_t> ids;
  for (std::int64_t first = 0; first < report.rows; first += block) {
    const std::int64_t count = std::min(block, report.rows - first);
    ids.resize(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i) ids[static_cast<std::size_t>(i)] = first + i;
    EmbeddingOptions options;
    options.per_token_scale = quantized.scale.view();
    options.out_dtype = DType::f32;
    const Tensor restored =
        embedding(TensorView(ids.data(), DType::i64, {count}), quantized.weight.view(), options);
    EmbeddingOptions exact;
    exact.out_dtype = DType::f32;
    const Tensor original = embedding(TensorView(ids.data(), DType::i64, {count}), table, exact);
    for (std::int64_t r = 0; r < count; ++r) {
      const float* x = original.data_as<float>() + r * report.cols;
      const float* y = restored.data_as<float>() + r * report.cols;
      double absmax = 0;
      for (std::int64_t c = 0; c < report.cols; ++c) absmax = std::max(absmax, std::fabs(double{x[c]}));
      for (std::int64_t c = 0; c < report.cols; ++c) {
        const double difference = double{y[c]} - double{x[c]};
        error_squares += difference * difference;
        value_squares += double{x[c]} * double{x[c]};
        if (absmax > 0) report.max_relative_error = std::max(report.max_relative_error, std::fabs(difference) / absmax);
      }
    }
    progress.step(std::to_string(first + count) + " rows");
  }
  report.rms_relative_error = value_squares > 0 ? std::sqrt(error_squares / value_squares) : 0.0;

  std::map<std::string, std::string> metadata = file.metadata();
  metadata.erase(std::string(kInt4ColumnsKeyPrefix) + tensor);
  metadata["tpembed.quantized_from"] = file.path() + ":" + tensor;
  metadata["tpembed.quantization"] = std::string("per-row absmax, ") + dtype_name(target) + ", " +
                                     dtype_name(scale_dtype) + " scales";
  write_safetensors(out_path, {{tensor, quantized.weight.view()}, {scale_name, quantized.scale.view()}}, metadata);
  return report;
}

void add_quantize_command(CLI::App& app, Launch& launch) {
  auto options = std::make_shared<QuantizeOptions>();
  CLI::App* command = app.add_subcommand(
      "quantize",
      "Quantise a float table (f32, f16 or bf16) of a safetensors checkpoint to int8, fp8 e4m3 or int4\n"
      "with one absmax scale per row (scale = max|row| / 127, 448 or 7; code = x / scale rounded to\n"
      "nearest even), and write the weight (same tensor name) and its scales (<tensor>_scale) to a new\n"
      "safetensors file. Reports the largest error relative to its row's absmax and the RMS error\n"
      "relative to the table's norm, measured by looking every row up again.\n"
      "Example: tpembed quantize --table model.safetensors --tensor model.embed_tokens.weight --to i4 \\\n"
      "           --out embed_i4.safetensors");
  command->add_option("--table", options->table, "checkpoint: a .safetensors file, an index.json or a directory")
      ->required()->check(CLI::ExistingPath);
  command->add_option("--tensor", options->tensor, "the table's tensor name")->capture_default_str();
  command->add_option("--to", options->to, "target dtype")
      ->check(CLI::IsMember({"i8", "fp8_e4m3", "i4"}))->capture_default_str();
  command->add_option("--scale-dtype", options->scale_dtype, "dtype of the row scales")
      ->check(CLI::IsMember(output_dtype_names()))->capture_default_str();
  command->add_option("--scale-name", options->scale_name, "tensor name of the scales (default <tensor>_scale)");
  command->add_option("--out", options->out, "the safetensors file to write")->required();
  command->callback([options, &launch] {
    launch.run = [options](Communicator&) {
      const std::string scale_name = options->scale_name.empty() ? default_scale_tensor(options->tensor)
                                                                 : options->scale_name;
      const QuantizeReport report =
          quantize_checkpoint_tensor(options->table, options->tensor, dtype_from_name(options->to),
                                     dtype_from_name(options->scale_dtype), options->out, scale_name, true);
      std::printf("quantised %s [%lld, %lld] to %s with %s per-row scales -> %s (tensors '%s', '%s')\n",
                  options->tensor.c_str(), static_cast<long long>(report.rows), static_cast<long long>(report.cols),
                  options->to.c_str(), options->scale_dtype.c_str(), options->out.c_str(), options->tensor.c_str(),
                  scale_name.c_str());
      std::printf("error: max |x - q| / row absmax = %.3e, RMS ||x - q|| / ||x|| = %.3e\n",
                  report.max_relative_error, report.rms_relative_error);
      return 0;
    };
  });
}

}  // namespace tpembed::cli
