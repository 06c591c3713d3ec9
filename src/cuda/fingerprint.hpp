// The ids fingerprint that tensor-parallel ranks compare before each forward (collective checks):
// one definition for the host and the device, so that host ids and GPU ids give the same value.
//
// fingerprint(ids) = mix(n + sum over positions i of mix(uint64(id_i) ^ mix(i + kPositionSeed)))
// modulo 2^64, where id_i is the id as a signed 64-bit value (i32 ids are widened first: the same
// ids in i32 and i64 give the same fingerprint, since they give the same rows) and mix is a 64-bit
// finaliser (MurmurHash3's). The position inside the mix makes it order-sensitive; the sum makes
// it parallel (any grouping of the terms gives the same bits, so CPU and GPU agree exactly). It
// catches careless differences (other ids, another order), not an adversary.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define TPEMBED_HOST_DEVICE __host__ __device__
#else
#define TPEMBED_HOST_DEVICE
#endif

namespace tpembed::fingerprint {

constexpr std::uint64_t kPositionSeed = 0x9E3779B97F4A7C15ull;

TPEMBED_HOST_DEVICE inline std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/// The term of id `id` at flat position `position`.
TPEMBED_HOST_DEVICE inline std::uint64_t term(std::int64_t id, std::int64_t position) {
  return mix(static_cast<std::uint64_t>(id) ^
             mix(static_cast<std::uint64_t>(position) + kPositionSeed));
}

/// The fingerprint of `count` ids whose terms sum (mod 2^64) to `sum`.
TPEMBED_HOST_DEVICE inline std::uint64_t finish(std::uint64_t sum, std::int64_t count) {
  return mix(sum + static_cast<std::uint64_t>(count));
}

/// Most blocks (partial sums) of the device launcher.
constexpr int kMaxPartials = 64;

/// Scratch of the device launcher: a partial sum per block and the count of finished blocks. Zero
/// it once when allocating it; every launch leaves it ready for the next (the count wraps to 0).
struct DeviceScratch {
  std::uint64_t partials[kMaxPartials];
  unsigned int finished_blocks;
  unsigned int reserved;
};

/// Queues on `stream` (a cudaStream_t) one kernel that stores the fingerprint of `count` ids in
/// device memory (i32 when `wide` is false, else i64) at `*fingerprint` (device memory): a few
/// blocks add their terms, and the last to finish adds the partial sums in block order (the same
/// bits whatever order the blocks run in) and stores the result. Returns the launch status (a
/// cudaError_t); no allocation, no synchronisation. In builds without CUDA: a nonzero status.
int fingerprint_cuda(const void* ids, bool wide, std::int64_t count, DeviceScratch* scratch,
                     std::uint64_t* fingerprint, void* stream);

}  // namespace tpembed::fingerprint
