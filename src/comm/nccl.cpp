// The NCCL engine: collectives on device buffers, queued on the caller's stream. Communicators are
// created non-blocking, so that set-up, splits and collectives can be watched against a deadline:
// one that does not finish in time aborts the communicator and throws CommunicatorError on this
// rank instead of hanging (a peer that died or never came). Members driven by threads of one process
// meet on the host before each eager collective (comm/local_rendezvous.hpp says why).
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "comm/local_rendezvous.hpp"
#include "cuda/runtime.hpp"
#include "tpembed/communicator.hpp"
#include "tpembed/cuda.hpp"

namespace tpembed {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_nccl(ncclResult_t status, const char* what, int rank) {
  throw BackendError(detail::concat("rank ", rank, ": ", what, " failed: ", ncclGetErrorString(status),
                                    " (", ncclGetLastError(nullptr), ")"));
}

// NVLink multicast (NVLS) stays off wherever we set NCCL's environment: on shared machines a program
// that uses it can take the host's GPUs out of service.
// Once per process: threads that each start a communicator must not write the environment while
// NCCL's own threads read it.
void keep_nvls_off() {
  static std::once_flag once;
  std::call_once(once, [] { setenv("NCCL_NVLS_ENABLE", "0", 1); });
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

bool is_device_memory(const void* pointer) { return cuda_runtime::device_of(pointer) >= 0; }

// The NCCL type of a summable dtype (the public calls let only f32, f16, bf16, i32 and i64
// through).
ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f16:
      return ncclFloat16;
    case DType::bf16:
      return ncclBfloat16;
    case DType::i32:
      return ncclInt32;
    default:
      return ncclInt64;
  }
}

class NcclCommunicator final : public Communicator {
 public:
  // Takes `comm` (possibly still initialising) and waits until it is ready. `local` is the
  // rendezvous of this communicator's members in this process (joined before the set-up began).
  NcclCommunicator(ncclComm_t comm, int device, const NcclOptions& options, const char* what, int rank_hint,
                   std::shared_ptr<comm::LocalRendezvous> local)
      : comm_(comm), device_(device), options_(options), local_(std::move(local)) {
    wait_ready(what, rank_hint);
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
  }
  ~NcclCommunicator() override {
    if (comm_ == nullptr) return;
    if (aborted_) return;
    cuda_runtime::restore_device(device_);
    ncclCommFinalize(comm_);
    ncclResult_t state = ncclInProgress;
    const auto deadline = Clock::now() + seconds(options_.timeout_seconds);
    while (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::yield();
    }
    if (state == ncclSuccess) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "nccl"; }
  bool accepts_device_buffers() const override { return true; }

