// `tpembed bench`: what the CPU and CUDA runs share: random tables, lookup parameters, bytes moved.
#include <cstdint>
#include <cstring>

#include "bench.hpp"
#include "common.hpp"

namespace tpembed::cli::bench {

namespace {

// splitmix64: a fast, seeded stream for filling tables (their values do not change the timing).
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Fills every byte of `tensor` (which also faults its pages in) with values valid for its dtype.
void fill_random(Tensor& tensor, std::uint64_t seed) {
  SplitMix random{seed};
  const auto bytes = static_cast<std::size_t>(tensor.nbytes());
  auto* data = static_cast<std::uint8_t*>(tensor.data());
  if (tensor.dtype() == DType::f32) {
    auto* values = tensor.data_as<float>();
    for (std::size_t i = 0; i < bytes / 4; ++i) {
      values[i] = static_cast<float>(random.next() >> 40) * 0x1p-24f - 0.5f;
    }
  } else if (tensor.dtype() == DType::bf16 || tensor.dtype() == DType::f16) {
    // Bits of values in [-1, 1): sign, an exponent below the bias, random mantissa.
    const bool bf16 = tensor.dtype() == DType::bf16;
    auto* values = tensor.data_as<std::uint16_t>();
    for (std::size_t i = 0; i < bytes / 2; ++i) {
      const std::uint64_t r = random.next();
      values[i] = static_cast<std::uint16_t>(
          bf16 ? ((r & 1) << 15) | ((0x70 + (r >> 1) % 15) << 7) | ((r >> 8) & 0x7f)
               : ((r & 1) << 15) | ((1 + (r >> 1) % 14) << 10) | ((r >> 8) & 0x3ff));
    }
  } else {
    // i8 and i4: every bit pattern is a valid value; fp8 e4m3: all but the two NaNs.
    std::size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
      const std::uint64_t r = random.next();
      std::memcpy(data + i, &r, 8);
    }
    for (; i < bytes; ++i) data[i] = static_cast<std::uint8_t>(random.next());
    if (tensor.dtype() == DType::fp8_e4m3) {
      for (i = 0; i < bytes; ++i) {
        if ((data[i] & 0x7f) == 0x7f) data[i] ^= 1;
      }
    }
  }
}

}  // namespace

DType out_dtype_for(DType table_dtype) {
  return is_quantized(table_dtype) ? DType::bf16 : table_dtype;
}

Table make_table(DType dtype, std::int64_t vocab, std::int64_t hidden) {
  Table table{dtype, out_dtype_for(dtype), {}, {}};
  table.weight = allocate(dtype, {vocab, hidden}, "the bench table");
  fill_random(table.weight, 1000 + static_cast<std::uint64_t>(dtype));
  if (is_quantized(dtype)) {
    table.scale = allocate(DType::f32, {vocab}, "the bench table's scales");
    fill_random(table.scale, 2000);
    for (std::int64_t r = 0; r < vocab; ++r) table.scale.data_as<float>()[r] += 1.0f;
  }
  return table;
}

LookupParams whole_table_params(DType dtype, const void* table, const void* scale,
                                std::int64_t rows, std::int64_t cols, const void* ids,
                                std::int64_t num_ids, void* out, unsigned long long* bad) {
  LookupParams p;
  p.table = table;
  p.table_dtype = dtype;
  p.table_rows = rows;
  p.cols = cols;
  p.table_row_bytes = row_bytes(dtype, cols);
  p.scale = is_quantized(dtype) ? scale : nullptr;
  p.scale_dtype = DType::f32;
  p.valid_ids = rows;
  p.ids = ids;
  p.id_dtype = DType::i64;
  p.num_ids = num_ids;
  p.out = out;
  p.out_dtype = out_dtype_for(dtype);
  p.out_row_stride = cols;
  p.bad_id_count = bad;
  return p;
}

std::int64_t lookup_bytes(DType dtype, std::int64_t cols, std::int64_t num_ids) {
  const std::int64_t per_id = 8 /* i64 id */ + row_bytes(dtype, cols) +
                              (is_quantized(dtype) ? 4 : 0) + row_bytes(out_dtype_for(dtype), cols);
  return per_id * num_ids;
}

}  // namespace tpembed::cli::bench
