// The device fingerprint in builds without CUDA: there are no GPU ids to fingerprint, so a call is
// a caller's mistake and reports a failed launch.
#include "cuda/fingerprint.hpp"

namespace tpembed::fingerprint {

int fingerprint_cuda(const void*, bool, std::int64_t, DeviceScratch*, std::uint64_t*, void*) {
  return 1;
}

}  // namespace tpembed::fingerprint
