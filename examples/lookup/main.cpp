// Looks ids up in a small table with tpembed's public API and checks every value against numbers
// worked out by hand. Run alone it uses one rank; `mpirun -np 2 lookup_example --mpi` shards the
// table over the two ranks, by vocab rows and then by hidden columns, and every rank checks the
// same values. Exits 0 when every value matched, 1 otherwise.
#include <tpembed/tpembed.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace {

constexpr std::int64_t kVocab = 6;
constexpr std::int64_t kHidden = 4;

// The ids: two rows, a negative id and one past the table (both give zero rows and are counted).
const std::vector<std::int64_t> kIds = {4, 0, -1, 7, 5};

// Row r of the f32 table holds 10r, 10r+1, 10r+2, 10r+3; bad ids give zeros.
const float kExpectedF32[5][kHidden] = {
    {40, 41, 42, 43}, {0, 1, 2, 3}, {0, 0, 0, 0}, {0, 0, 0, 0}, {50, 51, 52, 53}};
// The int8 table holds 4r+c-12 in row r, column c, and row r's scale is (r+1)/4: row 4 is codes
// 4..7 times 1.25, row 0 codes -12..-9 times 0.25, row 5 codes 8..11 times 1.5.
const float kExpectedI8[5][kHidden] = {
    {5, 6.25f, 7.5f, 8.75f}, {-3, -2.75f, -2.5f, -2.25f}, {0, 0, 0, 0}, {0, 0, 0, 0}, {12, 13.5f, 15, 16.5f}};

int failures = 0;

void check(const tpembed::Tensor& out, const float (&expected)[5][kHidden], const char* what, int rank) {
  const bool shape_ok = out.shape() == std::vector<std::int64_t>{5, kHidden} && out.dtype() == tpembed::DType::f32;
  if (!shape_ok) {
    std::printf("rank %d, %s: got %s, expected f32[5, 4]\n", rank, what, out.view().describe().c_str());
    ++failures;
    return;
  }
  const float* values = out.data_as<float>();
  int wrong = 0;
  for (int i = 0; i < 5; ++i) {
    for (int c = 0; c < kHidden; ++c) {
      if (values[i * kHidden + c] != expected[i][c]) {
        if (wrong++ < 4) {
          std::printf("rank %d, %s: out[%d][%d] = %g, expected %g\n", rank, what, i, c,
                      values[i * kHidden + c], expected[i][c]);
        }
      }
    }
  }
  failures += wrong;
  std::printf("rank %d, %s: %s\n", rank, what, wrong == 0 ? "ok" : "WRONG");
}

}  // namespace

int main(int argc, char** argv) {
  const bool use_mpi = argc > 1 && std::strcmp(argv[1], "--mpi") == 0;
  std::vector<float> table(kVocab * kHidden);
  std::vector<std::int8_t> codes(kVocab * kHidden);
  std::vector<float> scale(kVocab);
  for (std::int64_t r = 0; r < kVocab; ++r) {
    scale[r] = static_cast<float>(r + 1) / 4;
    for (std::int64_t c = 0; c < kHidden; ++c) {
      table[r * kHidden + c] = static_cast<float>(10 * r + c);
      codes[r * kHidden + c] = static_cast<std::int8_t>(4 * r + c - 12);
    }
  }
  const tpembed::TensorView ids(kIds.data(), tpembed::DType::i64, {5});
  const tpembed::TensorView f32_table(table.data(), tpembed::DType::f32, {kVocab, kHidden});

  try {
    if (!use_mpi) {
      check(tpembed::embedding(ids, f32_table), kExpectedF32, "f32 table", 0);
      tpembed::EmbeddingOptions options;
      options.per_token_scale = tpembed::TensorView(scale.data(), tpembed::DType::f32, {kVocab});
      options.out_dtype = tpembed::DType::f32;
      check(tpembed::embedding(ids, tpembed::TensorView(codes.data(), tpembed::DType::i8, {kVocab, kHidden}), options),
            kExpectedI8, "int8 table with scales", 0);
      options.strict = true;
      try {
        tpembed::embedding(ids, f32_table, options);
        std::printf("strict mode did not refuse id -1\n");
        ++failures;
      } catch (const tpembed::OutOfRangeError& error) {
        std::printf("strict mode: %s\n", error.what());
      }
    } else {
#ifdef EXAMPLE_WITH_MPI
      std::unique_ptr<tpembed::Communicator> world = tpembed::make_mpi_communicator();
      const int rank = world->rank();
      tpembed::EmbeddingConfig config;
      config.tp_size = world->size();
      config.placement = tpembed::ShardPlacement::packed;

      config.sharding_dim = 0;  // each rank holds some rows
      auto [row, rows] = tpembed::shard_range(kVocab, world->size(), rank, config.placement);
      tpembed::ParallelEmbedding by_rows(*world, tpembed::EmbeddingShard::owning(tpembed::slice_rows(f32_table, row, rows)),
                                         config);
      check(by_rows.forward(ids), kExpectedF32, "f32 table, vocab-parallel", rank);
      if (by_rows.last_bad_id_count() != 2) {
        std::printf("rank %d: %llu bad ids counted, expected 2\n", rank,
                    static_cast<unsigned long long>(by_rows.last_bad_id_count()));
        ++failures;
      }

      config.sharding_dim = 1;  // each rank holds some columns of every row
      auto [col, cols] = tpembed::shard_range(kHidden, world->size(), rank, config.placement);
      tpembed::ParallelEmbedding by_cols(*world, tpembed::EmbeddingShard::owning(tpembed::slice_cols(f32_table, col, cols)),
                                         config);
      check(by_cols.forward(ids), kExpectedF32, "f32 table, hidden-parallel", rank);
      std::printf("rank %d of %d: rows [%lld, +%lld), columns [%lld, +%lld)\n", rank, world->size(),
                  static_cast<long long>(row), static_cast<long long>(rows), static_cast<long long>(col),
                  static_cast<long long>(cols));
#else
      std::printf("--mpi: this tpembed was built without MPI\n");
      return 1;
#endif
    }
  } catch (const tpembed::Error& error) {
    std::printf("tpembed error: %s\n", error.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
