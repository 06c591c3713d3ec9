// The CPU lookup backend: the masked, dequantising gather of lookup.hpp on the host.
// Dtypes are dispatched once per call; the inner loop is one template instance per
// (id type x table dtype x output dtype). A same-dtype float table without scales is a row copy;
// a quantized table's rows are decoded by the vector bodies of decode_rows.hpp.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cpu/decode_rows.hpp"
#include "cpu/elements.hpp"
#include "cpu/parallel_for.hpp"
#include "tpembed/error.hpp"
#include "tpembed/lookup.hpp"

namespace tpembed {

namespace {

using cpu::load_element;
using cpu::parallel_for;
using cpu::store_element;

// Copying random table rows with one memcpy per row reached about 75% of a large memcpy's bandwidth
// on our 2-core machine, 68% when it was busy; the two measures below make it about 83%
// (`tpembed bench --device cpu`, bench/RESULTS.md). What the gap was made of:
//  - each row starts at a random place, so the hardware prefetchers (which stop at 4 KiB pages)
//    restart on every page of it; we prefetch a row further on while copying this one;
//  - ordinary stores read each destination line before writing it, so 3 bytes move for every 2
//    copied; for outputs too large to stay in the cache we store around it (non-temporal), as
//    memcpy does for large sizes. (Either measure alone gained little here; both, ~10% of time.)
constexpr std::int64_t kCopyPieceBytes = 1024;       // copied per step, and as much prefetched
constexpr std::int64_t kPrefetchAheadBytes = 16384;  // how many bytes of rows ahead to prefetch
constexpr std::int64_t kStreamingOutputBytes = std::int64_t{32} << 20;  // beyond the L3s we target

inline void prefetch_bytes(const std::uint8_t* bytes, std::int64_t count) {
  for (std::int64_t b = 0; b < count; b += 64) __builtin_prefetch(bytes + b, 0, 3);
}

// memcpy, but with non-temporal stores for the 16-byte-aligned part of dst where the CPU has them.
inline void copy_streaming(std::uint8_t* dst, const std::uint8_t* src, std::int64_t bytes) {
#if defined(__SSE2__)
  const auto misalignment = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(dst) % 16);
  const std::int64_t head = std::min(bytes, misalignment == 0 ? 0 : 16 - misalignment);
  std::memcpy(dst, src, static_cast<std::size_t>(head));
  std::int64_t b = head;
  for (; b + 16 <= bytes; b += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + b),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + b)));
  }
  std::memcpy(dst + b, src + b, static_cast<std::size_t>(bytes - b));
#else
  std::memcpy(dst, src, static_cast<std::size_t>(bytes));
#endif
}

// Copies one row in pieces, prefetching the same piece of `ahead` (a later row, or null).
inline void copy_row(std::uint8_t* dst, const std::uint8_t* src, const std::uint8_t* ahead,
                     std::int64_t bytes, bool streaming) {
  for (std::int64_t b = 0; b < bytes; b += kCopyPieceBytes) {
    const std::int64_t piece = std::min(kCopyPieceBytes, bytes - b);
    if (ahead != nullptr) prefetch_bytes(ahead + b, piece);
    if (streaming) {
      copy_streaming(dst + b, src + b, piece);
    } else {
      std::memcpy(dst + b, src + b, static_cast<std::size_t>(piece));
    }
  }
}