 protected:
  void do_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype, void* stream) override {
    const ncclDataType_t type = nccl_type(dtype);
    const std::size_t bytes = static_cast<std::size_t>(count) * element_size(dtype);
    run(send, recv, bytes, bytes, stream, [&](const void* s, void* r, cudaStream_t st) {
      return ncclAllReduce(s, r, static_cast<std::size_t>(count), type, ncclSum, comm_, st);
    });
  }

  void do_all_gather(const void* send, void* recv, std::int64_t bytes_per_rank, void* stream) override {
    const auto bytes = static_cast<std::size_t>(bytes_per_rank);
    run(send, recv, bytes, bytes * static_cast<std::size_t>(size_), stream, [&](const void* s, void* r, cudaStream_t st) {
      return ncclAllGather(s, r, bytes, ncclInt8, comm_, st);
    });
  }

  // Grouped point-to-point: this rank's block to every peer, every peer's block from it. The counts
  // are on the host, so this is not for graph capture (the all-reduce path is).
  void do_all_gather_v(const void* send, void* recv, const std::vector<std::int64_t>& byte_counts,
                       const std::vector<std::int64_t>& displacements, void* stream_handle) override {
    check_usable();
    if (!is_device_memory(recv)) {  // host buffers: the padded all-gather, staged
      Communicator::do_all_gather_v(send, recv, byte_counts, displacements, stream_handle);
      return;
    }
    const cuda_runtime::DeviceScope on(device_);  // the caller keeps its current device
    auto stream = static_cast<cudaStream_t>(stream_handle);
    TPEMBED_EXPECTS(!meet_local_members(stream), UnsupportedError, "rank ", rank_,
                    ": all_gather_v cannot be captured in a CUDA graph (its counts are planned on the host)");
    auto* out = static_cast<std::uint8_t*>(recv);
    const auto mine = static_cast<std::size_t>(byte_counts[static_cast<std::size_t>(rank_)]);
    if (mine > 0 && send != out + displacements[static_cast<std::size_t>(rank_)]) {
      cuda_runtime::check(cudaMemcpyAsync(out + displacements[static_cast<std::size_t>(rank_)], send, mine,
                                          cudaMemcpyDeviceToDevice, stream),
                          "cudaMemcpyAsync");
    }
    ncclGroupStart();
    for (int peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      const auto theirs = static_cast<std::size_t>(byte_counts[static_cast<std::size_t>(peer)]);
      if (mine > 0) ncclSend(send, mine, ncclInt8, peer, comm_, stream);
      if (theirs > 0) ncclRecv(out + displacements[static_cast<std::size_t>(peer)], theirs, ncclInt8, peer, comm_, stream);
    }
    const ncclResult_t status = ncclGroupEnd();
    if (status != ncclSuccess && status != ncclInProgress) throw_nccl(status, "ncclGroupEnd (all_gather_v)", rank_);
    wait_ready("enqueueing an NCCL all_gather_v", rank_);
    wait_done(stream, "an NCCL all_gather_v");
  }

  // Equal blocks: one ncclReduceScatter (in place when recv is send + rank * count, as here).
  // Uneven ones (ncclReduceScatter takes one count): a group of ncclReduce calls, one a nonempty
  // block, each rooted at the block's rank. Chosen over a padded ncclReduceScatter, which would
  // need a device workspace of the largest block times the ranks plus copies in and out of it; in
  // the group each block goes once through a reduction to its rank (about the traffic of one
  // reduce-scatter, in one grouped launch), nothing is allocated and it can be captured in a CUDA
  // graph. Every rank has the same counts, so every rank posts the same calls.
  void do_reduce_scatter_sum(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                             const std::vector<std::int64_t>& displacements, DType dtype,
                             void* stream) override {
    const ncclDataType_t type = nccl_type(dtype);
    const std::size_t element = element_size(dtype);
    const auto total = static_cast<std::size_t>(displacements.back() + counts.back());
    const auto mine = static_cast<std::size_t>(counts[static_cast<std::size_t>(rank_)]);
    const bool even = std::all_of(counts.begin(), counts.end(),
                                  [&](std::int64_t count) { return count == counts[0]; });
    run(send, recv, total * element, mine * element, stream,
        [&](const void* s, void* r, cudaStream_t st) {
          if (even) return ncclReduceScatter(s, r, mine, type, ncclSum, comm_, st);
          ncclGroupStart();
          for (int root = 0; root < size_; ++root) {
            const auto count = static_cast<std::size_t>(counts[static_cast<std::size_t>(root)]);
            if (count == 0) continue;
            const auto* block = static_cast<const std::uint8_t*>(s) +
                                displacements[static_cast<std::size_t>(root)] * element;
            // In place on the root when its recv is its block of send (NCCL reads recvbuff only
            // there).
            ncclReduce(block, root == rank_ ? r : nullptr, count, type, ncclSum, root, comm_, st);
          }
          return ncclGroupEnd();
        });
  }

  // Grouped point-to-point (ncclSend / ncclRecv a peer with bytes to move; the own block a device
  // copy). Host buffers are staged through the device scratch buffer. The counts are on the host,
  // so this is not for graph capture (as all_gather_v).
  void do_all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes,
                       const std::vector<std::int64_t>& send_displacements, void* recv,
                       const std::vector<std::int64_t>& recv_bytes,
                       const std::vector<std::int64_t>& recv_displacements,
                       void* stream_handle) override {
    check_usable();
    {
      const cuda_runtime::DeviceScope on(device_);
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      cuda_runtime::check(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream_handle), &capture),
                          "cudaStreamIsCapturing");
      TPEMBED_EXPECTS(
          capture == cudaStreamCaptureStatusNone, UnsupportedError, "rank ", rank_,
          ": all_to_all_v cannot be captured in a CUDA graph (its counts are planned on the host)");
    }
    const auto at = [](std::size_t offset, const void* base) {
      return static_cast<const std::uint8_t*>(base) + offset;
    };
    const auto me = static_cast<std::size_t>(rank_);
    const auto send_total = static_cast<std::size_t>(send_displacements.back() + send_bytes.back());
    const auto recv_total = static_cast<std::size_t>(recv_displacements.back() + recv_bytes.back());
    run(send, recv, send_total, recv_total, stream_handle,
        [&](const void* s, void* r, cudaStream_t st) {
          auto* out = static_cast<std::uint8_t*>(r);
          if (send_bytes[me] > 0) {
            cuda_runtime::check(
                cudaMemcpyAsync(out + recv_displacements[me], at(send_displacements[me], s),
                                static_cast<std::size_t>(send_bytes[me]), cudaMemcpyDeviceToDevice,
                                st),
                "cudaMemcpyAsync (all_to_all_v's own block)");
          }
          ncclGroupStart();
          for (int peer = 0; peer < size_; ++peer) {
            const auto p = static_cast<std::size_t>(peer);
            if (peer == rank_) continue;
            if (send_bytes[p] > 0) {
              ncclSend(at(send_displacements[p], s), static_cast<std::size_t>(send_bytes[p]),
                       ncclInt8, peer, comm_, st);
            }
            if (recv_bytes[p] > 0) {
              ncclRecv(out + recv_displacements[p], static_cast<std::size_t>(recv_bytes[p]),
                       ncclInt8, peer, comm_, st);
            }
          }
          return ncclGroupEnd();
        });
  }

  void do_barrier() override {
    std::int32_t token = 1, total = 0;
    do_all_reduce_sum(&token, &total, 1, DType::i32, nullptr);
  }

  std::unique_ptr<Communicator> do_split(int color, int key) override {
    check_usable();
    const cuda_runtime::DeviceScope on(device_);
    // Members of the child in this process: those of this process's members that pass the same color
    // (every member splits in the same order, so the split count names the same split everywhere).
    const std::uint64_t split_number = splits_++;
    std::shared_ptr<comm::LocalRendezvous> child_local;
    if (local_ && local_->members() > 1) {
      child_local = comm::LocalRendezvous::join(local_->child_key(split_number, color));
    }
    ncclConfig_t config = nonblocking_config();
    ncclComm_t split = nullptr;
    const ncclResult_t status = ncclCommSplit(comm_, color, key, &split, &config);
    if (status != ncclSuccess && status != ncclInProgress) throw_nccl(status, "ncclCommSplit", rank_);
    wait_ready("ncclCommSplit", rank_);  // the parent finishes its part of the split
    return std::make_unique<NcclCommunicator>(split, device_, options_, "ncclCommSplit", rank_, std::move(child_local));
  }

 private:
  static std::chrono::nanoseconds seconds(double value) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(value));
  }

  void check_usable() const {
    TPEMBED_EXPECTS(!aborted_, CommunicatorError, "rank ", rank_, ": the NCCL communicator was aborted earlier (",
                    abort_reason_, ") and cannot be used");
  }

  [[noreturn]] void abort_with(const std::string& reason) {
    ncclCommAbort(comm_);
    aborted_ = true;
    abort_reason_ = reason;
    throw CommunicatorError(reason);
  }

  // Pause between two polls of a wait that began at `start`: a yield for the first millisecond (an
  // eager collective of a few KB takes ~10 us, and a sleep costs ~60 us of timer slack), then 50 us.
  static void pause_since(Clock::time_point start) {
    if (Clock::now() - start < std::chrono::milliseconds(1)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // Waits until the communicator has no operation in progress (set-up, split, or the enqueue of a
  // non-blocking call), or aborts it at the deadline.
  void wait_ready(const char* what, int rank_hint) {
    const auto start = Clock::now();
    const auto deadline = start + seconds(options_.timeout_seconds);
    ncclResult_t state = ncclInProgress;
    while (true) {
      const ncclResult_t status = ncclCommGetAsyncError(comm_, &state);
      if (status != ncclSuccess) throw_nccl(status, "ncclCommGetAsyncError", rank_hint);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        abort_with(detail::concat("rank ", rank_hint, ": ", what, " failed: ", ncclGetErrorString(state)));
      }
      if (Clock::now() > deadline) {
        abort_with(detail::concat("rank ", rank_hint, ": ", what, " did not finish within ", options_.timeout_seconds,
                                  " s; the communicator was aborted (did every rank of the group call it?)"));
      }
      pause_since(start);
    }
  }

  // Outside graph capture, waits on the host until every member in this process has come to this
  // collective (and returns whether the stream is being captured).
  bool meet_local_members(cudaStream_t stream) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cuda_runtime::check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
    const bool capturing = capture != cudaStreamCaptureStatusNone;
    if (!capturing && local_) local_->arrive(seconds(options_.timeout_seconds), rank_);
    return capturing;
  }

  // Waits for the stream's work (the collective) with the deadline, watching NCCL's async errors.
  void wait_done(cudaStream_t stream, const char* what) {
    const auto start = Clock::now();
    const auto deadline = start + seconds(options_.timeout_seconds);
    while (true) {
      const cudaError_t done = cudaStreamQuery(stream);
      if (done == cudaSuccess) return;
      if (done != cudaErrorNotReady) cuda_runtime::check(done, what);
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        abort_with(detail::concat("rank ", rank_, ": ", what, " failed: ", ncclGetErrorString(state)));
      }
      if (Clock::now() > deadline) {
        abort_with(detail::concat("rank ", rank_, ": ", what, " did not complete within ", options_.timeout_seconds,
                                  " s; the communicator was aborted (a peer is gone or stuck)"));
      }
      pause_since(start);
    }
  }

  // Runs one collective. Host buffers are staged through a device scratch buffer. Outside graph
  // capture the call waits for the collective with the deadline; while the stream is being
  // captured it only enqueues (the graph runs later).
  template <typename Collective>
  void run(const void* send, void* recv, std::size_t send_bytes, std::size_t recv_bytes, void* stream_handle,
           Collective collective) {
    check_usable();
    const cuda_runtime::DeviceScope on(device_);
    auto stream = static_cast<cudaStream_t>(stream_handle);
    // A rank that receives nothing (an empty block) tells the kind of memory by its send buffer.
    const bool staged = !is_device_memory(recv != nullptr ? recv : send);
    const void* device_send = send;
    void* device_recv = recv;
    if (staged) {
      if (scratch_.size() < send_bytes + recv_bytes) scratch_ = DeviceBuffer(send_bytes + recv_bytes, device_);
      auto* base = static_cast<std::uint8_t*>(scratch_.data());
      device_recv = base;
      // In place stays in place (send inside recv): copy recv, and point send at the same offset.
      const auto* send_bytes_ptr = static_cast<const std::uint8_t*>(send);
      const auto* recv_bytes_ptr = static_cast<const std::uint8_t*>(recv);
      if (send_bytes_ptr >= recv_bytes_ptr && send_bytes_ptr + send_bytes <= recv_bytes_ptr + recv_bytes) {
        cuda_runtime::copy_to_device(base, recv, recv_bytes, stream);
        device_send = base + (send_bytes_ptr - recv_bytes_ptr);
      } else {
        cuda_runtime::copy_to_device(base + recv_bytes, send, send_bytes, stream);
        device_send = base + recv_bytes;
      }
    }
    const bool capturing = meet_local_members(stream);
    const ncclResult_t status = collective(device_send, device_recv, stream);
    if (status != ncclSuccess && status != ncclInProgress) throw_nccl(status, "an NCCL collective", rank_);
    wait_ready("enqueueing an NCCL collective", rank_);
    if (capturing) return;
    wait_done(stream, "an NCCL collective");
    if (staged) cuda_runtime::copy_to_host(recv, device_recv, recv_bytes, stream);
  }

  ncclComm_t comm_;
  int device_;
  NcclOptions options_;
  int rank_ = 0;
  int size_ = 1;
  bool aborted_ = false;
  std::string abort_reason_;
  DeviceBuffer scratch_;
  // Members in this process (with one, no meeting; null for a split child of a one-member parent).
  std::shared_ptr<comm::LocalRendezvous> local_;
  std::uint64_t splits_ = 0;
};

}  // namespace

