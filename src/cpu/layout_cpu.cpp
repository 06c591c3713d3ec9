// The hidden-parallel layout on the host: gathered column blocks to output rows.
#include <cstring>

#include "tpembed/lookup.hpp"

namespace tpembed {

void layout_columns_cpu(const LayoutParams& params) {
  const auto* source = static_cast<const std::uint8_t*>(params.source);
  auto* out = static_cast<std::uint8_t*>(params.out);
  for (int p = 0; p < params.num_pieces; ++p) {
    const LayoutPiece& piece = params.pieces[p];
    if (piece.bytes == 0) continue;
    for (std::int64_t r = 0; r < params.rows; ++r) {
      std::memcpy(out + r * params.out_pitch + piece.destination_offset,
                  source + piece.source_offset + r * params.source_pitch, static_cast<std::size_t>(piece.bytes));
    }
  }
}

}  // namespace tpembed
