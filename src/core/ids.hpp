// Reading one id of a host ids buffer whatever its dtype (i32 or i64, as the op layer has checked).
#pragma once

#include <cstdint>

#include "tpembed/dtype.hpp"

namespace tpembed {

/// Id `k` of `ids` (i32 or i64) as an int64.
inline std::int64_t id_at(const void* ids, DType dtype, std::int64_t k) {
  return dtype == DType::i32 ? static_cast<const std::int32_t*>(ids)[k]
                             : static_cast<const std::int64_t*>(ids)[k];
}

}  // namespace tpembed
