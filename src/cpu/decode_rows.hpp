// Dequantising (and converting) one table row on the host with the widest vector instructions this
// CPU has. The bulk of a row goes to a per-ISA "body" function (decode_portable.cpp,
// decode_avx2.cpp, decode_avx512.cpp), chosen at run time: the library is built for any x86-64 (or
// any other architecture) and uses AVX2 or AVX-512 only where the CPU reports them (CPUID, with the
// OS's support for the wider registers; decode_rows.cpp). Every path rounds exactly as
// elements.hpp's scalar functions do: the product decoded * scale in f32 (one multiply, nothing to
// contract), rounded once to nearest even.
#pragma once

#include <cstdint>

#include "cpu/elements.hpp"
#include "tpembed/dtype.hpp"

namespace tpembed::cpu {

/// The instruction sets a row body is written for, narrowest first. avx512bf16 is avx512 with
/// AVX512_BF16's f32 -> bf16 conversion and AVX512_VBMI's byte permutes (for fp8 tables), as
/// Sapphire Rapids and Zen 4 have them.
enum class CpuIsa : int { portable = 0, avx2 = 1, avx512 = 2, avx512bf16 = 3 };

/// "portable", "avx2", "avx512" or "avx512bf16".
const char* cpu_isa_name(CpuIsa isa);

/// The ISA named `name` (as cpu_isa_name() spells it); InvalidArgumentError for any other name.
CpuIsa cpu_isa_from_name(const char* name);

/// The widest ISA this build has a body for and this CPU (and OS) can run.
CpuIsa best_cpu_isa();

/// The ISA lookups use: best_cpu_isa(), capped by the environment variable TPEMBED_CPU_ISA when
/// it is set (read once; a name cpu_isa_from_name() refuses is an error at the first lookup).
CpuIsa active_cpu_isa();

/// Makes lookups use `isa` (capped at best_cpu_isa()) from now on and returns the previous one;
/// the tests use it to run every path on one machine.
CpuIsa set_active_cpu_isa(CpuIsa isa);

/// Decodes columns [0, count) of a row (count a multiple of RowBody::columns) from `src` (the
/// row's first byte; i4 two columns a byte) into `dst` (the output row's first element), times
/// `factor` when `scaled`. With `streaming`, stores go around the cache and `dst` must be aligned
/// to RowBody::alignment bytes.
using RowBodyFn = void (*)(std::uint8_t* dst, const std::uint8_t* src, std::int64_t count,
                           float factor, bool streaming);

/// A body and the shape of the work it takes. The fast body may rely on the row's scale being in
/// range (e.g. factor * 256 finite, or no product subnormal); rows whose |factor| is outside
/// [min_factor, max_factor), NaN included, take the careful body, which is exact for any factor.
struct RowBody {
  RowBodyFn run = nullptr;      ///< null: no vector body for this pair; the row goes scalar
  RowBodyFn careful = nullptr;  ///< for factors outside the range; same columns and alignment
  std::int64_t columns = 1;     ///< a body's count is a multiple of this (even, for i4)
  std::int64_t alignment = 16;  ///< bytes of dst alignment its streaming stores need
  float min_factor = 0.0f;
  float max_factor = 0x1p127f;

