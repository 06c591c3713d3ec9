// The CPU lookup's quantized rows on every row-decoding path this machine has (portable, AVX2,
// AVX-512, AVX-512 BF16), each against the element-by-element reference (tests/support): every
// int8, fp8 e4m3 and int4 code times scales chosen to hit every rounding case, into every output
// dtype; odd widths and misaligned rows (every head and tail); outputs large enough for the
// streaming stores; and the choice of path (names, the TPEMBED_CPU_ISA cap).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/decode_rows.hpp"
#include "expect_error.hpp"
#include "reference.hpp"

namespace tpembed::testing {
namespace {

using cpu::CpuIsa;

constexpr DType kQuantized[] = {DType::i8, DType::fp8_e4m3, DType::i4};
constexpr DType kOutputs[] = {DType::f32, DType::f16, DType::bf16};
constexpr std::uint8_t kPoison = 0xcd;

std::vector<CpuIsa> isas_here() {
  std::vector<CpuIsa> isas;
  for (int level = 0; level <= static_cast<int>(cpu::best_cpu_isa()); ++level) {
    isas.push_back(static_cast<CpuIsa>(level));
  }
  return isas;
}

// Runs the rest of the test with lookups on one ISA, and restores the previous one after.
class IsaScope {
 public:
  explicit IsaScope(CpuIsa isa) : previous_(cpu::set_active_cpu_isa(isa)) {
    EXPECT_EQ(cpu::active_cpu_isa(), isa);
  }
  ~IsaScope() { cpu::set_active_cpu_isa(previous_); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;

 private:
  CpuIsa previous_;
};

float f32_of(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Scales for every case of the rounding: exact and inexact products, f16 subnormals and overflow,
// f32 subnormal products (and subnormal scales), the fast bodies' guards (2^-117, 2^120) on both
// sides, f32 overflow, zeros, infinities, NaNs whose low bits matter to bf16 rounding.
std::vector<float> edge_scales(DType table) {
  std::vector<float> scales = {1.0f,      -1.0f,           0.5f,        3.0f,
                               1.7f,      -0.3f,           1.0f / 3.0f, 0.0f,
                               -0.0f,     1e-30f,          0x1p-117f,   0x1.fffffep-118f,
                               0x1p-118f, 0x1p-130f,       1e-40f,      0x1p-149f,
                               0x1p-20f,  0x1p-25f,        0x1.8p-24f,  1e-5f,
                               515.7f,    515.8f,          146.3f,      1000.0f,
                               65504.0f,  0x1.fffffep119f, 0x1p120f,    -0x1p120f,
                               1e30f,     3e38f,           INFINITY,    -INFINITY};
  // A quiet NaN with low bits that round up, and a signalling one (quieted by the multiply). With
  // fp8's NaN codes two NaNs would meet, and which one a multiply keeps is the compiler's choice of
  // operand order, not a rounding: those cases are left out for fp8.
  if (table != DType::fp8_e4m3) {
    scales.push_back(f32_of(0x7fc1ffffu));
    scales.push_back(f32_of(0xff812345u));
  }
  std::uint32_t state = 12345;
  for (int k = 0; k < 24; ++k) {  // a few ordinary scales with full mantissas
    state = state * 1664525u + 1013904223u;
    scales.push_back(f32_of(0x3c000000u + (state >> 9) % 0x4000000u) * ((k & 1) ? -1.0f : 1.0f));
  }
  return scales;
}

// A table whose every row holds every code of its dtype (then the first ones again, for a tail),
// one scale per row.
Problem every_code_problem(DType table, std::int64_t hidden) {
  const std::vector<float> scales = edge_scales(table);
  Problem problem;
  problem.table = HostTable(table, static_cast<std::int64_t>(scales.size()), hidden);
  problem.scale = HostTable::vector_of(DType::f32, static_cast<std::int64_t>(scales.size()));
  const std::uint32_t codes = table == DType::i4 ? 16 : 256;
  for (std::int64_t r = 0; r < problem.table.rows; ++r) {
    problem.scale->set_code(r, 0, [&] {
      std::uint32_t bits;
      std::memcpy(&bits, &scales[static_cast<std::size_t>(r)], 4);
      return bits;
    }());
    for (std::int64_t c = 0; c < hidden; ++c) {
      problem.table.set_code(r, c, static_cast<std::uint32_t>(c + 7 * r) % codes);
    }
  }
  return problem;
}

// How a lookup lays out its table and output in memory.
struct Layout {
  std::int64_t table_offset = 0;      // bytes before the first table row
  std::int64_t table_row_extra = 0;   // bytes between table rows beyond the row
  std::int64_t out_offset = 0;        // elements before the first output row
  std::int64_t out_stride_extra = 0;  // elements between output rows beyond the row
  bool scaled = true;                 // false: the lookup gets no scales (the unscaled bodies)
};

// lookup_cpu on `problem` laid out as `layout`; the output rows packed, as reference_lookup gives
// them. Fails the test if anything outside the rows is written.
std::vector<std::uint8_t> run_lookup(const Problem& problem, const std::vector<std::int64_t>& ids,
                                     DType out, const Layout& layout) {
  const HostTable& table = problem.table;
  const std::int64_t row = table.row_stride_bytes();
  const std::int64_t table_stride = row + layout.table_row_extra;
  std::vector<std::uint8_t> table_bytes(
      static_cast<std::size_t>(layout.table_offset + table.rows * table_stride), kPoison);
  for (std::int64_t r = 0; r < table.rows; ++r) {
    std::memcpy(table_bytes.data() + layout.table_offset + r * table_stride,
                table.bytes.data() + r * row, static_cast<std::size_t>(row));
  }
  const std::int64_t num_ids = static_cast<std::int64_t>(ids.size());
  const std::int64_t out_size = row_bytes(out, 1);
  const std::int64_t stride = table.cols + layout.out_stride_extra;
  const std::int64_t out_bytes = (layout.out_offset + num_ids * stride) * out_size + 64;
  std::vector<std::uint8_t> out_buffer(static_cast<std::size_t>(out_bytes), kPoison);

  unsigned long long bad = 0;
  LookupParams p;
  p.table = table_bytes.data() + layout.table_offset;
  p.table_dtype = table.dtype;
  p.table_rows = table.rows;
  p.cols = table.cols;
  p.table_row_bytes = table_stride;
  p.scale = layout.scaled ? problem.scale->bytes.data() : nullptr;
  p.scale_dtype = problem.scale->dtype;
  p.valid_ids = table.rows;
  p.ids = ids.data();
  p.id_dtype = DType::i64;
  p.num_ids = num_ids;
  p.out = out_buffer.data() + layout.out_offset * out_size;
  p.out_dtype = out;
  p.out_row_stride = stride;
  p.bad_id_count = &bad;
  lookup_cpu(p);

  const std::int64_t out_row = row_bytes(out, table.cols);
  std::vector<std::uint8_t> packed(static_cast<std::size_t>(num_ids * out_row));
  std::int64_t touched = 0;  // bytes outside the rows that are not poison any more
  const auto count_touched = [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = begin; b < end; ++b)
      touched += out_buffer[static_cast<std::size_t>(b)] != kPoison;
  };
  std::int64_t next = 0;  // first byte not yet looked at
  for (std::int64_t i = 0; i < num_ids; ++i) {
    const std::int64_t start = (layout.out_offset + i * stride) * out_size;
    count_touched(next, start);
    std::memcpy(packed.data() + i * out_row, out_buffer.data() + start,
                static_cast<std::size_t>(out_row));
    next = start + out_row;
  }
  count_touched(next, out_bytes);
  EXPECT_EQ(touched, 0) << "bytes written outside the output rows";
  std::uint64_t expected_bad = 0;
  for (std::int64_t id : ids) expected_bad += (id < 0 || id >= table.rows) ? 1 : 0;
  EXPECT_EQ(bad, expected_bad);
  return packed;
}

// The reference for `ids`, computed once per distinct row (large lookups repeat a few rows).
std::vector<std::uint8_t> expected_rows(const Problem& problem,
                                        const std::vector<std::int64_t>& ids, DType out,
                                        bool scaled) {
  Problem reference = problem;
  if (!scaled) reference.scale.reset();
  std::vector<std::int64_t> every_row;
  for (std::int64_t r = -1; r < problem.table.rows; ++r) every_row.push_back(r);  // -1: a bad id
  const std::vector<std::uint8_t> rows = reference_lookup(reference, every_row, out);
  const std::int64_t row = row_bytes(out, problem.table.cols);
  std::vector<std::uint8_t> expected(ids.size() * static_cast<std::size_t>(row));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const bool bad = ids[i] < 0 || ids[i] >= problem.table.rows;
    std::memcpy(expected.data() + i * row, rows.data() + (bad ? 0 : ids[i] + 1) * row,
                static_cast<std::size_t>(row));
  }
  return expected;
}

std::string label(CpuIsa isa, DType table, DType out, std::int64_t hidden) {
  return std::string(cpu::cpu_isa_name(isa)) + " " + dtype_name(table) + " -> " + dtype_name(out) +
         ", H " + std::to_string(hidden);
}

void expect_lookup_matches(const Problem& problem, const std::vector<std::int64_t>& ids, DType out,
                           const Layout& layout, const std::string& what) {
  const auto actual = run_lookup(problem, ids, out, layout);
  const auto expected = expected_rows(problem, ids, out, layout.scaled);
  EXPECT_TRUE(actual == expected) << what << ": "
                                  << first_difference(actual, expected, out, problem.table.cols);
}

TEST(DecodeRows, EveryCodeTimesEveryScaleOnEveryPath) {
  for (CpuIsa isa : isas_here()) {
    IsaScope scope(isa);
    for (DType table : kQuantized) {
      // Each row holds every code; 293 columns also leave a tail after the vector steps.
      const Problem problem = every_code_problem(table, 293);
      std::vector<std::int64_t> ids;
      for (std::int64_t r = 0; r < problem.table.rows; ++r) ids.push_back(r);
      for (DType out : kOutputs) {
        expect_lookup_matches(problem, ids, out, {}, label(isa, table, out, 293));
        Layout unscaled;
        unscaled.scaled = false;
        expect_lookup_matches(problem, ids, out, unscaled,
                              label(isa, table, out, 293) + " unscaled");
      }
    }
  }
}

TEST(DecodeRows, OddWidthsAndMisalignedRows) {
  // Rows that start 1 byte off (table) and one element off (output), and strides that move every
  // row's start: each path's head, vector steps and tail, with bad ids in between.
  for (CpuIsa isa : isas_here()) {
    IsaScope scope(isa);
    for (DType table : kQuantized) {
      for (std::int64_t hidden : {1, 2, 3, 7, 16, 33, 127, 733}) {
        const Problem problem = every_code_problem(table, hidden);
        std::vector<std::int64_t> ids;
        for (std::int64_t i = 0; i < 2 * problem.table.rows; ++i) {
          ids.push_back(i % 11 == 5 ? -3 : (i * 17) % problem.table.rows);
        }
        Layout layout;
        layout.table_offset = 1;
        layout.table_row_extra = 3;
        layout.out_offset = 1;
        layout.out_stride_extra = 1;
        for (DType out : kOutputs) {
          expect_lookup_matches(problem, ids, out, layout, label(isa, table, out, hidden));
        }
      }
    }
  }
}

TEST(DecodeRows, OutputsPastTheCacheTakeStreamingStores) {
  // Over 32 MiB of output: the vector bodies store around the cache from an aligned column on, so
  // rows that start anywhere (stride H + 1) run every head length, odd ones included (i4 then
  // falls back to ordinary stores for the row).
  for (CpuIsa isa : isas_here()) {
    IsaScope scope(isa);
    for (DType table : kQuantized) {
      const DType out = table == DType::i8   ? DType::bf16
                        : table == DType::i4 ? DType::f16
                                             : DType::f32;
      const std::int64_t hidden = 733;
      const Problem problem = every_code_problem(table, hidden);
      const std::int64_t out_row = row_bytes(out, hidden + 1);
      std::vector<std::int64_t> ids;
      for (std::int64_t i = 0; i * out_row < (std::int64_t{33} << 20); ++i) {
        ids.push_back(i % 1001 == 500 ? problem.table.rows : (i * 7) % problem.table.rows);
      }
      Layout layout;
      layout.out_offset = 1;
      layout.out_stride_extra = 1;
      expect_lookup_matches(problem, ids, out, layout,
                            label(isa, table, out, hidden) + " streaming");
    }
  }
}

TEST(DecodeRows, PathNamesAndTheCap) {
  for (CpuIsa isa : isas_here()) {
    EXPECT_EQ(cpu::cpu_isa_from_name(cpu::cpu_isa_name(isa)), isa);
  }
  expect_error<InvalidArgumentError>(
      [] { cpu::cpu_isa_from_name("sse9"); },
      "TPEMBED_CPU_ISA: 'sse9' is not portable, avx2, avx512 or avx512bf16");
  // Asking for more than the CPU has gives what it has.
  const CpuIsa previous = cpu::set_active_cpu_isa(CpuIsa::avx512bf16);
  EXPECT_EQ(cpu::active_cpu_isa(), cpu::best_cpu_isa());
  cpu::set_active_cpu_isa(previous);
  // Which paths this machine tested, in the test's XML and on the console.
  ::testing::Test::RecordProperty("best_cpu_isa", cpu::cpu_isa_name(cpu::best_cpu_isa()));
  std::printf("row-decoding paths tested here: portable up to %s\n",
              cpu::cpu_isa_name(cpu::best_cpu_isa()));
}

// Run by CTest in processes of their own with TPEMBED_CPU_ISA set (tests/cpu/CMakeLists.txt).
TEST(DecodeRowsEnvironment, TheVariableCapsThePathOrNamesWhatIsWrong) {
  const char* requested = std::getenv("TPEMBED_CPU_ISA");
  if (requested == nullptr) GTEST_SKIP() << "runs with TPEMBED_CPU_ISA set";
  const std::string name = requested;
  if (name == "portable" || name == "avx2") {
    const CpuIsa want = cpu::cpu_isa_from_name(requested);
    const CpuIsa expected =
        static_cast<int>(want) < static_cast<int>(cpu::best_cpu_isa()) ? want : cpu::best_cpu_isa();
    EXPECT_EQ(cpu::active_cpu_isa(), expected);
    const Problem problem = every_code_problem(DType::fp8_e4m3, 300);
    expect_lookup_matches(problem, {0, 5, 1, -1, 3}, DType::bf16, {}, name);
  } else {
    expect_error<InvalidArgumentError>([] { cpu::active_cpu_isa(); },
                                       "TPEMBED_CPU_ISA: '" + name + "' is not portable");
    // And the lookup says the same (the variable is read at the first quantized lookup).
    const Problem problem = every_code_problem(DType::i8, 4);
    expect_error<InvalidArgumentError>([&] { run_lookup(problem, {0}, DType::f32, {}); },
                                       "is not portable, avx2");
  }
}

}  // namespace
}  // namespace tpembed::testing
