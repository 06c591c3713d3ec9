// The CPU lookup backend: the masked, dequantising gather of lookup.hpp on the host.
// Dtypes are dispatched once per call; the inner loop is one template instance per
// (id type x table dtype x output dtype). A same-dtype float table without scales is a row copy.
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "cpu/elements.hpp"
#include "tpembed/error.hpp"
#include "tpembed/lookup.hpp"

namespace tpembed {

namespace {

using cpu::load_element;
using cpu::store_element;

// Splits [0, count) over up to `workers` threads when the work is worth it.
template <typename Body>
void parallel_for(std::int64_t count, std::int64_t work_per_item, Body body) {
  constexpr std::int64_t kMinWorkPerThread = 1 << 18;  // elements; below this threads cost more
  const std::int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
  const std::int64_t useful = std::max<std::int64_t>(1, count * work_per_item / kMinWorkPerThread);
  const std::int64_t workers = std::min({hardware, useful, count});
  if (workers <= 1) {
    body(0, count, 0);
    return;
  }
  std::vector<std::thread> threads;
  const std::int64_t chunk = (count + workers - 1) / workers;
  for (std::int64_t w = 1; w < workers; ++w) {
    const std::int64_t begin = std::min(count, w * chunk), end = std::min(count, begin + chunk);
    threads.emplace_back(body, begin, end, w);
  }
  body(0, std::min(count, chunk), 0);
  for (auto& thread : threads) thread.join();
}

template <typename Id, DType Table, DType Out>
void gather(const LookupParams& p) {
  const auto* ids = static_cast<const Id*>(p.ids);
  const auto* table = static_cast<const std::uint8_t*>(p.table);
  const auto* padding = static_cast<const std::uint8_t*>(p.padding);
  auto* out = static_cast<std::uint8_t*>(p.out);
  const std::int64_t out_row_bytes = row_bytes(Out, p.out_row_stride);
  const std::int64_t padding_row_bytes = row_bytes(Table, p.cols);
  const std::size_t written_bytes = static_cast<std::size_t>(row_bytes(Out, p.cols));
  const bool plain_copy = (Table == Out) && p.scale == nullptr;

  std::vector<unsigned long long> bad_per_worker(std::max(1u, std::thread::hardware_concurrency()));
  parallel_for(p.num_ids, p.cols, [&](std::int64_t begin, std::int64_t end, std::int64_t worker) {
    unsigned long long bad = 0;
    for (std::int64_t i = begin; i < end; ++i) {
      const std::int64_t id = static_cast<std::int64_t>(ids[i]);
      std::uint8_t* dst = out + i * out_row_bytes;
      const std::uint8_t* src = nullptr;
      const void* scales = nullptr;
      std::int64_t scale_index = 0;
      bool unowned = false;
      if (id < 0 || id >= p.valid_ids) {
        ++bad;
      } else {
        unowned = true;
        const std::int64_t local = id - p.row_offset;
        if (local >= 0 && local < p.table_rows) {
          src = table + local * p.table_row_bytes;
          scales = p.scale;
          scale_index = local;
          unowned = false;
        } else if (local >= p.table_rows && local - p.table_rows < p.padding_rows) {
          scale_index = local - p.table_rows;
          src = padding + scale_index * padding_row_bytes;
          scales = p.padding_scale;
          unowned = false;
        }
      }
      if (unowned && p.unowned_negative_zero) {
        for (std::int64_t c = 0; c < p.cols; ++c) store_element<Out>(dst, c, -0.0f);
      } else if (src == nullptr) {
        std::memset(dst, 0, written_bytes);
      } else if (plain_copy && scales == nullptr) {
        std::memcpy(dst, src, written_bytes);
      } else if (scales == nullptr) {
        for (std::int64_t c = 0; c < p.cols; ++c) store_element<Out>(dst, c, load_element<Table>(src, c));
      } else {
        const float factor = cpu::load_scale(scales, p.scale_dtype, scale_index);
        for (std::int64_t c = 0; c < p.cols; ++c) {
          store_element<Out>(dst, c, load_element<Table>(src, c) * factor);
        }
      }
    }
    bad_per_worker[worker] = bad;
  });
  if (p.bad_id_count != nullptr) {
    for (unsigned long long bad : bad_per_worker) *p.bad_id_count += bad;
  }
}

template <typename Id, DType Table>
void dispatch_out(const LookupParams& p) {
  switch (p.out_dtype) {
    case DType::f32: return gather<Id, Table, DType::f32>(p);
    case DType::f16: return gather<Id, Table, DType::f16>(p);
    case DType::bf16: return gather<Id, Table, DType::bf16>(p);
    default: break;
  }
  throw InvalidArgumentError(detail::concat("lookup_cpu: output dtype ", dtype_name(p.out_dtype),
                                            " is not f32, f16 or bf16"));
}

template <typename Id>
void dispatch_table(const LookupParams& p) {
  switch (p.table_dtype) {
    case DType::f32: return dispatch_out<Id, DType::f32>(p);
    case DType::f16: return dispatch_out<Id, DType::f16>(p);
    case DType::bf16: return dispatch_out<Id, DType::bf16>(p);
    case DType::i8: return dispatch_out<Id, DType::i8>(p);
    case DType::fp8_e4m3: return dispatch_out<Id, DType::fp8_e4m3>(p);
    case DType::i4: return dispatch_out<Id, DType::i4>(p);
    default: break;
  }
  throw InvalidArgumentError(
      detail::concat("lookup_cpu: table dtype ", dtype_name(p.table_dtype), " is not a table dtype"));
}

template <typename Id>
std::int64_t first_bad(const Id* ids, std::int64_t num_ids, std::int64_t valid_ids) {
  for (std::int64_t i = 0; i < num_ids; ++i) {
    const std::int64_t id = static_cast<std::int64_t>(ids[i]);
    if (id < 0 || id >= valid_ids) return i;
  }
  return -1;
}

}  // namespace

void lookup_cpu(const LookupParams& params) {
  if (params.num_ids == 0) return;
  if (params.id_dtype == DType::i32) return dispatch_table<std::int32_t>(params);
  if (params.id_dtype == DType::i64) return dispatch_table<std::int64_t>(params);
  throw InvalidArgumentError(
      detail::concat("lookup_cpu: ids must be i32 or i64, not ", dtype_name(params.id_dtype)));
}

std::int64_t find_first_bad_id(const void* ids, DType id_dtype, std::int64_t num_ids,
                               std::int64_t valid_ids) {
  if (id_dtype == DType::i32) {
    return first_bad(static_cast<const std::int32_t*>(ids), num_ids, valid_ids);
  }
  return first_bad(static_cast<const std::int64_t*>(ids), num_ids, valid_ids);
}

}  // namespace tpembed