  /// The body for a row of this factor.
  RowBodyFn for_factor(float factor) const {
    const float magnitude = factor < 0 ? -factor : factor;
    return magnitude >= min_factor && magnitude < max_factor ? run : careful;
  }
};

/// The body of `isa` for (table, out, scaled); run is null where that ISA has none.
RowBody row_body(CpuIsa isa, DType table, DType out, bool scaled);

// Per-ISA tables of bodies, defined in the decode_*.cpp files (null where the ISA is not built).
RowBody portable_row_body(DType table, DType out, bool scaled);
RowBody avx2_row_body(DType table, DType out, bool scaled);
RowBody avx512_row_body(DType table, DType out, bool scaled);
RowBody avx512bf16_row_body(DType table, DType out, bool scaled);

namespace detail {
template <template <DType, DType, bool> class Body, DType Table, DType Out>
RowBodyFn body_of(bool scaled) {
  return scaled ? &Body<Table, Out, true>::run : &Body<Table, Out, false>::run;
}

template <template <DType, DType, bool> class Body, DType Table>
RowBodyFn body_of(DType out, bool scaled) {
  switch (out) {
    case DType::f32:
      return body_of<Body, Table, DType::f32>(scaled);
    case DType::f16:
      return body_of<Body, Table, DType::f16>(scaled);
    case DType::bf16:
      return body_of<Body, Table, DType::bf16>(scaled);
    default:
      return nullptr;
  }
}
}  // namespace detail

/// An ISA's table of bodies: Fast<Table, Out, Scaled>::run and Careful<...>::run (RowBodyFns) for
/// every quantized table dtype and output dtype; run is null for other pairs.
template <template <DType, DType, bool> class Fast, template <DType, DType, bool> class Careful>
RowBody quantized_row_body(DType table, DType out, bool scaled, RowBody shape) {
  switch (table) {
    case DType::i8:
      shape.run = detail::body_of<Fast, DType::i8>(out, scaled);
      shape.careful = detail::body_of<Careful, DType::i8>(out, scaled);
      break;
    case DType::fp8_e4m3:
      shape.run = detail::body_of<Fast, DType::fp8_e4m3>(out, scaled);
      shape.careful = detail::body_of<Careful, DType::fp8_e4m3>(out, scaled);
      break;
    case DType::i4:
      shape.run = detail::body_of<Fast, DType::i4>(out, scaled);
      shape.careful = detail::body_of<Careful, DType::i4>(out, scaled);
      break;
    default:
      shape.run = shape.careful = nullptr;
      break;
  }
  return shape;
}

/// Columns a body is given at a time, with the same columns of the row `ahead` prefetched: rows
/// start at random places, so the hardware prefetchers start afresh on each (as in lookup_cpu's
/// row copy).
constexpr std::int64_t kBodyPieceColumns = 1024;

/// One output row from one table row: scalar columns until dst is aligned for streaming stores,
/// the body, then the scalar tail. The scalar columns are elements.hpp's, so every column of every
/// path computes the same bits. `ahead` (or null) is a row to prefetch, one to be decoded soon.
template <DType Table, DType Out>
void decode_row(const RowBody& body, std::uint8_t* dst, const std::uint8_t* src, std::int64_t cols,
                bool scaled, float factor, bool streaming, const std::uint8_t* ahead = nullptr) {
  constexpr std::int64_t out_size = row_bytes(Out, 1);
  std::int64_t head = 0;
  if (body.run != nullptr && streaming) {
    const auto address = reinterpret_cast<std::uintptr_t>(dst);
    const auto alignment = static_cast<std::uintptr_t>(body.alignment);
    head = static_cast<std::int64_t>((alignment - address % alignment) % alignment) / out_size;
    // A misaligned element, or an odd number of i4 columns first (the body starts on a byte):
    // ordinary stores from column 0 instead.
    if (address % out_size != 0 || (Table == DType::i4 && head % 2 != 0)) {
      head = 0;
      streaming = false;
    }
    head = head < cols ? head : cols;
  }
  const auto scalar = [&](std::int64_t begin, std::int64_t end) {
    if (scaled) {
      for (std::int64_t c = begin; c < end; ++c) {
        store_element<Out>(dst, c, load_element<Table>(src, c) * factor);
      }
    } else {
      for (std::int64_t c = begin; c < end; ++c)
        store_element<Out>(dst, c, load_element<Table>(src, c));
    }
  };
  scalar(0, head);
  std::int64_t done = head;
  if (body.run != nullptr) {
    const RowBodyFn run = body.for_factor(scaled ? factor : 1.0f);
    const std::int64_t count = (cols - head) / body.columns * body.columns;
    for (std::int64_t piece = 0; piece < count; piece += kBodyPieceColumns) {
      const std::int64_t columns =
          count - piece < kBodyPieceColumns ? count - piece : kBodyPieceColumns;
      const std::int64_t first = head + piece;  // even for i4 (head and pieces are)
      const std::int64_t src_offset = Table == DType::i4 ? first / 2 : first * row_bytes(Table, 1);
      if (ahead != nullptr) {
        const std::int64_t bytes = row_bytes(Table, columns);
        for (std::int64_t b = 0; b < bytes; b += 64)
          __builtin_prefetch(ahead + src_offset + b, 0, 3);
      }
      run(dst + first * out_size, src + src_offset, columns, factor, streaming);
    }
    done += count;
  }
  scalar(done, cols);
}

}  // namespace tpembed::cpu
