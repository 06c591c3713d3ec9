#include <cstring>

#include "device_tables.hpp"
#include "gradient_reference.hpp"

namespace tpembed::testing {

namespace {

constexpr std::uint8_t kPoison = 0xcd;

// A host tensor `offset` bytes into its own buffer (a misaligned view when offset is odd).
struct HostCopy {
  std::vector<std::uint8_t> buffer;
  TensorView view;
};

HostCopy host_copy(const std::vector<std::uint8_t>& bytes, DType dtype, std::vector<std::int64_t> shape,
                   std::size_t offset) {
  HostCopy copy;
  copy.buffer.assign(bytes.size() + offset + 1, 0);
  if (!bytes.empty()) std::memcpy(copy.buffer.data() + offset, bytes.data(), bytes.size());
  copy.view = TensorView(copy.buffer.data() + offset, dtype, std::move(shape));
  return copy;
}

}  // namespace

TensorView ids_view(const GradientProblem& problem, std::vector<std::uint8_t>& storage) {
  storage = encode_ids(problem.ids, problem.id_dtype);
  return TensorView(storage.data(), problem.id_dtype, {static_cast<std::int64_t>(problem.ids.size())});
}

GradientResult run_backward(const GradientProblem& p, const BackwardRun& run) {
  const std::int64_t n = static_cast<std::int64_t>(p.ids.size());
  const std::vector<std::uint8_t> ids = encode_ids(p.ids, p.id_dtype);
  std::vector<std::uint8_t> grad = p.initial.bytes, pad = p.initial_padding.bytes;
  if (!p.accumulate) {
    std::fill(grad.begin(), grad.end(), kPoison);
    std::fill(pad.begin(), pad.end(), kPoison);
  }
  const std::vector<std::int64_t> ids_shape{n}, out_shape{n, p.grad_out.cols}, grad_shape{p.rows, p.cols},
      pad_shape{p.padding_rows, p.cols};
  GradientOptions options = p.options();
  GradientResult result;
  result.grad = HostTable(p.grad_dtype, p.rows, p.cols);
  result.grad_padding = HostTable(p.grad_dtype, p.padding_rows, p.cols);
  // Each tensor `element_offset` of its own elements into its buffer (off 16-byte alignment).
  auto at = [&](DType dtype) { return run.element_offset * static_cast<std::size_t>(row_bytes(dtype, 1)); };
  if (!run.on_gpu) {
    HostCopy i = host_copy(ids, p.id_dtype, ids_shape, at(p.id_dtype)),
             g = host_copy(p.grad_out.bytes, p.grad_out.dtype, out_shape, at(p.grad_out.dtype)),
             w = host_copy(grad, p.grad_dtype, grad_shape, at(p.grad_dtype)),
             pd = host_copy(pad, p.grad_dtype, pad_shape, at(p.grad_dtype));
    std::optional<HostCopy> scale, padding_scale;
    if (p.scale) options.per_token_scale = (scale = host_copy(p.scale->bytes, p.scale->dtype, {p.rows}, at(p.scale->dtype)))->view;
    if (p.padding_scale) {
      options.padding_scale =
          (padding_scale = host_copy(p.padding_scale->bytes, p.padding_scale->dtype, {p.padding_rows}, at(p.padding_scale->dtype)))->view;
    }
    if (p.padding_rows > 0) options.grad_padding = pd.view;
    unsigned long long counts[4] = {~0ull, ~0ull, ~0ull, ~0ull};
    options.counts = counts;
    embedding_backward(i.view, g.view, w.view, options);
    if (!grad.empty()) std::memcpy(result.grad.bytes.data(), w.view.data, grad.size());
    if (!pad.empty()) std::memcpy(result.grad_padding.bytes.data(), pd.view.data, pad.size());
    result.counts = {counts[0], counts[1], counts[2], counts[3]};
    return result;
  }
  const DeviceCopy i = upload_bytes(ids, p.id_dtype, ids_shape, at(p.id_dtype)), g = upload(p.grad_out, at(p.grad_out.dtype)),
                   w = upload_bytes(grad, p.grad_dtype, grad_shape, at(p.grad_dtype)),
                   pd = upload_bytes(pad, p.grad_dtype, pad_shape, at(p.grad_dtype));
  std::optional<DeviceCopy> scale, padding_scale;
  if (p.scale) options.per_token_scale = (scale = upload(*p.scale, at(p.scale->dtype)))->view;
  if (p.padding_scale) options.padding_scale = (padding_scale = upload(*p.padding_scale, at(p.padding_scale->dtype)))->view;
  if (p.padding_rows > 0) options.grad_padding = pd.view;
  DeviceBuffer counts(4 * sizeof(unsigned long long), test_device());
  cuda_fill(counts.data(), 0xff, 4 * sizeof(unsigned long long));
  options.counts = static_cast<unsigned long long*>(counts.data());
  std::optional<DeviceBuffer> workspace;
  if (run.give_workspace) {
    const std::size_t bytes = gradient_workspace_bytes(Device::cuda(test_device()), n, p.rows, p.padding_rows, p.cols);
    workspace.emplace(bytes, test_device());
    cuda_fill(workspace->data(), 0xab, bytes);  // stale scratch must not matter
    options.workspace = workspace->data();
    options.workspace_bytes = bytes;
  }
  embedding_backward(i.view, g.view, w.view, options);
  cuda_synchronize();
  result.grad.bytes = download(w.view.data, grad.size());
  result.grad_padding.bytes = download(pd.view.data, pad.size());
  const std::vector<std::uint8_t> words = download(counts.data(), 4 * sizeof(unsigned long long));
  unsigned long long c[4];
  std::memcpy(c, words.data(), sizeof c);
  result.counts = {c[0], c[1], c[2], c[3]};
  return result;
}

}  // namespace tpembed::testing
