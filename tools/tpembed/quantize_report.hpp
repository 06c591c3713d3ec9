// Quantising one checkpoint tensor, shared by `tpembed quantize` and `tpembed demo`.
#pragma once

#include <cstdint>
#include <string>

#include "tpembed/dtype.hpp"

namespace tpembed::cli {

/// What quantising a table cost in accuracy.
struct QuantizeReport {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  double max_relative_error = 0;  ///< max over elements of |x - dequantised| / max|row|
  double rms_relative_error = 0;  ///< ||x - dequantised|| / ||x|| over the whole table
};

/// Quantises `tensor` of the checkpoint at `table_path` to `target` with per-row scales of
/// `scale_dtype`, writes the weight (same name) and the scales (`scale_name`) to `out_path`, and
/// measures the error by looking every row up again.
QuantizeReport quantize_checkpoint_tensor(const std::string& table_path, const std::string& tensor, DType target,
                                          DType scale_dtype, const std::string& out_path,
                                          const std::string& scale_name, bool show_progress);

}  // namespace tpembed::cli