// Makes this thread's non-temporal stores visible before it reports its work done.
inline void finish_streaming_stores() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// The shard of p.shards that holds global row `id`, or null.
const LookupShard* owner_shard(const LookupParams& p, std::int64_t id) {
  if (p.shard_rows > 0) {
    const std::int64_t s = id / p.shard_rows;
    const LookupShard* shard = s < p.num_shards ? p.shards + s : nullptr;
    const std::int64_t row = shard != nullptr ? id - shard->row_offset : -1;
    return row >= 0 && row < shard->rows ? shard : nullptr;
  }
  const LookupShard* end = p.shards + p.num_shards;
  const LookupShard* next = std::upper_bound(p.shards, end, id, [](std::int64_t value, const LookupShard& shard) {
    return value < shard.row_offset;
  });
  if (next == p.shards) return nullptr;
  const LookupShard* shard = next - 1;
  return id - shard->row_offset < shard->rows ? shard : nullptr;
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
  // Quantized rows are decoded a vector at a time, by the widest ISA the CPU has (or is capped to).
  cpu::RowBody scaled_body, unscaled_body;
  if constexpr (is_quantized(Table)) {
    const cpu::CpuIsa isa = cpu::active_cpu_isa();
    scaled_body = cpu::row_body(isa, Table, Out, true);
    unscaled_body = cpu::row_body(isa, Table, Out, false);
  }
  const bool streaming = (plain_copy || is_quantized(Table)) &&
                         p.num_ids * out_row_bytes >= kStreamingOutputBytes;
  const std::int64_t prefetch_ahead =
      std::max<std::int64_t>(1, kPrefetchAheadBytes / std::max<std::int64_t>(1, written_bytes));
  // A decoded row reads fewer bytes than it writes: look as many table bytes ahead as a copy does.
  const std::int64_t decode_ahead = std::max<std::int64_t>(
      1, kPrefetchAheadBytes / std::max<std::int64_t>(1, row_bytes(Table, p.cols)));
  // Where the output row of `id` comes from (lookup.hpp): a table or padding row with its scales,
  // else no row, for a bad id or an id another rank owns.
  struct Source {
    const std::uint8_t* row = nullptr;
    const void* scales = nullptr;
    std::int64_t scale_index = 0;
    bool bad = false;
  };
  const auto locate = [&](std::int64_t id) {
    Source source;
    if (id < 0 || id >= p.valid_ids) {
      source.bad = true;
      return source;
    }
    if (p.shards != nullptr) {
      const LookupShard* shard = owner_shard(p, id);
      if (shard != nullptr) {
        source.scale_index = id - shard->row_offset;
        source.row = static_cast<const std::uint8_t*>(shard->table) + source.scale_index * p.table_row_bytes;
        source.scales = shard->scale;
      }
      return source;
    }
    const std::int64_t local = id - p.row_offset;
    if (local >= 0 && local < p.table_rows) {
      source.row = table + local * p.table_row_bytes;
      source.scales = p.scale;
      source.scale_index = local;
    } else if (local >= p.table_rows && local - p.table_rows < p.padding_rows) {
      source.scale_index = local - p.table_rows;
      source.row = padding + source.scale_index * padding_row_bytes;
      source.scales = p.padding_scale;
    }
    return source;
  };

  std::vector<unsigned long long> bad_per_worker(std::max(1u, std::thread::hardware_concurrency()));
  parallel_for(p.num_ids, p.cols, [&](std::int64_t begin, std::int64_t end, std::int64_t worker) {
    unsigned long long bad = 0;
    for (std::int64_t i = begin; i < end; ++i) {
      const Source source = locate(static_cast<std::int64_t>(ids[i]));
      const std::uint8_t* src = source.row;
      std::uint8_t* dst = out + i * out_row_bytes;
      if (source.bad) ++bad;
      const bool unowned = !source.bad && src == nullptr;
      if (written_bytes == 0) {
        continue;  // zero-width rows: only the bad-id count matters
      } else if (unowned && p.unowned_negative_zero) {
        for (std::int64_t c = 0; c < p.cols; ++c) store_element<Out>(dst, c, -0.0f);
      } else if (src == nullptr) {
        std::memset(dst, 0, written_bytes);
      } else if (plain_copy && source.scales == nullptr) {
        const std::int64_t next = i + prefetch_ahead;
        const std::uint8_t* ahead =
            next < end ? locate(static_cast<std::int64_t>(ids[next])).row : nullptr;
        copy_row(dst, src, ahead, static_cast<std::int64_t>(written_bytes), streaming);
      } else if (is_quantized(Table)) {
        const bool scaled = source.scales != nullptr;
        const float factor =
            scaled ? cpu::load_scale(source.scales, p.scale_dtype, source.scale_index) : 1.0f;
        const std::int64_t next = i + decode_ahead;
        const std::uint8_t* ahead =
            next < end ? locate(static_cast<std::int64_t>(ids[next])).row : nullptr;
        cpu::decode_row<Table, Out>(scaled ? scaled_body : unscaled_body, dst, src, p.cols, scaled,
                                    factor, streaming, ahead);
      } else if (source.scales == nullptr) {
        for (std::int64_t c = 0; c < p.cols; ++c) store_element<Out>(dst, c, load_element<Table>(src, c));
      } else {
        const float factor = cpu::load_scale(source.scales, p.scale_dtype, source.scale_index);
        for (std::int64_t c = 0; c < p.cols; ++c) {
          store_element<Out>(dst, c, load_element<Table>(src, c) * factor);
        }
      }
    }
    if (streaming) finish_streaming_stores();
    bad_per_worker[worker] = bad;
  });
  unsigned long long total = 0;
  for (unsigned long long bad : bad_per_worker) total += bad;
  if (p.bad_id_count != nullptr) *p.bad_id_count += total;
  if (p.bad_id_slots != nullptr) p.bad_id_slots[0] = total;
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
  if (params.num_ids == 0) {
    if (params.bad_id_slots != nullptr) params.bad_id_slots[0] = 0;
    return;
  }
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