bool nccl_available() { return true; }

std::vector<std::uint8_t> make_nccl_unique_id() {
  keep_nvls_off();
  ncclUniqueId id;
  const ncclResult_t status = ncclGetUniqueId(&id);
  if (status != ncclSuccess) throw_nccl(status, "ncclGetUniqueId", -1);
  return std::vector<std::uint8_t>(reinterpret_cast<const std::uint8_t*>(&id),
                                   reinterpret_cast<const std::uint8_t*>(&id) + sizeof id);
}

std::unique_ptr<Communicator> make_nccl_communicator(const std::vector<std::uint8_t>& unique_id, int rank, int size,
                                                     int device, const NcclOptions& options) {
  TPEMBED_EXPECTS(unique_id.size() == sizeof(ncclUniqueId), InvalidArgumentError, "make_nccl_communicator: the unique id has ",
                  unique_id.size(), " bytes, not ", sizeof(ncclUniqueId));
  TPEMBED_EXPECTS(size >= 1 && rank >= 0 && rank < size, InvalidArgumentError, "make_nccl_communicator: rank ", rank,
                  " is outside [0, ", size, ")");
  TPEMBED_EXPECTS(device >= 0 && device < cuda_device_count(), InvalidArgumentError, "make_nccl_communicator: CUDA device ",
                  device, " is not visible (", cuda_device_count(), " visible)");
  TPEMBED_EXPECTS(options.timeout_seconds > 0, InvalidArgumentError, "make_nccl_communicator: timeout must be positive");
  keep_nvls_off();
  cuda_runtime::set_device(device);
  ncclUniqueId id;
  std::memcpy(&id, unique_id.data(), sizeof id);
  // Every member joins before its set-up, which completes only once all have called it.
  auto local = comm::LocalRendezvous::join(
      "nccl id " + std::string(reinterpret_cast<const char*>(unique_id.data()), unique_id.size()));
  ncclConfig_t config = nonblocking_config();
  ncclComm_t comm = nullptr;
  const ncclResult_t status = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  if (status != ncclSuccess && status != ncclInProgress) throw_nccl(status, "ncclCommInitRankConfig", rank);
  return std::make_unique<NcclCommunicator>(comm, device, options, "NCCL communicator set-up", rank, std::move(local));
}

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int device, const NcclOptions& options) {
  // Rank 0 makes the id; every rank gets rank 0's block of an all-gather (a broadcast).
  std::exception_ptr failure;
  std::vector<std::uint8_t> mine(sizeof(ncclUniqueId), 0);
  try {
    // This rank's arguments are checked here, where a bad one reaches every rank (agreed below),
    // not in the set-up, where the other ranks would wait for it until the timeout.
    TPEMBED_EXPECTS(options.timeout_seconds > 0, InvalidArgumentError,
                    "make_nccl_communicator: timeout must be positive");
    if (device < 0) device = node_local_cuda_device(bootstrap);
    TPEMBED_EXPECTS(device < cuda_device_count(), InvalidArgumentError, "make_nccl_communicator: CUDA device ",
                    device, " is not visible (", cuda_device_count(), " visible)");
    if (bootstrap.rank() == 0) mine = make_nccl_unique_id();
  } catch (...) {
    failure = std::current_exception();
  }
  agree_or_throw(bootstrap, failure);
  std::vector<std::uint8_t> all(mine.size() * static_cast<std::size_t>(bootstrap.size()));
  bootstrap.all_gather(mine.data(), all.data(), static_cast<std::int64_t>(mine.size()), DType::i8);
  const std::vector<std::uint8_t> id(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(mine.size()));
  return make_nccl_communicator(id, bootstrap.rank(), bootstrap.size(), device, options);
}

}  // namespace tpembed
